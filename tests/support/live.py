"""The real service over real HTTP: uvicorn in a thread on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conversations.api import create_app
from conversations.settings import Settings
from scripts.local_stack import serve_app
from tests.support.postgres import free_port

__all__ = ["free_port", "serve"]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the service with ``settings`` and yield its base URL."""
    with serve_app(create_app(settings), "127.0.0.1", free_port()) as url:
        yield url
