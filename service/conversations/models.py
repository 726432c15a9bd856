"""Data shapes: rows the store returns (dataclasses) and the API's request/response bodies
(pydantic models, which also make the OpenAPI document)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
TITLE_FROM_MESSAGE_CHARS = 80
MAX_TITLE_CHARS = 500
MAX_JSON_DEPTH = 32


# ---------------------------------------------------------------- store rows


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
            return cls(parsed, conversation_id)
        except (ValueError, TypeError, binascii.Error, UnicodeError):
            raise InvalidCursor("cursor is not one this service issued") from None


class InvalidCursor(ValueError):
    pass


def title_from(content: str) -> str | None:
    """A title from a first user message: its first line, trimmed to 80 characters."""
    words = " ".join(content.split())
    if not words:
        return None
    return words if len(words) <= TITLE_FROM_MESSAGE_CHARS else words[: TITLE_FROM_MESSAGE_CHARS - 1] + "…"


# ---------------------------------------------------------------- validation helpers


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it up front with a 422.
    if "\x00" in value:
        raise ValueError("text must not contain NUL (U+0000) characters")
    return value


def _json_value(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_value(item, depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value)
    return value


_ID_RE = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")


def _conversation_id(value: str) -> str:
    if not _ID_RE.match(value) or value != value.strip():
        raise ValueError("conversation_id must be 1-255 characters with no '/', control characters or edge spaces")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
ConversationId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_conversation_id)]
Title = Annotated[str, Field(max_length=MAX_TITLE_CHARS), AfterValidator(_no_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(_Strict):
    role: Role
    content: Text
    metadata: JsonObject = Field(default_factory=dict)
    embedding: list[float] | None = Field(default=None, description="Length must equal EMBEDDING_DIMENSION.")

    def to_new(self) -> NewMessage:
        return NewMessage(self.role, self.content, self.metadata, self.embedding)


class ConversationCreate(_Strict):
    conversation_id: ConversationId | None = Field(default=None, description="Omit to get a generated UUID.")
    title: Title | None = None
    settings: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    messages: list[MessageIn] = Field(default_factory=list, max_length=1000)


class ConversationPatch(_Strict):
    title: Title | None = None
    settings: JsonObject | None = None
    metadata: JsonObject | None = None


class SimilarQuery(_Strict):
    embedding: list[float]
    limit: int = Field(default=10, ge=1, le=100)
    conversation_id: ConversationId | None = None


class MessageOut(BaseModel):
    id: int
    conversation_id: str
    seq: int
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    has_embedding: bool


class ConversationSummaryOut(BaseModel):
    conversation_id: str
    user_id: str | None
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int


class ConversationMetaOut(ConversationSummaryOut):
    settings: dict[str, Any]
    metadata: dict[str, Any]


class ConversationOut(ConversationMetaOut):
    messages: list[MessageOut]


class ConversationPageOut(BaseModel):
    items: list[ConversationSummaryOut]
    next_cursor: str | None


class MessagePageOut(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


class SearchHitOut(BaseModel):
    conversation_id: str
    title: str | None
    message_id: int
    seq: int
    role: Role
    snippet: str
    rank: float
    created_at: datetime


class SearchOut(BaseModel):
    items: list[SearchHitOut]


class SimilarHitOut(BaseModel):
    conversation_id: str
    message_id: int
    seq: int
    role: Role
    content: str
    distance: float
    created_at: datetime


class SimilarOut(BaseModel):
    items: list[SimilarHitOut]


class HealthOut(BaseModel):
    status: Literal["healthy", "unhealthy"]
    database: dict[str, Any]
    schema_version: int | None = None
    expected_schema_version: int | None = None
    pgvector_version: str | None = None
    active_conversations: int | None = None
    reason: str | None = None


class ErrorOut(BaseModel):
    error: str
    message: str
