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
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from conversations.models import (
    MAX_CONTENT_CHARS,
    ROLES,
    ConversationRecord,
    NewMessage,
    conversation_id_problem,
    embedding_problem,
    json_too_large,
    unstorable_json,
    unstorable_text,
)
from conversations.store import InvalidInput, Store

ROOT = Path(__file__).resolve().parent.parent
# The JSON reader's buffer: records larger than this are read by growing it.
READ_CHUNK_CHARS = 1 << 20


class BadRecord(ValueError):
    """A source record that cannot be imported; ``where`` says which one."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass
class Report:
    source: str
    conversations_read: int = 0
    messages_read: int = 0
    imported_conversations: int = 0
    imported_messages: int = 0
    already_present: int = 0
    skipped: list[BadRecord] = field(default_factory=list)
    stopped_early: bool = False
    source_error: str | None = None
    verified: bool | None = None
    verify_detail: str = ""

    def render(self) -> str:
        lines = [
            f"Validation report: {self.source}",
            f"  source:  {self.conversations_read} conversations, {self.messages_read} messages read",
            f"  target:  {self.imported_conversations} conversations, {self.imported_messages} messages imported",
            f"  already present (left as they were): {self.already_present} conversations",
            f"  skipped as invalid: {len(self.skipped)}",
        ]
        lines += [f"    - {bad.where}: {bad.reason}" for bad in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"    ... and {len(self.skipped) - 50} more")
        if self.verified is not None:
            lines.append(f"  check:   {'OK' if self.verified else 'MISMATCH'} ({self.verify_detail})")
        if self.stopped_early:
            lines.append("  stopped at the first invalid record (--strict); the records before it are committed")
        if self.source_error:
            lines.append(f"  stopped: {self.source_error}; the records before it are committed")
        return "\n".join(lines)


# ---------------------------------------------------------------- parsing helpers


def parse_time(value: Any, where: str, what: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise BadRecord(where, f"{what} is not a time: {value!r}")
    elif isinstance(value, int | float | Decimal):
        try:
            parsed = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            raise BadRecord(where, f"{what} is out of range: {str(value)[:40]}") from None
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00") if value.strip().endswith("Z") else value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadRecord(where, f"{what} is not an ISO 8601 time (years 1-9999): {value[:40]!r}") from None
    else:
        raise BadRecord(where, f"{what} is missing")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise BadRecord(where, f"{what} must be text, got {type(value).__name__}")
    reason = unstorable_text(value)
    if reason is not None:
        raise BadRecord(where, f"{what}: {reason}")
    return value


def check_json(value: Any, where: str, what: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRecord(where, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRecord(where, f"{what} must be a JSON object, got {type(value).__name__}")
    value = plain(value)
    reason = unstorable_json(value) or json_too_large(value)
    if reason is not None:
        raise BadRecord(where, f"{what}: {reason}")
    return value  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """DynamoDB's Decimals and sets as JSON values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def check_id(value: Any, where: str) -> str:
    """The API's rule for conversation ids (conversations.models), so an imported
    conversation is addressable like any other."""
    reason = conversation_id_problem(value)
    if reason is not None:
        raise BadRecord(where, reason)
    return str(value)


def message(raw: Any, where: str, created_default: datetime) -> NewMessage:
    if not isinstance(raw, dict):
        raise BadRecord(where, "a message must be an object")
    role = raw.get("role")
    if role not in ROLES:
        raise BadRecord(where, f"unknown role {str(role)[:20]!r} (expected one of {', '.join(ROLES)})")
    content = check_text(raw.get("content"), where, "content")
    if len(content) > MAX_CONTENT_CHARS:
        raise BadRecord(where, f"content has {len(content)} characters; at most {MAX_CONTENT_CHARS} are accepted")
    metadata = check_json(raw.get("metadata"), where, "metadata")
    extra = {k: v for k, v in raw.items() if k not in ("role", "content", "metadata", "created_at", "embedding")}
    metadata.update(check_json(extra, where, "message fields"))
    created = parse_time(raw["created_at"], where, "created_at") if raw.get("created_at") else created_default
    embedding = raw.get("embedding")
    if embedding is not None:
        if not (
            isinstance(embedding, list)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in embedding)
        ):
            raise BadRecord(where, "embedding must be a list of numbers")
        reason = embedding_problem(embedding)
        if reason is not None:
            raise BadRecord(where, reason)
    return NewMessage(role, content, metadata, embedding, created)


