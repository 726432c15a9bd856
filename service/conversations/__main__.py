"""``python -m conversations``: run the HTTP service with uvicorn (server.py's options)."""

from __future__ import annotations

import sys

import uvicorn

from . import logs
from .api import create_app
from .server import uvicorn_options
from .settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
