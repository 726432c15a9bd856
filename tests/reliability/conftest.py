"""A PostgreSQL of these tests' own, which they stop, restart and kill connections on."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.postgres import PostgresServer, remove, start_embedded_server
from tests.support.service import MigratedDatabase, migrated_database, truncate


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    # Durable (fsync, synchronous commit): a crash must not lose what was acknowledged.
    server = start_embedded_server(Path(tempfile.mkdtemp(prefix="conversations-faults-")), durable=True)
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture(scope="module")
def own_db(own_pg: PostgresServer) -> Iterator[MigratedDatabase]:
    yield from migrated_database(own_pg)


@pytest.fixture
def fault_db(own_pg: PostgresServer, own_db: MigratedDatabase) -> Iterator[MigratedDatabase]:
    yield own_db
    if not _running(own_pg):
        own_pg.start()
    truncate(own_db)


def _running(server: PostgresServer) -> bool:
    import psycopg

    try:
        psycopg.connect(server.conninfo(), connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False
