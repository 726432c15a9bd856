#!/usr/bin/env python3
"""A bounded soak on loopback: the service at the benchmark's sustainable request rate for a
few minutes. Passes when there are no errors, memory stays flat and p99 stays stable.

    python bench/soak.py [--minutes 3] [--rate N]

The rate defaults to the highest rate the latest full benchmark run's step-up passed
(bench/results). A step lasts 15 s; the soak decides: when it fails, it soaks again at a
passed rate at least 15% lower (three tries at most), and the highest rate whose soak passes becomes the run's
``rps_per_core``, the figure stacks/config.py's autoscaling target cites. Writes
bench/results/<date>-soak.json, updates the full run's file and both sections of
bench/README.md; exits 1 when no rate passes (or the one given with --rate fails).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.http_wrk import service
from bench.run import load_step
from conversations.migrate import ensure_app_role, migrate
from devtools.postgres import remove, start_embedded_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
WINDOW_S = 30
MAX_RSS_GROWTH = 0.10  # after the first window (warm-up)
P99_BUDGET_MS = 25.0
MAX_ATTEMPTS = 3
STEP_DOWN = 0.15


def latest_run() -> Path | None:
    runs = sorted(p for p in RESULTS.glob("*.json") if "soak" not in p.name)
    full = [p for p in runs if "quick" not in p.name] or runs
    return full[-1] if full else None


def passed_rates(run: Path | None) -> list[int]:
    """The step-up's rates that met the budget, highest first."""
    if run is None:
        return [100]
    http = json.loads(run.read_text()).get("http", {})
    sustainable = int(http.get("sustainable_rps") or 0)
    rates = sorted({int(s["rate"]) for s in http.get("steps", []) if int(s["rate"]) <= sustainable}, reverse=True)
    # The highest, then each at least STEP_DOWN below the one before: at most MAX_ATTEMPTS soaks.
    candidates: list[int] = []
    for rate in rates:
        if not candidates or rate <= candidates[-1] * (1 - STEP_DOWN):
            candidates.append(rate)
    return candidates[:MAX_ATTEMPTS] or [100]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=None)
    args = parser.parse_args()
    run = latest_run()
    rates = [args.rate] if args.rate else passed_rates(run)
    attempts = []
    for rate in rates:
        result = soak(rate, args.minutes)
        attempts.append({"rate": rate, "passed": result["passed"], "checks": result["checks"]})
        if result["passed"]:
            break
    result["attempts"] = attempts
    write_soak(result)
    if run is not None and not args.rate:
        confirm(run, result, attempts)
    return 0 if result["passed"] else 1


def confirm(run: Path, result: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
    """Record in the full run what the soak confirmed, and re-render its README section."""
    from bench.run import render_table, update_readme

    results = json.loads(run.read_text())
    http = results["http"]
    http["rps_per_core"] = result["rate"] if result["passed"] else 0
    http["soak"] = attempts
    failed = [a["rate"] for a in attempts if not a["passed"]]
    http["confirmed"] = (
        f"a {result['minutes']:g}-minute soak passed at {result['rate']} rps"
        + (f" (and failed at {', '.join(map(str, failed))} rps)" if failed else "")
        if result["passed"]
        else f"no soak passed (tried {', '.join(map(str, failed))} rps)"
    )
    for target in results.get("targets", []):
        if target["target"].startswith("HTTP requests/s per core"):
            target["ratio"], target["met"] = http["rps_per_core"], http["rps_per_core"] > 0
    run.write_text(json.dumps(results, indent=2) + "\n")
    update_readme(render_table(results))


def soak(rate: int, minutes: float) -> dict[str, Any]:
    windows = max(2, int(minutes * 60 // WINDOW_S))
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
            # The load above leaves a checkpoint due: take it now, not in the first window.
            conn.execute("CHECKPOINT")
        token = secrets.token_urlsafe(24)
        with service("ours", server.conninfo(db, "soak_app", password), token, 384) as (port, pid):
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
    return judge(rate, minutes, samples)


def judge(rate: int, minutes: float, samples: list[dict[str, Any]]) -> dict[str, Any]:
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
        "minutes": minutes,
        "windows": samples,
        "requests": sum(s["requests"] for s in samples),
        "errors": errors,
        "rss_growth": round(growth, 3),
        "checks": checks,
        "passed": all(checks.values()),
    }
    print(
        f"soak at {rate} rps: {'passed' if result['passed'] else 'failed'}"
        f" ({', '.join(name for name, ok in checks.items() if not ok) or 'every check met'})",
        file=sys.stderr,
        flush=True,
    )
    return result


def write_soak(result: dict[str, Any]) -> None:
    rate, samples, checks = result["rate"], result["windows"], result["checks"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{result['date']}-soak.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Soak of {result['date']}: {rate} requests/s for {result['minutes']:g} minutes "
        f"({result['requests']} requests), {WINDOW_S} s windows."
        + "".join(
            f" An earlier soak at {a['rate']} rps failed ({', '.join(n for n, ok in a['checks'].items() if not ok)})."
            for a in result.get("attempts", [])
            if not a["passed"]
        ),
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


if __name__ == "__main__":
    sys.exit(main())
