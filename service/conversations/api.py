"""The application: ``create_app`` composes the routes (routes.py), the middleware
(middleware.py) and the error answers (errors.py) around one store, opened by the lifespan."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from . import __version__
from .database import Database, open_pool
from .errors import install_error_handlers
from .headers import MAX_HEADER_ID_CHARS, USER_ID_HEADER
from .middleware import (
    PUBLIC_PATHS,
    AdmissionMiddleware,
    RequestLogMiddleware,
    TokenMiddleware,
)
from .migrate import load_migrations
from .routes import PAGE_HEADERS, STATIC_DIR, Service, WithHeaders, data, public
from .settings import Settings
from .store import Store

log = logging.getLogger("conversations.api")

# How often expired idempotency keys are removed, outside the request path.
HOUSEKEEPING_INTERVAL_S = 600.0


class _Housekeeping:
    """A daemon thread that removes expired idempotency keys every ``interval`` seconds."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def _run(self) -> None:
        seen = -1
        while not self.stop.wait(self.interval):
            # No connection lent since the last round: no request came, nothing new can have
            # expired that matters, and a round now would wake an idle (paused) database.
            lent = self.store.pool.get_stats().get("requests_num", 0)
            if lent == seen:
                continue
            self.run_once()
            seen = self.store.pool.get_stats().get("requests_num", 0)

    def run_once(self) -> None:
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
            replica=database.replica,
        )
        # Few threads: each extra one waiting on the database costs GIL hand-offs (measured under
        # wrk: 10 threads served ~20% fewer requests per CPU-second than 4, 40 threads ~40%
        # fewer); a request queues for a thread instead, within the pool timeout (Service.run).
        threads = ThreadPoolExecutor(settings.store_threads, thread_name_prefix="store")
        app.state.service = Service(settings, store, threads, expected_schema)
        housekeeping = _Housekeeping(store, HOUSEKEEPING_INTERVAL_S)
        housekeeping.thread.start()
        log.info("service ready", extra={"backend": settings.database_backend, "version": __version__})
        try:
            yield
        finally:
            housekeeping.stop.set()
            threads.shutdown(wait=True, cancel_futures=True)
            database.close()

    app = FastAPI(
        title="Conversation service",
        version=__version__,
        description="Conversations and their messages in PostgreSQL with pgvector.",
        lifespan=lifespan,
        # No OpenTelemetry here (the logs carry a request id): its per-request middleware is off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # served by routes.docs from the service's own copy of Swagger UI
        redoc_url=None,
    )
    # Added innermost first: a request meets the log, then the token, then admission.
    app.add_middleware(
        AdmissionMiddleware,
        max_requests=settings.max_concurrent_requests,
        max_body_bytes=settings.max_body_bytes,
        max_body_bytes_in_flight=settings.max_body_bytes_in_flight,
        body_grace_s=settings.body_grace_s,
        min_body_rate=settings.min_body_bytes_per_s,
    )
    app.add_middleware(TokenMiddleware, token=settings.api_token)
    app.add_middleware(RequestLogMiddleware)
    install_error_handlers(app)
    app.mount("/static", WithHeaders(StaticFiles(directory=STATIC_DIR), PAGE_HEADERS), name="static")
    app.include_router(public)
    app.include_router(data)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


_USER_ID_PARAMETER = {
    "name": USER_ID_HEADER,
    "in": "header",
    "required": False,
    "description": "The caller's user: only its conversations are seen and changed (absent: every conversation)",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_HEADER_ID_CHARS},
}


def openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with what TokenMiddleware reads on every path it guards: the token,
    as a bearer security scheme (Swagger UI's "Authorize" sends it), and the X-User-Id header."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "API_TOKEN; checked before the body is read"}
        }
        for path, operations in schema["paths"].items():
            if path not in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("parameters", []).append(_USER_ID_PARAMETER)
        app.openapi_schema = schema
    return app.openapi_schema
