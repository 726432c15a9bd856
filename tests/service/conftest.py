"""Fixtures for the service: API clients on the session's migrated database; the schema
handler's two secrets in (emulated) Secrets Manager."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from conversations.api import create_app
from devtools.postgres import PostgresServer
from tests.support.cloudformation import stack_secrets_for
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


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


@pytest.fixture
def stack_secrets(pg: PostgresServer, empty_db: str, secretsmanager: Any) -> Iterator[dict[str, Any]]:
    """The two secrets as the DataStack creates them, pointing at a fresh database, with the
    RDS-like master (not a superuser) as the master user."""
    yield from stack_secrets_for(pg, empty_db, secretsmanager)
