"""How uvicorn serves the app: the options ``python -m conversations`` (the container) and the
tests' in-process server share, and an HTTP protocol with bounds uvicorn's httptools parser
lacks: a request's headers must arrive within a time and under a size.

Without them a caller could hold a connection open forever by trickling its headers (no timeout
runs until a first response), or send megabytes of headers (an 8 MiB header was accepted; 64 MiB
cost 73 MB of memory). The body's own bounds are the ASGI middleware's (middleware.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import Settings

# Longer than the load balancer's idle timeout (60 s, stacks/api_service.py), so the load balancer,
# not the task, closes an idle keep-alive connection: otherwise a request can race the close
# and its caller gets a 502.
KEEP_ALIVE_S = 75
# A request line and headers larger than this answer 431 (the load balancer itself takes at most
# 64 KiB of headers; a browser sends a few KiB).
MAX_HEADER_BYTES = 64 * 1024
# From a request's first byte, its headers must be in within this.
HEADER_TIMEOUT_S = 10.0


def _close_with(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    body = message.encode("ascii")
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("ascii")
        + body
    )
    transport.close()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a size and a time bound on each request's headers, and
    a new connection that sends nothing closed after the keep-alive timeout, as an idle one is."""

    max_header_bytes = MAX_HEADER_BYTES
    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_bytes = 0
        self._headers_too_large = False
        self._headers_due: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._headers_due = self.loop.call_later(seconds, self._headers_late)

    def _disarm(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if self.transport.is_closing():
            return
        if self._header_bytes == 0:  # never began a request: closed like an idle connection
            self.transport.close()
            return
        _close_with(
            self.transport, 408, "Request Timeout", f"request headers not received within {self.header_timeout_s:g} s"
        )

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._headers_too_large = True
            # The parser turns a callback's exception into HttpParserError; send_400_response
            # (below) then answers 431 instead of uvicorn's 400.
            raise ValueError("request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm(self.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count(len(url) or 1)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            _close_with(
                self.transport,
                431,
                "Request Header Fields Too Large",
                f"request headers over {self.max_header_bytes} bytes",
            )
            return
        super().send_400_response(msg)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's / uvicorn.Config's options for ``settings`` (besides the app, host, port)."""
    return {
        "http": BoundedHttpToolsProtocol,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 20,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "proxy_headers": True,
        # Only the load balancer's X-Forwarded-For is believed: from anyone else it is a claim.
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
