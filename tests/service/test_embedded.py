"""The embedded local default: no database configured means pgserver under LOCAL_DATA_DIR."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from conversations.api import create_app
from conversations.embedded import APP_ROLE, stop_embedded
from conversations.settings import Settings


def test_embedded_default_serves_migrates_and_keeps_data_across_restarts(tmp_path):
    settings = Settings.from_env({"LOCAL_DATA_DIR": str(tmp_path / "local"), "EMBEDDING_DIMENSION": "8"})
    headers = {"Authorization": f"Bearer {settings.api_token}"}
    try:
        with TestClient(create_app(settings), headers=headers) as client:
            health = client.get("/health").json()
            assert health["status"] == "healthy"
            assert health["database"]["backend"] == "embedded-postgresql"
            assert client.post("/conversations", json={"conversation_id": "kept", "title": "t"}).status_code == 201
        # The service runs as the least-privilege role, not the superuser.
        with TestClient(create_app(settings), headers=headers) as client:
            assert client.get("/conversations/kept").status_code == 200
            store = client.app.state.service.store
            with store.pool.connection() as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == APP_ROLE
                try:
                    conn.execute("CREATE TABLE nope (id int)")
                    raise AssertionError("the app role could create a table")
                except psycopg.errors.InsufficientPrivilege:
                    conn.rollback()
        assert stop_embedded(tmp_path / "local")
        # A restart of the database itself keeps the data too.
        with TestClient(create_app(settings), headers=headers) as client:
            assert client.get("/conversations/kept").json()["title"] == "t"
    finally:
        stop_embedded(tmp_path / "local")


def test_a_data_directory_of_another_major_version_is_refused_with_the_way_out(tmp_path):
    from conversations.embedded import EmbeddedDataError, local_major, start_server

    pgdata = tmp_path / "local" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(EmbeddedDataError) as refused:
        start_server(tmp_path / "local")
    message = str(refused.value)
    assert f"PostgreSQL 16 database; this checkout runs PostgreSQL {local_major()}" in message
    assert f"mv {pgdata} {pgdata}-16" in message
