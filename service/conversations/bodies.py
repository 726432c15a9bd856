"""What a JSON request body may be before it is parsed into objects, and how it is parsed.

- **Bounded in values**, checked on the raw bytes: a body holds at most its route's number of
  JSON values (``max_json_values``), counted as the commas and colons outside strings. Parsing
  builds one object per value: 16 MiB of numbers in an ``embedding`` took a process from 66 to
  518 MiB and blocked it for seconds, 1.2 million metadata keys for 5 to 10 s, all before any
  per-field rule could refuse them. A body within its bound costs a count of two bytes; one over
  it, a scan of its strings (at most about 0.3 s for 16 MiB), never a parse.
- **Unambiguous**: an object may not name a key twice (json would keep the last copy: a message
  sent as ``"role": "user", ..., "role": "system"`` was stored as ``system``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

# A route's bound when it names none.
DEFAULT_MAX_JSON_VALUES = 50_000
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
F = TypeVar("F", bound=Callable[..., Any])


def max_json_values(limit: int) -> Callable[[F], F]:
    """Mark a route's endpoint with the most JSON values its body may hold."""

    def mark(endpoint: F) -> F:
        endpoint.max_json_values = limit  # type: ignore[attr-defined]
        return endpoint

    return mark


def json_values(body: bytes, limit: int) -> int | None:
    """The number of JSON values in ``body`` if it is more than ``limit``, else None. Cheap for
    a body within its bound (the commas and colons anywhere bound the values from above); for
    one over, many strings refuse it at once, and otherwise the strings are blanked out and the
    commas and colons between them counted."""
    if body.count(b",") + body.count(b":") + 1 <= limit:
        return None
    strings = (body.count(b'"') - body.count(b'\\"')) // 2
    if strings > limit:
        return strings
    outside = _STRING.sub(b'""', body)
    values = outside.count(b",") + outside.count(b":") + 1
    return values if values > limit else None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):  # rare: only then is the repeated key looked for
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise HTTPException(400, f"the JSON body names the key {key[:100]!r} more than once")
            seen.add(key)
    return found


class _StrictJsonRequest(Request):
    limit = DEFAULT_MAX_JSON_VALUES

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            values = json_values(body, self.limit)
            if values is not None:
                raise HTTPException(
                    413,
                    f"the JSON body holds about {values} values (numbers, strings, keys ...); this route takes at "
                    f"most {self.limit}: send fewer messages per request, or a smaller metadata object",
                )
            self._json = json.loads(body, object_pairs_hook=_unique_keys)
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is checked as above before it is parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = getattr(self.endpoint, "max_json_values", DEFAULT_MAX_JSON_VALUES)

        async def strict(request: Request) -> Response:
            checked = _StrictJsonRequest(request.scope, request.receive)
            checked.limit = limit
            return await handler(checked)

        return strict
