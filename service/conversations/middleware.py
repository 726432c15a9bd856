"""ASGI middleware: what every request passes through before a route sees it.

From the outside in: the request log (one line per request, a request id), the token (checked
before a byte of the body is read), and admission (bounded requests in flight and bounded body
bytes in flight, so overload answers 503 instead of exhausting memory; bodies over the limit
answer 413 by their declared length or by counting).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .errors import error
from .headers import USER_ID_HEADER, invalid_header_id, valid_header_id

log = logging.getLogger("conversations.api")

# Paths anyone may fetch: the page and its assets, the health probes, the API's own description.
PUBLIC_PATHS = frozenset({"/", "/favicon.ico", "/health", "/health/live", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/static/",)
# Probes the load balancer and ECS depend on: never turned away by admission.
PROBE_PATHS = frozenset({"/health", "/health/live"})
OVERLOAD_RETRY_AFTER_SECONDS = "1"


def token_ok(authorization: str | None, expected: str) -> bool:
    """A 'Bearer <token>' header carrying ``expected``, compared in constant time."""
    scheme, _, token = (authorization or "").partition(" ")
    # compare_digest takes the same time wherever the first difference is.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


UNAUTHORIZED_MESSAGE = "a valid 'Authorization: Bearer <API_TOKEN>' header is required"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


_WHO = (b"authorization", b"x-user-id")


def _who(scope: Scope) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The Authorization and X-User-Id headers, and the name of either one sent more than once
    (which copy a front end meant is unknowable: the request is refused, not guessed at)."""
    found: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        if key in _WHO:
            if key in found:
                return None, None, bytes(key)
            found[key] = bytes(value)
    return found.get(b"authorization"), found.get(b"x-user-id"), None


