"""Shared fixtures: fake AWS credentials for the whole session, and a real PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from conversations.store import Store
from devtools.postgres import PostgresServer, from_database_url, remove, start_embedded_server
from tests.support.service import EMBEDDING_DIMENSION, MigratedDatabase, migrated_database, truncate


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials() -> Iterator[None]:
    """No test may reach a real AWS account: every client gets these credentials."""
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_REGION="eu-west-1",
    )
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(key, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECURITY_TOKEN",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server with pgvector: ``DATABASE_URL`` if set, else an embedded one."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield from_database_url(url)
        return
    server = start_embedded_server(Path(tempfile.mkdtemp(prefix="conversations-pg-")))
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture
def empty_db(pg: PostgresServer) -> Iterator[str]:
    """A new, empty database, dropped afterwards; yields its name."""
    name = pg.create_database("empty")
    try:
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture(scope="session")
def migrated_db(pg: PostgresServer) -> Iterator[MigratedDatabase]:
    """One migrated database for the session; tests that write use ``clean_db``."""
    yield from migrated_database(pg)


@pytest.fixture
def clean_db(migrated_db: MigratedDatabase) -> Iterator[MigratedDatabase]:
    yield migrated_db
    truncate(migrated_db)


@pytest.fixture
def store(clean_db: MigratedDatabase) -> Iterator[Store]:
    """The store on the migrated database, as the least-privilege role."""
    with ConnectionPool(clean_db.app, min_size=1, max_size=8, open=True) as pool:
        yield Store(pool, embedding_dimension=EMBEDDING_DIMENSION)
