#!/usr/bin/env python3
"""Bring existing conversation histories into the service's PostgreSQL, and take them out.

    python scripts/conversations_io.py import json FILE
    python scripts/conversations_io.py import sqlite FILE
    python scripts/conversations_io.py import dynamodb TABLE [--region R] [--endpoint-url URL]
    python scripts/conversations_io.py export FILE [--user-id U]

The database is chosen exactly as the service chooses it: DATABASE_URL, the DB_* variables,
or the embedded default under .local/ (also while `make up` serves from it). Imports go
through the service's store in batches with a progress bar, keep conversation ids as they are,
skip conversations already present (re-running imports nothing twice), and end with a
validation report. A bad record is skipped and reported with where it came from; --strict
stops at the first one instead (what was imported before it stays, and the report says so).
Exit status: 0 all imported, 2 done but some records skipped, 1 stopped or a count mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conversations.models import (
    ConversationRecord,
)

from .records import BadRecord
from .run import export, open_store, run_import
from .sources import from_dynamodb, from_json, from_sqlite


def _export_to_file(store: Any, target: Path, user_id: str | None) -> int:
    """Write the export beside ``target`` under a new name, then rename it into place: never a
    half-written export under the real name. The new file is created by mkstemp (O_EXCL, mode
    0600: the export holds every conversation it covers, readable by its owner only), so no file
    or link planted beforehand is followed; the rename replaces a link at ``target`` rather than
    writing through it."""
    fd, name = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            count = export(store, handle, user_id=user_id)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="import conversations from a source")
    imp.add_argument("kind", choices=["json", "sqlite", "dynamodb"])
    imp.add_argument("source", help="the file (json, sqlite) or table name (dynamodb)")
    imp.add_argument("--region")
    imp.add_argument("--endpoint-url")
    imp.add_argument("--batch-size", type=int, default=200)
    imp.add_argument("--strict", action="store_true", help="stop at the first invalid record")
    exp = commands.add_parser("export", help="export conversations to the JSON-file format")
    exp.add_argument("file", help="where to write ('-' for standard output)")
    exp.add_argument("--user-id", help="only this user's conversations")
    args = parser.parse_args(argv)

    if args.command == "import" and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    store, database = open_store()
    try:
        if args.command == "export":
            if args.file == "-":
                count = export(store, sys.stdout, user_id=args.user_id)
            else:
                count = _export_to_file(store, Path(args.file), args.user_id)
            print(f"exported {count} conversations", file=sys.stderr)
            return 0
        if args.kind == "json":
            records: Iterable[ConversationRecord | BadRecord] = from_json(Path(args.source))
        elif args.kind == "sqlite":
            records = from_sqlite(Path(args.source))
        else:
            records = from_dynamodb(args.source, region=args.region, endpoint_url=args.endpoint_url)
        report = run_import(
            store, f"{args.kind} {args.source}", records, batch_size=args.batch_size, strict=args.strict
        )
        print(report.render())
        if report.source_error:
            print(f"error: {report.source_error}", file=sys.stderr)
        if report.stopped_early or report.source_error or not report.verified:
            return 1
        return 2 if report.skipped else 0
    finally:
        database.close()


if __name__ == "__main__":
    sys.exit(main())
