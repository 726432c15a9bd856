"""HTTP routes: parse, call the store, answer. No SQL here.

Every route is a coroutine: the store's (blocking) call runs on the service's own thread pool,
one hop per request (``Caller.run``), and the answer is the JSON the store's rows serialize to
(``models.dump_json``), not a model validated and serialized again. The response models stay in
the route declarations: they are the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypedDict, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from psycopg_pool import PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bodies import StrictJsonRoute, max_json_values
from .errors import ERROR_RESPONSES, RETRY_AFTER_SECONDS
from .headers import MAX_HEADER_ID_CHARS, invalid_header_id, valid_header_id
from .middleware import token_ok
from .models import (
    ConversationCreate,
    ConversationCursor,
    ConversationMetaOut,
    ConversationOut,
    ConversationPageOut,
    ConversationPatch,
    ErrorOut,
    HealthOut,
    MessageIn,
    MessageOut,
    MessagePageOut,
    NewMessage,
    SearchOut,
    SimilarOut,
    SimilarQuery,
    dump_json,
)
from .settings import Settings
from .store import Idempotency, Store

log = logging.getLogger("conversations.api")
T = TypeVar("T")
P = ParamSpec("P")
# What a retry-safe POST answers, first time and replayed alike; stored with its Idempotency-Key.
CREATED = 201
SEARCH_RETRY_AFTER_SECONDS = "1"
# A new conversation's body: up to 1,000 messages, but at most this many JSON values (bodies.py):
# about 300 messages with 1,536-number embeddings; append the rest.
MAX_CREATE_JSON_VALUES = 500_000
# /health asks the database at most this often: anonymous pollers cost one round trip a second.
HEALTH_CACHE_S = 1.0

STATIC_DIR = Path(__file__).resolve().parent / "static"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The page runs only its own script and style, and may not be framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    **_SECURITY_HEADERS,
}
# /docs: Swagger UI from this service's own copy; it sets style attributes, nothing else relaxed.
_DOCS_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


class JSON(Response):
    """A response whose body is already JSON."""

    media_type = "application/json"


@dataclass
class Service:
    """What the routes share, made by the app's lifespan: the store and the threads its
    blocking calls run on."""

    settings: Settings
    store: Store
    threads: ThreadPoolExecutor
    expected_schema: int
    searching: dict[str, int] = field(default_factory=dict)
    """Searches running now, per user (the key "" for requests without X-User-Id)."""
    _health: tuple[float, dict[str, Any]] | None = None
    _health_pending: asyncio.Future[dict[str, Any]] | None = None

    async def health_facts(self) -> dict[str, Any]:
        """The store's health facts, asked at most once per HEALTH_CACHE_S whoever polls: one
        question in flight, shared by every caller waiting; a failure is never kept (the next
        caller asks again), nor is an answer while the database is known to be down."""
        reachability = self.store.reachability
        if self._health is not None and not (reachability is not None and reachability.down):
            at, facts = self._health
            if time.monotonic() - at < HEALTH_CACHE_S:
                return facts
        if self._health_pending is None or self._health_pending.done():
            self._health_pending = asyncio.ensure_future(self._ask_health())
        return await asyncio.shield(self._health_pending)

    async def _ask_health(self) -> dict[str, Any]:
        facts = await self.run(self.store.health)
        self._health = (time.monotonic(), facts)
        return facts

    @contextlib.contextmanager
    def search_slot(self, user_id: str | None) -> Iterator[None]:
        """One of the user's SEARCHES_PER_USER search slots, or 429 at once: searches are the
        expensive reads, and one user's must leave store threads for everyone else."""
        key = user_id or ""
        running = self.searching.get(key, 0)
        if running >= self.settings.searches_per_user:
            raise HTTPException(
                429,
                f"at most {self.settings.searches_per_user} searches at once per user; retry when one has answered",
                headers={"Retry-After": SEARCH_RETRY_AFTER_SECONDS},
            )
        self.searching[key] = running + 1
        try:
            yield
        finally:
            left = self.searching[key] - 1
            if left:
                self.searching[key] = left
            else:
                del self.searching[key]

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on one of the store's threads, in this request's context (its
        request id reaches the store's log lines). A call still waiting for a thread after the
        pool timeout is withdrawn and fails as a wait for a connection would (503); one that
        has started is waited for (it may be writing). Typed with ``fn``'s own parameters, so
        mypy checks every store call made through it."""
        future = self.threads.submit(contextvars.copy_context().run, functools.partial(fn, *args, **kwargs))
        withdrawn = False

        def expire() -> None:
            nonlocal withdrawn
            withdrawn = future.cancel()  # only while it has not started

        timer = asyncio.get_running_loop().call_later(self.settings.pool_timeout, expire)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if withdrawn:
                raise PoolTimeout(f"no database connection free within {self.settings.pool_timeout:g} s") from None
            raise
        finally:
            timer.cancel()


@dataclass
class Caller:
    """One request's store and scope: the user id of ``X-User-Id``, or None (every conversation)."""

    service: Service
    user_id: str | None

    @property
    def store(self) -> Store:
        return self.service.store

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.service.run(fn, *args, **kwargs)


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def _caller(request: Request) -> Caller:
    """The request's store and scope (TokenMiddleware has checked the token and read X-User-Id;
    api.openapi documents both on every data route)."""
    return Caller(_service(request), request.scope["state"]["user_id"])


def _idempotency_key(key: str | None) -> str | None:
    if key is not None and not valid_header_id(key):
        raise HTTPException(400, invalid_header_id("Idempotency-Key"))
    return key


# Retry-safe POSTs. The bound is checked by _idempotency_key, like X-User-Id's by TokenMiddleware
# (a 400); a Header bound would answer 422. It is documented all the same.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe POST: the same key returns the first response",
        json_schema_extra={"minLength": 1, "maxLength": MAX_HEADER_ID_CHARS},
    ),
]


