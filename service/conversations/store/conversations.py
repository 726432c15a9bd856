"""Conversations: create (with its first messages), read with a bounded page of messages,
list recent-first by keyset cursor, update, delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from ..models import Conversation, ConversationCursor, ConversationSummary, NewMessage, Page, title_from
from .errors import Conflict, NotFound
from .messages import MAX_PAGE_MESSAGES, Messages
from .statements import HEAD_COLUMNS, OWNED, REPLAY_REF, SUMMARY_COLUMNS


class Conversations(Messages):
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
            HEAD_COLUMNS,
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

    def list_conversations(
        self, *, user_id: str | None = None, limit: int = 20, cursor: ConversationCursor | None = None
    ) -> Page:
        params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
        where = [OWNED]
        if cursor is not None:
            where.append("(c.updated_at, c.conversation_id) < (%(after_ts)s, %(after_id)s)")
            params.update(after_ts=cursor.updated_at, after_id=cursor.conversation_id)

        def read(conn: psycopg.Connection) -> list[ConversationSummary]:
            with conn.cursor(row_factory=class_row(ConversationSummary)) as cur:
                return cur.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM conversations c WHERE {' AND '.join(where)}"
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
                f" WHERE c.conversation_id = %(id)s AND {OWNED}"
                f" RETURNING {SUMMARY_COLUMNS}, c.settings, c.metadata",
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
        """Delete the conversation and its messages, and, in the same transaction, the answers
        stored for idempotent POSTs about it (they hold its text for a day otherwise): those of
        its owner's scope and of callers without X-User-Id."""
        with self._conn() as conn, conn.transaction():
            owner = conn.execute(
                f"DELETE FROM conversations c WHERE c.conversation_id = %(id)s AND {OWNED} RETURNING c.user_id",
                {"id": conversation_id, "user_id": user_id},
            ).fetchone()
            if owner is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ANY(%(scopes)s)"
                " AND %(id)s IN (response ->> 'conversation_id', response -> %(ref)s ->> 'conversation_id')",
                {"scopes": sorted({owner[0] or "", ""}), "id": conversation_id, "ref": REPLAY_REF},
            )

    def message_counts(self, conversation_ids: Sequence[str]) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT conversation_id, count(*) FROM messages WHERE conversation_id = ANY(%s) GROUP BY 1",
                (list(conversation_ids),),
            ).fetchall()
        return {cid: int(n) for cid, n in rows}
