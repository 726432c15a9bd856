"""Error answers: one JSON shape (``{"error": code, "message": text}``) for every refusal, and
the handlers that map the store's and the database's exceptions to status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from .models import ErrorOut, InvalidCursor
from .store import Conflict, IdempotencyKeyReused, InvalidInput, InvalidSearch, NotFound, SearchTimeout

log = logging.getLogger("conversations.api")

RETRY_AFTER_SECONDS = "5"
BUSY_RETRY_AFTER_SECONDS = "1"


def _known_down(request: Request) -> bool:
    """Whether the database is known to be unreachable (a failed connection attempt, no success
    since): a pool timeout then is the outage, not a busy task."""
    service = getattr(request.app.state, "service", None)
    reachability = getattr(getattr(service, "store", None), "reachability", None)
    return bool(reachability is not None and reachability.down)


_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_searches",
    503: "database_unavailable",
}
# The error answers every data route documents.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 429, 503)
}
# Store refusals: status and error code.
_STORE_ERRORS: dict[type[Exception], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    InvalidInput: (422, "validation_error"),
    InvalidSearch: (422, "invalid_search"),
    IdempotencyKeyReused: (422, "idempotency_key_reused"),
    InvalidCursor: (400, "invalid_cursor"),
}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def database_unavailable() -> JSONResponse:
    return error(
        503, "database_unavailable", "the database is unavailable; retry shortly", {"Retry-After": RETRY_AFTER_SECONDS}
    )


def install_error_handlers(app: FastAPI) -> None:
    Handler = Callable[[Request, Any], Awaitable[Response]]

    def register(*exc_types: type[Exception]) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            for exc_type in exc_types:
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
        code = getattr(exc, "code", None) or _ERROR_CODES.get(exc.status_code, "error")
        return error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @register(*_STORE_ERRORS)
    async def refused(_: Request, exc: Exception) -> Response:
        status, code = next(answer for kind, answer in _STORE_ERRORS.items() if isinstance(exc, kind))
        return error(status, code, str(exc))

    @register(SearchTimeout)
    async def search_timeout(_: Request, exc: SearchTimeout) -> Response:
        # The query is too broad; the database is fine: no Retry-After, not an outage.
        log.info("search timed out")
        return error(422, "search_timeout", str(exc))

    @register(psycopg.OperationalError, psycopg.InterfaceError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        # OperationalError covers a refused or dropped connection, a pool that stayed busy
        # past its timeout (PoolTimeout) and a statement over statement_timeout
        # (QueryCanceled); InterfaceError a connection lost mid-request.
        if isinstance(exc, PoolTimeout) and not _known_down(request):
            # Every connection (or store thread) stayed in use: the database answers, this task is
            # saturated. Said so, not blamed on the database.
            log.warning("busy", extra={"error_type": type(exc).__name__})
            return error(
                503,
                "busy",
                "every database connection of this task is in use; retry shortly",
                {"Retry-After": BUSY_RETRY_AFTER_SECONDS},
            )
        log.warning("database unavailable", extra={"error_type": type(exc).__name__})
        return database_unavailable()

    @register(psycopg.DataError)
    async def bad_data(_: Request, exc: psycopg.DataError) -> Response:
        log.info("database rejected data", extra={"error_type": type(exc).__name__})
        return error(422, "invalid_data", "the database rejected a value in this request")
