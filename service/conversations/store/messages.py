"""Messages: appending (one statement that also numbers them and bumps the conversation),
pages in either direction bounded by rows and bytes, and the embedding checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from ..models import Message, NewMessage, Page, embedding_problem, title_from
from .connections import Connections
from .errors import InvalidInput, NotFound
from .statements import MESSAGE_COLUMNS, MESSAGE_FIELDS, OWNED, vector_literal

# The bounds on one response's messages: rows, and bytes of content and metadata (a page
# holds at least one message, whatever its size; models.MAX_CONTENT_CHARS bounds that one).
MAX_PAGE_MESSAGES = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024


class Messages(Connections):
    def append_messages(
        self, conversation_id: str, messages: Sequence[NewMessage], *, user_id: str | None = None
    ) -> list[Message]:
        self._check_new_messages(messages)
        with self._conn() as conn:
            # One statement: atomic on its own.
            return self._append(conn, conversation_id, user_id, messages)

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
            f"  WHERE c.conversation_id = %(id)s AND {OWNED}"
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
                embedding=vector_literal(message.embedding),
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
                embeddings=[vector_literal(m.embedding) for m in messages],
                created=[m.created_at for m in messages],
            )
        with conn.cursor(row_factory=class_row(Message)) as cur:
            # One statement: bump message_count (which locks the conversation row, so
            # concurrent appends serialise and get distinct sequence numbers), take a title
            # from the first user message if there is none, and insert the rows.
            rows = cur.execute(f"{bump}{source} SELECT {MESSAGE_COLUMNS} FROM m ORDER BY m.seq", params).fetchall()
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
            f"  WHERE c.conversation_id = %(id)s AND {OWNED}) h"
            " LEFT JOIN LATERAL (SELECT * FROM (SELECT q.*, count(*) OVER () AS fetched FROM ("
            f"  SELECT {MESSAGE_COLUMNS}, octet_length(m.content) + pg_column_size(m.metadata) AS size,"
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
        messages = [Message(*row[n : n + MESSAGE_FIELDS]) for row in found[:limit]]
        if not forward:
            messages.reverse()
        return rows[0][:n], messages, more

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
