"""The custom-resource handler with its secrets in (emulated) Secrets Manager and a real
database: Create, Update, Delete, and failures that must stay short and secret-free."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conversations import cfn_handler
from conversations.cfn_handler import SchemaError, handler
from conversations.embedded import ensure_rds_master
from conversations.migrate import LEDGER_TABLE, load_migrations
from devtools.lambda_context import LambdaContext
from devtools.postgres import PostgresServer, scalar
from tests.support.cloudformation import APP_ROLE, schema_event
from tests.support.service import drop_roles


def test_create_migrates_and_creates_the_app_role(pg: PostgresServer, stack_secrets: dict[str, Any]) -> None:
    result = handler(schema_event("Create", stack_secrets), LambdaContext())
    latest = load_migrations()[-1].version
    assert result["PhysicalResourceId"] == f"conversations-schema:{stack_secrets['db']}"
    assert result["Data"]["SchemaVersion"] == str(latest)
    assert result["Data"]["PgvectorVersion"]
    assert len(json.dumps(result)) < 4096
    with psycopg.connect(pg.conninfo(stack_secrets["db"], APP_ROLE, stack_secrets["app_password"])) as app:
        assert scalar(app.execute("SELECT count(*) FROM conversations")) == 0


def test_update_is_idempotent_and_rotates_the_app_password(
    pg: PostgresServer, stack_secrets: dict[str, Any], secretsmanager: Any
) -> None:
    first = handler(schema_event("Create", stack_secrets), LambdaContext())
    new_password = secrets.token_urlsafe(18)
    secretsmanager.put_secret_value(
        SecretId=stack_secrets["app"], SecretString=json.dumps({"username": APP_ROLE, "password": new_password})
    )
    second = handler(schema_event("Update", stack_secrets), LambdaContext())
    assert second["PhysicalResourceId"] == first["PhysicalResourceId"]
    assert second["Data"]["Applied"] == "0"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.conninfo(stack_secrets["db"], APP_ROLE, stack_secrets["app_password"])).close()
    psycopg.connect(pg.conninfo(stack_secrets["db"], APP_ROLE, new_password)).close()


def test_delete_leaves_schema_and_data_alone(pg: PostgresServer, stack_secrets: dict[str, Any]) -> None:
    handler(schema_event("Create", stack_secrets), LambdaContext())
    with psycopg.connect(pg.conninfo(stack_secrets["db"]), autocommit=True) as conn:
        conn.execute("INSERT INTO conversations (conversation_id) VALUES ('keep-me')")
    result = handler(schema_event("Delete", stack_secrets), LambdaContext())
    assert result["PhysicalResourceId"] == f"conversations-schema:{stack_secrets['db']}"
    with psycopg.connect(pg.conninfo(stack_secrets["db"]), autocommit=True) as conn:
        assert conn.execute("SELECT conversation_id FROM conversations").fetchall() == [("keep-me",)]
        assert scalar(conn.execute(f"SELECT count(*) FROM {LEDGER_TABLE}")) > 0


def test_delete_never_reads_secrets_or_connects(secretsmanager: Any) -> None:
    # Secrets that do not exist and no database: Delete still succeeds at once.
    result = handler(
        {
            "RequestType": "Delete",
            "PhysicalResourceId": "conversations-schema:ragdb",
            "ResourceProperties": {"MasterSecretArn": "arn:missing", "AppSecretArn": "arn:missing"},
        }
    )
    assert result == {"PhysicalResourceId": "conversations-schema:ragdb"}


def assert_safe_failure(exc_info: pytest.ExceptionInfo[BaseException], *secret_values: str) -> str:
    message = str(exc_info.value)
    assert 0 < len(message) <= cfn_handler.MAX_REASON_CHARS
    for value in secret_values:
        assert value not in message
    return message


def test_wrong_master_password_fails_fast_without_leaking_it(
    pg: PostgresServer, stack_secrets: dict[str, Any], secretsmanager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    secretsmanager.put_secret_value(
        SecretId=stack_secrets["master"],
        SecretString=json.dumps(
            {
                "host": pg.host,
                "port": pg.port,
                "dbname": stack_secrets["db"],
                "username": pg.master,
                "password": wrong,
            }
        ),
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SchemaError) as exc_info:
        handler(schema_event("Create", stack_secrets), LambdaContext())
    message = assert_safe_failure(exc_info, wrong, stack_secrets["app_password"])
    assert "password authentication failed" in message
    assert wrong not in caplog.text and stack_secrets["app_password"] not in caplog.text


def test_unreachable_host_fails_within_the_connect_timeout(stack_secrets: dict[str, Any], secretsmanager: Any) -> None:
    import time

    secretsmanager.put_secret_value(
        SecretId=stack_secrets["master"],
        SecretString=json.dumps(
            {"host": "127.0.0.1", "port": 9, "dbname": "ragdb", "username": "raguser", "password": "pw-123456"}
        ),
    )
    started = time.monotonic()
    with pytest.raises(SchemaError) as exc_info:
        handler(schema_event("Create", stack_secrets), LambdaContext(20_000))
    assert time.monotonic() - started < 15
    message = assert_safe_failure(exc_info, "pw-123456")
    assert "cannot reach or use database 127.0.0.1:9/ragdb" in message


def test_missing_secret_and_bad_properties_are_reported(stack_secrets: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="cannot read secret MasterSecretArn: ResourceNotFoundException"):
        handler(schema_event("Create", stack_secrets, MasterSecretArn="arn:aws:secretsmanager:eu-west-1:1:secret:nope"))
    with pytest.raises(SchemaError, match="resource property AppSecretArn is required"):
        handler(schema_event("Create", stack_secrets, AppSecretArn=""))
    with pytest.raises(SchemaError, match="EmbeddingDimension must be an integer"):
        handler(schema_event("Create", stack_secrets, EmbeddingDimension="big"))


def test_failing_migration_is_reported_with_the_file_name(
    stack_secrets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE x (id int); SELEKT 1;")
    monkeypatch.setenv("MIGRATIONS_DIR", str(tmp_path))
    with pytest.raises(SchemaError) as exc_info:
        handler(schema_event("Create", stack_secrets), LambdaContext())
    message = assert_safe_failure(exc_info, stack_secrets["app_password"])
    assert "0001_broken.sql failed" in message and "SELEKT" in message


def test_handler_module_imports_no_web_framework() -> None:
    import subprocess

    code = (
        "import sys; import conversations.cfn_handler; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="service"
    ).stdout.strip()
    assert out == ""


class RotatesAfterFirstRead:
    """Secrets Manager as the handler sees it while the master secret's rotation finishes
    between the handler's read and its login: the password it read is already stale."""

    def __init__(self, client: Any, master_arn: str, rotate: Callable[[], None]) -> None:
        self.client, self.master_arn, self.rotate, self.reads = client, master_arn, rotate, 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        value = self.client.get_secret_value(**kwargs)
        if kwargs["SecretId"] == self.master_arn:
            self.reads += 1
            if self.reads == 1:
                self.rotate()
        return value


