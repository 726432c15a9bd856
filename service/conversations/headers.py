"""The request headers that carry ids (``X-User-Id``, ``Idempotency-Key``) and their one rule:
read by the middleware and the routes alike, so neither borrows it from the other."""

from __future__ import annotations

USER_ID_HEADER = "X-User-Id"
# X-User-Id and Idempotency-Key: ids the service stores and logs.
MAX_HEADER_ID_CHARS = 255


def invalid_header_id(name: str) -> str:
    """The 400 message for a header id that breaks the rule."""
    return f"{name} must be 1-{MAX_HEADER_ID_CHARS} printable characters"


def valid_header_id(value: str) -> bool:
    """1 to MAX_HEADER_ID_CHARS printable characters."""
    return 0 < len(value) <= MAX_HEADER_ID_CHARS and value.isprintable()
