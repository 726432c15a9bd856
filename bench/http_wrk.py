#!/usr/bin/env python3
"""The HTTP fast-path benchmark: the service and a minimal reference service under `wrk`.

    python bench/http_wrk.py            # standalone: its own embedded PostgreSQL and a small data set
    python bench/http_wrk.py --quick    # shorter runs
    python bench/http_wrk.py --only ours --duration 20   # one service (while profiling, say)

Both services run on the same database with the same schema, one uvicorn process each, one after
the other. Each gets the same closed loop: `wrk`, 16 keep-alive connections, the mix of
bench/wrk_mix.lua (60% last-50 reads of a 1,000-message conversation, 30% appends of a 1.5 KB
message, 10% first list pages). Reported per service: requests per CPU-second of the service
process (its utime + stime from /proc), requests/s, p50/p99, and every non-2xx status and socket
error by kind. Then one client on one connection: each request's p50 as a multiple of an empty
round trip (GET /health/live) in the same run. bench/run.py runs this as part of `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk_mix.lua"
CONNECTIONS = 16
THREADS = 2
SINGLE_OPS = ("live", "append", "read", "list")
GOAL_RPS_PER_CPU_S = 1500
GOAL_SINGLE = {"append": 1.6, "read": 2.0, "list": 1.5}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); `make bench` installs it")
    return path


def run_wrk(
    port: int, token: str, ids_file: Path, mode: str, *, connections: int, threads: int, duration: float, pid: int
) -> dict[str, Any]:
    """One wrk run; the service's CPU seconds over it, and what wrk measured."""
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        token,
        str(ids_file),
        mode,
    ]
    cpu_before = cpu_seconds(pid)
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60)
    cpu = cpu_seconds(pid) - cpu_before
    match = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    errors = {f"HTTP {s}": n for s, n in sorted(statuses.items()) if s >= 300}
    errors |= {f"socket {k}": n for k, n in raw["socket_errors"].items() if n}
    return {
        "mode": mode,
        "connections": connections,
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds, 1),
        "service_cpu_s": round(cpu, 2),
        "rps_per_cpu_s": round(raw["requests"] / cpu, 1) if cpu else None,
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


