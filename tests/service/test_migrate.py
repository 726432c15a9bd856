"""The migrator against a real PostgreSQL: order, ledger, idempotency, locking, edits."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from conversations.migrate import (
    LEDGER_TABLE,
    Migration,
    MigrationError,
    MigrationRef,
    default_migrations_dir,
    ensure_app_role,
    load_migrations,
    migrate,
    migration_set,
    parse_migration_set,
    plan,
)
from devtools.postgres import PostgresServer, scalar
from tests.support.service import drop_roles


def connect(pg: PostgresServer, db: str) -> psycopg.Connection:
    """As the RDS-like master, which is not a superuser."""
    return psycopg.connect(pg.master_conninfo(db), autocommit=True)


def as_superuser(pg: PostgresServer, db: str) -> psycopg.Connection:
    return psycopg.connect(pg.conninfo(db), autocommit=True)


def test_applies_every_file_in_order_and_records_checksums(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        result = migrate(conn)
        ledger = conn.execute(f"SELECT version, name, checksum FROM {LEDGER_TABLE} ORDER BY version").fetchall()
    files = load_migrations()
    assert result.applied == [m.path.name for m in files]
    assert [(v, n, c) for v, n, c in ledger] == [(m.version, m.name, m.checksum) for m in files]
    assert result.schema_version == files[-1].version
    assert result.pgvector_version


def test_schema_has_the_operator_columns_indexes_and_default_dimension(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        migrate(conn)
        # The query operators run by hand keeps working.
        conn.execute("SELECT conversation_id, title, updated_at FROM conversations ORDER BY updated_at DESC")
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'conversations'"
            )
        }
        indexes = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('conversations', 'messages')"
            )
        }
        dim = scalar(
            conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'messages'::regclass AND attname = 'embedding'"
            )
        )
    assert {
        "conversation_id",
        "user_id",
        "title",
        "settings",
        "metadata",
        "created_at",
        "updated_at",
        "message_count",
    } <= columns
    assert (
        "hnsw" in indexes["messages_embedding_hnsw_idx"]
        and "vector_cosine_ops" in indexes["messages_embedding_hnsw_idx"]
    )
    assert "gin (search)" in indexes["messages_search_idx"] and "messages_content_fts_idx" not in indexes
    assert "updated_at DESC" in indexes["conversations_user_recent_idx"]
    assert dim == 1536


def test_rerun_is_a_no_op(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        migrate(conn)
        before = conn.execute(f"SELECT version, applied_at FROM {LEDGER_TABLE} ORDER BY version").fetchall()
        again = migrate(conn)
        after = conn.execute(f"SELECT version, applied_at FROM {LEDGER_TABLE} ORDER BY version").fetchall()
    assert again.applied == []
    assert before == after


def test_concurrent_runs_serialise_and_apply_each_file_once(pg: PostgresServer, empty_db: str) -> None:
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with connect(pg, empty_db) as conn:
                barrier.wait()
                results.append(migrate(conn))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    applied = [name for r in results for name in r.applied]
    assert sorted(applied) == sorted(m.path.name for m in load_migrations())
    with connect(pg, empty_db) as conn:
        assert scalar(conn.execute(f"SELECT count(*) FROM {LEDGER_TABLE}")) == len(load_migrations())


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), target)
    return target


def test_edited_applied_file_is_an_error(pg: PostgresServer, empty_db: str, tmp_path: Path) -> None:
    directory = copy_migrations(tmp_path)
    with connect(pg, empty_db) as conn:
        migrate(conn, migrations_dir=directory)
        edited = directory / "0002_conversations.sql"
        edited.write_text(edited.read_text() + "\n-- sneaky edit\n")
        with pytest.raises(MigrationError, match=r"0002_conversations\.sql was edited"):
            migrate(conn, migrations_dir=directory)


def test_new_file_is_applied_and_a_failing_one_rolls_back_alone(
    pg: PostgresServer, empty_db: str, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    with connect(pg, empty_db) as conn:
        migrate(conn, migrations_dir=directory)
        (directory / "0900_add_column.sql").write_text("ALTER TABLE conversations ADD COLUMN archived boolean;")
        assert migrate(conn, migrations_dir=directory).applied == ["0900_add_column.sql"]
        (directory / "0901_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT * FROM no_such_table;")
        with pytest.raises(MigrationError, match=r"0901_broken\.sql failed"):
            migrate(conn, migrations_dir=directory)
        # The failed file left nothing behind and is not recorded.
        assert scalar(conn.execute("SELECT to_regclass('half_done')")) is None
        assert scalar(conn.execute(f"SELECT max(version) FROM {LEDGER_TABLE}")) == 900


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    directory = copy_migrations(tmp_path)
    (directory / "5_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"must look like 0001_name\.sql"):
        load_migrations(directory)


def test_embedding_dimension_comes_from_configuration_and_is_checked(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        migrate(conn, embedding_dimension=384)
        dim = scalar(
            conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'messages'::regclass AND attname = 'embedding'"
            )
        )
        assert dim == 384
        with pytest.raises(MigrationError, match="dimension 384 but 768 is configured"):
            migrate(conn, embedding_dimension=768)
    with pytest.raises(MigrationError, match="between 1 and 2000"):
        migrate(None, embedding_dimension=4096)  # type: ignore[arg-type]


def test_app_role_can_use_the_tables_but_not_change_the_schema(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        migrate(conn)
        ensure_app_role(conn, "ddl_probe_app", "first-password")
        ensure_app_role(conn, "ddl_probe_app", "second-password")  # update: new password
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(pg.conninfo(empty_db, "ddl_probe_app", "first-password")).close()
        with psycopg.connect(pg.conninfo(empty_db, "ddl_probe_app", "second-password"), autocommit=True) as app:
            app.execute("INSERT INTO conversations (conversation_id) VALUES ('c1')")
            app.execute("INSERT INTO messages (conversation_id, seq, role, content) VALUES ('c1', 1, 'user', 'hi')")
            app.execute("DELETE FROM conversations WHERE conversation_id = 'c1'")
            for ddl in (
                "CREATE TABLE sneaky (id int)",
                "DROP TABLE messages",
                "ALTER TABLE conversations ADD COLUMN x int",
                "TRUNCATE conversations",
                f"DELETE FROM {LEDGER_TABLE}",
                "CREATE TEMP TABLE t (id int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(ddl)
    finally:
        with as_superuser(pg, empty_db) as conn:
            conn.execute("DROP OWNED BY ddl_probe_app, ddl_probe_app_group")
        drop_roles(pg, "ddl_probe_app")


def test_app_password_reaches_the_server_only_as_a_scram_verifier(
    pg: PostgresServer, empty_db: str, tmp_path: Path
) -> None:
    """PostgreSQL logs a failed or lock-waiting ALTER ROLE with its text: the password must not be in it."""
    password = "plain-Text-password-" + "q" * 12
    trace = tmp_path / "wire.trace"
    with connect(pg, empty_db) as conn, trace.open("w") as sink:
        migrate(conn)
        # Given everything this connection sends is traced (libpq's PQtrace)
        conn.pgconn.trace(sink.fileno())
        ensure_app_role(conn, "scram_probe_app", password)
        conn.pgconn.untrace()
    try:
        sent = trace.read_text()
        # Then the role statements went out, and the password was never among them
        assert "ALTER ROLE" in sent or "CREATE ROLE" in sent
        assert password not in sent
        assert "SCRAM-SHA-256$" in sent
        with as_superuser(pg, empty_db) as conn:
            stored = scalar(conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe_app'"))
        assert stored.startswith("SCRAM-SHA-256$")
        # And the role logs in with the password (the verifier is a real one)
        psycopg.connect(pg.conninfo(empty_db, "scram_probe_app", password)).close()
    finally:
        with as_superuser(pg, empty_db) as conn:
            conn.execute("DROP OWNED BY scram_probe_app, scram_probe_app_group")
        drop_roles(pg, "scram_probe_app")


def test_the_tests_migrate_as_a_master_that_is_not_a_superuser_as_on_rds(pg: PostgresServer, empty_db: str) -> None:
    with connect(pg, empty_db) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role(current_user, 'rds_superuser', 'MEMBER')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert row == (False, True, True, True)
        assert scalar(owner) == pg.master
        # ...so it may not even name SUPERUSER in ALTER ROLE, which every redeploy once did
        conn.execute("CREATE ROLE probe_plain NOLOGIN")
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to alter role"):
                conn.execute("ALTER ROLE probe_plain WITH NOSUPERUSER")
        finally:
            conn.execute("DROP ROLE probe_plain")


def test_an_app_role_holding_superuser_is_refused_with_the_statement_that_clears_it(
    pg: PostgresServer, empty_db: str
) -> None:
    with connect(pg, empty_db) as conn:
        migrate(conn)
        ensure_app_role(conn, "priv_probe_app", "first-password")
    try:
        # Given someone made the login a superuser by hand
        with as_superuser(pg, empty_db) as conn:
            conn.execute("ALTER ROLE priv_probe_app SUPERUSER BYPASSRLS")
        # Then the next deploy refuses, naming what only a superuser can run
        with connect(pg, empty_db) as conn, pytest.raises(MigrationError) as refused:
            ensure_app_role(conn, "priv_probe_app", "second-password")
        assert "priv_probe_app has SUPERUSER, BYPASSRLS" in str(refused.value)
        assert "ALTER ROLE priv_probe_app NOSUPERUSER NOBYPASSRLS" in str(refused.value)
    finally:
        with as_superuser(pg, empty_db) as conn:
            conn.execute("DROP OWNED BY priv_probe_app, priv_probe_app_group")
        drop_roles(pg, "priv_probe_app")


def refs(*specs: tuple[int, str, str]) -> list[MigrationRef]:
    return [MigrationRef(version, name, checksum * 64) for version, name, checksum in specs]


def test_plan_applies_exactly_the_named_set() -> None:
    bundle = [Migration(v, f"m{v}", Path(f"{v:04d}_m{v}.sql"), f"-- {v}") for v in (1, 2, 3)]
    applied = {1: ("m1", bundle[0].checksum)}
    # Only what the set names, in order
    pending, ahead = plan(bundle, applied, [bundle[0].ref, bundle[1].ref])
    assert [m.version for m in pending] == [2] and ahead == []
    # A prefix of what is applied (a rollback): nothing, and what stays is reported
    applied = {m.version: (m.name, m.checksum) for m in bundle}
    assert plan(bundle, applied, [bundle[0].ref]) == ([], [2, 3])
    # None: every file of the bundle
    assert [m.version for m in plan(bundle, {}, None)[0]] == [1, 2, 3]


def test_plan_refuses_edits_foreign_files_and_out_of_order_application() -> None:
    bundle = [Migration(v, f"m{v}", Path(f"{v:04d}_m{v}.sql"), f"-- {v}") for v in (1, 2, 3)]
    with pytest.raises(MigrationError, match=r"0001_m1\.sql was edited"):
        plan(bundle, {1: ("m1", "b" * 64)}, [bundle[0].ref])
    with pytest.raises(MigrationError, match=r"asks for 0004_m4\.sql:cccccccccccc but this code does not have it"):
        plan(bundle, {}, refs((4, "m4", "c")))
    with pytest.raises(MigrationError, match=r"but this code has 0002_m2\.sql"):
        plan(bundle, {}, refs((2, "m2", "d")))
    with pytest.raises(MigrationError, match="applied in order only"):
        plan(bundle, {3: ("m3", bundle[2].checksum)}, [bundle[1].ref])


def test_a_migration_set_is_parsed_strictly() -> None:
    assert parse_migration_set(migration_set()) == [m.ref for m in load_migrations()]
    for bad in ("0001_x.sql", ["0001_x.sql"], ["1_x.sql:" + "a" * 64], ["0001_X.sql:" + "a" * 64]):
        with pytest.raises(MigrationError):
            parse_migration_set(bad)
    with pytest.raises(MigrationError, match="twice"):
        parse_migration_set(["0001_x.sql:" + "a" * 64, "0001_y.sql:" + "b" * 64])
