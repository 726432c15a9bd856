"""One record at a time: a bad record with where it came from, the import's report, and the
checks that turn a raw value into a stored one (times, text, JSON, ids, messages)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from conversations.headers import invalid_header_id, valid_header_id
from conversations.models import (
    MAX_CONTENT_CHARS,
    ROLES,
    NewMessage,
    conversation_id_problem,
    embedding_problem,
    json_too_large,
    unstorable_json,
    unstorable_text,
)


class BadRecord(ValueError):
    """A source record that cannot be imported; ``where`` says which one."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass
class Report:
    source: str
    conversations_read: int = 0
    messages_read: int = 0
    imported_conversations: int = 0
    imported_messages: int = 0
    already_present: int = 0
    skipped: list[BadRecord] = field(default_factory=list)
    stopped_early: bool = False
    source_error: str | None = None
    verified: bool | None = None
    verify_detail: str = ""

    def render(self) -> str:
        lines = [
            f"Validation report: {self.source}",
            f"  source:  {self.conversations_read} conversations, {self.messages_read} messages read",
            f"  target:  {self.imported_conversations} conversations, {self.imported_messages} messages imported",
            f"  already present (left as they were): {self.already_present} conversations",
            f"  skipped as invalid: {len(self.skipped)}",
        ]
        lines += [f"    - {bad.where}: {bad.reason}" for bad in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"    ... and {len(self.skipped) - 50} more")
        if self.verified is not None:
            lines.append(f"  check:   {'OK' if self.verified else 'MISMATCH'} ({self.verify_detail})")
        if self.stopped_early:
            lines.append("  stopped at the first invalid record (--strict); the records before it are committed")
        if self.source_error:
            lines.append(f"  stopped: {self.source_error}; the records before it are committed")
        return "\n".join(lines)


# ---------------------------------------------------------------- parsing helpers


def parse_time(value: Any, where: str, what: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise BadRecord(where, f"{what} is not a time: {value!r}")
    elif isinstance(value, int | float | Decimal):
        try:
            parsed = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            raise BadRecord(where, f"{what} is out of range: {str(value)[:40]}") from None
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00") if value.strip().endswith("Z") else value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadRecord(where, f"{what} is not an ISO 8601 time (years 1-9999): {value[:40]!r}") from None
    else:
        raise BadRecord(where, f"{what} is missing")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise BadRecord(where, f"{what} must be text, got {type(value).__name__}")
    reason = unstorable_text(value)
    if reason is not None:
        raise BadRecord(where, f"{what}: {reason}")
    return value


def check_user_id(value: Any, where: str) -> str:
    """A user id the API can address: X-User-Id's rule (1-255 printable characters), and only
    characters an HTTP header carries as they are (Latin-1): any other id could be stored but
    never read back through the API."""
    user_id = check_text(value, where, "user_id")
    if not valid_header_id(user_id):
        raise BadRecord(where, f"user_id: {invalid_header_id('X-User-Id')}, the API's rule for it")
    try:
        user_id.encode("latin-1")
    except UnicodeEncodeError:
        raise BadRecord(where, "user_id has characters an HTTP header cannot carry (outside Latin-1)") from None
    return user_id


def check_json(value: Any, where: str, what: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRecord(where, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRecord(where, f"{what} must be a JSON object, got {type(value).__name__}")
    value = plain(value)
    reason = unstorable_json(value) or json_too_large(value)
    if reason is not None:
        raise BadRecord(where, f"{what}: {reason}")
    return value  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """DynamoDB's Decimals and sets as JSON values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def check_id(value: Any, where: str) -> str:
    """The API's rule for conversation ids (conversations.models), so an imported
    conversation is addressable like any other."""
    reason = conversation_id_problem(value)
    if reason is not None:
        raise BadRecord(where, reason)
    return str(value)


def message(raw: Any, where: str, created_default: datetime) -> NewMessage:
    if not isinstance(raw, dict):
        raise BadRecord(where, "a message must be an object")
    role = raw.get("role")
    if role not in ROLES:
        raise BadRecord(where, f"unknown role {str(role)[:20]!r} (expected one of {', '.join(ROLES)})")
    content = check_text(raw.get("content"), where, "content")
    if len(content) > MAX_CONTENT_CHARS:
        raise BadRecord(where, f"content has {len(content)} characters; at most {MAX_CONTENT_CHARS} are accepted")
    metadata = check_json(raw.get("metadata"), where, "metadata")
    extra = {k: v for k, v in raw.items() if k not in ("role", "content", "metadata", "created_at", "embedding")}
    metadata.update(check_json(extra, where, "message fields"))
    created = parse_time(raw["created_at"], where, "created_at") if raw.get("created_at") else created_default
    embedding = raw.get("embedding")
    if embedding is not None:
        if not (
            isinstance(embedding, list)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in embedding)
        ):
            raise BadRecord(where, "embedding must be a list of numbers")
        reason = embedding_problem(embedding)
        if reason is not None:
            raise BadRecord(where, reason)
    return NewMessage(role, content, metadata, embedding, created)
