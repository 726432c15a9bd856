"""The service over real HTTP: uvicorn in a thread, on loopback, for as long as a block runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conversations.api import create_app
from conversations.server import uvicorn_options
from conversations.settings import Settings

from .net import free_port


@contextmanager
def serve_app(app: Any, host: str, port: int, **options: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread until the block ends; yields its URL."""
    import uvicorn

    config = {"log_config": None, "access_log": False, **options, "timeout_graceful_shutdown": 10}
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start on {host}:{port} (is the port in use? set PORT)")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the service with ``settings`` on a free loopback port, as the container runs it
    (server.uvicorn_options), and yield its base URL."""
    with serve_app(create_app(settings), "127.0.0.1", free_port(), **uvicorn_options(settings)) as url:
        yield url
