"""All of the service's SQL. No HTTP here: callers get rows or a StoreError."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
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

# How many of the most recent matching messages a search ranks.
SEARCH_CANDIDATES = 500
# Must match the expression of messages_content_fts_idx (migration 0003) exactly.
FTS_DOCUMENT = "to_tsvector('simple'::regconfig, left(m.content, 100000))"

_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.role, m.content, m.metadata, m.created_at,"
    " m.embedding IS NOT NULL AS has_embedding"
)
_SUMMARY_COLUMNS = "c.conversation_id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count"
# A caller with a user id sees only its own conversations; without one, every conversation.
_OWNED = "(%(user_id)s::text IS NULL OR c.user_id = %(user_id)s)"
# How many index tuples an iterative similarity scan may visit to fill a scoped result
# (pgvector's default is 20,000): the bound on a similarity search's work.
SIMILAR_MAX_SCAN_TUPLES = 100_000


class StoreError(Exception):
    """A request the store refuses; the API maps each subclass to its own status and error code."""


class NotFound(StoreError):
    """No such conversation (or not the caller's)."""


class Conflict(StoreError):
    """The conversation id is taken."""


class InvalidInput(StoreError):
    """Input the database would reject (an embedding of the wrong dimension, say)."""


class IdempotencyKeyReused(StoreError):
    """An Idempotency-Key seen before with a different request."""


IDEMPOTENCY_TTL = "24 hours"


class Store:
    def __init__(self, pool: ConnectionPool, *, embedding_dimension: int, timeout: float = 5.0) -> None:
        self.pool = pool
        self.embedding_dimension = embedding_dimension
        self.timeout = timeout

    @contextmanager
    def _conn(self, existing: psycopg.Connection | None = None) -> Iterator[psycopg.Connection]:
        if existing is not None:  # already inside a caller's transaction
            yield existing
            return
        with self.pool.connection(timeout=self.timeout) as conn:
            # Autocommit: a single statement is its own transaction (one round trip, no
            # BEGIN/COMMIT); work that needs more opens conn.transaction() explicitly.
            if not conn.autocommit:
                conn.autocommit = True
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
        conn: psycopg.Connection | None = None,
    ) -> Conversation:
        conversation_id = conversation_id or str(uuid.uuid4())
        self._check_embeddings(messages)
        if title is None:
            title = next((title_from(m.content) for m in messages if m.role == "user"), None)
        with self._conn(conn) as conn, conn.transaction():
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
        with self._conn() as conn:
            return self._get(conn, conversation_id, user_id, messages_limit)

    def _get(
        self, conn: psycopg.Connection, conversation_id: str, user_id: str | None, messages_limit: int | None
    ) -> Conversation:
        params = {"id": conversation_id, "user_id": user_id, "limit": messages_limit}
        order = "ORDER BY m.seq" if messages_limit is None else "ORDER BY m.seq DESC LIMIT %(limit)s"
        # Both reads in one snapshot (message_count and messages agree) and, pipelined, in
        # one network round trip.
        own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        head_cur = conn.cursor(row_factory=dict_row)
        messages_cur = conn.cursor(row_factory=class_row(Message))
        with conn.pipeline():
            if own:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            head_cur.execute(
                f"SELECT {_SUMMARY_COLUMNS}, c.settings, c.metadata FROM conversations c"
                f" WHERE c.conversation_id = %(id)s AND {_OWNED}",
                params,
            )
            messages_cur.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = %(id)s {order}", params
            )
            if own:
                conn.execute("COMMIT")
        head = head_cur.fetchone()
        messages = messages_cur.fetchall()
        if head is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        if messages_limit is not None:
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
        """Replace the given fields; None leaves a field as it is. Returns the conversation
        without its messages."""
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "UPDATE conversations c SET"
                " title = coalesce(%(title)s, c.title),"
                " settings = coalesce(%(settings)s, c.settings),"
                " metadata = coalesce(%(metadata)s, c.metadata),"
                " updated_at = now()"
                f" WHERE c.conversation_id = %(id)s AND {_OWNED}"
                f" RETURNING {_SUMMARY_COLUMNS}, c.settings, c.metadata",
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
        return Conversation(**row)

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
        self,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        user_id: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> list[Message]:
        if not messages:
            raise InvalidInput("no messages to append")
        self._check_embeddings(messages)
        with self._conn(conn) as conn:
            # One statement: atomic on its own.
            return self._append(conn, conversation_id, user_id, messages)

    def _append(
        self, conn: psycopg.Connection, conversation_id: str, user_id: str | None, messages: Sequence[NewMessage]
    ) -> list[Message]:
        first_user = next((title_from(m.content) for m in messages if m.role == "user"), None)
        bump = (
            "WITH c AS ("
            "  UPDATE conversations c SET message_count = c.message_count + %(n)s,"
            "   updated_at = now(), title = coalesce(c.title, %(title)s)"
            f"  WHERE c.conversation_id = %(id)s AND {_OWNED}"
            "  RETURNING c.message_count),"
        )
        params: dict[str, Any] = {"id": conversation_id, "user_id": user_id, "n": len(messages), "title": first_user}
        if len(messages) == 1:
            # The hot path, one message: plain parameters, no arrays to build and unnest.
            (message,) = messages
            source = (
                " m AS ("
                "  INSERT INTO messages (conversation_id, seq, role, content, metadata, embedding, created_at)"
                "  SELECT %(id)s, c.message_count, %(role)s, %(content)s, %(metadata)s,"
                "         %(embedding)s::vector, coalesce(%(created)s::timestamptz, now()) FROM c"
                "  RETURNING *)"
            )
            params.update(
                role=message.role,
                content=message.content,
                metadata=Jsonb(message.metadata or {}),
                embedding=_vector_literal(message.embedding),
                created=message.created_at,
            )
        else:
            source = (
                " m AS ("
                "  INSERT INTO messages (conversation_id, seq, role, content, metadata, embedding, created_at)"
                "  SELECT %(id)s, c.message_count - %(n)s + i.ord, i.role, i.content, i.metadata,"
                "         i.embedding::vector, coalesce(i.created_at, now())"
                "  FROM c, unnest(%(roles)s::text[], %(contents)s::text[], %(metadata)s::jsonb[],"
                "                 %(embeddings)s::text[], %(created)s::timestamptz[])"
                "       WITH ORDINALITY AS i(role, content, metadata, embedding, created_at, ord)"
                "  RETURNING *)"
            )
            params.update(
                roles=[m.role for m in messages],
                contents=[m.content for m in messages],
                metadata=[Jsonb(m.metadata or {}) for m in messages],
                embeddings=[_vector_literal(m.embedding) for m in messages],
                created=[m.created_at for m in messages],
            )
        with conn.cursor(row_factory=class_row(Message)) as cur:
            # One statement: bump message_count (which locks the conversation row, so
            # concurrent appends serialise and get distinct sequence numbers), take a title
            # from the first user message if there is none, and insert the rows.
            rows = cur.execute(f"{bump}{source} SELECT {_MESSAGE_COLUMNS} FROM m ORDER BY m.seq", params).fetchall()
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
        if before is None:
            page_sql = "m.seq > %(after)s ORDER BY m.seq LIMIT %(limit)s"
        else:
            page_sql = "m.seq < %(before)s ORDER BY m.seq DESC LIMIT %(limit)s"
        with self._conn() as conn:
            owner_cur = conn.cursor()
            rows_cur = conn.cursor(row_factory=class_row(Message))
            with conn.pipeline():
                owner_cur.execute(
                    f"SELECT 1 FROM conversations c WHERE c.conversation_id = %(id)s AND {_OWNED}", params
                )
                rows_cur.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = %(id)s AND {page_sql}",
                    params,
                )
            if owner_cur.fetchone() is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            rows = rows_cur.fetchall()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = str(rows[-1].seq)
        if before is not None:
            rows.reverse()
        return Page(rows, next_cursor)

    # ------------------------------------------------------------ search

    def search(self, query: str, *, user_id: str | None = None, limit: int = 20) -> list[SearchHit]:
        """Full-text search: the best-ranked matches among the most recent
        ``SEARCH_CANDIDATES`` matching messages. Bounding the candidates keeps a query for a
        common word as cheap as one for a rare word; ranking and snippets run on that set."""
        with self._conn() as conn, conn.cursor(row_factory=class_row(SearchHit)) as cur:
            return cur.execute(
                "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, %(q)s) AS q),"
                " candidates AS ("
                "  SELECT m.id FROM q, messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                f"  WHERE {FTS_DOCUMENT} @@ q.q AND {_OWNED}"
                # "+ 0" keeps the planner off the primary key: walking it newest-first and
                # testing each row's text would read the whole table for a rare term.
                "  ORDER BY m.id + 0 DESC LIMIT %(candidates)s),"
                " ranked AS ("
                f"  SELECT m.id, ts_rank({FTS_DOCUMENT}, q.q)::float8 AS rank"
                "  FROM q, candidates JOIN messages m ON m.id = candidates.id"
                "  ORDER BY rank DESC, m.id DESC LIMIT %(limit)s)"
                " SELECT m.conversation_id, c.title, m.id AS message_id, m.seq, m.role, m.created_at,"
                "  ts_headline('simple'::regconfig, left(m.content, 100000), q.q,"
                "              'MaxFragments=1, MaxWords=24, MinWords=8') AS snippet, ranked.rank"
                " FROM q, ranked JOIN messages m ON m.id = ranked.id"
                " JOIN conversations c ON c.conversation_id = m.conversation_id"
                " ORDER BY ranked.rank DESC, m.id DESC",
                {"q": query, "user_id": user_id, "limit": limit, "candidates": SEARCH_CANDIDATES},
                # Never a prepared, generic plan: without the search term the planner cannot
                # tell a rare word (an index lookup) from a common one, and picks a scan.
                prepare=False,
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
            # A scope (a user, a conversation) filters the index's candidates afterwards: with a
            # plain scan, a scope far from the query gets fewer hits than it holds, even none.
            # pgvector 0.8's iterative scan keeps fetching candidates until the limit is met (or
            # hnsw.max_scan_tuples are visited); relaxed order is re-sorted below.
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            conn.execute("SELECT set_config('hnsw.max_scan_tuples', %s, true)", (str(SIMILAR_MAX_SCAN_TUPLES),))
            with conn.cursor(row_factory=class_row(SimilarHit)) as cur:
                return cur.execute(
                    "WITH hits AS MATERIALIZED ("
                    "  SELECT m.conversation_id, m.id AS message_id, m.seq, m.role, m.content, m.created_at,"
                    "    (m.embedding <=> %(v)s::vector)::float8 AS distance"
                    "  FROM messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                    f"  WHERE m.embedding IS NOT NULL AND {_OWNED}"
                    "    AND (%(cid)s::text IS NULL OR m.conversation_id = %(cid)s)"
                    "  ORDER BY m.embedding <=> %(v)s::vector LIMIT %(limit)s)"
                    " SELECT * FROM hits ORDER BY distance, message_id",
                    {"v": _vector_literal(embedding), "user_id": user_id, "cid": conversation_id, "limit": limit},
                ).fetchall()

    # ------------------------------------------------------------ idempotency

    def idempotent(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        write: Callable[[psycopg.Connection], tuple[int, Any]],
    ) -> tuple[int, Any, bool]:
        """Run ``write`` at most once per (scope, key): its status and JSON body are stored
        in the same transaction, and a repeat returns them (third value True) instead of
        writing again. Reusing a key for a different request is an error."""
        with self._conn() as conn, conn.transaction():
            fresh = conn.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES (%s, %s, %s)"
                " ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                (scope, key, fingerprint),
            ).fetchone()
            if fresh is None:
                # The first request committed (a concurrent one waited on the key's lock).
                row = conn.execute(
                    "SELECT fingerprint, status, response FROM idempotency_keys WHERE scope = %s AND key = %s",
                    (scope, key),
                ).fetchone()
                assert row is not None
                if row[0] != fingerprint:
                    raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
                return int(row[1]), row[2], True
            status, body = write(conn)
            conn.execute(
                "UPDATE idempotency_keys SET status = %s, response = %s WHERE scope = %s AND key = %s",
                (status, Jsonb(body), scope, key),
            )
            if random.random() < 0.01:  # noqa: S311 - housekeeping, not security
                conn.execute(f"DELETE FROM idempotency_keys WHERE created_at < now() - interval '{IDEMPOTENCY_TTL}'")
            return status, body, False

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
