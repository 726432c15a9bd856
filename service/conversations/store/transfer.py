"""Whole conversations in and out: import with their own timestamps (COPY for the messages),
export in id order a batch at a time, so memory stays flat at any size."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..models import ConversationRecord, NewMessage
from .messages import Messages
from .statements import OWNED, vector_literal


class Transfer(Messages):
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
                                vector_literal(message.embedding),
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
                        f" WHERE c.conversation_id > %(after)s AND {OWNED}"
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
