#!/usr/bin/env python3
"""Times a 10,000-message JSON import into the embedded PostgreSQL (issue: importers).

    python bench/bench_import.py [--conversations 500] [--messages-per 20] [--repeat 3]

Generates a legacy JSON file from a fixed seed, imports it into a fresh database on its own
embedded server (as the least-privilege role, through the store), and prints the median wall
time and messages per second over the repeats. Timings live here, never in `make test`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from psycopg_pool import ConnectionPool

from conversations.embedded import start_embedded, stop_embedded
from conversations.store import Store
from scripts import conversations_io as cio

ROOT = Path(__file__).resolve().parent.parent


def legacy_file(path: Path, conversations: int, per: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    words = "postgres vector index query latency replica backup tenant token schema migration".split()
    data = {}
    for c in range(conversations):
        messages = []
        for m in range(per):
            size = 200 if m % 2 == 0 else 1500
            text = " ".join(rng.choice(words) for _ in range(size // 8))
            messages.append({"role": "user" if m % 2 == 0 else "assistant", "content": text, "turn": m})
        data[f"bench-{c:05d}"] = {
            "title": f"Conversation {c}",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-02T00:00:00Z",
            "settings": {},
            "messages": messages,
        }
    path.write_text(json.dumps(data))
    return conversations * per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--messages-per", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    source = work / "legacy.json"
    total = legacy_file(source, args.conversations, args.messages_per)
    database = start_embedded(work / "local", embedding_dimension=1536)
    times = []
    try:
        for _ in range(args.repeat):
            with ConnectionPool(database.app_conninfo, min_size=1, max_size=2) as pool:
                store = Store(pool, embedding_dimension=1536)
                started = time.perf_counter()
                report = cio.run_import(store, "json", cio.from_json(source), batch_size=200, strict=False)
                times.append(time.perf_counter() - started)
                assert report.imported_messages == total and report.verified, report.render()
            import psycopg

            with psycopg.connect(database.admin_conninfo, autocommit=True) as admin:
                admin.execute("TRUNCATE conversations CASCADE")
    finally:
        stop_embedded(work / "local")
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "benchmark": "json import",
                "messages": total,
                "conversations": args.conversations,
                "runs_s": [round(t, 3) for t in times],
                "median_s": round(median, 3),
                "messages_per_s": round(total / median),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