class TokenMiddleware:
    """Who is calling, before the body is read. For any non-public path: the token (a caller
    without it costs a header comparison, never a parse), then the caller's scope, the
    ``X-User-Id`` header (400 if it is not 1-255 printable characters), which the routes read
    from ``scope["state"]["user_id"]`` (None: every conversation)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        header, raw, repeated = _who(scope)
        if repeated is not None:
            name = "Authorization" if repeated == b"authorization" else USER_ID_HEADER
            await error(400, "bad_request", f"the {name} header is sent more than once")(scope, receive, send)
            return
        if not token_ok(None if header is None else header.decode("latin-1"), self.token):
            refused = error(401, "unauthorized", UNAUTHORIZED_MESSAGE, {"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        user_id = None if raw is None else raw.decode("latin-1")
        if user_id is not None and not valid_header_id(user_id):
            await error(400, "bad_request", invalid_header_id(USER_ID_HEADER))(scope, receive, send)
            return
        scope.setdefault("state", {})["user_id"] = user_id
        await self.app(scope, receive, send)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class Refused(HTTPException):
    """Raised from receive() while a body arrives: the app's handler for HTTP errors answers it
    with its status, error ``code`` and headers."""

    code = "error"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)


class BodyTooLarge(Refused):
    """A body without a (truthful) length grew past the limit."""

    code = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodyTooSlow(Refused):
    """The body did not arrive at the least rate: its connection is closed, its bytes let go."""

    code = "request_timeout"

    def __init__(self, grace_s: float, rate: int) -> None:
        super().__init__(
            408,
            f"the request body arrived slower than {rate} bytes per second (after {grace_s:g} s)",
            {"Connection": "close"},
        )


class Overloaded(Refused):
    code = "overloaded"

    def __init__(self) -> None:
        super().__init__(
            503, "the service is at capacity; retry shortly", {"Retry-After": OVERLOAD_RETRY_AFTER_SECONDS}
        )


class AdmissionMiddleware:
    """Bounds what one process takes on at once, so that no caller, fast or slow, can hold it.

    - A request takes one of ``max_requests`` slots (probes excepted) once its body has arrived
      (at once when it has none): one more answers 503 ``overloaded`` with ``Retry-After``. A
      body still arriving holds no slot, so slow uploads cannot turn everyone else away.
    - Body bytes count against ``max_body_bytes_in_flight`` as they arrive (not as declared), so
      a declared 16 MiB that trickles holds only what it sent; past the bound, 503.
    - A body must keep up ``min_body_rate`` bytes per second after ``body_grace_s``: slower, 408
      and the connection is closed.
    - A body over ``max_body_bytes`` answers 413: by its declared length before reading, or by
      counting as it arrives.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_requests: int,
        max_body_bytes: int,
        max_body_bytes_in_flight: int,
        body_grace_s: float = 10.0,
        min_body_rate: int = 16 * 1024,
    ) -> None:
        self.app = app
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.max_body_bytes_in_flight = max_body_bytes_in_flight
        self.body_grace_s = body_grace_s
        self.min_body_rate = min_body_rate
        self.in_flight = 0
        self.body_bytes_in_flight = 0

    def take_slot(self) -> bool:
        if self.in_flight >= self.max_requests:
            log.warning("overloaded", extra={"in_flight": self.in_flight})
            return False
        self.in_flight += 1
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        declared_raw = _header(scope, b"content-length")
        declared: int | None = None
        if declared_raw is not None:
            if not declared_raw.isdigit():
                await error(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            declared = int(declared_raw)
            if declared > self.max_body_bytes:
                await _refuse(BodyTooLarge(self.max_body_bytes), scope, receive, send)
                return
        has_body = bool(declared) or (declared is None and _header(scope, b"transfer-encoding") is not None)
        request = _Admission(self, receive, declared, has_body)
        if not has_body and not request.take_slot():
            await _refuse(Overloaded(), scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, request.receive, tracking_send)
        except Refused as refused:  # raised outside FastAPI's handlers (a route that streams)
            if started:
                raise
            await _refuse(refused, scope, receive, send)
        finally:
            request.release()


async def _refuse(refused: Refused, scope: Scope, receive: Receive, send: Send) -> None:
    answer = error(refused.status_code, refused.code, str(refused.detail), dict(refused.headers or {}))
    await answer(scope, receive, send)


class _Admission:
    """One request's share of AdmissionMiddleware's bounds: its slot, taken once its body has
    arrived, and its body's bytes, counted as they arrive at no less than the least rate."""

    def __init__(self, bounds: AdmissionMiddleware, receive: Receive, declared: int | None, has_body: bool) -> None:
        self.bounds = bounds
        self._receive = receive
        self.declared = declared
        self.loop = asyncio.get_running_loop()
        self.began = self.loop.time()
        self.received = 0  # bytes of the body seen
        self.counted = 0  # of them, counted in body_bytes_in_flight (given back by release)
        self.arrived = not has_body
        self.slot = False

    def take_slot(self) -> bool:
        self.slot = self.bounds.take_slot()
        return self.slot

    def release(self) -> None:
        if self.slot:
            self.bounds.in_flight -= 1
        self.bounds.body_bytes_in_flight -= self.counted

    async def receive(self) -> Message:
        if self.arrived:  # after the body: only a disconnect is waited for, without a deadline
            return await self._receive()
        bounds = self.bounds
        # The least rate, from when the request came: the bytes so far must have taken no longer.
        due = self.began + bounds.body_grace_s + self.received / bounds.min_body_rate
        try:
            message = await asyncio.wait_for(self._receive(), timeout=max(due - self.loop.time(), 0.001))
        except TimeoutError:
            raise BodyTooSlow(bounds.body_grace_s, bounds.min_body_rate) from None
        if message["type"] != "http.request":
            return message
        chunk = len(message.get("body", b""))
        self.received += chunk
        if self.received > bounds.max_body_bytes or (self.declared is not None and self.received > self.declared):
            raise BodyTooLarge(bounds.max_body_bytes)
        if bounds.body_bytes_in_flight + chunk > bounds.max_body_bytes_in_flight:
            log.warning("overloaded", extra={"body_bytes_in_flight": bounds.body_bytes_in_flight})
            raise Overloaded()
        bounds.body_bytes_in_flight += chunk
        self.counted += chunk
        if not message.get("more_body", False):
            self.arrived = True
            if not self.take_slot():
                raise Overloaded()
        return message


# Every answer of a data route holds someone's conversations: no cache (a shared proxy's, or the
# browser's disk) keeps it, and no browser guesses its type.
DATA_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class RequestLogMiddleware:
    """One JSON log line per request, with a request id that is also returned as X-Request-Id
    (and, on the data routes, DATA_HEADERS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Request ids: 64 random bits per process, then a counter (32 hex digits, as a UUID's
        # hex): unique across tasks without a call to the random source per request.
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else self._next_id()
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500
        added: tuple[tuple[bytes, bytes], ...] = ((b"x-request-id", rid.encode("latin-1")),)
        if not _public(scope["path"]):
            added += DATA_HEADERS

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *added]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            logs.request_id.reset(token)
