"""The edge under attack, measured: each attack of the edge review against ``python -m
conversations`` (one process, as the container runs it, on its own PostgreSQL), with the
process's peak memory (VmHWM, a fresh process per attack) and the worst ``/health/live``
latency while it runs, and what a well-behaved caller got meanwhile.

    .venv/bin/python bench/edge.py          # about two minutes; writes bench/results/edge/<date>.json

Goals (issue 27): peak RSS under 150 MiB and /health/live under 100 ms during any attack.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import secrets
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.http_wrk import service
from conversations.migrate import ensure_app_role, migrate
from devtools.postgres import PostgresServer, remove, start_embedded_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_urlsafe(24)
DIMENSION = 1536
MIB = 1024 * 1024


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _call(port: int, method: str, path: str, body: bytes | None = None, user: str = "bench") -> tuple[int, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "X-User-Id": user},
    )
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, (time.perf_counter() - began) * 1000


def _probe(port: int, stop: Any, worst: Any) -> None:
    """/health/live every 20 ms on a fresh connection, in its own process (the attackers' threads
    in this one would otherwise slow the probe itself), keeping the worst latency."""
    while not stop.is_set():
        status, ms = _call(port, "GET", "/health/live")
        worst.value = max(worst.value, ms if status == 200 else 30_000.0)
        time.sleep(0.02)


class Probe:
    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.worst = context.Value("d", 0.0)
        self.process = context.Process(target=_probe, args=(port, self.stop, self.worst), daemon=True)

    @property
    def worst_ms(self) -> float:
        return float(self.worst.value)

    def __enter__(self) -> Probe:
        self.process.start()
        time.sleep(1.0)  # the probe's interpreter is up and polling before the attack starts
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.process.join(35)


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _post_headers(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nX-User-Id: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


# --- the attacks: each returns what a well-behaved caller saw ------------------------------------------


def embedding_array(port: int) -> str:
    body = b'{"role": "user", "content": "x", "embedding": [' + b"0.5," * ((16 * MIB - 100) // 4) + b"0.5]}"
    status, ms = _call(port, "POST", "/conversations/target/messages", body)
    return f"16 MiB of numbers: {status} in {ms:.0f} ms"


def metadata_keys(port: int) -> str:
    keys = b",".join(b'"k%d": 1' % i for i in range(1_200_000))
    status, ms = _call(
        port, "POST", "/conversations/target/messages", b'{"role": "user", "content": "x", "metadata": {' + keys + b"}}"
    )
    return f"1.2M metadata keys: {status} in {ms:.0f} ms"


def slow_uploads(port: int) -> str:
    with ExitStack() as stack:
        for _ in range(2):
            sock = stack.enter_context(_raw(port))
            sock.sendall(_post_headers("/conversations/target/messages", 16 * MIB) + b"{")
        time.sleep(1)
        statuses = [_call(port, "POST", "/conversations/target/messages", b'{"role": "user", "content": "hi"}')[0]]
        for _ in range(6):  # a byte every 2.5 s: cut by the least rate after the grace
            time.sleep(2.5)
            statuses.append(
                _call(port, "POST", "/conversations/target/messages", b'{"role": "user", "content": "hi"}')[0]
            )
    return f"writes beside two trickling 16 MiB uploads: {statuses}"


def unfinished_bodies(port: int) -> str:
    with ExitStack() as stack:
        for _ in range(64):
            sock = stack.enter_context(_raw(port))
            sock.sendall(_post_headers("/conversations/target/messages", 1000) + b'{"ro')
        time.sleep(0.5)
        reads = [_call(port, "GET", "/conversations/target")[0] for _ in range(5)]
    return f"reads beside 64 unfinished bodies: {reads}"


def trickled_headers(port: int) -> str:
    with ExitStack() as stack:
        socks = [stack.enter_context(_raw(port)) for _ in range(50)]
        for sock in socks:
            sock.sendall(b"POST /conversations HTTP/1.1\r\nHost: x\r\n")
        for n in range(12):
            for sock in socks:
                try:
                    sock.sendall(f"X-{n}: a\r\n".encode())
                except OSError:
                    pass
            time.sleep(1)
        reads = [_call(port, "GET", "/conversations/target")[0] for _ in range(3)]
    return f"reads beside 50 connections trickling headers for 12 s: {reads}"


def huge_header(port: int) -> str:
    with _raw(port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * MIB) + b"\r\n\r\n")
        try:
            answer = sock.recv(100)
        except OSError:
            answer = b"(reset)"
    first_line = answer.split(b"\r\n")[0].decode(errors="replace")
    return f"an 8 MiB header: {first_line}"


def one_users_searches(port: int) -> str:
    results: list[int] = []

    def search() -> None:
        results.append(_call(port, "GET", "/search?q=lorem", user="greedy")[0])

    threads = [threading.Thread(target=search) for _ in range(16)]
    for thread in threads:
        thread.start()
    other = [_call(port, "GET", "/conversations/target", user="bench") for _ in range(5)]
    for thread in threads:
        thread.join()
    worst = max(ms for _, ms in other)
    return (
        f"16 searches of one user: {results.count(200)} answered, {results.count(429)} 429; "
        f"another user's reads {[s for s, _ in other]}, worst {worst:.0f} ms"
    )


def health_pollers(port: int) -> str:
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/health")
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answer.read()
            except OSError:
                pass

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(200)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    reads = [_call(port, "GET", "/conversations/target") for _ in range(10)]
    stop.set()
    for thread in threads:
        thread.join(30)
    return f"reads beside 200 anonymous /health pollers: worst {max(ms for _, ms in reads):.0f} ms"


ATTACKS: dict[str, Callable[[int], str]] = {
    "16 MiB embedding array": embedding_array,
    "1.2M metadata keys": metadata_keys,
    "two trickling 16 MiB uploads": slow_uploads,
    "64 unfinished bodies": unfinished_bodies,
    "50 connections trickling headers": trickled_headers,
    "an 8 MiB header": huge_header,
    "16 searches of one user": one_users_searches,
    "200 anonymous /health pollers": health_pollers,
}


@contextmanager
def database(work: Path) -> Iterator[str]:
    server: PostgresServer = start_embedded_server(work / "pg")
    try:
        name = server.create_database("edge")
        role, password = "edge_app", secrets.token_urlsafe(16)
        with psycopg.connect(server.master_conninfo(name), autocommit=True) as conn:
            migrate(conn, embedding_dimension=DIMENSION)
            ensure_app_role(conn, role, password)
            conn.execute("INSERT INTO conversations (conversation_id, user_id) VALUES ('target', 'bench')")
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, role, content)"
                " SELECT 'target', n, 'user', 'lorem ipsum dolor ' || n FROM generate_series(1, 100) n"
            )
            conn.execute("UPDATE conversations SET message_count = 100 WHERE conversation_id = 'target'")
        yield server.conninfo(name, role, password)
    finally:
        remove(server)


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-") as work, database(Path(work)) as url:
        for name, attack in ATTACKS.items():
            with service("ours", url, TOKEN, DIMENSION) as (port, pid):
                idle = _rss_kib(pid, "VmRSS")
                with Probe(port) as probe:
                    outcome = attack(port)
                    time.sleep(0.3)
                peak = _rss_kib(pid, "VmHWM")
            row = {
                "attack": name,
                "idle_rss_mib": round(idle / 1024, 1),
                "peak_rss_mib": round(peak / 1024, 1),
                "worst_live_ms": round(probe.worst_ms, 1),
                "outcome": outcome,
            }
            rows.append(row)
            print(
                f"{name:<34} peak {row['peak_rss_mib']:6.1f} MiB  "
                f"/health/live worst {row['worst_live_ms']:7.1f} ms  {outcome}",
                flush=True,
            )
    # Beside the full runs, not among them (scripts and tests read the latest of those).
    out = ROOT / "bench" / "results" / "edge" / f"{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], "attacks": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