# Every data route: the error answers documented (the token is TokenMiddleware's, documented as
# the API's bearer security scheme by api.openapi).
data = APIRouter(responses=ERROR_RESPONSES, route_class=StrictJsonRoute)
# The page, its documentation and the health probes: no token.
public = APIRouter()


class WithHeaders:
    """Adds fixed headers to every response of the wrapped app (the static files: the page
    served as /static/index.html gets the same Content-Security-Policy as /)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self.headers}
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k not in names] + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------- page, docs, health


@public.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The web page: browse, continue and delete conversations (the API does the rest)."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@public.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """The page's icon where browsers look for it first (it answered 401 before)."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers=PAGE_HEADERS)


@public.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    """The API's interactive documentation (Swagger UI, served from this service)."""
    return FileResponse(STATIC_DIR / "docs" / "index.html", headers=_DOCS_HEADERS)


_ALIVE = b'{"status":"alive"}'


@public.get("/health/live", tags=["health"], response_model=dict[str, str])
async def live() -> Response:
    """Liveness: 200 while the process runs, whatever the database does."""
    return JSON(_ALIVE)


@public.get(
    "/health",
    tags=["health"],
    response_model=HealthOut,
    responses={503: {"model": HealthOut}},
)
async def health(request: Request) -> Any:
    """Readiness: whether the database answers with pgvector and this service's schema. The
    database is asked at most once a second however many callers poll; with the token, the
    answer has the details (versions, schema, the planner's estimate, the reason)."""
    service = _service(request)
    body, headers = await _health(service)
    status_code = 200 if body.status == "healthy" else 503
    detailed = token_ok(request.headers.get("authorization"), service.settings.api_token)
    answer = body.model_dump() if detailed else {"status": body.status}
    return JSONResponse(answer, status_code=status_code, headers=headers)


