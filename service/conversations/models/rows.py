"""The rows the store returns and takes: dataclasses whose fields are the response models' fields,
in the same order (so orjson writes them as they are), the page and its cursor."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .validation import MAX_ID_CHARS, TITLE_FROM_MESSAGE_CHARS, unstorable_text


@dataclass
class ConversationSummary:
    conversation_id: str
    user_id: str | None
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass
class Message:
    id: int
    conversation_id: str
    seq: int
    role: str
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    has_embedding: bool


@dataclass
class Conversation(ConversationSummary):
    settings: dict[str, Any]
    metadata: dict[str, Any]
    messages: list[Message] = field(default_factory=list)
    messages_before_cursor: str | None = None
    messages_after_cursor: str | None = None


@dataclass
class SearchHit:
    conversation_id: str
    title: str | None
    message_id: int
    seq: int
    role: str
    snippet: str
    rank: float
    created_at: datetime


@dataclass
class SimilarHit:
    conversation_id: str
    message_id: int
    seq: int
    role: str
    content: str
    content_truncated: bool
    distance: float
    created_at: datetime


@dataclass
class NewMessage:
    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: list[float] | None = None
    created_at: datetime | None = None


@dataclass
class ConversationRecord:
    """A whole conversation with its own timestamps: what imports write and exports read."""

    conversation_id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[NewMessage] = field(default_factory=list)
    origin: str | None = None
    """Where an imported record came from (file and line, table and key), for reports."""


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class ConversationCursor:
    """Keyset position in the recent-first list: the last item's (updated_at, id)."""

    updated_at: datetime
    conversation_id: str

    def encode(self) -> str:
        raw = json.dumps([self.updated_at.isoformat(), self.conversation_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ConversationCursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            updated_at, conversation_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            parsed = datetime.fromisoformat(updated_at)
            if parsed.tzinfo is None or not isinstance(conversation_id, str):
                raise ValueError
            # A forged position PostgreSQL cannot even compare (a lone surrogate, NUL) or no id
            # could be: refused like any other cursor this service did not issue.
            if len(conversation_id) > MAX_ID_CHARS or unstorable_text(conversation_id) is not None:
                raise ValueError
            return cls(parsed, conversation_id)
        except (ValueError, TypeError, binascii.Error, UnicodeError):
            raise InvalidCursor("cursor is not one this service issued") from None


class InvalidCursor(ValueError):
    pass


def title_from(content: str) -> str | None:
    """A title from a first user message: its first non-blank line, trimmed to 80 characters."""
    line = next((line for line in content.splitlines() if line.strip()), "")
    words = " ".join(line.split())
    if not words:
        return None
    return words if len(words) <= TITLE_FROM_MESSAGE_CHARS else words[: TITLE_FROM_MESSAGE_CHARS - 1] + "…"
