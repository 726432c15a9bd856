"""HTTP routes: parse, call the store, map errors to status codes. No SQL here."""

import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .database import Database, open_pool
from .middleware import (
    AdmissionMiddleware,
    RequestLogMiddleware,
    TokenMiddleware,
    error,
)
from .migrate import load_migrations
from .models import (
    ConversationCreate,
    ConversationCursor,
    ConversationMetaOut,
    ConversationOut,
    ConversationPageOut,
    ConversationPatch,
    ErrorOut,
    HealthOut,
    InvalidCursor,
    MessageIn,
    MessageOut,
    MessagePageOut,
    SearchOut,
    SimilarOut,
    SimilarQuery,
)
from .settings import Settings
from .store import (
    REPLAY_REF,
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidSearch,
    NotFound,
    SearchTimeout,
    Store,
)

log = logging.getLogger("conversations.api")

RETRY_AFTER_SECONDS = "5"
# How often expired idempotency keys are removed, outside the request path.
HOUSEKEEPING_INTERVAL_S = 600.0
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The page runs only its own script and style, and may not be framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    **_SECURITY_HEADERS,
}
# /docs: Swagger UI from this service's own copy; it sets style attributes, nothing else relaxed.
_DOCS_HEADERS = {
    **_PAGE_HEADERS,
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}
_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "database_unavailable",
}
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 503)}


class _WithHeaders:
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


