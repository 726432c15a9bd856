"""Data shapes: rows the store returns (dataclasses) and the API's request/response bodies
(pydantic models, which also make the OpenAPI document)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
TITLE_FROM_MESSAGE_CHARS = 80
MAX_TITLE_CHARS = 500
MAX_JSON_DEPTH = 32
# A message's text: any size a request body carries (a 10 MB message round-trips byte for
# byte); the importer holds imported messages to the same bound. A response page holds at
# least one message, whatever its size, and otherwise at most store.MAX_PAGE_BYTES.
MAX_CONTENT_CHARS = 16 * 1024 * 1024
# settings and metadata objects, as compact JSON.
MAX_JSON_BYTES = 64 * 1024
MAX_ID_CHARS = 255


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


# ---------------------------------------------------------------- validation helpers


# PostgreSQL text and jsonb cannot hold U+0000, and a lone surrogate (U+D800-U+DFFF, which
# JSON's "\ud800" escape can carry) has no UTF-8 encoding: refuse both up front with a 422.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "text must not contain NUL (U+0000) characters"
    return "text must not contain lone surrogates (U+D800-U+DFFF): it has no UTF-8 encoding"


def _storable_text(value: str) -> str:
    reason = unstorable_text(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def unstorable_json(value: Any, depth: int = 0) -> str | None:
    """Why PostgreSQL cannot store this JSON value (nesting, NUL, lone surrogates, NaN or
    Infinity, which JSON itself does not have), or None when it can."""
    if depth > MAX_JSON_DEPTH:
        return f"JSON is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else "JSON numbers must be finite (no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            reason = unstorable_text(key) if isinstance(key, str) else "JSON object keys must be text"
            if reason is None:
                reason = unstorable_json(item, depth + 1)
            if reason is not None:
                return reason
    elif isinstance(value, list):
        for item in value:
            reason = unstorable_json(item, depth + 1)
            if reason is not None:
                return reason
    return None


def json_too_large(value: dict[str, Any]) -> str | None:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_BYTES:
        return f"JSON object is {size} bytes; at most {MAX_JSON_BYTES} are kept per object"
    return None


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    reason = unstorable_json(value) or json_too_large(value)
    if reason is not None:
        raise ValueError(reason)
    return value


# Characters a conversation id may not hold: they cannot travel in a URL path as themselves
# (control characters, '/', '\\'), are invisible or reorder text (format characters: zero-width
# and bidi controls), split lines, or cannot be encoded (surrogates), or are not characters.
_ID_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def conversation_id_problem(value: object) -> str | None:
    """The one rule for conversation ids, shared by the API and the importers: why ``value``
    cannot be a conversation id, or None when it can. An id must be addressable as one URL
    path segment, printable and visible, so that it reads and copies as what it is."""
    if not isinstance(value, str):
        return f"conversation id must be text, not {type(value).__name__}"
    if not 1 <= len(value) <= MAX_ID_CHARS:
        return f"conversation id must be 1-{MAX_ID_CHARS} characters"
    if value in (".", ".."):
        return "conversation id cannot be '.' or '..' (a URL path resolves them away)"
    if value != value.strip():
        return "conversation id cannot start or end with a space"
    for char in value:
        if char in "/\\" or unicodedata.category(char) in _ID_BAD_CATEGORIES:
            return (
                f"conversation id cannot contain U+{ord(char):04X} ('/', '\\\\', control, format such as"
                " zero-width or bidi, line-separator, unassigned or surrogate characters)"
            )
    return None


def _conversation_id(value: str) -> str:
    reason = conversation_id_problem(value)
    if reason is not None:
        raise ValueError(reason)
    return value


# pgvector stores single-precision floats.
FLOAT32_MAX = 3.4028234663852886e38


def embedding_problem(values: Sequence[float]) -> str | None:
    """Why pgvector cannot store these values, or None when it can."""
    if not all(math.isfinite(v) and -FLOAT32_MAX <= v <= FLOAT32_MAX for v in values):
        return "embedding values must be finite numbers within the single-precision range (about ±3.4e38)"
    return None


def _finite(values: list[float]) -> list[float]:
    reason = embedding_problem(values)
    if reason is not None:
        raise ValueError(reason)
    return values


Content = Annotated[str, Field(max_length=MAX_CONTENT_CHARS), AfterValidator(_storable_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
ConversationId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_conversation_id)]
Embedding = Annotated[list[float], AfterValidator(_finite)]
Title = Annotated[str, Field(max_length=MAX_TITLE_CHARS), AfterValidator(_storable_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageIn(_Strict):
    role: Role
    content: Content
    metadata: JsonObject = Field(default_factory=dict)
    embedding: Embedding | None = Field(default=None, description="Length must equal EMBEDDING_DIMENSION.")

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
    embedding: Embedding
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
    messages_before_cursor: str | None = Field(
        default=None,
        description="Earlier messages exist: pass this as 'before' to /conversations/{id}/messages for them.",
    )
    messages_after_cursor: str | None = Field(
        default=None,
        description="Later messages exist: pass this as 'after' to /conversations/{id}/messages for them.",
    )


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
    content: str = Field(description="The first 20,000 characters of the message.")
    content_truncated: bool
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
    approximate_conversations: int | None = Field(
        default=None, description="The planner's estimate (pg_class.reltuples): cheap at any size; null before ANALYZE."
    )
    reason: str | None = None


class ErrorOut(BaseModel):
    error: str
    message: str


# ---------------------------------------------------------------- response bodies


def dump_json(value: Any, model: type[BaseModel]) -> bytes:
    """The JSON body of a response: ``value`` (a store row, a page of them, or a dict of them)
    as ``model`` would serialize it, without building the model.

    The store's rows are dataclasses whose fields are the response models' fields in the same
    order, so orjson writes them directly (tests/service/test_rendering.py holds the two
    outputs equal). What orjson cannot write (an integer past 64 bits in metadata, say) goes
    through the model, as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        return model.model_validate(value, from_attributes=True).model_dump_json().encode()