# ---------------------------------------------------------------- sources


class JsonSource:
    """The earlier JSON-file stores: {conversation_id: {title, created_at, updated_at,
    messages: [{role, content, ...}], settings}}; extra message keys go to its metadata.

    Read as a stream: one conversation in memory at a time, so a multi-gigabyte export imports
    on a small machine. Parsing is the standard library's (the same values ``json.load`` would
    give); a duplicate key anywhere in a conversation makes that conversation a bad record. A
    syntax error ends the import there (what came before it is imported; the report says where).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
        except OSError as exc:
            raise SystemExit(f"cannot read {path}: {exc}") from None
        self.consumed = 0  # characters of the file parsed so far (progress)
        self.line = 1

    def fraction(self) -> float:
        return min(self.consumed / self.size, 1.0) if self.size else 1.0

    def __iter__(self) -> Iterator[ConversationRecord | BadRecord]:
        duplicates: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            obj: dict[str, Any] = {}
            for key, value in items:
                if key in obj:
                    duplicates.append(key)
                obj[key] = value
            return obj

        decoder = json.JSONDecoder(object_pairs_hook=pairs)
        try:
            handle = self.path.open(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"cannot read {self.path}: {exc}") from None
        with handle:
            reader = _Buffer(handle, self)
            try:
                reader.expect("{", "a JSON object keyed by conversation id")
                if reader.peek() == "}":
                    return
                while True:
                    line = self.line
                    cid = reader.value(decoder, "a conversation id (a JSON string)")
                    reader.expect(":", "':'")
                    duplicates.clear()
                    raw = reader.value(decoder, "a conversation (a JSON object)")
                    where = f"{self.path.name}: line {line}: conversation {str(cid)[:80]!r}"
                    if not isinstance(cid, str):
                        yield BadRecord(where, "a conversation id must be a JSON string")
                    elif duplicates:
                        yield BadRecord(where, f"duplicate key {duplicates[0][:40]!r} in a JSON object")
                    else:
                        try:
                            yield json_record(cid, raw, where)
                        except BadRecord as bad:
                            yield bad
                    if reader.expect(",}", "',' or '}'") == "}":
                        return
            except UnicodeDecodeError as exc:
                raise SourceError(f"{self.path.name}: not UTF-8 near line {self.line}: {exc.reason}") from None


class SourceError(Exception):
    """The source cannot be read past this point (a JSON syntax error, say)."""


class _Buffer:
    """Just enough of a streaming tokenizer for the top-level object: text read in chunks,
    values decoded with ``raw_decode`` once they are whole."""

    def __init__(self, handle: TextIO, source: JsonSource) -> None:
        self.handle, self.source = handle, source
        self.text, self.pos, self.eof = "", 0, False

    def _more(self, size: int) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(size)
        if not chunk:
            self.eof = True
            return False
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def _skip_space(self) -> None:
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                if self.text[self.pos] == "\n":
                    self.source.line += 1
                self.pos += 1
            if self.pos < len(self.text) or not self._more(READ_CHUNK_CHARS):
                return

    def peek(self) -> str:
        self._skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, allowed: str, what: str) -> str:
        char = self.peek()
        if not char or char not in allowed:
            found = repr(char) if char else "the end of the file"
            raise SourceError(f"{self.source.path.name}: line {self.source.line}: expected {what}, found {found}")
        self.pos += 1
        self._advance(1)
        return char

    def value(self, decoder: json.JSONDecoder, what: str) -> Any:
        self._skip_space()
        chunk = READ_CHUNK_CHARS
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # Ran out of text (or stopped inside an unterminated string): read more. A
                # failure well inside the text is a syntax error that more text cannot mend.
                # (A literal cut short, "tr" of true or "-Infin" of -Infinity, fails at its start.)
                truncated = exc.pos >= len(self.text) - 16 or exc.msg.startswith("Unterminated string")
                if truncated and self._more(chunk):
                    chunk *= 2
                    continue
                line = self.source.line + self.text.count("\n", self.pos, exc.pos)
                raise SourceError(f"{self.source.path.name}: line {line}: expected {what}: {exc.msg}") from None
            if end == len(self.text) and not self.eof and self._more(chunk):
                continue  # a number may go on in the next chunk
            self.source.line += self.text.count("\n", self.pos, end)
            self._advance(end - self.pos)
            self.pos = end
            return value

    def _advance(self, chars: int) -> None:
        self.source.consumed += chars


def from_json(path: Path) -> JsonSource:
    return JsonSource(path)


def json_record(cid: str, raw: Any, where: str) -> ConversationRecord:
    check_id(cid, where)
    if not isinstance(raw, dict):
        raise BadRecord(where, "must be an object")
    created = parse_time(raw.get("created_at"), where, "created_at")
    updated = parse_time(raw.get("updated_at") or raw.get("created_at"), where, "updated_at")
    title = raw.get("title")
    if title is not None:
        check_text(title, where, "title")
    raw_messages = raw.get("messages") or []
    if not isinstance(raw_messages, list):
        raise BadRecord(where, "messages must be a list")
    messages = [message(m, f"{where}, message {i}", created) for i, m in enumerate(raw_messages)]
    settings = check_json(raw.get("settings"), where, "settings")
    metadata = check_json(raw.get("metadata"), where, "metadata")
    user_id = raw.get("user_id")
    if user_id is not None:
        check_text(user_id, where, "user_id")
    return ConversationRecord(cid, title, created, updated, user_id, settings, metadata, messages, origin=where)


def from_sqlite(path: Path) -> Iterator[ConversationRecord | BadRecord]:
    """sessions(id, title, created_at, updated_at, metadata) and messages(id, session_id,
    role, content, created_at, metadata); a message's own id goes to metadata.source_message_id."""
    if not path.exists():
        raise SystemExit(f"no such file: {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for table in ("sessions", "messages"):
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone():
                raise SystemExit(f"{path}: no '{table}' table; expected the sessions/messages memory schema")
        orphans = db.execute(
            "SELECT m.id, m.session_id FROM messages m"
            " WHERE m.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = m.session_id)"
            " ORDER BY m.rowid"
        ).fetchall()
        for mid, session_id in orphans:
            reason = "its session_id is NULL" if session_id is None else "its session_id matches no session"
            yield BadRecord(f"{path.name}: messages row id={mid!r}", reason)
        sessions = db.execute("SELECT id, title, created_at, updated_at, metadata FROM sessions ORDER BY rowid")
        for sid, title, created_at, updated_at, metadata in sessions.fetchall():
            where = f"{path.name}: sessions row id={sid!r}"
            try:
                check_id(sid, where)
                created = parse_time(created_at, where, "created_at")
                updated = parse_time(updated_at or created_at, where, "updated_at")
                rows = db.execute(
                    "SELECT id, role, content, created_at, metadata FROM messages WHERE session_id = ?"
                    " ORDER BY created_at, rowid",
                    (sid,),
                ).fetchall()
                messages = []
                for mid, role, content, m_created, m_meta in rows:
                    m_where = f"{path.name}: messages row id={mid!r}"
                    meta = check_json(m_meta, m_where, "metadata")
                    meta.setdefault("source_message_id", mid)
                    messages.append(
                        message(
                            {"role": role, "content": content, "created_at": m_created, "metadata": meta},
                            m_where,
                            created,
                        )
                    )
                yield ConversationRecord(
                    sid,
                    None if title is None else check_text(title, where, "title"),
                    created,
                    updated,
                    None,
                    {},
                    check_json(metadata, where, "metadata"),
                    messages,
                    origin=where,
                )
            except BadRecord as bad:
                yield bad
    finally:
        db.close()


def from_dynamodb(
    table: str, *, region: str | None, endpoint_url: str | None, page_size: int | None = None
) -> Iterator[ConversationRecord | BadRecord]:
    """Single-table design: PK=USER#<user>, SK=CONV#<id> (title, filter_values, is_active,
    createdAt, updatedAt) and SK=MSG#<id>#<message id> (role, content, feedback,
    filter_values, metadata, createdAt), read with a paginated scan."""
    import boto3

    resource = boto3.resource("dynamodb", region_name=region, endpoint_url=endpoint_url)
    # The resource's client hands back plain Python values (numbers as Decimal).
    paginator = resource.meta.client.get_paginator("scan")
    heads: dict[tuple[str, str], dict[str, Any]] = {}
    bodies: dict[tuple[str, str], list[dict[str, Any]]] = {}
    pages = paginator.paginate(TableName=table, PaginationConfig={"PageSize": page_size} if page_size else {})
    for page in pages:
        for item in page["Items"]:
            pk, sk = str(item.get("PK", "")), str(item.get("SK", ""))
            where = f"{table}: item PK={pk!r} SK={sk!r}"
            if not pk.startswith("USER#"):
                yield BadRecord(where, "PK is not USER#<user_id>")
                continue
            user = pk.removeprefix("USER#")
            if sk.startswith("CONV#"):
                heads[(user, sk.removeprefix("CONV#"))] = item
            elif sk.startswith("MSG#") and sk.count("#") >= 2:
                cid, _, mid = sk.removeprefix("MSG#").rpartition("#")
                bodies.setdefault((user, cid), []).append({**item, "_message_id": mid})
            else:
                yield BadRecord(where, "SK is neither CONV#<id> nor MSG#<id>#<message id>")
    for key in sorted(set(bodies) - set(heads)):
        yield BadRecord(f"{table}: messages of USER#{key[0]} CONV#{key[1]}", "no CONV# item for these messages")
    for (user, cid), head in heads.items():
        where = f"{table}: item PK='USER#{user}' SK='CONV#{cid}'"
        try:
            check_id(cid, where)
            created = parse_time(head.get("createdAt"), where, "createdAt")
            updated = parse_time(head.get("updatedAt") or head.get("createdAt"), where, "updatedAt")
            metadata = {k: plain(head[k]) for k in ("filter_values", "is_active") if k in head}
            items = sorted(bodies.get((user, cid), []), key=lambda m: (str(m.get("createdAt", "")), m["_message_id"]))
            messages = []
            for item in items:
                m_where = f"{table}: item PK='USER#{user}' SK='MSG#{cid}#{item['_message_id']}'"
                meta = check_json(plain(item.get("metadata")), m_where, "metadata")
                meta.update({k: plain(item[k]) for k in ("feedback", "filter_values") if k in item})
                meta["source_message_id"] = item["_message_id"]
                messages.append(
                    message(
                        {
                            "role": item.get("role"),
                            "content": item.get("content"),
                            "created_at": item.get("createdAt"),
                            "metadata": meta,
                        },
                        m_where,
                        created,
                    )
                )
            title = head.get("title")
            yield ConversationRecord(
                cid,
                None if title is None else check_text(title, where, "title"),
                created,
                updated,
                user,
                {},
                check_json(metadata, where, "metadata"),
                messages,
                origin=where,
            )
        except BadRecord as bad:
            yield bad


# ---------------------------------------------------------------- import / export


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


def run_import(  # noqa: C901 - owed: #24 splits the importer into scripts/transfer/
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
    batch: list[ConversationRecord] = []
    checked = 0
    wrong: list[str] = []

    def flush() -> None:
        nonlocal checked
        if not batch:
            return
        inserted = set(store.import_conversations(batch))
        found = store.message_counts(sorted(inserted)) if inserted else {}
        for record in batch:
            if record.conversation_id in inserted:
                report.imported_conversations += 1
                report.imported_messages += len(record.messages)
                checked += 1
                if found.get(record.conversation_id, 0) != len(record.messages):
                    wrong.append(record.conversation_id)
            else:
                report.already_present += 1
        batch.clear()

    def bad(item: BadRecord) -> bool:
        report.skipped.append(item)
        if strict:
            report.stopped_early = True
        return strict

    in_batch: set[str] = set()
    try:
        for item in records:
            if isinstance(item, BadRecord):
                if bad(item):
                    break
                continue
            where = item.origin or f"{source}: conversation {item.conversation_id!r}"
            if item.conversation_id in in_batch:
                if bad(BadRecord(where, "appears twice in the source; the first was kept")):
                    break
                continue
            problem = _embedding_problem(store, item)
            if problem is not None:
                if bad(BadRecord(where, problem)):
                    break
                continue
            in_batch.add(item.conversation_id)
            report.conversations_read += 1
            report.messages_read += len(item.messages)
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
                in_batch.clear()
            progress.update(report.conversations_read, f"conversations, {report.messages_read} messages")
    except SourceError as exc:
        report.source_error = str(exc)
    flush()
    progress.update(report.conversations_read, f"conversations, {report.messages_read} messages", final=True)
    report.verified = not wrong
    report.verify_detail = (
        f"message counts of {checked} imported conversations match the source"
        if not wrong
        else f"{len(wrong)} conversations differ, e.g. {wrong[:3]}"
    )
    return report


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
                tmp = Path(args.file).with_suffix(Path(args.file).suffix + ".partial")
                with tmp.open("w", encoding="utf-8") as handle:
                    count = export(store, handle, user_id=args.user_id)
                tmp.replace(args.file)  # never leave a half-written export under the real name
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
