"""The service's database, opened one way for the API and the importer: the configured
database or the embedded one, credentials that follow a rotation, a statement timeout, dead
connections swept, and a fast answer while the database is unreachable."""

from __future__ import annotations

import json
import logging
import re
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from .credentials import SecretCredentials, rotating_connection_class
from .settings import Settings

log = logging.getLogger("conversations.database")

# While the database is unreachable, how often a probe tries to connect.
PROBE_INTERVAL_S = 0.5
# How long the pool keeps retrying one connection (backing off) before it gives the slot up;
# the next request that needs a connection starts a fresh attempt at once.
RECONNECT_GIVE_UP_S = 5.0


class DatabaseUnreachable(psycopg.OperationalError):
    """Raised at once, without waiting for the pool, while the database is known to be
    unreachable (the API answers 503 with Retry-After, as for any outage)."""


class Reachability:
    """Whether the database is known to be unreachable.

    A failed connection attempt (the pool's or the probe's) marks it down; while it is down a
    probe thread tries to connect every PROBE_INTERVAL_S, and the first connection that
    succeeds, from anywhere, marks it up again. Requests consult ``down`` and fail at once
    instead of queueing for a connection that cannot come."""

    def __init__(self, interval: float = PROBE_INTERVAL_S) -> None:
        self.interval = interval
        self.probe: Callable[[], None] | None = None
        self._down = False
        self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def down(self) -> bool:
        return self._down

    def failed(self) -> None:
        with self._lock:
            if self._down or self._closed:
                return
            self._down = True
            log.warning("database unreachable: failing requests fast until a connection succeeds")
            if self.probe is not None and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._probe_loop, name="database-probe", daemon=True)
                self._thread.start()

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("database reachable again")

    def close(self) -> None:
        self._closed = True
        self._down = False

    def _probe_loop(self) -> None:
        while self._down and not self._closed:
            time.sleep(self.interval)
            if not self._down or self._closed or self.probe is None:
                return
            try:
                self.probe()
            except Exception:  # noqa: BLE001, S112 - still down; the next probe tries again
                continue


# The server answered, but cannot take connections now (SQLSTATE 57P03: starting up, shutting
# down, recovering). libpq reports a failed connection as text only, without its SQLSTATE.
_CANNOT_CONNECT_NOW = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)


