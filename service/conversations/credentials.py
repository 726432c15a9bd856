"""Database credentials that follow Secrets Manager rotation without a restart.

ECS injects the application password at task start. When rotation changes it (single-user
rotation) or moves to the other login (multi-user rotation), new connections fail to
authenticate; the pool then re-reads the secret by ARN, once, and connects with what it says.
Existing connections are unaffected (PostgreSQL checks passwords only at login).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("conversations.credentials")
# botocore logs whole responses (the secret value included) at DEBUG: never here.
for _noisy in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

# Never ask Secrets Manager more often than this, however many connections fail at once.
MIN_REFRESH_INTERVAL_S = 5.0


def is_auth_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "password authentication failed" in text or "authentication failed for user" in text


class SecretCredentials:
    """The current user and password, refreshed from a secret (``username``, ``password``)."""

    def __init__(
        self, secret_arn: str, username: str, password: str, client_factory: Callable[[], Any] | None = None
    ) -> None:
        self.secret_arn = secret_arn
        self.username = username
        self.password = password
        self._client_factory = client_factory or secrets_client
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def kwargs(self) -> dict[str, Any]:
        with self._lock:
            return {"user": self.username, "password": self.password}

    def refresh(self) -> bool:
        """Re-read the secret; True when it holds different credentials than before."""
        with self._lock:
            if time.monotonic() - self._last_refresh < MIN_REFRESH_INTERVAL_S:
                return False
            self._last_refresh = time.monotonic()
            try:
                # The stage by name: during a rotation AWSPENDING exists too, and AWSCURRENT is
                # the one that rotation has finished testing.
                raw = self._client_factory().get_secret_value(SecretId=self.secret_arn, VersionStage="AWSCURRENT")[
                    "SecretString"
                ]
                value = json.loads(raw)
            except Exception as exc:  # noqa: BLE001 - report the type only: never secret material
                log.warning("cannot re-read the database secret", extra={"error_type": type(exc).__name__})
                return False
            username, password = str(value.get("username", "")), str(value.get("password", ""))
            if not username or not password:
                log.warning("the database secret has no username or password")
                return False
            changed = (username, password) != (self.username, self.password)
            self.username, self.password = username, password
            log.info("database credentials re-read from the secret", extra={"changed": changed})
            return changed


def secrets_client() -> Any:
    """A Secrets Manager client; boto3 is imported late so tools without it can import this module."""
    import boto3

    return boto3.client("secretsmanager")


def rotating_connection_class(credentials: SecretCredentials) -> type[psycopg.Connection[Any]]:
    """A connection class whose connect() re-reads the secret once on an authentication failure."""

    class RotatingConnection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> RotatingConnection:
            try:
                return super().connect(conninfo, **{**kwargs, **credentials.kwargs()})
            except psycopg.OperationalError as exc:
                if not is_auth_failure(exc) or not credentials.refresh():
                    raise
            return super().connect(conninfo, **{**kwargs, **credentials.kwargs()})

    return RotatingConnection
