"""The import (in batches, with progress, nothing twice, every bad record reported) and the
export, through the service's own store."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from conversations.models import (
    ConversationRecord,
)
from conversations.store import InvalidInput, Store

from .records import BadRecord, Report
from .sources import JsonSource, SourceError

ROOT = Path(__file__).resolve().parent.parent.parent


class Progress:
    """A progress bar on stderr (a line every few seconds when stderr is not a terminal)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: TextIO | None = None,
        fraction: Callable[[], float] | None = None,
    ) -> None:
        self.label, self.total, self.fraction = label, total, fraction
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.started = time.monotonic()

    def update(self, done: int, extra: str = "", final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        share = (1.0 if final else self.fraction()) if self.fraction else (done / self.total if self.total else None)
        if share is not None:
            filled = int(30 * share)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {done}" + (
                f"/{self.total}" if self.total else ""
            )
        else:
            bar = f"{done}"
        line = f"{self.label} {bar} {extra} ({rate:.0f}/s)"
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


@dataclass
class _Batches:
    """An import's batches: the one being filled (and its ids, for duplicates within it), each
    committed through the store with its message counts checked, into the report."""

    store: Store
    report: Report
    source: str
    size: int
    batch: list[ConversationRecord] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    checked: int = 0
    wrong: list[str] = field(default_factory=list)

    def refusal(self, item: ConversationRecord) -> BadRecord | None:
        """Why ``item`` cannot be imported, or None."""
        where = item.origin or f"{self.source}: conversation {item.conversation_id!r}"
        if item.conversation_id in self.ids:
            return BadRecord(where, "appears twice in the source; the first was kept")
        problem = _embedding_problem(self.store, item)
        return None if problem is None else BadRecord(where, problem)

    def add(self, item: ConversationRecord) -> None:
        self.ids.add(item.conversation_id)
        self.report.conversations_read += 1
        self.report.messages_read += len(item.messages)
        self.batch.append(item)
        if len(self.batch) >= self.size:
            self.flush()
            self.ids.clear()

    def flush(self) -> None:
        if not self.batch:
            return
        inserted = set(self.store.import_conversations(self.batch))
        found = self.store.message_counts(sorted(inserted)) if inserted else {}
        for record in self.batch:
            if record.conversation_id in inserted:
                self.report.imported_conversations += 1
                self.report.imported_messages += len(record.messages)
                self.checked += 1
                if found.get(record.conversation_id, 0) != len(record.messages):
                    self.wrong.append(record.conversation_id)
            else:
                self.report.already_present += 1
        self.batch.clear()


def run_import(
    store: Store,
    source: str,
    records: Iterable[ConversationRecord | BadRecord],
    *,
    batch_size: int,
    strict: bool,
    total: int | None = None,
) -> Report:
    """Import ``records`` a batch at a time. Memory holds one batch, whatever the source's
    size: duplicates are found within a batch (a later repeat of an id finds it already
    present), and each batch's message counts are checked as it is committed."""
    report = Report(source)
    fraction = records.fraction if isinstance(records, JsonSource) else None
    progress = Progress("importing", total, fraction=fraction)
    batches = _Batches(store, report, source, batch_size)
    for item in _read(records, report, source):
        refusal = item if isinstance(item, BadRecord) else batches.refusal(item)
        if refusal is None:
            assert not isinstance(item, BadRecord)
            batches.add(item)
            progress.update(report.conversations_read, f"conversations, {report.messages_read} messages")
            continue
        report.skipped.append(refusal)
        if strict:
            report.stopped_early = True
            break
    batches.flush()  # what was read before a source failed is imported too
    progress.update(report.conversations_read, f"conversations, {report.messages_read} messages", final=True)
    report.verified = not batches.wrong
    report.verify_detail = (
        f"message counts of {batches.checked} imported conversations match the source"
        if not batches.wrong
        else f"{len(batches.wrong)} conversations differ, e.g. {batches.wrong[:3]}"
    )
    return report


def _read(
    records: Iterable[ConversationRecord | BadRecord], report: Report, source: str
) -> Iterator[ConversationRecord | BadRecord]:
    """The source's records, until it ends or cannot be read further: a syntax error, a file
    that is not the database it claims to be, a source failing half-way. That is recorded as the
    report's source error, never a traceback, and the records read before it still count."""
    iterator = iter(records)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except SourceError as exc:
            report.source_error = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any source failure ends the read, reported
            read = report.conversations_read + len(report.skipped)
            detail = (str(exc).splitlines() or [""])[0][:200]
            report.source_error = f"{source}: cannot be read after {read} records: {type(exc).__name__}: {detail}"
            return
        yield item


def _embedding_problem(store: Store, record: ConversationRecord) -> str | None:
    """The store's own embedding rule, reported with the message it concerns."""
    for i, message in enumerate(record.messages):
        try:
            store.check_embeddings([message])
        except InvalidInput as exc:
            return f"message {i}: {exc}"
    return None


def export(store: Store, handle: TextIO, *, user_id: str | None) -> int:
    """Stream the store as the JSON-file format: one conversation in memory at a time."""
    progress = Progress("exporting")
    handle.write("{")
    count = 0
    for record in store.export_conversations(user_id=user_id):
        body: dict[str, Any] = {
            "title": record.title,
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "user_id": record.user_id,
            "settings": record.settings,
            "metadata": record.metadata,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "created_at": m.created_at.isoformat() if m.created_at else None,
                    "metadata": m.metadata,
                    **({"embedding": m.embedding} if m.embedding is not None else {}),
                }
                for m in record.messages
            ],
        }
        handle.write(("," if count else "") + "\n" + json.dumps(record.conversation_id) + ": " + json.dumps(body))
        count += 1
        progress.update(count, "conversations")
    handle.write("\n}\n")
    progress.update(count, "conversations", final=True)
    return count


# One import batch or export page may run this long (a batch of large conversations).
IO_STATEMENT_TIMEOUT_MS = 300_000


def open_store() -> tuple[Store, Any]:
    """The database exactly as the service opens it (conversations.database.open_pool: the
    embedded fallback, rotation, dead connections), as the least-privilege role, with a
    statement timeout sized for bulk work."""
    from conversations.database import open_pool
    from conversations.settings import Settings

    os.environ.setdefault("LOCAL_DATA_DIR", str(ROOT / ".local"))
    settings = Settings.from_env()
    database = open_pool(
        settings, name="conversations-io", min_size=1, max_size=2, statement_timeout_ms=IO_STATEMENT_TIMEOUT_MS
    )
    store = Store(database.pool, embedding_dimension=settings.embedding_dimension, timeout=30)
    return store, database
