"""Where records come from, each streamed with bounded memory: the service's own JSON export,
the older SQLite schema, the older DynamoDB design."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from conversations.models import (
    ConversationRecord,
)

from .records import BadRecord, check_id, check_json, check_text, check_user_id, message, parse_time, plain

READ_CHUNK_CHARS = 1 << 20


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
        check_user_id(user_id, where)
    return ConversationRecord(cid, title, created, updated, user_id, settings, metadata, messages, origin=where)


def from_sqlite(path: Path) -> Iterator[ConversationRecord | BadRecord]:
    """sessions(id, title, created_at, updated_at, metadata) and messages(id, session_id,
    role, content, created_at, metadata); a message's own id goes to metadata.source_message_id."""
    if not path.exists():
        raise SystemExit(f"no such file: {path}")
    # The name as a file: URI, percent-encoded: '#', '?' or '%' in it would otherwise end the
    # path early or become URI parameters (and open another file, read-write).
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
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
            check_user_id(user, where)
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