async def _health(service: Service) -> tuple[HealthOut, dict[str, str] | None]:
    expected = service.expected_schema
    database: dict[str, Any] = {"backend": service.settings.database_backend}
    try:
        facts = await service.health_facts()
    except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer, never a crash
        log.warning("health check failed", extra={"error_type": type(exc).__name__})
        unavailable = HealthOut(
            status="unhealthy",
            database=database,
            expected_schema_version=expected,
            reason=f"database unavailable: {type(exc).__name__}",
        )
        return unavailable, {"Retry-After": RETRY_AFTER_SECONDS}
    database["server_version"] = facts["server_version"]
    body = HealthOut(
        status="healthy",
        database=database,
        schema_version=facts["schema_version"],
        expected_schema_version=expected,
        pgvector_version=facts["pgvector_version"],
        approximate_conversations=facts["approximate_conversations"],
    )
    if facts["schema_version"] < expected or facts["pgvector_version"] is None:
        body.status = "unhealthy"
        body.reason = (
            "pgvector extension missing"
            if facts["pgvector_version"] is None
            else f"schema version {facts['schema_version']} is behind this service's {expected}"
        )
    return body, None


# ---------------------------------------------------------------- conversations


def _idempotency(caller: Caller, key: str, request: Request, body: Any) -> Idempotency:
    fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n{body.model_dump_json()}".encode()).hexdigest()
    return Idempotency(caller.user_id or "", key, fingerprint, status=CREATED)


def _created(body: bytes, replayed: bool) -> Response:
    return JSON(body, status_code=CREATED, headers={"Idempotency-Replayed": "true"} if replayed else None)


def _render_conversation(conversation: Any) -> bytes:
    return dump_json(conversation, ConversationOut)


def _render_message(message: Any) -> bytes:
    return dump_json(message, MessageOut)


class _NewConversation(TypedDict):
    """The store's create_conversation arguments, typed key by key for ``**`` (mypy checks them)."""

    conversation_id: str | None
    user_id: str | None
    title: str | None
    settings: dict[str, Any] | None
    metadata: dict[str, Any] | None
    messages: list[NewMessage]


@data.post(
    "/conversations",
    status_code=201,
    response_model=ConversationOut,
    responses={409: {"model": ErrorOut}},
    tags=["conversations"],
)
@max_json_values(MAX_CREATE_JSON_VALUES)
async def create_conversation(body: ConversationCreate, request: Request, key: IdempotencyKey = None) -> Any:
    caller, key = _caller(request), _idempotency_key(key)
    fields: _NewConversation = {
        "conversation_id": body.conversation_id,
        "user_id": caller.user_id,
        "title": body.title,
        "settings": body.settings,
        "metadata": body.metadata,
        "messages": [m.to_new() for m in body.messages],
    }
    if key is None:
        created = await caller.run(caller.store.create_conversation, **fields)
        return JSON(_render_conversation(created), status_code=201)
    idempotency = _idempotency(caller, key, request, body)
    return _created(
        *await caller.run(caller.store.create_conversation_once, idempotency, _render_conversation, **fields)
    )


