"""The store's connections: lending one from the pool within the timeout (at once an error
while the database is known to be unreachable), and reads routed to a read replica that has
caught up with the caller's writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..database import DatabaseUnreachable, Reachability, Replica

# While waiting for a connection, how often a request looks whether the database has been
# found unreachable meanwhile.
LEND_SLICE_S = 0.2
# While a read waits for the replica to catch up, how often it asks again.
REPLAY_POLL_S = 0.002

log = logging.getLogger("conversations.store")
T = TypeVar("T")


class Connections:
    """The pool, the optional read replica, and the limits every room of the store works within."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        embedding_dimension: int,
        timeout: float = 5.0,
        search_timeout_ms: int = 2_000,
        reachability: Reachability | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.pool = pool
        self.reachability = reachability
        self.replica = replica
        self._replica_warned = False
        self.embedding_dimension = embedding_dimension
        self.timeout = timeout
        self.search_timeout_ms = search_timeout_ms

    @contextmanager
    def _conn(self, existing: psycopg.Connection | None = None) -> Iterator[psycopg.Connection]:
        if existing is not None:  # already inside a caller's transaction
            yield existing
            return
        conn = self._lend()
        try:
            # Autocommit: a single statement is its own transaction (one round trip, no
            # BEGIN/COMMIT); work that needs more opens conn.transaction() explicitly.
            if not conn.autocommit:
                conn.autocommit = True
            yield conn
        finally:
            self.pool.putconn(conn)

    def _lend(self) -> psycopg.Connection:
        """A connection from the pool within ``timeout``; at once DatabaseUnreachable while
        the database is known to be unreachable (checked again every LEND_SLICE_S of waiting,
        so a request queued when it goes down does not wait out the whole timeout)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self.reachability is not None and self.reachability.down:
                raise DatabaseUnreachable("the database is unreachable")
            remaining = deadline - time.monotonic()
            try:
                return self.pool.getconn(timeout=max(min(LEND_SLICE_S, remaining), 0.001))
            except PoolTimeout:
                if remaining <= LEND_SLICE_S:
                    raise

    def _read(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` (a read that tolerates replication lag: list, search, similar) on the read
        replica when there is one that is reachable and has caught up, else on the writer.

        Read-your-writes: first the writer's current WAL insert position is read (one short
        round trip; the insert position, not the write position, so that a commit not yet
        flushed, under synchronous_commit=off, is covered too); the replica is used only once
        it has replayed up to that position, so it holds every write committed before this
        read began, whichever task or caller made it. A replica that has not caught up within
        ``replica.wait_s`` leaves the read to the writer; one that fails (down, restarting, or
        cancelling the query for a recovery conflict) does too, and the read is run again
        there: it only reads, so running it twice is safe."""
        replica = self.replica
        if replica is not None and not replica.reachability.down:
            conn = self._caught_up(replica)
            if conn is not None:
                try:
                    return work(conn)
                except (psycopg.OperationalError, psycopg.errors.SerializationFailure) as exc:
                    if not conn.closed and not isinstance(exc, psycopg.errors.SerializationFailure):
                        raise  # the query's own failure (a timeout, say), not the replica's
                    log.warning("read replica failed; the writer answers", extra={"error_type": type(exc).__name__})
                finally:
                    replica.pool.putconn(conn)
        with self._conn() as conn:
            return work(conn)

    def _caught_up(self, replica: Replica) -> psycopg.Connection | None:
        """A replica connection that has replayed every write committed so far, or None."""
        with self._conn() as writer:
            row = writer.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        assert row is not None
        fence = row[0]
        try:
            conn = replica.pool.getconn(timeout=min(self.timeout, 1.0))
        except (PoolTimeout, psycopg.OperationalError):
            return None
        try:
            if not conn.autocommit:
                conn.autocommit = True
            deadline = time.monotonic() + replica.wait_s
            while True:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn() IS NULL", (fence,)
                ).fetchone()
                assert row is not None
                if row[0]:
                    return conn
                if row[1]:
                    self._not_a_replica()
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(REPLAY_POLL_S)
        except (psycopg.OperationalError, psycopg.errors.SerializationFailure):
            pass
        replica.pool.putconn(conn)
        return None

    def _not_a_replica(self) -> None:
        if not self._replica_warned:
            self._replica_warned = True
            log.warning(
                "the read endpoint reports no replayed WAL position (not a streaming replica):"
                " every read goes to the writer"
            )
