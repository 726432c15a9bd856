"""Fixtures for the service: a store and API clients on the session's migrated database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from conversations.api import create_app
from conversations.store import Store
from tests.support.service import EMBEDDING_DIMENSION, TOKEN, MigratedDatabase, make_settings


@pytest.fixture
def store(clean_db: MigratedDatabase) -> Iterator[Store]:
    with ConnectionPool(clean_db.app, min_size=1, max_size=8, open=True) as pool:
        yield Store(pool, embedding_dimension=EMBEDDING_DIMENSION)


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
