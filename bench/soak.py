#!/usr/bin/env python3
"""A bounded soak on loopback: the service at the benchmark's sustainable request rate for a
few minutes. Passes when there are no errors, memory stays flat and p99 stays stable.

    python bench/soak.py [--minutes 3] [--rate N]

The rate defaults to the sustainable figure of the latest full benchmark run (bench/results).
Writes bench/results/<date>-soak.json and the soak section of bench/README.md; exits 1 when
a criterion is not met.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench.run import load_step, service_process
from conversations.migrate import ensure_app_role, migrate
from devtools.postgres import remove, start_embedded_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
WINDOW_S = 30
MAX_RSS_GROWTH = 0.10  # after the first window (warm-up)
P99_BUDGET_MS = 25.0


def sustainable_rate() -> int:
    runs = sorted(p for p in RESULTS.glob("*.json") if "soak" not in p.name)
    full = [p for p in runs if "quick" not in p.name] or runs
    if not full:
        return 100
    return int(json.loads(full[-1].read_text()).get("http", {}).get("sustainable_rps") or 100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=None)
    args = parser.parse_args()
    rate = args.rate or sustainable_rate()
    windows = max(2, int(args.minutes * 60 // WINDOW_S))
    server = start_embedded_server(Path(tempfile.mkdtemp(prefix="conversations-soak-")), durable=True)
    try:
        db = server.create_database("soak")
        password = secrets.token_urlsafe(16)
        with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
            migrate(conn, embedding_dimension=384)
            ensure_app_role(conn, "soak_app", password)
            conn.execute(
                "INSERT INTO conversations (conversation_id, message_count) "
                "SELECT 'soak-' || g, 100 FROM generate_series(1, 200) g"
            )
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, role, content) "
                "SELECT 'soak-' || c, s, CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END, "
                "repeat('lorem ipsum ', 50 + (s % 2) * 100) "
                "FROM generate_series(1, 200) c, generate_series(1, 100) s"
            )
            conn.execute("ANALYZE")
        token = secrets.token_urlsafe(24)
        with service_process(server.conninfo(db, "soak_app", password), token, 384) as (port, pid):
            process = psutil.Process(pid)
            ids = [f"soak-{n}" for n in range(1, 201)]
            samples = []
            for window in range(windows):
                step = load_step(port, token, rate, WINDOW_S, pid, ids)
                step["rss_mib"] = round(process.memory_info().rss / 2**20, 1)
                step["window"] = window + 1
                samples.append(step)
                print(
                    f"window {window + 1}/{windows}: {step['achieved_rps']} rps, p99 {step['p99_ms']} ms, "
                    f"errors {step['errors']}, RSS {step['rss_mib']} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        remove(server)

    errors = sum(s["errors"] for s in samples)
    base_rss = samples[0]["rss_mib"]
    growth = (max(s["rss_mib"] for s in samples[1:]) - base_rss) / base_rss
    p99s = [s["p99_ms"] for s in samples]
    checks = {
        "no errors": errors == 0,
        f"memory flat (growth after warm-up <= {MAX_RSS_GROWTH:.0%})": growth <= MAX_RSS_GROWTH,
        f"p99 stable (every window <= {P99_BUDGET_MS:g} ms)": max(p99s) <= P99_BUDGET_MS,
    }
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "rate": rate,
        "minutes": args.minutes,
        "windows": samples,
        "requests": sum(s["requests"] for s in samples),
        "errors": errors,
        "rss_growth": round(growth, 3),
        "checks": checks,
        "passed": all(checks.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{result['date']}-soak.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Soak of {result['date']}: {rate} requests/s for {args.minutes:g} minutes "
        f"({result['requests']} requests), {WINDOW_S} s windows.",
        "",
        "| Window | Achieved rps | p50 ms | p99 ms | errors | service RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {s['window']} | {s['achieved_rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} | {s['rss_mib']} |"
        for s in samples
    ]
    lines += [""] + [f"- {name}: {'met' if ok else '**not met**'}" for name, ok in checks.items()]
    table = "\n".join(lines)
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    readme = README.read_text()
    before, _, rest = readme.partition(start)
    _, _, after = rest.partition(end)
    README.write_text(f"{before}{start}\n{table}\n{end}{after}")
    print(table)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
