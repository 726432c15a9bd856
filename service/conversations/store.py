"""All of the service's SQL. No HTTP here: callers get rows or a StoreError."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from .database import DatabaseUnreachable, Reachability, Replica
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
    embedding_problem,
    title_from,
)

# While waiting for a connection, how often a request looks whether the database has been
# found unreachable meanwhile.
LEND_SLICE_S = 0.2
# While a read waits for the replica to catch up, how often it asks again.
REPLAY_POLL_S = 0.002

log = logging.getLogger("conversations.store")
T = TypeVar("T")
# The bounds on one response's messages: rows, and bytes of content and metadata (a page
# holds at least one message, whatever its size; models.MAX_CONTENT_CHARS bounds that one).
MAX_PAGE_MESSAGES = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024
# A similarity hit carries the first this many characters of its message.
SIMILAR_CONTENT_CHARS = 20_000
# How many of the most recent matching messages a search ranks.
SEARCH_CANDIDATES = 500
# How many of the newest messages a search walks before it turns to the index.
SEARCH_WINDOW = 20_000
# How long the older matches may take to be put in recency order before the search ranks the
# first ones the index finds instead.
SEARCH_ORDERED_BUDGET_MS = 50
# A caller with at most this many messages has its own messages searched directly.
SCOPE_FIRST_MESSAGES = 100_000
# Snippets are cut from the first this many characters of a hit.
SNIPPET_SOURCE_CHARS = 100_000

_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.role, m.content, m.metadata, m.created_at,"
    " m.embedding IS NOT NULL AS has_embedding"
)
# _MESSAGE_COLUMNS are Message's fields, in its order.
_MESSAGE_FIELDS = len(fields(Message))
_SUMMARY_COLUMNS = "c.conversation_id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count"
# A conversation's own columns: Conversation's first fields, in its order.
_HEAD_COLUMNS = (
    "conversation_id",
    "user_id",
    "title",
    "created_at",
    "updated_at",
    "message_count",
    "settings",
    "metadata",
)
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


class InvalidSearch(StoreError):
    """A search query that cannot be answered usefully (only excluded words)."""


class SearchTimeout(StoreError):
    """A search that ran past its own statement timeout: the query is too broad, the database
    is not down."""


class IdempotencyKeyReused(StoreError):
    """An Idempotency-Key seen before with a different request."""


@dataclass(frozen=True)
class Idempotency:
    """A POST's Idempotency-Key: whose it is (``scope``), the key, and a fingerprint of the
    request it came with (the same key with another request is refused)."""

    scope: str
    key: str
    fingerprint: str


IDEMPOTENCY_TTL = "24 hours"
CREATED = 201
# A stored response larger than this is kept as a reference to what was written.
MAX_STORED_RESPONSE_BYTES = 64 * 1024
REPLAY_REF = "$replay"


class Store:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        embedding_dimension: int,
        timeout: float = 5.0,
        search_timeout_ms: int = 2_000,
        reachability: Reachability | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.pool = pool
        self.reachability = reachability
        self.replica = replica
        self._replica_warned = False
        self.embedding_dimension = embedding_dimension
        self.timeout = timeout
        self.search_timeout_ms = search_timeout_ms

    @contextmanager
    def _conn(self, existing: psycopg.Connection | None = None) -> Iterator[psycopg.Connection]:
        if existing is not None:  # already inside a caller's transaction
            yield existing
            return
        conn = self._lend()
        try:
            # Autocommit: a single statement is its own transaction (one round trip, no
            # BEGIN/COMMIT); work that needs more opens conn.transaction() explicitly.
            if not conn.autocommit:
                conn.autocommit = True
            yield conn
        finally:
            self.pool.putconn(conn)

    def _lend(self) -> psycopg.Connection:
        """A connection from the pool within ``timeout``; at once DatabaseUnreachable while
        the database is known to be unreachable (checked again every LEND_SLICE_S of waiting,
        so a request queued when it goes down does not wait out the whole timeout)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self.reachability is not None and self.reachability.down:
                raise DatabaseUnreachable("the database is unreachable")
            remaining = deadline - time.monotonic()
            try:
                return self.pool.getconn(timeout=max(min(LEND_SLICE_S, remaining), 0.001))
            except PoolTimeout:
                if remaining <= LEND_SLICE_S:
                    raise

    def _read(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` (a read that tolerates replication lag: list, search, similar) on the read
        replica when there is one that is reachable and has caught up, else on the writer.

        Read-your-writes: first the writer's current WAL insert position is read (one short
        round trip; the insert position, not the write position, so that a commit not yet
        flushed, under synchronous_commit=off, is covered too); the replica is used only once
        it has replayed up to that position, so it holds every write committed before this
        read began, whichever task or caller made it. A replica that has not caught up within
        ``replica.wait_s`` leaves the read to the writer; one that fails (down, restarting, or
        cancelling the query for a recovery conflict) does too, and the read is run again
        there: it only reads, so running it twice is safe."""
        replica = self.replica
        if replica is not None and not replica.reachability.down:
            conn = self._caught_up(replica)
            if conn is not None:
                try:
                    return work(conn)
                except (psycopg.OperationalError, psycopg.errors.SerializationFailure) as exc:
                    if not conn.closed and not isinstance(exc, psycopg.errors.SerializationFailure):
                        raise  # the query's own failure (a timeout, say), not the replica's
                    log.warning("read replica failed; the writer answers", extra={"error_type": type(exc).__name__})
                finally:
                    replica.pool.putconn(conn)
        with self._conn() as conn:
            return work(conn)

    def _caught_up(self, replica: Replica) -> psycopg.Connection | None:
        """A replica connection that has replayed every write committed so far, or None."""
        with self._conn() as writer:
            row = writer.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        assert row is not None
        fence = row[0]
        try:
            conn = replica.pool.getconn(timeout=min(self.timeout, 1.0))
        except (PoolTimeout, psycopg.OperationalError):
            return None
        try:
            if not conn.autocommit:
                conn.autocommit = True
            deadline = time.monotonic() + replica.wait_s
            while True:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn() IS NULL", (fence,)
                ).fetchone()
                assert row is not None
                if row[0]:
                    return conn
                if row[1]:
                    self._not_a_replica()
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(REPLAY_POLL_S)
        except (psycopg.OperationalError, psycopg.errors.SerializationFailure):
            pass
        replica.pool.putconn(conn)
        return None

    def _not_a_replica(self) -> None:
        if not self._replica_warned:
            self._replica_warned = True
            log.warning(
                "the read endpoint reports no replayed WAL position (not a streaming replica):"
                " every read goes to the writer"
            )

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
        new_id, new_title = self._new_conversation(conversation_id, title, messages)
        with self._conn() as conn, conn.transaction():
            return self._create(conn, user_id, settings, metadata, messages, new_id, new_title)

    def create_conversation_once(
        self,
        idempotency: Idempotency,
        render: Callable[[Conversation], bytes],
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        title: str | None = None,
        settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> tuple[bytes, bool]:
        """create_conversation at most once per Idempotency-Key (see ``_once``): the response
        body ``render`` makes of the new conversation, and whether it is a replay."""
        new_id, new_title = self._new_conversation(conversation_id, title, messages)

        def write(conn: psycopg.Connection) -> tuple[bytes, dict[str, Any]]:
            created = self._create(conn, user_id, settings, metadata, messages, new_id, new_title)
            return render(created), {"conversation_id": created.conversation_id, "messages": len(created.messages)}

        def expand(ref: dict[str, Any]) -> bytes:
            # The conversation as it is now, with the messages that request created.
            created = self.get_conversation(ref["conversation_id"], user_id=user_id)
            created.messages = [m for m in created.messages if m.seq <= ref["messages"]]
            last = created.messages[-1].seq if created.messages else 0
            created.messages_after_cursor = str(last) if last < ref["messages"] else None
            return render(created)

        return self._once(idempotency, write, expand)

    def _new_conversation(
        self, conversation_id: str | None, title: str | None, messages: Sequence[NewMessage]
    ) -> tuple[str, str | None]:
        self.check_embeddings(messages)
        if title is None:
            title = next((title_from(m.content) for m in messages if m.role == "user"), None)
        return conversation_id or str(uuid.uuid4()), title

    def _create(
        self,
        conn: psycopg.Connection,
        user_id: str | None,
        settings: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        messages: Sequence[NewMessage],
        conversation_id: str,
        title: str | None,
    ) -> Conversation:
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
        """The conversation with a bounded page of its messages: the first ones, or with
        ``messages_limit`` the last that many; never more than MAX_PAGE_MESSAGES messages or
        (past the first) MAX_PAGE_BYTES. The cursors on the result continue from there."""
        head, messages, _ = self._page(
            conn,
            conversation_id,
            user_id,
            _HEAD_COLUMNS,
            forward=messages_limit is None,
            limit=MAX_PAGE_MESSAGES if messages_limit is None else messages_limit,
        )
        conversation = Conversation(*head)
        conversation.messages = messages
        if messages:
            if messages[0].seq > 1:
                conversation.messages_before_cursor = str(messages[0].seq)
            if messages[-1].seq < conversation.message_count:
                conversation.messages_after_cursor = str(messages[-1].seq)
        elif messages_limit == 0 and conversation.message_count:
            conversation.messages_before_cursor = str(conversation.message_count + 1)
        return conversation

    def _page(
        self,
        conn: psycopg.Connection,
        conversation_id: str,
        user_id: str | None,
        head_columns: Sequence[str],
        *,
        forward: bool,
        limit: int,
        after: int = 0,
        before: int | None = None,
    ) -> tuple[tuple[Any, ...], list[Message], bool]:
        """The conversation's ``head_columns`` and a page of its messages in seq order (forward:
        after ``after``; backward: the last ``limit`` before ``before``), oldest first, bounded
        by ``limit`` rows and MAX_PAGE_BYTES (a page holds at least one message, whatever its
        size), and whether more messages lie beyond it. NotFound unless the caller owns the
        conversation, and then no message is read.

        One statement, so one snapshot (the head's message_count and the page agree) and one
        round trip: the head joined to the page, its columns filled on the first row only."""
        params = {
            "id": conversation_id,
            "user_id": user_id,
            "after": after,
            "before": before if before is not None else 2_147_483_647,
            "limit": limit + 1,
            "bytes": MAX_PAGE_BYTES,
        }
        order = "m.seq" if forward else "m.seq DESC"
        page = "m.seq > %(after)s" if forward else "m.seq < %(before)s"
        head = ", ".join(f"CASE WHEN coalesce(p.rn, 1) = 1 THEN h.{column} END" for column in head_columns)
        # The sizes come from the stored values' headers (octet_length does not read a
        # TOASTed text; pg_column_size is the stored, maybe compressed, size of the metadata):
        # rows past the budget are never read from storage or sent. LATERAL: the page is read
        # only for a conversation the head query found.
        rows = conn.execute(
            f"SELECT {head}, p.* FROM (SELECT {', '.join(head_columns)} FROM conversations c"
            f"  WHERE c.conversation_id = %(id)s AND {_OWNED}) h"
            " LEFT JOIN LATERAL (SELECT * FROM (SELECT q.*, count(*) OVER () AS fetched FROM ("
            f"  SELECT {_MESSAGE_COLUMNS}, octet_length(m.content) + pg_column_size(m.metadata) AS size,"
            f"   sum(octet_length(m.content) + pg_column_size(m.metadata)) OVER (ORDER BY {order}) AS upto,"
            f"   row_number() OVER (ORDER BY {order}) AS rn"
            f"  FROM messages m WHERE m.conversation_id = h.conversation_id AND {page}"
            f"  ORDER BY {order} LIMIT %(limit)s) q) r"
            " WHERE r.upto <= %(bytes)s OR r.upto = r.size) p ON true ORDER BY p.rn",
            params,
        ).fetchall()
        if not rows:
            raise NotFound(f"conversation {conversation_id!r} not found")
        n = len(head_columns)
        # Each row: the head's columns, the message's, then size, upto, rn and fetched (all
        # NULL when the page is empty).
        found = [row for row in rows if row[n] is not None]
        more = bool(found) and (found[0][-1] > len(found) or len(found) > limit)
        messages = [Message(*row[n : n + _MESSAGE_FIELDS]) for row in found[:limit]]
        if not forward:
            messages.reverse()
        return rows[0][:n], messages, more

    def list_conversations(
        self, *, user_id: str | None = None, limit: int = 20, cursor: ConversationCursor | None = None
    ) -> Page:
        params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
        where = [_OWNED]
        if cursor is not None:
            where.append("(c.updated_at, c.conversation_id) < (%(after_ts)s, %(after_id)s)")
            params.update(after_ts=cursor.updated_at, after_id=cursor.conversation_id)

        def read(conn: psycopg.Connection) -> list[ConversationSummary]:
            with conn.cursor(row_factory=class_row(ConversationSummary)) as cur:
                return cur.execute(
                    f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE {' AND '.join(where)}"
                    " ORDER BY c.updated_at DESC, c.conversation_id DESC LIMIT %(limit)s",
                    params,
                ).fetchall()

        rows = self._read(read)
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
        self, conversation_id: str, messages: Sequence[NewMessage], *, user_id: str | None = None
    ) -> list[Message]:
        self._check_new_messages(messages)
        with self._conn() as conn:
            # One statement: atomic on its own.
            return self._append(conn, conversation_id, user_id, messages)

    def append_message_once(
        self,
        idempotency: Idempotency,
        render: Callable[[Message], bytes],
        conversation_id: str,
        message: NewMessage,
        *,
        user_id: str | None = None,
    ) -> tuple[bytes, bool]:
        """Append one message at most once per Idempotency-Key (see ``_once``): the response
        body ``render`` makes of it, and whether it is a replay."""
        self._check_new_messages([message])

        def write(conn: psycopg.Connection) -> tuple[bytes, dict[str, Any]]:
            (appended,) = self._append(conn, conversation_id, user_id, [message])
            return render(appended), {"seq": appended.seq}

        def expand(ref: dict[str, Any]) -> bytes:
            page = self.list_messages(conversation_id, user_id=user_id, after=ref["seq"] - 1, limit=1)
            return render(page.items[0])

        return self._once(idempotency, write, expand)

    def _check_new_messages(self, messages: Sequence[NewMessage]) -> None:
        if not messages:
            raise InvalidInput("no messages to append")
        self.check_embeddings(messages)

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
        """A page of messages, oldest first, at most ``limit`` of them and (past the first)
        MAX_PAGE_BYTES. With ``after``, the messages following that sequence number
        (``next_cursor`` continues forward); with ``before``, the ones just before it
        (``next_cursor`` continues backward)."""
        with self._conn() as conn:
            _, rows, more = self._page(
                conn,
                conversation_id,
                user_id,
                ("conversation_id",),
                forward=before is None,
                limit=limit,
                after=after,
                before=before,
            )
        next_cursor = None
        if more and rows:
            next_cursor = str(rows[-1].seq if before is None else rows[0].seq)
        return Page(rows, next_cursor)

    # ------------------------------------------------------------ search

    def search(self, query: str, *, user_id: str | None = None, limit: int = 20) -> list[SearchHit]:
        """Full-text search: the best-ranked matches among the most recent
        ``SEARCH_CANDIDATES`` matching messages the caller can see.

        The work is bounded whatever the term: a term in nearly every message is found among
        the newest ``SEARCH_WINDOW`` messages (a walk of the primary key that stops there);
        a rarer one is looked up in the GIN index for the older messages; a caller with a
        user id and at most ``SCOPE_FIRST_MESSAGES`` messages has just those read. Ranking
        reads the stored tsvector; only the returned hits are parsed again, for their
        snippets. The search runs under its own statement timeout: past it, SearchTimeout."""

        def read(conn: psycopg.Connection) -> list[SearchHit]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(self.search_timeout_ms),))
                parsed = conn.execute(
                    "SELECT numnode(q), querytree(q) FROM websearch_to_tsquery('simple'::regconfig, %s) AS q",
                    (query,),
                ).fetchone()
                assert parsed is not None
                if parsed[0] == 0:  # nothing searchable: only punctuation, say
                    return []
                if parsed[1] == "T":  # no term that must be present: '-word' alone
                    raise InvalidSearch(
                        "a search needs at least one word to find; '-word' alone would match almost everything"
                    )
                ids = self._search_candidates(conn, query, user_id)
                if not ids:
                    return []
                with conn.cursor(row_factory=class_row(SearchHit)) as cur:
                    return cur.execute(
                        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, %(q)s) AS q),"
                        " ranked AS ("
                        "  SELECT m.id, ts_rank(m.search, q.q)::float8 AS rank FROM q, messages m"
                        "  WHERE m.id = ANY(%(ids)s) ORDER BY rank DESC, m.id DESC LIMIT %(limit)s)"
                        " SELECT m.conversation_id, c.title, m.id AS message_id, m.seq, m.role, m.created_at,"
                        f"  ts_headline('simple'::regconfig, left(m.content, {SNIPPET_SOURCE_CHARS}), q.q,"
                        "              'MaxFragments=1, MaxWords=24, MinWords=8') AS snippet, ranked.rank"
                        " FROM q, ranked JOIN messages m ON m.id = ranked.id"
                        " JOIN conversations c ON c.conversation_id = m.conversation_id"
                        " ORDER BY ranked.rank DESC, m.id DESC",
                        {"q": query, "ids": ids, "limit": limit},
                    ).fetchall()

        try:
            return self._read(read)
        except psycopg.errors.QueryCanceled:
            raise SearchTimeout(
                f"the search took longer than {self.search_timeout_ms} ms and was stopped; use more specific words"
            ) from None

    def _search_candidates(self, conn: psycopg.Connection, query: str, user_id: str | None) -> list[int]:
        params: dict[str, Any] = {"q": query, "user_id": user_id, "n": SEARCH_CANDIDATES, "window": SEARCH_WINDOW}
        term = "m.search @@ websearch_to_tsquery('simple'::regconfig, %(q)s)"
        if user_id is not None:
            row = conn.execute(
                "SELECT coalesce(sum(message_count), 0) FROM conversations WHERE user_id = %s", (user_id,)
            ).fetchone()
            if row is not None and row[0] <= SCOPE_FIRST_MESSAGES:
                # The caller's own messages, conversation by conversation: at most
                # SCOPE_FIRST_MESSAGES rows read, however common the term is elsewhere.
                # OFFSET 0 keeps the subquery from being flattened into a walk of all messages.
                rows = conn.execute(
                    "SELECT hit.id FROM conversations c CROSS JOIN LATERAL ("
                    f"  SELECT m.id FROM messages m WHERE m.conversation_id = c.conversation_id AND {term}"
                    "   OFFSET 0) hit"
                    " WHERE c.user_id = %(user_id)s ORDER BY hit.id + 0 DESC LIMIT %(n)s",
                    params,
                    prepare=False,
                ).fetchall()
                return [r[0] for r in rows]
        # Newest first within the window: stops after SEARCH_WINDOW rows whatever the term.
        owned = (
            "" if user_id is None else f" JOIN conversations c ON c.conversation_id = m.conversation_id AND {_OWNED}"
        )
        row = conn.execute(
            "WITH w AS MATERIALIZED ("
            f"  SELECT m.id, m.conversation_id, {term} AS matched FROM messages m"
            "   ORDER BY m.id DESC LIMIT %(window)s)"
            " SELECT (SELECT min(id) FROM w), array("
            f"  SELECT m.id FROM w m{owned} WHERE m.matched ORDER BY m.id DESC LIMIT %(n)s)",
            params,
            prepare=False,
        ).fetchone()
        assert row is not None
        boundary, ids = row[0], list(row[1])
        if boundary is None or len(ids) >= SEARCH_CANDIDATES:
            return ids
        params.update(n=SEARCH_CANDIDATES - len(ids), boundary=boundary)
        # Older messages through the GIN index, newest first ("+ 0" keeps the planner off walking
        # the primary key, which for a term absent from recent messages reads the whole table).
        # Ordering needs every older match's row: for a term in hundreds of thousands of old
        # messages that alone passes the budget. Then the first matches the index finds in
        # storage order are ranked instead (the oldest, for an append-only table): still
        # matches, found in milliseconds.
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(SEARCH_ORDERED_BUDGET_MS),))
                older = conn.execute(
                    f"SELECT m.id FROM messages m{owned}"
                    f" WHERE {term} AND m.id < %(boundary)s ORDER BY m.id + 0 DESC LIMIT %(n)s",
                    params,
                    # Never a prepared, generic plan: without the term the planner cannot tell a
                    # rare word (an index lookup) from a common one.
                    prepare=False,
                ).fetchall()
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(self.search_timeout_ms),))
        except psycopg.errors.QueryCanceled:
            # Through the index's bitmap only: matching pages in storage order, stopping at the
            # limit. (A sequential scan could start mid-table, where a synchronized scan left
            # off, and read most of it before its first match.)
            conn.execute(
                "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_indexscan', 'off', true)"
            )
            older = conn.execute(
                f"SELECT m.id FROM messages m{owned} WHERE {term} AND m.id < %(boundary)s LIMIT %(n)s",
                params,
                prepare=False,
            ).fetchall()
            conn.execute("SELECT set_config('enable_seqscan', 'on', true), set_config('enable_indexscan', 'on', true)")
        return ids + [r[0] for r in older]

    def similar(
        self,
        embedding: Sequence[float],
        *,
        user_id: str | None = None,
        limit: int = 10,
        conversation_id: str | None = None,
    ) -> list[SimilarHit]:
        self._check_embedding(embedding)

        def read(conn: psycopg.Connection) -> list[SimilarHit]:
            with conn.transaction():
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
                        "  SELECT m.conversation_id, m.id AS message_id, m.seq, m.role, m.created_at,"
                        "    (m.embedding <=> %(v)s::vector)::float8 AS distance"
                        "  FROM messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                        f"  WHERE m.embedding IS NOT NULL AND {_OWNED}"
                        "    AND (%(cid)s::text IS NULL OR m.conversation_id = %(cid)s)"
                        "  ORDER BY m.embedding <=> %(v)s::vector LIMIT %(limit)s)"
                        # Only the hits' text is read, and at most SIMILAR_CONTENT_CHARS of each.
                        " SELECT hits.conversation_id, hits.message_id, hits.seq, hits.role, hits.created_at,"
                        "  hits.distance, left(m.content, %(chars)s) AS content,"
                        "  char_length(left(m.content, %(chars)s + 1)) > %(chars)s AS content_truncated"
                        " FROM hits JOIN messages m ON m.id = hits.message_id ORDER BY hits.distance, hits.message_id",
                        {
                            "v": _vector_literal(embedding),
                            "user_id": user_id,
                            "cid": conversation_id,
                            "limit": limit,
                            "chars": SIMILAR_CONTENT_CHARS,
                        },
                    ).fetchall()

        return self._read(read)

    # ------------------------------------------------------------ idempotency

    def _once(
        self,
        idempotency: Idempotency,
        write: Callable[[psycopg.Connection], tuple[bytes, dict[str, Any]]],
        expand: Callable[[dict[str, Any]], bytes],
    ) -> tuple[bytes, bool]:
        """Run ``write`` at most once per (scope, key) within IDEMPOTENCY_TTL: the response body
        it returns is stored in the same transaction, and a repeat gets that body back (second
        value True) instead of writing again. A body larger than MAX_STORED_RESPONSE_BYTES is
        stored as ``{REPLAY_REF: reference}`` (the reference ``write`` returns with it), which
        ``expand`` turns back into a body on a replay. Reusing a key for a different request
        is an error; a key past its expiry starts afresh."""
        with self._conn() as conn:
            with conn.transaction():
                # A key older than the TTL is taken over as if new (the row lock serialises a
                # concurrent repeat, which then finds the new request's answer).
                fresh = conn.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES (%(scope)s, %(key)s, %(fp)s)"
                    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
                    "  status = NULL, response = NULL, created_at = now()"
                    f" WHERE idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_TTL}'"
                    " RETURNING 1",
                    {"scope": idempotency.scope, "key": idempotency.key, "fp": idempotency.fingerprint},
                ).fetchone()
                if fresh is not None:
                    body, ref = write(conn)
                    stored = body if len(body) <= MAX_STORED_RESPONSE_BYTES else orjson.dumps({REPLAY_REF: ref})
                    conn.execute(
                        "UPDATE idempotency_keys SET status = %s, response = %s::jsonb WHERE scope = %s AND key = %s",
                        (CREATED, stored.decode(), idempotency.scope, idempotency.key),
                    )
                    return body, False
                # The first request committed (a concurrent one waited on the key's lock).
                row = conn.execute(
                    f"SELECT fingerprint, response::text, response -> '{REPLAY_REF}'"
                    " FROM idempotency_keys WHERE scope = %s AND key = %s",
                    (idempotency.scope, idempotency.key),
                ).fetchone()
        assert row is not None
        fingerprint, replay, ref = row
        if fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        return (expand(ref) if ref is not None else replay.encode()), True

    def remove_expired_idempotency_keys(self, batch: int = 1000) -> int:
        """Delete keys past IDEMPOTENCY_TTL, ``batch`` rows per transaction (short locks);
        run outside the request path (the API's housekeeping thread). Returns how many."""
        removed = 0
        while True:
            with self._conn() as conn:
                n = conn.execute(
                    "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
                    f"  SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '{IDEMPOTENCY_TTL}'"
                    "  LIMIT %s))",
                    (batch,),
                ).rowcount
            removed += n
            if n < batch:
                return removed

    # ------------------------------------------------------------ import / export

    def import_conversations(self, records: Sequence[ConversationRecord]) -> list[str]:
        """Insert whole conversations with their own timestamps, in one transaction; a
        conversation whose id already exists is left alone. Returns the ids inserted."""
        for record in records:
            self.check_embeddings(record.messages)
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
                # The planner's estimate, not count(*): a probe must stay cheap at any size.
                " (SELECT nullif(reltuples, -1)::bigint FROM pg_class"
                "   WHERE oid = 'conversations'::regclass) AS approximate_conversations"
            ).fetchone()
        assert row is not None
        return row

    # ------------------------------------------------------------ helpers

    def check_embeddings(self, messages: Sequence[NewMessage]) -> None:
        """InvalidInput for the first embedding this database cannot store (wrong dimension,
        values not finite single-precision numbers); the importer reports it per record."""
        for message in messages:
            if message.embedding is not None:
                self._check_embedding(message.embedding)

    def _check_embedding(self, embedding: Sequence[float]) -> None:
        if len(embedding) != self.embedding_dimension:
            raise InvalidInput(
                f"embedding has {len(embedding)} dimensions; this deployment uses {self.embedding_dimension}"
            )
        reason = embedding_problem(embedding)
        if reason is not None:
            raise InvalidInput(reason)


def _vector_literal(embedding: Sequence[float] | None) -> str | None:
    return None if embedding is None else json.dumps([float(v) for v in embedding])