def test_a_master_password_rotated_under_the_handler_is_read_again_once(
    pg: PostgresServer, stack_secrets: dict[str, Any], secretsmanager: Any
) -> None:
    # Given a master login of its own, RDS-like, owning the database (the shared master keeps its password)
    master_user, old, new = f"master_{secrets.token_hex(3)}", secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        ensure_rds_master(conn, master_user, old)
        conn.execute(f"ALTER DATABASE {stack_secrets['db']} OWNER TO {master_user}")
    where = {"host": pg.host, "port": pg.port, "dbname": stack_secrets["db"], "username": master_user}
    master_arn = stack_secrets["master"]
    secretsmanager.put_secret_value(SecretId=master_arn, SecretString=json.dumps({**where, "password": old}))

    def rotate_master() -> None:
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {master_user} PASSWORD '{new}'")
        secretsmanager.put_secret_value(
            SecretId=stack_secrets["master"], SecretString=json.dumps({**where, "password": new})
        )

    client = RotatesAfterFirstRead(secretsmanager, stack_secrets["master"], rotate_master)
    try:
        # When the handler runs while the rotation finishes
        result = handler(schema_event("Create", stack_secrets), LambdaContext(), secrets_client=client)
        # Then it read the secret again after the failed login, and migrated
        assert client.reads == 2
        assert result["Data"]["SchemaVersion"] == str(load_migrations()[-1].version)
    finally:
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {stack_secrets['db']} WITH (FORCE)")
        drop_roles(pg, APP_ROLE)  # the roles it granted memberships of go first
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {master_user}")


def test_a_wrong_master_password_is_read_again_only_once(
    pg: PostgresServer, stack_secrets: dict[str, Any], secretsmanager: Any
) -> None:
    secretsmanager.put_secret_value(
        SecretId=stack_secrets["master"],
        SecretString=json.dumps(
            {"host": pg.host, "port": pg.port, "dbname": stack_secrets["db"], "username": pg.master, "password": "x"}
        ),
    )
    client = RotatesAfterFirstRead(secretsmanager, stack_secrets["master"], lambda: None)
    with pytest.raises(SchemaError, match="password authentication failed"):
        handler(schema_event("Create", stack_secrets), LambdaContext(), secrets_client=client)
    assert client.reads == 2


def test_a_restored_database_is_migrated_and_its_app_role_takes_the_secrets_password(
    pg: PostgresServer, stack_secrets: dict[str, Any], secretsmanager: Any
) -> None:
    """make restore: the snapshot predates a migration and the app secret's rotation since. The
    Update that restoreSnapshot's change sends (RestoredFrom) brings both back in line."""
    from conversations.migrate import migration_set

    older = migration_set()[:-1]
    handler(schema_event("Create", stack_secrets, Migrations=older), LambdaContext())
    with psycopg.connect(pg.conninfo(stack_secrets["db"]), autocommit=True) as conn:
        conn.execute("INSERT INTO conversations (conversation_id) VALUES ('from-the-snapshot')")
    rotated = secrets.token_urlsafe(18)
    secretsmanager.put_secret_value(
        SecretId=stack_secrets["app"], SecretString=json.dumps({"username": APP_ROLE, "password": rotated})
    )
    with pytest.raises(psycopg.OperationalError):  # what the service would meet without the Update
        psycopg.connect(pg.conninfo(stack_secrets["db"], APP_ROLE, rotated)).close()
    result = handler(
        schema_event("Update", stack_secrets, RestoredFrom="conversations-dev-data-restore-1"), LambdaContext()
    )
    assert result["Data"]["Applied"] == "1"
    assert result["Data"]["SchemaVersion"] == str(load_migrations()[-1].version)
    with psycopg.connect(pg.conninfo(stack_secrets["db"], APP_ROLE, rotated)) as app:
        assert (
            scalar(app.execute("SELECT count(*) FROM conversations WHERE conversation_id = 'from-the-snapshot'")) == 1
        )
