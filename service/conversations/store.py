"""All of the service's SQL. No HTTP here: callers get rows or a StoreError."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from .migrate import LEDGER_TABLE
from .models import (
    Conversation,
    ConversationCursor,
    ConversationRecord,
    ConversationSummary,
    Message,
    NewMessage,
    Page,
    SearchHit,
    SimilarHit,
    title_from,
)

# Must match the expression of messages_content_fts_idx (migration 0003) exactly.
FTS_DOCUMENT = "to_tsvector('simple'::regconfig, left(m.content, 100000))"

_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.role, m.content, m.metadata, m.created_at,"
    " m.embedding IS NOT NULL AS has_embedding"
)
_SUMMARY_COLUMNS = "c.conversation_id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count"
# A caller with a user id sees only its own conversations; without one, every conversation.
_OWNED = "(%(user_id)s::text IS NULL OR c.user_id = %(user_id)s)"


class StoreError(Exception):
    code = "store_error"


class NotFound(StoreError):
    code = "not_found"


class Conflict(StoreError):
    code = "conflict"


class InvalidInput(StoreError):
    code = "invalid_input"


class Store:
    def __init__(self, pool: ConnectionPool, *, embedding_dimension: int, timeout: float = 5.0) -> None:
        self.pool = pool
        self.embedding_dimension = embedding_dimension
        self.timeout = timeout

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection(timeout=self.timeout) as conn:
            yield conn

    # ------------------------------------------------------------ conversations

    def create_conversation(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        title: str | None = None,
        settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> Conversation:
        conversation_id = conversation_id or str(uuid.uuid4())
        self._check_embeddings(messages)
        if title is None:
            title = next((title_from(m.content) for m in messages if m.role == "user"), None)
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO conversations (conversation_id, user_id, title, settings, metadata)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (conversation_id) DO NOTHING RETURNING 1",
                (conversation_id, user_id, title, Jsonb(settings or {}), Jsonb(metadata or {})),
            ).fetchone()
            if row is None:
                raise Conflict(f"conversation {conversation_id!r} already exists")
            if messages:
                self._append(conn, conversation_id, user_id, messages)
            return self._get(conn, conversation_id, user_id, None)

    def get_conversation(
        self, conversation_id: str, *, user_id: str | None = None, messages_limit: int | None = None
    ) -> Conversation:
        with self._conn() as conn, conn.transaction():
            # One snapshot, so message_count and messages agree.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._get(conn, conversation_id, user_id, messages_limit)

    def _get(
        self, conn: psycopg.Connection, conversation_id: str, user_id: str | None, messages_limit: int | None
    ) -> Conversation:
        params = {"id": conversation_id, "user_id": user_id, "limit": messages_limit}
        with conn.cursor(row_factory=dict_row) as cur:
            head = cur.execute(
                f"SELECT {_SUMMARY_COLUMNS}, c.settings, c.metadata FROM conversations c"
                f" WHERE c.conversation_id = %(id)s AND {_OWNED}",
                params,
            ).fetchone()
        if head is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        with conn.cursor(row_factory=class_row(Message)) as cur:
            if messages_limit is None:
                messages = cur.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = %(id)s ORDER BY m.seq",
                    params,
                ).fetchall()
            else:
                messages = cur.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = %(id)s"
                    " ORDER BY m.seq DESC LIMIT %(limit)s",
                    params,
                ).fetchall()
                messages.reverse()
        return Conversation(**head, messages=messages)

    def list_conversations(
        self, *, user_id: str | None = None, limit: int = 20, cursor: ConversationCursor | None = None
    ) -> Page:
        params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
        where = [_OWNED]
        if cursor is not None:
            where.append("(c.updated_at, c.conversation_id) < (%(after_ts)s, %(after_id)s)")
            params.update(after_ts=cursor.updated_at, after_id=cursor.conversation_id)
        with self._conn() as conn, conn.cursor(row_factory=class_row(ConversationSummary)) as cur:
            rows = cur.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE {' AND '.join(where)}"
                " ORDER BY c.updated_at DESC, c.conversation_id DESC LIMIT %(limit)s",
                params,
            ).fetchall()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = ConversationCursor(last.updated_at, last.conversation_id).encode()
        return Page(rows, next_cursor)

    def update_conversation(
        self,
        conversation_id: str,
        *,
        user_id: str | None = None,
        title: str | None = None,
        settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        """Replace the given fields; None leaves a field as it is."""
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE conversations c SET"
                " title = coalesce(%(title)s, c.title),"
                " settings = coalesce(%(settings)s, c.settings),"
                " metadata = coalesce(%(metadata)s, c.metadata),"
                " updated_at = now()"
                f" WHERE c.conversation_id = %(id)s AND {_OWNED} RETURNING 1",
                {
                    "id": conversation_id,
                    "user_id": user_id,
                    "title": title,
                    "settings": None if settings is None else Jsonb(settings),
                    "metadata": None if metadata is None else Jsonb(metadata),
                },
            ).fetchone()
            if row is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            return self._get(conn, conversation_id, user_id, 0)

    def delete_conversation(self, conversation_id: str, *, user_id: str | None = None) -> None:
        with self._conn() as conn:
            deleted = conn.execute(
                f"DELETE FROM conversations c WHERE c.conversation_id = %(id)s AND {_OWNED}",
                {"id": conversation_id, "user_id": user_id},
            ).rowcount
        if not deleted:
            raise NotFound(f"conversation {conversation_id!r} not found")

    # ------------------------------------------------------------ messages

    def append_messages(
        self, conversation_id: str, messages: Sequence[NewMessage], *, user_id: str | None = None
    ) -> list[Message]:
        if not messages:
            raise InvalidInput("no messages to append")
        self._check_embeddings(messages)
        with self._conn() as conn, conn.transaction():
            return self._append(conn, conversation_id, user_id, messages)

    def _append(
        self, conn: psycopg.Connection, conversation_id: str, user_id: str | None, messages: Sequence[NewMessage]
    ) -> list[Message]:
        # One statement: bump message_count (which locks the conversation row, so
        # concurrent appends serialise and get distinct sequence numbers), take a title
        # from the first user message if there is none, and insert the rows.
        first_user = next((title_from(m.content) for m in messages if m.role == "user"), None)
        with conn.cursor(row_factory=class_row(Message)) as cur:
            rows = cur.execute(
                "WITH c AS ("
                "  UPDATE conversations c SET message_count = c.message_count + %(n)s,"
                "   updated_at = now(), title = coalesce(c.title, %(title)s)"
                f"  WHERE c.conversation_id = %(id)s AND {_OWNED}"
                "  RETURNING c.message_count),"
                " m AS ("
                "  INSERT INTO messages (conversation_id, seq, role, content, metadata, embedding, created_at)"
                "  SELECT %(id)s, c.message_count - %(n)s + i.ord, i.role, i.content, i.metadata,"
                "         i.embedding::vector, coalesce(i.created_at, now())"
                "  FROM c, unnest(%(roles)s::text[], %(contents)s::text[], %(metadata)s::jsonb[],"
                "                 %(embeddings)s::text[], %(created)s::timestamptz[])"
                "       WITH ORDINALITY AS i(role, content, metadata, embedding, created_at, ord)"
                "  RETURNING *)"
                f" SELECT {_MESSAGE_COLUMNS} FROM m ORDER BY m.seq",
                {
                    "id": conversation_id,
                    "user_id": user_id,
                    "n": len(messages),
                    "title": first_user,
                    "roles": [m.role for m in messages],
                    "contents": [m.content for m in messages],
                    "metadata": [Jsonb(m.metadata or {}) for m in messages],
                    "embeddings": [_vector_literal(m.embedding) for m in messages],
                    "created": [m.created_at for m in messages],
                },
            ).fetchall()
        if not rows:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return rows

    def list_messages(
        self,
        conversation_id: str,
        *,
        user_id: str | None = None,
        after: int = 0,
        before: int | None = None,
        limit: int = 100,
    ) -> Page:
        """A page of messages, oldest first. With ``after``, the ``limit`` messages following
        that sequence number (``next_cursor`` continues forward); with ``before``, the
        ``limit`` messages just before it (``next_cursor`` continues backward)."""
        params = {"id": conversation_id, "user_id": user_id, "after": after, "before": before, "limit": limit + 1}
        with self._conn() as conn, conn.transaction():
            owned = conn.execute(
                f"SELECT 1 FROM conversations c WHERE c.conversation_id = %(id)s AND {_OWNED}", params
            ).fetchone()
            if owned is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            with conn.cursor(row_factory=class_row(Message)) as cur:
                if before is None:
                    rows = cur.execute(
                        f"SELECT {_MESSAGE_COLUMNS} FROM messages m"
                        " WHERE m.conversation_id = %(id)s AND m.seq > %(after)s ORDER BY m.seq LIMIT %(limit)s",
                        params,
                    ).fetchall()
                else:
                    rows = cur.execute(
                        f"SELECT {_MESSAGE_COLUMNS} FROM messages m"
                        " WHERE m.conversation_id = %(id)s AND m.seq < %(before)s ORDER BY m.seq DESC LIMIT %(limit)s",
                        params,
                    ).fetchall()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = str(rows[-1].seq)
        if before is not None:
            rows.reverse()
        return Page(rows, next_cursor)

    # ------------------------------------------------------------ search

    def search(self, query: str, *, user_id: str | None = None, limit: int = 20) -> list[SearchHit]:
        with self._conn() as conn, conn.cursor(row_factory=class_row(SearchHit)) as cur:
            return cur.execute(
                "SELECT m.conversation_id, c.title, m.id AS message_id, m.seq, m.role, m.created_at,"
                "  ts_headline('simple'::regconfig, left(m.content, 100000), q,"
                "              'MaxFragments=1, MaxWords=24, MinWords=8') AS snippet,"
                f" ts_rank({FTS_DOCUMENT}, q)::float8 AS rank"
                " FROM websearch_to_tsquery('simple'::regconfig, %(q)s) AS q,"
                "      messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                f" WHERE {FTS_DOCUMENT} @@ q AND {_OWNED}"
                " ORDER BY rank DESC, m.id DESC LIMIT %(limit)s",
                {"q": query, "user_id": user_id, "limit": limit},
            ).fetchall()

    def similar(
        self,
        embedding: Sequence[float],
        *,
        user_id: str | None = None,
        limit: int = 10,
        conversation_id: str | None = None,
    ) -> list[SimilarHit]:
        self._check_embedding(embedding)
        with self._conn() as conn, conn.transaction():
            # HNSW returns at most ef_search candidates; ask for at least as many as wanted.
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(40, limit * 2)),))
            with conn.cursor(row_factory=class_row(SimilarHit)) as cur:
                return cur.execute(
                    "SELECT m.conversation_id, m.id AS message_id, m.seq, m.role, m.content, m.created_at,"
                    "  (m.embedding <=> %(v)s::vector)::float8 AS distance"
                    " FROM messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                    f" WHERE m.embedding IS NOT NULL AND {_OWNED}"
                    "   AND (%(cid)s::text IS NULL OR m.conversation_id = %(cid)s)"
                    " ORDER BY m.embedding <=> %(v)s::vector LIMIT %(limit)s",
                    {"v": _vector_literal(embedding), "user_id": user_id, "cid": conversation_id, "limit": limit},
                ).fetchall()

    # ------------------------------------------------------------ import / export

    def import_conversations(self, records: Sequence[ConversationRecord]) -> list[str]:
        """Insert whole conversations with their own timestamps, in one transaction; a
        conversation whose id already exists is left alone. Returns the ids inserted."""
        for record in records:
            self._check_embeddings(record.messages)
        with self._conn() as conn, conn.transaction():
            inserted: list[str] = []
            with conn.cursor() as cur:
                for record in records:
                    row = cur.execute(
                        "INSERT INTO conversations (conversation_id, user_id, title, settings, metadata,"
                        " created_at, updated_at, message_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (conversation_id) DO NOTHING RETURNING conversation_id",
                        (
                            record.conversation_id,
                            record.user_id,
                            record.title,
                            Jsonb(record.settings),
                            Jsonb(record.metadata),
                            record.created_at,
                            record.updated_at,
                            len(record.messages),
                        ),
                    ).fetchone()
                    if row is not None:
                        inserted.append(record.conversation_id)
            fresh = set(inserted)
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY messages (conversation_id, seq, role, content, metadata, embedding, created_at) FROM STDIN"
                ) as copy,
            ):
                for record in records:
                    if record.conversation_id not in fresh:
                        continue
                    for seq, message in enumerate(record.messages, start=1):
                        copy.write_row(
                            (
                                record.conversation_id,
                                seq,
                                message.role,
                                message.content,
                                json.dumps(message.metadata or {}),
                                _vector_literal(message.embedding),
                                message.created_at or record.created_at,
                            )
                        )
            return inserted

    def export_conversations(self, *, user_id: str | None = None, batch: int = 200) -> Iterator[ConversationRecord]:
        """Every conversation (or one user's) with all its messages, in id order, a batch
        at a time, so memory stays flat however large the store is."""
        after = ""
        while True:
            with self._conn() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                with conn.cursor(row_factory=dict_row) as cur:
                    heads = cur.execute(
                        "SELECT c.conversation_id, c.user_id, c.title, c.settings, c.metadata, c.created_at,"
                        " c.updated_at FROM conversations c"
                        f" WHERE c.conversation_id > %(after)s AND {_OWNED}"
                        " ORDER BY c.conversation_id LIMIT %(batch)s",
                        {"after": after, "user_id": user_id, "batch": batch},
                    ).fetchall()
                    if not heads:
                        return
                    messages: dict[str, list[NewMessage]] = {h["conversation_id"]: [] for h in heads}
                    for row in cur.execute(
                        "SELECT conversation_id, role, content, metadata, embedding::text AS embedding, created_at"
                        " FROM messages WHERE conversation_id = ANY(%s) ORDER BY conversation_id, seq",
                        ([h["conversation_id"] for h in heads],),
                    ):
                        embedding = json.loads(row["embedding"]) if row["embedding"] else None
                        messages[row["conversation_id"]].append(
                            NewMessage(row["role"], row["content"], row["metadata"], embedding, row["created_at"])
                        )
            for head in heads:
                yield ConversationRecord(messages=messages[head["conversation_id"]], **head)
            after = heads[-1]["conversation_id"]

    def message_counts(self, conversation_ids: Sequence[str]) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT conversation_id, count(*) FROM messages WHERE conversation_id = ANY(%s) GROUP BY 1",
                (list(conversation_ids),),
            ).fetchall()
        return {cid: int(n) for cid, n in rows}

    # ------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT current_setting('server_version') AS server_version,"
                " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version,"
                f" (SELECT coalesce(max(version), 0) FROM {LEDGER_TABLE}) AS schema_version,"
                " (SELECT count(*) FROM conversations) AS active_conversations"
            ).fetchone()
        assert row is not None
        return row

    # ------------------------------------------------------------ helpers

    def _check_embeddings(self, messages: Sequence[NewMessage]) -> None:
        for message in messages:
            if message.embedding is not None:
                self._check_embedding(message.embedding)

    def _check_embedding(self, embedding: Sequence[float]) -> None:
        if len(embedding) != self.embedding_dimension:
            raise InvalidInput(
                f"embedding has {len(embedding)} dimensions; this deployment uses {self.embedding_dimension}"
            )
        if any(value != value or value in (float("inf"), float("-inf")) for value in embedding):
            raise InvalidInput("embedding values must be finite numbers")


def _vector_literal(embedding: Sequence[float] | None) -> str | None:
    return None if embedding is None else json.dumps([float(v) for v in embedding])
