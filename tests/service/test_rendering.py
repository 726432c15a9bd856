"""Responses are written by orjson straight from the store's rows (models.dump_json); they must
be byte for byte what the response models would write. jsonb is read by database.json_loads; it
must give what the standard library gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from conversations.database import json_loads
from conversations.models import (
    Conversation,
    ConversationOut,
    ConversationPageOut,
    ConversationSummary,
    Message,
    MessageOut,
    MessagePageOut,
    Page,
    SearchHit,
    SearchOut,
    SimilarHit,
    SimilarOut,
    dump_json,
)

TIMES = [
    datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC),
    datetime(2026, 11, 24, 1, 2, 3, 450000, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-8))),
]
METADATA: list[dict[str, Any]] = [
    {},
    {"a": [1, 2.5, None, True, "é\u2028\u2029<script>&"], "nested": {"deep": {"x": -0.0, "y": 1e300}}},
    {"control": "\x01\x1f\x7f", "emoji": "🙂", "quote": '"\\'},
    {"big": 2**63 - 1, "negative": -(2**63)},
]


def message(i: int) -> Message:
    return Message(
        id=i,
        conversation_id=f"c-{i}",
        seq=i,
        role="assistant",
        content="line\nnext \u0000-free \ud7ff \U0010fffd" * (i + 1),
        metadata=METADATA[i % len(METADATA)],
        created_at=TIMES[i % len(TIMES)],
        has_embedding=bool(i % 2),
    )


def conversation(i: int, messages: int) -> Conversation:
    return Conversation(
        conversation_id=f"c-{i}",
        user_id=None if i % 2 else f"user-{i}",
        title=None if i % 3 == 0 else f"title {i} ü",
        created_at=TIMES[i % len(TIMES)],
        updated_at=TIMES[(i + 1) % len(TIMES)],
        message_count=messages,
        settings=METADATA[(i + 1) % len(METADATA)],
        metadata=METADATA[i % len(METADATA)],
        messages=[message(k) for k in range(messages)],
        messages_before_cursor=None if i % 2 else "7",
        messages_after_cursor="3" if i % 2 else None,
    )


def pydantic_json(value: object, model: type[BaseModel]) -> bytes:
    return model.model_validate(value, from_attributes=True).model_dump_json().encode()


@pytest.mark.parametrize("i", range(8))
def test_rows_render_as_the_response_models_would(i: Any) -> None:
    assert dump_json(message(i), MessageOut) == pydantic_json(message(i), MessageOut)
    assert dump_json(conversation(i, i), ConversationOut) == pydantic_json(conversation(i, i), ConversationOut)
    fields = ("conversation_id", "user_id", "title", "created_at", "updated_at", "message_count")
    summaries = [ConversationSummary(**{f: getattr(conversation(n, 0), f) for f in fields}) for n in range(i)]
    page = Page(summaries, None if i % 2 else "cursor")
    assert dump_json(page, ConversationPageOut) == pydantic_json(page, ConversationPageOut)
    messages = Page([message(k) for k in range(i)], "5")
    assert dump_json(messages, MessagePageOut) == pydantic_json(messages, MessagePageOut)
    hit = SearchHit("c", None, i, i, "user", "a <b>snippet</b>", 0.1 * i, TIMES[i % len(TIMES)])
    assert dump_json({"items": [hit]}, SearchOut) == pydantic_json({"items": [hit]}, SearchOut)
    near = SimilarHit("c", i, i, "tool", "text", bool(i % 2), 1 / 3 * i, TIMES[i % len(TIMES)])
    assert dump_json({"items": [near]}, SimilarOut) == pydantic_json({"items": [near]}, SimilarOut)


def test_what_orjson_cannot_write_goes_through_the_model() -> None:
    """An integer past 64 bits in metadata (jsonb keeps it exact): orjson refuses it, the model
    writes it."""
    row = message(1)
    row.metadata = {"huge": 123456789012345678901234567890}
    body = dump_json(row, MessageOut)
    assert body == pydantic_json(row, MessageOut)
    assert json.loads(body)["metadata"]["huge"] == 123456789012345678901234567890


@pytest.mark.parametrize(
    "text",
    [
        b"{}",
        b'{"a": [1, 2.5, null, true, "\\u00e9"], "b": {"c": -0}}',
        b'{"big": 123456789012345678901234567890}',
        b'{"edge": 9223372036854775807, "below": -9223372036854775808, "over": 18446744073709551616}',
        b'{"huge": 1e400}',
        b'{"lone": "\\ud800"}',
        b'{"float": 0.30000000000000004, "tiny": 5e-324}',
        b'"1234567890123456789 in a string"',
    ],
)
def test_jsonb_is_read_as_the_standard_library_reads_it(text: bytes) -> None:
    assert repr(json_loads(text)) == repr(json.loads(text))
