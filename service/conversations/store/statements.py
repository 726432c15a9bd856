"""The SQL pieces the store's rooms share: column lists in the models' field order, the
ownership filter, the vector literal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields

from ..models import Message

# The key of an idempotent POST's stored answer that is a reference, not a body (idempotency.py).
REPLAY_REF = "$replay"

MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.role, m.content, m.metadata, m.created_at,"
    " m.embedding IS NOT NULL AS has_embedding"
)
# MESSAGE_COLUMNS are Message's fields, in its order.
MESSAGE_FIELDS = len(fields(Message))
SUMMARY_COLUMNS = "c.conversation_id, c.user_id, c.title, c.created_at, c.updated_at, c.message_count"
# A conversation's own columns: Conversation's first fields, in its order.
HEAD_COLUMNS = (
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
OWNED = "(%(user_id)s::text IS NULL OR c.user_id = %(user_id)s)"


def vector_literal(embedding: Sequence[float] | None) -> str | None:
    return None if embedding is None else json.dumps([float(v) for v in embedding])
