"""Day two of the schema resource, replayed as CloudFormation runs it on a real PostgreSQL, as the
RDS-like master: a deploy whose migration fails rolls back cleanly; a rollback after the
migration succeeded leaves it applied; a template older than the migration set applies nothing.

CloudFormation rolls the resource back by sending another Update with the *old* properties
to the *new* function (aws/aws-cdk#17040): the new bundle, with the new file in it, serves it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conversations.migrate import LEDGER_TABLE, default_migrations_dir, load_migrations
from devtools.postgres import PostgresServer
from tests.support.cloudformation import SchemaResourceStack, provider_answer, schema_event


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The function's bundle of migrations: the repository's, and whatever a test adds."""
    directory = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), directory)
    monkeypatch.setenv("MIGRATIONS_DIR", str(directory))
    return directory


def ledger(pg: PostgresServer, db: str) -> list[int]:
    with psycopg.connect(pg.conninfo(db), autocommit=True) as conn:
        return [row[0] for row in conn.execute(f"SELECT version FROM {LEDGER_TABLE} ORDER BY version")]


def column_exists(pg: PostgresServer, db: str, table: str, column: str) -> bool:
    with psycopg.connect(pg.conninfo(db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", (table, column)
        ).fetchone()
    return row is not None


def test_a_failed_migration_rolls_back_to_the_old_set_and_never_applies_the_new_file(
    pg: PostgresServer, stack_secrets: dict[str, Any], bundle: Path
) -> None:
    db = stack_secrets["db"]
    n = len(load_migrations(bundle))
    # Given a stack created with N migrations
    stack = SchemaResourceStack(stack_secrets)
    assert stack.create() == "CREATE_COMPLETE"
    before = ledger(pg, db)
    assert len(before) == n
    # When a deploy adds migration N+1, which fails on something transient (a table it reads is
    # not there yet: think of a lock timeout, or another deploy's migration still running)
    (bundle / "0900_archive.sql").write_text(
        "ALTER TABLE conversations ADD COLUMN archived boolean;\nINSERT INTO archive_source SELECT 1;\n"
    )
    original_send = stack._send

    def send_then_mend(event: dict[str, Any]) -> dict[str, Any]:
        answer = original_send(event)
        # ... and by the time CloudFormation rolls back, the cause has gone away (an operator, as the master)
        with psycopg.connect(pg.master_conninfo(db), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS archive_source (id int)")
        return answer

    stack._send = send_then_mend  # type: ignore[method-assign]
    status = stack.update()
    # Then the Update failed with the file's name, the rollback (old set, new bundle) succeeded
    update, rollback = stack.answers[-2:]
    assert update["Status"] == "FAILED" and "0900_archive.sql failed" in update["Reason"]
    assert rollback["Status"] == "SUCCESS" and rollback["Data"]["Applied"] == "0"
    assert status == "UPDATE_ROLLBACK_COMPLETE"
    # And the database is at N: the new file, which would now succeed, was not applied by the rollback
    assert ledger(pg, db) == before
    assert not column_exists(pg, db, "conversations", "archived")
    # And the next deploy of the same change applies it once
    assert stack.update() == "UPDATE_COMPLETE"
    assert ledger(pg, db) == [*before, 900] and column_exists(pg, db, "conversations", "archived")


def test_a_rollback_after_the_migration_succeeded_leaves_it_applied(
    pg: PostgresServer, stack_secrets: dict[str, Any], bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = stack_secrets["db"]
    stack = SchemaResourceStack(stack_secrets)
    stack.create()
    before = ledger(pg, db)
    # Given a deploy whose migration succeeds, but a resource updated after it fails
    (bundle / "0900_pinned.sql").write_text("ALTER TABLE conversations ADD COLUMN pinned boolean;\n")
    caplog.set_level("INFO", logger="conversations.cfn")
    # When CloudFormation rolls the stack back (the old set, to the new function)
    status = stack.update(later_resource_fails=True)
    # Then the rollback succeeds without undoing it: migrations are never undone, and the
    # old code must run on the newer schema (expand first, contract in a later release)
    forward, rollback = stack.answers[-2:]
    assert forward["Status"] == "SUCCESS" and forward["Data"]["Applied"] == "1"
    assert rollback["Status"] == "SUCCESS" and rollback["Data"]["Applied"] == "0"
    assert status == "UPDATE_ROLLBACK_COMPLETE"
    assert ledger(pg, db) == [*before, 900] and column_exists(pg, db, "conversations", "pinned")
    assert "0900_pinned.sql" in caplog.text and "does not name" in caplog.text
    # And deploying the change again is a no-op
    assert stack.update() == "UPDATE_COMPLETE" and stack.answers[-1]["Data"]["Applied"] == "0"


def test_a_migration_that_cannot_run_in_a_transaction_fails_whole_and_rolls_back(
    pg: PostgresServer, stack_secrets: dict[str, Any], bundle: Path
) -> None:
    db = stack_secrets["db"]
    stack = SchemaResourceStack(stack_secrets)
    stack.create()
    before = ledger(pg, db)
    # Given a migration with a statement PostgreSQL refuses inside a transaction block
    (bundle / "0900_concurrent.sql").write_text(
        "ALTER TABLE conversations ADD COLUMN folder text;\n"
        "CREATE INDEX CONCURRENTLY conversations_folder_idx ON conversations (folder);\n"
    )
    # When it is deployed
    status = stack.update()
    # Then it fails whole, saying why, and the stack rolls back with nothing half-applied
    update = stack.answers[-2]
    assert update["Status"] == "FAILED"
    assert "0900_concurrent.sql failed" in update["Reason"] and "transaction block" in update["Reason"]
    assert status == "UPDATE_ROLLBACK_COMPLETE"
    assert ledger(pg, db) == before and not column_exists(pg, db, "conversations", "folder")


def test_an_update_from_a_template_older_than_the_migration_set_applies_nothing(
    pg: PostgresServer, stack_secrets: dict[str, Any], bundle: Path
) -> None:
    """The first deploy of this version rolls back to a template with MigrationsHash only."""
    db = stack_secrets["db"]
    stack = SchemaResourceStack(stack_secrets)
    stack.create()
    before = ledger(pg, db)
    (bundle / "0900_new.sql").write_text("ALTER TABLE conversations ADD COLUMN later boolean;\n")
    old_template = schema_event("Update", stack_secrets, MigrationsHash="0" * 64)
    del old_template["ResourceProperties"]["Migrations"]
    answer = provider_answer(old_template)
    assert answer["Status"] == "SUCCESS" and answer["Data"]["Applied"] == "0"
    assert ledger(pg, db) == before


def test_a_set_the_bundle_does_not_hold_fails_before_touching_the_database(
    pg: PostgresServer, stack_secrets: dict[str, Any], bundle: Path
) -> None:
    db = stack_secrets["db"]
    stack = SchemaResourceStack(stack_secrets)
    stack.create()
    before = ledger(pg, db)
    foreign = [*schema_event("Update", stack_secrets)["ResourceProperties"]["Migrations"], "0900_other.sql:" + "a" * 64]
    answer = provider_answer(schema_event("Update", stack_secrets, Migrations=foreign))
    assert answer["Status"] == "FAILED"
    assert "asks for 0900_other.sql:aaaaaaaaaaaa but this code does not have it" in answer["Reason"]
    assert ledger(pg, db) == before
    bad = provider_answer(schema_event("Update", stack_secrets, Migrations=["0001_x.sql"]))
    assert bad["Status"] == "FAILED" and "resource property Migrations" in bad["Reason"]
    missing = schema_event("Create", stack_secrets)
    del missing["ResourceProperties"]["Migrations"]
    assert "Migrations is required" in provider_answer(missing)["Reason"]
