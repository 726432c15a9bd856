"""The API's request and response bodies (pydantic models, which also make the OpenAPI document),
and the JSON a response is written with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .rows import NewMessage
from .validation import (
    MAX_CONTENT_CHARS,
    MAX_ID_CHARS,
    MAX_TITLE_CHARS,
    Role,
    _conversation_id,
    _direction,
    _finite,
    _json_object,
    _storable_text,
)

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
    embedding: Annotated[Embedding, AfterValidator(_direction)]
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
    """Without the token only ``status``; the details (versions, schema, the estimate, the
    reason) are for callers holding it."""

    status: Literal["healthy", "unhealthy"]
    database: dict[str, Any] | None = None
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
