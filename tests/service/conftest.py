"""Fixtures for the service: a migrated database, the app role, a store and an API client."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from conversations.api import create_app
from conversations.migrate import ensure_app_role, migrate
from conversations.settings import Settings
from conversations.store import Store
from tests.support.postgres import PostgresServer

TOKEN = "test-token-" + "x" * 20
EMBEDDING_DIMENSION = 8


@dataclass(frozen=True)
class MigratedDatabase:
    name: str
    admin: str
    app: str
    app_role: str


@pytest.fixture(scope="session")
def migrated_db(pg: PostgresServer) -> Iterator[MigratedDatabase]:
    """One migrated database for the session (small embeddings keep tests fast); each
    test that writes cleans it through ``clean_db``."""
    name = pg.create_database("svc")
    role = f"app_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    with psycopg.connect(pg.conninfo(name), autocommit=True) as conn:
        migrate(conn, embedding_dimension=EMBEDDING_DIMENSION)
        ensure_app_role(conn, role, password)
    try:
        yield MigratedDatabase(name, pg.conninfo(name), pg.conninfo(name, role, password), role)
    finally:
        pg.drop_database(name)
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role)))


@pytest.fixture
def clean_db(migrated_db: MigratedDatabase) -> Iterator[MigratedDatabase]:
    yield migrated_db
    with psycopg.connect(migrated_db.admin, autocommit=True) as conn:
        conn.execute("TRUNCATE conversations CASCADE")


@pytest.fixture
def store(clean_db: MigratedDatabase) -> Iterator[Store]:
    with ConnectionPool(clean_db.app, min_size=1, max_size=8, open=True) as pool:
        yield Store(pool, embedding_dimension=EMBEDDING_DIMENSION)


def make_settings(conninfo: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=conninfo,
        api_token=TOKEN,
        local_data_dir=None,
        pool_min_size=1,
        pool_max_size=8,
        pool_timeout=2.0,
        embedding_dimension=EMBEDDING_DIMENSION,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def client(clean_db: MigratedDatabase) -> Iterator[TestClient]:
    """The API as the least-privilege role, authenticated."""
    app = create_app(make_settings(clean_db.app))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client


@pytest.fixture
def anon_client(client: TestClient) -> TestClient:
    """The same app with no credentials."""
    return TestClient(client.app)
