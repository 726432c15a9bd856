"""Fixtures for the service: API clients on the session's migrated database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conversations.api import create_app
from tests.support.service import TOKEN, MigratedDatabase, make_settings


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
