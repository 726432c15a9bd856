#!/usr/bin/env python3
"""Open-loop HTTP load at a fixed request rate, from its own process (bench/run.py runs it).

Requests are sent on schedule whether or not earlier ones have answered, and each latency is
measured from its scheduled time, so a slow server cannot hide its queueing (no coordinated
omission). A small keep-alive HTTP/1.1 client on asyncio keeps the generator's own CPU low.
Prints one JSON object: offered and achieved rate, p50/p95/p99, errors, the service's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any
from urllib.parse import urlparse

import psutil


class Connections:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)

    async def request(self, raw: bytes) -> int:
        async with self.slots:
            reused = bool(self.idle)
            conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            try:
                writer.write(raw)
                status_line = await reader.readline()
                if not status_line and reused:
                    # The server closed this kept-alive connection before reading the request
                    # (its idle timeout): nothing was processed, so send it on a new one, as
                    # HTTP clients do.
                    writer.close()
                    reader, writer = conn = await asyncio.open_connection(self.host, self.port)
                    writer.write(raw)
                    status_line = await reader.readline()
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.idle.append(conn)
                return status
            except Exception:
                writer.close()
                raise


def build(method: str, path: str, host: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
    )
    return head.encode() + body


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlparse(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    ids = args.ids.split(",")
    rng = random.Random(11)
    pool = Connections(host, port, args.connections)
    latencies: list[float] = []
    errors = 0
    body = json.dumps({"role": "user", "content": "load test message " + "x" * 150}).encode()

    kinds: dict[str, int] = {}

    async def one(scheduled: float, raw: bytes) -> None:
        nonlocal errors
        try:
            status = await pool.request(raw)
            if status >= 400:
                errors += 1
                kinds[str(status)] = kinds.get(str(status), 0) + 1
        except Exception as exc:  # noqa: BLE001 - any failure counts as an error, by kind
            errors += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
        latencies.append((time.perf_counter() - scheduled) * 1000)

    service = psutil.Process(args.service_pid) if args.service_pid else None
    cpu_before = sum(service.cpu_times()[:2]) if service else 0.0
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    start = time.perf_counter() + 0.05
    tasks = []
    for n in range(total):
        scheduled = start + n * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        roll = rng.random()
        cid = rng.choice(ids)
        if roll < 0.6:
            raw = build("GET", f"/conversations/{cid}?messages_limit=50", host, args.token)
        elif roll < 0.9:
            raw = build("POST", f"/conversations/{cid}/messages", host, args.token, body)
        else:
            raw = build("GET", "/conversations?limit=20", host, args.token)
        tasks.append(asyncio.create_task(one(scheduled, raw)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = (sum(service.cpu_times()[:2]) - cpu_before) / elapsed if service else 0.0
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "rate": args.rate,
        "requests": total,
        "achieved_rps": round(total / elapsed, 1),
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "errors": errors,
        "error_kinds": kinds,
        "service_cpu_cores": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second, offered")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--ids", required=True, help="comma-separated conversation ids to read and append to")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--service-pid", type=int)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