@contextmanager
def service(
    kind: str, database_url: str, token: str, dimension: int, log_level: str = "INFO"
) -> Iterator[tuple[int, int]]:
    """``ours`` (``python -m conversations``, as operators run it, logging at INFO) or
    ``reference`` (bench/reference_service.py) in its own process; yields (port, pid) once it
    answers (uvicorn answers only after the lifespan has opened the pool). Every HTTP
    measurement of the benchmark and the soak starts the service here."""
    from devtools.net import free_port

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_TOKEN": token,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "EMBEDDING_DIMENSION": str(dimension),
        "LOG_LEVEL": log_level,
        "POOL_MIN_SIZE": "10",
        "POOL_MAX_SIZE": "10",
    }
    command = (
        [sys.executable, "-m", "conversations"]
        if kind == "ours"
        else [sys.executable, str(ROOT / "bench" / "reference_service.py")]
    )
    # Ours logs one JSON line per request at INFO, as deployed: written to a pipe's worth of
    # /dev/null, so the cost of producing it is measured.
    process = subprocess.Popen(
        command, cwd=ROOT / "service", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_live(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(30)


def _wait_live(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the service did not answer")


def measure_service(
    kind: str,
    database_url: str,
    token: str,
    dimension: int,
    ids_file: Path,
    *,
    duration: float,
    single_duration: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    with service(kind, database_url, token, dimension) as (port, pid):
        # A discarded warm-up: the pool filled, statements prepared, code paths warm.
        run_wrk(port, token, ids_file, "mix", connections=CONNECTIONS, threads=THREADS, duration=3, pid=pid)
        spy = None
        if profile is not None:
            # py-spy samples the service during the mix: collapsed stacks, one line per stack
            # (its own CPU is not the service's: it runs in its own process).
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    f"{duration:g}",
                    "-r",
                    "200",
                    "--gil",
                    "-f",
                    "raw",
                    "-o",
                    str(profile),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        mix = run_wrk(
            port, token, ids_file, "mix", connections=CONNECTIONS, threads=THREADS, duration=duration, pid=pid
        )
        if spy is not None:
            spy.wait(60)
        log(
            f"{kind:<9} mix: {mix['rps_per_cpu_s']} requests per CPU-second, {mix['rps']} rps,"
            f" p50 {mix['p50_ms']} ms, p99 {mix['p99_ms']} ms, errors {mix['errors']} {mix['error_kinds'] or ''}"
        )
        # Each request alone under the same load: its CPU cost per request.
        per_route: dict[str, Any] = {}
        for op in SINGLE_OPS:
            run = run_wrk(
                port, token, ids_file, op, connections=CONNECTIONS, threads=THREADS, duration=single_duration, pid=pid
            )
            per_route[op] = {
                "cpu_us_per_request": round(1e6 / run["rps_per_cpu_s"]) if run["rps_per_cpu_s"] else None,
                "rps": run["rps"],
                "errors": run["errors"],
            }
        log(
            f"{kind:<9} alone under load, CPU per request: "
            + ", ".join(f"{op} {per_route[op]['cpu_us_per_request']} µs" for op in SINGLE_OPS)
        )
        single: dict[str, Any] = {}
        for op in SINGLE_OPS:
            run = run_wrk(port, token, ids_file, op, connections=1, threads=1, duration=single_duration, pid=pid)
            single[op] = {"p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "errors": run["errors"]}
        empty = single["live"]["p50_ms"]
        for op in SINGLE_OPS[1:]:
            single[op]["x_empty"] = round(single[op]["p50_ms"] / empty, 2)
        log(
            f"{kind:<9} one client, p50 as a multiple of the empty round trip ({empty} ms): "
            + ", ".join(f"{op} {single[op]['x_empty']}x" for op in SINGLE_OPS[1:])
        )
        return {"mix": mix, "per_route": per_route, "single": single}


def compare(
    database_url: str,
    dimension: int,
    read_ids: list[str],
    append_ids: list[str],
    *,
    duration: float = 20,
    single_duration: float = 5,
    only: str | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Both services (or ``only`` one) under the same closed loop; the result that bench/run.py
    records under ``http.wrk``."""
    token = secrets.token_urlsafe(24)
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as f:
        f.writelines(f"read {cid}\n" for cid in read_ids)
        f.writelines(f"append {cid}\n" for cid in append_ids)
        ids_file = Path(f.name)
    try:
        results: dict[str, Any] = {
            "tool": "wrk",
            "connections": CONNECTIONS,
            "threads": THREADS,
            "duration_s": duration,
            "mix": "60% GET last 50 of a 1,000-message conversation, 30% POST a 1.5 KB message, 10% GET list page 1",
        }
        for kind in ("ours", "reference"):
            if only in (None, kind):
                results[kind] = measure_service(
                    kind,
                    database_url,
                    token,
                    dimension,
                    ids_file,
                    duration=duration,
                    single_duration=single_duration,
                    profile=profile if kind == "ours" else None,
                )
        if "ours" in results and "reference" in results:
            ours, ref = results["ours"]["mix"]["rps_per_cpu_s"], results["reference"]["mix"]["rps_per_cpu_s"]
            results["ours_over_reference"] = round(ours / ref, 2)
            log(f"ours / reference, requests per CPU-second: {results['ours_over_reference']}")
        if "ours" in results:
            results["goals"] = goals(results["ours"])
        return results
    finally:
        ids_file.unlink()


def goals(ours: dict[str, Any]) -> list[dict[str, Any]]:
    mix = ours["mix"]
    out = [
        {
            "target": f"HTTP mix >= {GOAL_RPS_PER_CPU_S} requests per service CPU-second, zero errors",
            "ratio": mix["rps_per_cpu_s"],
            "met": (mix["rps_per_cpu_s"] or 0) >= GOAL_RPS_PER_CPU_S and mix["errors"] == 0,
        }
    ]
    for op, limit in GOAL_SINGLE.items():
        x = ours["single"][op]["x_empty"]
        out.append({"target": f"one client: {op} p50 <= {limit}x the empty round trip", "ratio": x, "met": x <= limit})
    return out


def _standalone(args: argparse.Namespace) -> dict[str, Any]:
    """Its own durable embedded PostgreSQL: 50 conversations of 1,000 messages to read, 200 of
    10 to append to, 2,000 more for the list; the schema by the service's migrator."""
    from bench.systems import Ours, Shape, dataset
    from devtools.postgres import remove, start_embedded_server

    shape = Shape(lengths={1000: 50, 10: 2200}, heavy_user_conversations=0, big_messages={}, embeddings=0)
    work = Path(tempfile.mkdtemp(prefix="conversations-wrk-"))
    server = start_embedded_server(work / "pg", durable=True)
    try:
        name = server.create_database("wrk")
        role, password = "bench_app", secrets.token_urlsafe(16)
        ours = Ours(server.conninfo(name), server.conninfo(name, role, password), shape.dimension)
        ours.setup(role, password)
        data = list(dataset(shape))
        log(f"loading {shape.conversations} conversations, {shape.messages} messages")
        ours.load(data, 0)
        ours.finish_load()
        read_ids = [c.conversation_id for c in data if len(c.messages) == 1000]
        append_ids = [c.conversation_id for c in data if len(c.messages) == 10][:200]
        return compare(
            ours.app_conninfo,
            shape.dimension,
            read_ids,
            append_ids,
            duration=args.duration,
            single_duration=args.single_duration,
            only=args.only,
            profile=args.profile,
        )
    finally:
        remove(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5-second runs")
    parser.add_argument("--duration", type=float, default=None, help="seconds of the mix per service (20)")
    parser.add_argument("--single-duration", type=float, default=None, help="seconds per one-client run (5)")
    parser.add_argument("--only", choices=("ours", "reference"), default=None)
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the service during the mix: collapsed stacks to this file"
    )
    args = parser.parse_args()
    args.duration = args.duration or (5 if args.quick else 20)
    args.single_duration = args.single_duration or (2 if args.quick else 5)
    print(json.dumps(_standalone(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