@data.get("/conversations", response_model=ConversationPageOut, tags=["conversations"])
async def list_conversations(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Any:
    """Most recently updated first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    caller = _caller(request)
    position = ConversationCursor.decode(cursor) if cursor else None
    page = await caller.run(caller.store.list_conversations, user_id=caller.user_id, limit=limit, cursor=position)
    return JSON(dump_json(page, ConversationPageOut))


@data.get("/conversations/{conversation_id}", response_model=ConversationOut, tags=["conversations"])
async def get_conversation(
    conversation_id: str,
    request: Request,
    messages_limit: Annotated[int | None, Query(ge=0, le=1000)] = None,
) -> Any:
    """The conversation with a page of its messages in order: the first ones, or with
    ``messages_limit=N`` the last N. A page holds at most 1,000 messages and about 4 MiB
    of text; ``messages_after_cursor`` / ``messages_before_cursor`` continue through
    ``/conversations/{id}/messages``."""
    caller = _caller(request)
    conversation = await caller.run(
        caller.store.get_conversation, conversation_id, user_id=caller.user_id, messages_limit=messages_limit
    )
    return JSON(_render_conversation(conversation))


@data.patch("/conversations/{conversation_id}", response_model=ConversationMetaOut, tags=["conversations"])
async def update_conversation(conversation_id: str, body: ConversationPatch, request: Request) -> Any:
    caller = _caller(request)
    updated = await caller.run(
        caller.store.update_conversation,
        conversation_id,
        user_id=caller.user_id,
        title=body.title,
        settings=body.settings,
        metadata=body.metadata,
    )
    # Without its messages: the model picks the fields (a rarely used route).
    return JSON(ConversationMetaOut.model_validate(updated, from_attributes=True).model_dump_json().encode())


@data.delete("/conversations/{conversation_id}", status_code=204, tags=["conversations"])
async def delete_conversation(conversation_id: str, request: Request) -> Response:
    caller = _caller(request)
    await caller.run(caller.store.delete_conversation, conversation_id, user_id=caller.user_id)
    return Response(status_code=204)


# ---------------------------------------------------------------- messages


@data.post("/conversations/{conversation_id}/messages", status_code=201, response_model=MessageOut, tags=["messages"])
async def append_message(conversation_id: str, body: MessageIn, request: Request, key: IdempotencyKey = None) -> Any:
    caller, key = _caller(request), _idempotency_key(key)
    message = body.to_new()
    if key is None:
        (appended,) = await caller.run(caller.store.append_messages, conversation_id, [message], user_id=caller.user_id)
        return JSON(_render_message(appended), status_code=201)
    idempotency = _idempotency(caller, key, request, body)
    return _created(
        *await caller.run(
            caller.store.append_message_once,
            idempotency,
            _render_message,
            conversation_id,
            message,
            user_id=caller.user_id,
        )
    )


@data.get("/conversations/{conversation_id}/messages", response_model=MessagePageOut, tags=["messages"])
async def list_messages(
    conversation_id: str,
    request: Request,
    after: Annotated[int, Query(ge=0, le=2_147_483_647, description="a next_cursor from the previous page")] = 0,
    before: Annotated[
        int | None, Query(ge=1, le=2_147_483_647, description="page backwards: messages before this seq")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Oldest first, ``limit`` at a time; pass ``next_cursor`` back as ``after`` (or, when
    paging backwards from the newest, as ``before``)."""
    if before is not None and after:
        raise HTTPException(400, "use either 'after' or 'before', not both")
    caller = _caller(request)
    page = await caller.run(
        caller.store.list_messages, conversation_id, user_id=caller.user_id, after=after, before=before, limit=limit
    )
    return JSON(dump_json(page, MessagePageOut))


# ---------------------------------------------------------------- search


@data.get("/search", response_model=SearchOut, tags=["search"])
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Full-text search over message content (the first 100,000 characters of each message):
    the best-ranked among the 500 most recent matches. At least one word must be looked
    for ('-word' alone is refused); a search running past SEARCH_TIMEOUT_MS answers 422
    ``search_timeout``."""
    if "\x00" in q:
        raise HTTPException(422, "q must not contain NUL characters")
    caller = _caller(request)
    with caller.service.search_slot(caller.user_id):
        hits = await caller.run(caller.store.search, q, user_id=caller.user_id, limit=limit)
    return JSON(dump_json({"items": hits}, SearchOut))


@data.post("/search/similar", response_model=SimilarOut, tags=["search"])
@max_json_values(5_000)
async def similar(body: SimilarQuery, request: Request) -> Any:
    """Messages nearest to an embedding by cosine distance."""
    caller = _caller(request)
    with caller.service.search_slot(caller.user_id):
        hits = await caller.run(
            caller.store.similar,
            body.embedding,
            user_id=caller.user_id,
            limit=body.limit,
            conversation_id=body.conversation_id,
        )
    return JSON(dump_json({"items": hits}, SimilarOut))
