"""Slow and greedy callers at the HTTP layer (server.py's protocol, as the container runs it):
headers that trickle, headers that never end, connections that never speak. Each is cut, and
/health/live stays fast for everyone else while they try."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from conversations.api import create_app
from conversations.server import BoundedHttpToolsProtocol, uvicorn_options
from devtools.net import free_port
from devtools.serving import serve_app
from tests.support.service import MigratedDatabase, make_settings


@pytest.fixture
def url(clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "header_timeout_s", 0.5)
    settings = make_settings(clean_db.app)
    options = {**uvicorn_options(settings), "timeout_keep_alive": 1}
    with serve_app(create_app(settings), "127.0.0.1", free_port(), **options) as base:
        yield base


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _live_ms(url: str) -> float:
    with _connect(url) as sock:
        began = time.perf_counter()
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    return (time.perf_counter() - began) * 1000


def test_headers_that_trickle_are_cut_with_408(url: str) -> None:
    with _connect(url) as sock:
        _trickle(sock)


def _trickle(sock: socket.socket) -> None:
    began = time.monotonic()
    sock.sendall(b"GET /health/live HTTP/1.1\r\n")
    for n in range(40):
        try:
            sock.sendall(f"X-Slow-{n}: a\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.1)
    answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"connection: close" in answer
    assert time.monotonic() - began < 2.5


def test_headers_over_the_size_bound_are_a_431(url: str) -> None:
    with _connect(url) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_connection_that_never_speaks_is_closed(url: str) -> None:
    began = time.monotonic()
    with _connect(url) as sock:
        assert _answer(sock) == b""  # closed, with nothing said
    assert time.monotonic() - began < 3


def test_health_live_stays_fast_while_fifty_callers_trickle_headers(url: str) -> None:
    with ExitStack() as stack:
        slow = []
        for _ in range(50):
            sock = _connect(url)
            stack.callback(sock.close)
            sock.sendall(b"POST /conversations HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        worst = max(_live_ms(url) for _ in range(10))
    assert worst < 100, f"/health/live took {worst:.0f} ms"


def test_ordinary_requests_on_a_kept_alive_connection_still_work(url: str) -> None:
    with _connect(url) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            time.sleep(0.6)  # longer than the header timeout between requests: only idle, not late