def unreachable(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connection attempt means the database cannot be reached: no answer at
    all (refused, timed out, no such host: no FATAL from a server) or a server that cannot take
    connections now. A refused login (during a rotation, say) or a full server is an answer
    from a running database, and is not."""
    text = str(exc)
    return "FATAL:" not in text or any(reason in text for reason in _CANNOT_CONNECT_NOW)


def reachability_class(
    base: type[psycopg.Connection[Any]], reachability: Reachability
) -> type[psycopg.Connection[Any]]:
    """A connection class that reports each connection attempt's outcome to ``reachability``."""

    class ReportingConnection(base):  # type: ignore[valid-type,misc]
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                if unreachable(exc):
                    reachability.failed()
                raise
            reachability.succeeded()
            return conn

    return ReportingConnection


class SweepingCheck:
    """The pool's check on lending a connection, without a round trip for a healthy one.

    An idle connection has nothing to read: a server that ended it (a restart, a failover,
    pg_terminate_backend) sent its FATAL message or closed the socket, and either makes the
    socket readable. So a connection whose socket has nothing to read is lent at once, and one
    with something to read is checked with a round trip (a stray notice passes, a dead
    connection fails). After a restart every pooled connection is dead, not just the one being
    lent; the pool would find them one by one, backing off a second or more after each.
    Sweeping the rest on the first failure makes the retry get a fresh connection instead."""

    def __init__(self) -> None:
        self.pool: ConnectionPool | None = None
        self._busy = threading.Lock()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed and not _readable(conn):
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and self._busy.acquire(blocking=False):
                try:
                    self.pool.check()
                finally:
                    self._busy.release()
            raise


def _readable(conn: psycopg.Connection[Any]) -> bool:
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True  # no usable socket: let the full check fail it
    return bool(ready)


# A run of this many digits may be an integer past 64 bits, which orjson would read as a float.
_LONG_DIGITS = re.compile(rb"\d{19}")


def json_loads(data: str | bytes) -> Any:
    """jsonb values as the standard library reads them, faster: orjson, except where orjson
    would read them differently (an integer past 64 bits, a number past a double's range, a
    lone surrogate escape: the standard library's answer then)."""
    if isinstance(data, bytes) and _LONG_DIGITS.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def configure_connection(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection: jsonb read with ``json_loads``."""
    set_json_loads(json_loads, conn)


@dataclass
class Replica:
    """The read replica's pool and whether it is reachable; ``wait_s``: how long a read waits
    for the replica to replay the writes committed before it began."""

    pool: ConnectionPool
    reachability: Reachability
    wait_s: float


@dataclass
class Database:
    pool: ConnectionPool
    reachability: Reachability
    backend: str
    replica: Replica | None = None

    def close(self) -> None:
        for reachability, pool in self._pools():
            reachability.close()
            pool.close()

    def _pools(self) -> list[tuple[Reachability, ConnectionPool]]:
        pools = [(self.reachability, self.pool)]
        if self.replica is not None:
            pools.append((self.replica.reachability, self.replica.pool))
        return pools


def open_pool(
    settings: Settings,
    *,
    name: str = "conversations",
    min_size: int | None = None,
    max_size: int | None = None,
    statement_timeout_ms: int | None = None,
) -> Database:
    """The pool the service and the importer use: ``settings.database_url``, or the embedded
    database started (or reused) under ``settings.local_data_dir``; and with
    ``settings.database_read_url``, a second pool on the read replica."""
    conninfo = settings.database_url
    if conninfo is None:
        from .embedded import start_embedded

        conninfo = start_embedded(
            settings.local_data_dir, embedding_dimension=settings.embedding_dimension
        ).app_conninfo
    base: type[psycopg.Connection[Any]] = psycopg.Connection
    if settings.db_secret_arn:
        credentials = SecretCredentials(
            settings.db_secret_arn, settings.database_user or "", settings.database_password or ""
        )
        base = rotating_connection_class(credentials)
    timeout_ms = settings.statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
    kwargs: dict[str, Any] = {"connect_timeout": settings.connect_timeout_s, "autocommit": True}
    if settings.db_proxy:
        # RDS Proxy refuses the 'options' startup parameter, and a named prepared statement
        # would pin the client connection to one database session for good. The timeout is
        # the database's default instead (ensure_app_role sets it).
        kwargs["prepare_threshold"] = None
    else:
        kwargs["options"] = f"-c statement_timeout={timeout_ms}"
    sizes = (
        settings.pool_min_size if min_size is None else min_size,
        settings.pool_max_size if max_size is None else max_size,
    )
    pool, reachability = _open(conninfo, base, kwargs, settings, name, sizes)
    database = Database(pool, reachability, settings.database_backend)
    if settings.database_read_url:
        try:
            read_pool, read_reachability = _open(
                settings.database_read_url, base, kwargs, settings, f"{name}-read", sizes, wait=False
            )
        except BaseException:
            database.close()
            raise
        database.replica = Replica(read_pool, read_reachability, settings.read_wait_ms / 1000)
    return database


def _open(
    conninfo: str,
    base: type[psycopg.Connection[Any]],
    kwargs: dict[str, Any],
    settings: Settings,
    name: str,
    sizes: tuple[int, int],
    *,
    wait: bool = True,
) -> tuple[ConnectionPool, Reachability]:
    min_size, max_size = sizes
    reachability = Reachability()
    connection_class = reachability_class(base, reachability)

    def probe() -> None:
        connection_class.connect(conninfo, **kwargs).close()

    reachability.probe = probe
    sweep = SweepingCheck()
    pool = ConnectionPool(
        conninfo,
        connection_class=connection_class,
        min_size=min_size,
        max_size=max_size,
        timeout=settings.pool_timeout,
        kwargs=kwargs,
        # A connection killed server-side (restart, failover, pg_terminate_backend) is
        # found and replaced when lent, instead of failing the request that gets it.
        check=sweep,
        configure=configure_connection,
        reconnect_timeout=RECONNECT_GIVE_UP_S,
        max_idle=settings.pool_max_idle_s,
        open=False,
        name=name,
    )
    sweep.pool = pool
    if wait and min_size > 0:
        try:
            probe()
        except psycopg.OperationalError as exc:
            if not unreachable(exc):
                raise  # a database that answers and refuses (a wrong password): a setup error
            # A task started during a failover, an outage or a resume (a scale-out, a Spot
            # replacement): it serves, answering 503 database_unavailable, instead of exiting and
            # crash-looping; the probe marks the database up once a connection succeeds.
            log.warning("database unreachable at start: answering 503 until it is back", extra={"pool": name})
            wait = False
    # The replica's pool does not wait: a replica that is down must not keep the service from
    # starting (its reads go to the writer until it answers).
    pool.open(wait=wait and min_size > 0, timeout=max(settings.pool_timeout, 10.0))
    return pool, reachability
