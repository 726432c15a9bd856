#!/usr/bin/env python3
"""Import and export: the command (``python scripts/conversations_io.py import|export ...``). The
work lives in ``scripts/transfer/``; every name this module offered before the split is
importable from it."""

from __future__ import annotations

import sys

from scripts.transfer.cli import main
from scripts.transfer.records import (
    BadRecord,
    Report,
    check_id,
    check_json,
    check_text,
    message,
    parse_time,
    plain,
)
from scripts.transfer.run import IO_STATEMENT_TIMEOUT_MS, Progress, export, open_store, run_import
from scripts.transfer.sources import (
    READ_CHUNK_CHARS,
    JsonSource,
    SourceError,
    from_dynamodb,
    from_json,
    from_sqlite,
    json_record,
)

__all__ = [
    "IO_STATEMENT_TIMEOUT_MS",
    "READ_CHUNK_CHARS",
    "BadRecord",
    "JsonSource",
    "Progress",
    "Report",
    "SourceError",
    "check_id",
    "check_json",
    "check_text",
    "export",
    "from_dynamodb",
    "from_json",
    "from_sqlite",
    "json_record",
    "main",
    "message",
    "open_store",
    "parse_time",
    "plain",
    "run_import",
]

if __name__ == "__main__":
    sys.exit(main())
