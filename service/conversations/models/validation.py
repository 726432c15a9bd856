"""What a stored value must be: the bounds (titles, ids, text, JSON, embeddings) and the checks
the API, the importer and the store apply alike, each returning the reason a value is refused."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal, get_args

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


def _direction(values: list[float]) -> list[float]:
    """A query for the nearest by cosine distance needs a direction: all zeros has none (every
    distance would be undefined)."""
    if not any(values):
        raise ValueError("the embedding must not be all zeros: cosine distance to it is undefined")
    return values
