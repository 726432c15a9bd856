"""``python -m conversations``: run the HTTP service with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from . import logs
from .api import create_app
from .settings import Settings, SettingsError

# Longer than the load balancer's idle timeout (60 s, stacks/api_service.py), so the load balancer,
# not the task, closes an idle keep-alive connection: otherwise a request can race the close
# and its caller gets a 502.
KEEP_ALIVE_S = 75


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=True,
        # Only the load balancer's X-Forwarded-For is believed: from anyone else it is a claim.
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
