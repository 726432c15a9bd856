"""Connections as RDS Proxy needs them, and a service that lets an idle database pause.

RDS Proxy refuses the ``options`` startup parameter and pins a client connection to one
database session once it prepares a named statement. Aurora Serverless v2 with minAcu 0 pauses
only when no connection is open, so an idle service must close its pool and not wake it."""

from __future__ import annotations

import threading
import time

import psycopg

from conversations.api import _Housekeeping
from conversations.database import open_pool
from conversations.migrate import DEFAULT_STATEMENT_TIMEOUT_MS
from conversations.store import Store
from tests.support.service import EMBEDDING_DIMENSION, MigratedDatabase, make_settings


def _session(db: MigratedDatabase, **overrides: object) -> tuple[str, bool, int]:
    """The pooled session's statement timeout, whether it was started with options, and how
    many statements it has prepared after the same query ran ten times."""
    database = open_pool(make_settings(db.app, **overrides))
    try:
        with database.pool.connection() as conn:
            for _ in range(10):
                conn.execute("SELECT count(*) FROM conversations WHERE title = %s", ("x",))
            timeout = conn.execute("SHOW statement_timeout").fetchone()
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
            assert timeout is not None and prepared is not None
            return str(timeout[0]), bool(conn.pgconn.options), int(prepared[0])
    finally:
        database.close()


def test_behind_rds_proxy_no_startup_options_no_prepared_statements(clean_db: MigratedDatabase) -> None:
    timeout, options, prepared = _session(clean_db, db_proxy=True, statement_timeout_ms=1000)
    assert not options
    assert prepared == 0
    # The timeout still holds: the database's own default, which ensure_app_role sets.
    assert timeout == f"{DEFAULT_STATEMENT_TIMEOUT_MS // 1000}s"


def test_direct_connections_set_their_own_timeout_and_prepare(clean_db: MigratedDatabase) -> None:
    timeout, options, prepared = _session(clean_db, statement_timeout_ms=1000)
    assert options and timeout == "1s"
    assert prepared >= 1  # psycopg prepares a statement run five times: fine without a proxy


def test_the_database_default_timeout_stops_a_runaway_statement_of_any_app_session(clean_db: MigratedDatabase) -> None:
    with psycopg.connect(clean_db.app, autocommit=True) as conn:
        conn.execute("SET statement_timeout = DEFAULT")  # what a session through the proxy has
        assert conn.execute("SHOW statement_timeout").fetchone() == ("15s",)


def test_an_idle_pool_closes_its_connections(clean_db: MigratedDatabase) -> None:
    database = open_pool(make_settings(clean_db.app, pool_min_size=0, pool_max_idle_s=0.5))
    try:
        with database.pool.connection() as conn:
            conn.execute("SELECT 1")
        assert database.pool.get_stats()["pool_size"] == 1
        deadline = time.monotonic() + 10
        while database.pool.get_stats()["pool_size"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert database.pool.get_stats()["pool_size"] == 0
    finally:
        database.close()


def test_housekeeping_skips_its_round_while_no_request_came(clean_db: MigratedDatabase) -> None:
    database = open_pool(make_settings(clean_db.app))
    store = Store(database.pool, embedding_dimension=EMBEDDING_DIMENSION, reachability=database.reachability)
    rounds: list[int] = []
    housekeeping = _Housekeeping(store, interval=0.05)

    def counted() -> None:
        rounds.append(1)
        store.remove_expired_idempotency_keys()

    housekeeping.run_once = counted  # type: ignore[method-assign]
    thread = threading.Thread(target=housekeeping._run)
    try:
        thread.start()
        time.sleep(0.5)
        assert len(rounds) == 1  # the first round, then nothing: no request since
        store.list_conversations()
        time.sleep(0.3)
        assert len(rounds) == 2
    finally:
        housekeeping.stop.set()
        thread.join()
        database.close()