class _Housekeeping:
    """A daemon thread that removes expired idempotency keys every ``interval`` seconds."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                removed = self.store.remove_expired_idempotency_keys()
                if removed:
                    log.info("expired idempotency keys removed", extra={"removed": removed})
            except Exception as exc:  # noqa: BLE001 - housekeeping retries on its next round
                log.warning("housekeeping failed", extra={"error_type": type(exc).__name__})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    expected_schema = max(m.version for m in load_migrations())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database: Database = open_pool(settings)
        store = Store(
            database.pool,
            embedding_dimension=settings.embedding_dimension,
            timeout=settings.pool_timeout,
            search_timeout_ms=settings.search_timeout_ms,
            reachability=database.reachability,
        )
        app.state.store = store
        housekeeping = _Housekeeping(store, HOUSEKEEPING_INTERVAL_S)
        housekeeping.thread.start()
        log.info("service ready", extra={"backend": settings.database_backend, "version": __version__})
        try:
            yield
        finally:
            housekeeping.stop.set()
            database.close()

    app = FastAPI(
        title="Conversation service",
        version=__version__,
        description="Conversations and their messages in PostgreSQL with pgvector.",
        lifespan=lifespan,
        docs_url=None,  # served below from the service's own copy of Swagger UI
        redoc_url=None,
    )
    # Added innermost first: a request meets the log, then the token, then admission.
    app.add_middleware(
        AdmissionMiddleware,
        max_requests=settings.max_concurrent_requests,
        max_body_bytes=settings.max_body_bytes,
        max_body_bytes_in_flight=settings.max_body_bytes_in_flight,
    )
    app.add_middleware(TokenMiddleware, token=settings.api_token)
    app.add_middleware(RequestLogMiddleware)
    _install_error_handlers(app)

    def store(request: Request) -> Store:
        return request.app.state.store  # type: ignore[no-any-return]

    def authorize(
        authorization: Annotated[
            str | None, Header(description="'Bearer <API_TOKEN>'; checked before the request body is read")
        ] = None,
    ) -> None:
        """Documents the header: TokenMiddleware has already refused any request without the
        token, before reading its body."""

    def user_scope(x_user_id: Annotated[str | None, Header(max_length=255)] = None) -> str | None:
        if x_user_id is not None and (not x_user_id or not x_user_id.isprintable()):
            raise HTTPException(400, "X-User-Id must be 1-255 printable characters")
        return x_user_id

    def idempotency_key(
        idempotency_key: Annotated[
            str | None,
            Header(max_length=255, description="Retry-safe POST: the same key returns the first response"),
        ] = None,
    ) -> str | None:
        if idempotency_key is not None and (not idempotency_key or not idempotency_key.isprintable()):
            raise HTTPException(400, "Idempotency-Key must be 1-255 printable characters")
        return idempotency_key

    StoreDep = Annotated[Store, Depends(store)]
    IdempotencyDep = Annotated[str | None, Depends(idempotency_key)]
    UserDep = Annotated[str | None, Depends(user_scope)]
    # Every data route: the token checked, the error answers documented.
    data_routes = APIRouter(dependencies=[Depends(authorize)], responses=_ERRORS)

    static_dir = Path(__file__).resolve().parent / "static"
    app.mount("/static", _WithHeaders(StaticFiles(directory=static_dir), _PAGE_HEADERS), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The web page: browse, continue and delete conversations (the API does the rest)."""
        return FileResponse(static_dir / "index.html", headers=_PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        """The API's interactive documentation (Swagger UI, served from this service)."""
        return FileResponse(static_dir / "docs" / "index.html", headers=_DOCS_HEADERS)

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        """Liveness: 200 while the process runs, whatever the database does."""
        return {"status": "alive"}

    @app.get("/health", tags=["health"], response_model=HealthOut, responses={503: {"model": HealthOut}})
    def health(request: Request) -> Any:
        """Readiness: the database, its versions and the schema in detail."""
        database: dict[str, Any] = {"backend": settings.database_backend}
        try:
            facts = store(request).health()
        except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer, never a crash
            log.warning("health check failed", extra={"error_type": type(exc).__name__})
            body = HealthOut(
                status="unhealthy",
                database=database,
                expected_schema_version=expected_schema,
                reason=f"database unavailable: {type(exc).__name__}",
            )
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
        database["server_version"] = facts["server_version"]
        body = HealthOut(
            status="healthy",
            database=database,
            schema_version=facts["schema_version"],
            expected_schema_version=expected_schema,
            pgvector_version=facts["pgvector_version"],
            approximate_conversations=facts["approximate_conversations"],
        )
        if facts["schema_version"] < expected_schema or facts["pgvector_version"] is None:
            body.status = "unhealthy"
            body.reason = (
                "pgvector extension missing"
                if facts["pgvector_version"] is None
                else f"schema version {facts['schema_version']} is behind this service's {expected_schema}"
            )
            return JSONResponse(body.model_dump(), status_code=503)
        return body

    @data_routes.post(
        "/conversations",
        status_code=201,
        response_model=ConversationOut,
        responses={409: {"model": ErrorOut}},
        tags=["conversations"],
    )
    def create_conversation(
        body: ConversationCreate, db: StoreDep, user_id: UserDep, key: IdempotencyDep, request: Request
    ) -> Any:
        def write(conn: psycopg.Connection | None) -> tuple[int, Any]:
            created = db.create_conversation(
                conversation_id=body.conversation_id,
                user_id=user_id,
                title=body.title,
                settings=body.settings,
                metadata=body.metadata,
                messages=[m.to_new() for m in body.messages],
                conn=conn,
            )
            return 201, ConversationOut.model_validate(created, from_attributes=True).model_dump(mode="json")

        def expand(ref: dict[str, Any]) -> Any:
            # A large first response is kept as a reference: the conversation as it is now,
            # with the messages that request created.
            created = db.get_conversation(ref["conversation_id"], user_id=user_id, messages_limit=None)
            created.messages = [m for m in created.messages if m.seq <= ref["messages"]]
            last = created.messages[-1].seq if created.messages else 0
            created.messages_after_cursor = str(last) if last < ref["messages"] else None
            return ConversationOut.model_validate(created, from_attributes=True).model_dump(mode="json")

        def compact(payload: dict[str, Any]) -> dict[str, Any]:
            return {"conversation_id": payload["conversation_id"], "messages": len(payload["messages"])}

        return _write_once(db, user_id, key, request, body, write, compact, expand)

    @data_routes.get(
        "/conversations",
        response_model=ConversationPageOut,
        tags=["conversations"],
    )
    def list_conversations(
        db: StoreDep,
        user_id: UserDep,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> Any:
        """Most recently updated first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        position = ConversationCursor.decode(cursor) if cursor else None
        return db.list_conversations(user_id=user_id, limit=limit, cursor=position)

    @data_routes.get(
        "/conversations/{conversation_id}",
        response_model=ConversationOut,
        tags=["conversations"],
    )
    def get_conversation(
        conversation_id: str,
        db: StoreDep,
        user_id: UserDep,
        messages_limit: Annotated[int | None, Query(ge=0, le=1000)] = None,
    ) -> Any:
        """The conversation with a page of its messages in order: the first ones, or with
        ``messages_limit=N`` the last N. A page holds at most 1,000 messages and about 4 MiB
        of text; ``messages_after_cursor`` / ``messages_before_cursor`` continue through
        ``/conversations/{id}/messages``."""
        return db.get_conversation(conversation_id, user_id=user_id, messages_limit=messages_limit)

    @data_routes.patch(
        "/conversations/{conversation_id}",
        response_model=ConversationMetaOut,
        tags=["conversations"],
    )
    def update_conversation(conversation_id: str, body: ConversationPatch, db: StoreDep, user_id: UserDep) -> Any:
        return db.update_conversation(
            conversation_id, user_id=user_id, title=body.title, settings=body.settings, metadata=body.metadata
        )

    @data_routes.delete(
        "/conversations/{conversation_id}",
        status_code=204,
        tags=["conversations"],
    )
    def delete_conversation(conversation_id: str, db: StoreDep, user_id: UserDep) -> Response:
        db.delete_conversation(conversation_id, user_id=user_id)
        return Response(status_code=204)

    @data_routes.post(
        "/conversations/{conversation_id}/messages",
        status_code=201,
        response_model=MessageOut,
        tags=["messages"],
    )
    def append_message(
        conversation_id: str, body: MessageIn, db: StoreDep, user_id: UserDep, key: IdempotencyDep, request: Request
    ) -> Any:
        def write(conn: psycopg.Connection | None) -> tuple[int, Any]:
            (message,) = db.append_messages(conversation_id, [body.to_new()], user_id=user_id, conn=conn)
            return 201, MessageOut.model_validate(message, from_attributes=True).model_dump(mode="json")

        def expand(ref: dict[str, Any]) -> Any:
            page = db.list_messages(conversation_id, user_id=user_id, after=ref["seq"] - 1, limit=1)
            return MessageOut.model_validate(page.items[0], from_attributes=True).model_dump(mode="json")

        def compact(payload: dict[str, Any]) -> dict[str, Any]:
            return {"seq": payload["seq"]}

        return _write_once(db, user_id, key, request, body, write, compact, expand)

    @data_routes.get(
        "/conversations/{conversation_id}/messages",
        response_model=MessagePageOut,
        tags=["messages"],
    )
    def list_messages(
        conversation_id: str,
        db: StoreDep,
        user_id: UserDep,
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
        return db.list_messages(conversation_id, user_id=user_id, after=after, before=before, limit=limit)

    @data_routes.get("/search", response_model=SearchOut, tags=["search"])
    def search(
        db: StoreDep,
        user_id: UserDep,
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Any:
        """Full-text search over message content (the first 100,000 characters of each message):
        the best-ranked among the 500 most recent matches. At least one word must be looked
        for ('-word' alone is refused); a search running past SEARCH_TIMEOUT_MS answers 422
        ``search_timeout``."""
        if "\x00" in q:
            raise HTTPException(422, "q must not contain NUL characters")
        return {"items": db.search(q, user_id=user_id, limit=limit)}

    @data_routes.post("/search/similar", response_model=SimilarOut, tags=["search"])
    def similar(body: SimilarQuery, db: StoreDep, user_id: UserDep) -> Any:
        """Messages nearest to an embedding by cosine distance."""
        hits = db.similar(body.embedding, user_id=user_id, limit=body.limit, conversation_id=body.conversation_id)
        return {"items": hits}

    app.include_router(data_routes)
    return app


def _write_once(
    db: Store,
    user_id: str | None,
    key: str | None,
    request: Request,
    body: Any,
    write: Callable[[psycopg.Connection | None], tuple[int, Any]],
    compact: Callable[[Any], Any],
    expand: Callable[[Any], Any],
) -> JSONResponse:
    """Run a POST's write; with an Idempotency-Key, at most once per key (see Store.idempotent).
    ``compact`` turns a large response into a reference for storage, ``expand`` turns the
    reference back into a response on a replay."""
    if key is None:
        status, payload = write(None)
        return JSONResponse(payload, status_code=status)
    fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n{body.model_dump_json()}".encode()).hexdigest()
    status, payload, replayed = db.idempotent(user_id or "", key, fingerprint, write, compact)
    if replayed and isinstance(payload, dict) and REPLAY_REF in payload:
        payload = expand(payload[REPLAY_REF])
    return JSONResponse(payload, status_code=status, headers={"Idempotency-Replayed": "true"} if replayed else None)


def _install_error_handlers(app: FastAPI) -> None:
    Handler = Callable[[Request, Any], Awaitable[Response]]

    def register(exc_type: type[Exception]) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            app.add_exception_handler(exc_type, fn)
            return fn

        return wrap

    @register(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "invalid_json", "request body is not valid JSON")
        # Echo where and why, never the offending input (it may be a message body).
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors[:20]
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            {"error": "validation_error", "message": f"{where}: {first['msg']}", "details": details},
            status_code=422,
        )

    @register(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = _ERROR_CODES.get(exc.status_code, "error")
        return error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @register(NotFound)
    async def not_found(_: Request, exc: NotFound) -> Response:
        return error(404, "not_found", str(exc))

    @register(Conflict)
    async def conflict(_: Request, exc: Conflict) -> Response:
        return error(409, "conflict", str(exc))

    @register(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> Response:
        return error(422, "validation_error", str(exc))

    @register(InvalidSearch)
    async def invalid_search(_: Request, exc: InvalidSearch) -> Response:
        return error(422, "invalid_search", str(exc))

    @register(SearchTimeout)
    async def search_timeout(_: Request, exc: SearchTimeout) -> Response:
        # The query is too broad; the database is fine: no Retry-After, not an outage.
        log.info("search timed out")
        return error(422, "search_timeout", str(exc))

    @register(IdempotencyKeyReused)
    async def key_reused(_: Request, exc: IdempotencyKeyReused) -> Response:
        return error(422, "idempotency_key_reused", str(exc))

    @register(InvalidCursor)
    async def invalid_cursor(_: Request, exc: InvalidCursor) -> Response:
        return error(400, "invalid_cursor", str(exc))

    async def database_unavailable(_: Request, exc: Exception) -> Response:
        # OperationalError covers a refused or dropped connection, a pool that stayed busy
        # past its timeout (PoolTimeout) and a statement over statement_timeout
        # (QueryCanceled); InterfaceError a connection lost mid-request.
        log.warning("database unavailable", extra={"error_type": type(exc).__name__})
        return error(
            503,
            "database_unavailable",
            "the database is unavailable; retry shortly",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )

    register(psycopg.OperationalError)(database_unavailable)
    register(psycopg.InterfaceError)(database_unavailable)

    @register(psycopg.DataError)
    async def bad_data(_: Request, exc: psycopg.DataError) -> Response:
        log.info("database rejected data", extra={"error_type": type(exc).__name__})
        return error(422, "invalid_data", "the database rejected a value in this request")
