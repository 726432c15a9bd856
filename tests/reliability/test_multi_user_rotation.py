"""The second rotation: AWS's multi-user rotation alternates <user> and <user>_clone, and
deploys (with new migrations) land between rotations. Replayed on the real PostgreSQL with the
rotation function's own SQL, with the real schema handler and the real service across it."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from conversations import credentials
from conversations.cfn_handler import handler
from conversations.migrate import LEDGER_TABLE, AppRoles, default_migrations_dir, migration_set
from devtools.lambda_context import LambdaContext
from devtools.postgres import PostgresServer, scalar
from devtools.secrets import create_stack_secrets
from devtools.serving import serve
from tests.support import rotation
from tests.support.http import call
from tests.support.service import drop_roles, make_settings

APP_USER = "rot_app"
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@pytest.fixture
def deployment(
    pg: PostgresServer, empty_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Given the Data stack's two secrets (the app secret with ``masterarn``, as aws-cdk-lib's
    DatabaseSecret writes it) and a migrations directory a test can add files to."""
    migrations = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), migrations)
    monkeypatch.setenv("MIGRATIONS_DIR", str(migrations))
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        arns = create_stack_secrets(
            sm,
            host=pg.host,
            port=pg.port,
            dbname=empty_db,
            master=(pg.master, pg.master_password),
            app=(APP_USER, secrets.token_urlsafe(18)),
        )
        master, app = arns.master_arn, arns.app_arn
        yield {"sm": sm, "master": master, "app": app, "db": empty_db, "migrations": migrations}
    pg.drop_database(empty_db)
    drop_roles(pg, APP_USER)


def deploy(d: dict[str, Any]) -> dict[str, Any]:
    event = {
        "RequestType": "Update",
        "PhysicalResourceId": f"conversations-schema:{d['db']}",
        "ResourceProperties": {
            "MasterSecretArn": d["master"],
            "AppSecretArn": d["app"],
            "SslMode": "disable",
            "EmbeddingDimension": "8",
            "Migrations": migration_set(),  # the bundle's, MIGRATIONS_DIR with the added files
        },
    }
    return handler(event, LambdaContext())


def add_migration(d: dict[str, Any], version: int) -> str:
    table = f"extra_{version}"
    (d["migrations"] / f"{version:04d}_{table}.sql").write_text(
        f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);\n"
    )
    return table


def assert_login_can_use_every_table(pg: PostgresServer, db: str, username: str, password: str) -> None:
    with psycopg.connect(pg.conninfo(db, username, password), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for privilege in PRIVILEGES:
                held = scalar(conn.execute("SELECT has_table_privilege(current_user, %s, %s)", (table, privilege)))
                wanted = privilege == "SELECT" or table != LEDGER_TABLE
                assert held is wanted, f"{username}: {privilege} on {table} is {held}"
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(table)))
        for table in (t for t in tables if t.startswith("extra_")):
            ident = sql.Identifier(table)
            conn.execute(sql.SQL("INSERT INTO {} (note) VALUES ('written by ' || current_user)").format(ident))
            conn.execute(sql.SQL("UPDATE {} SET note = note || '!'").format(ident))
            conn.execute(sql.SQL("DELETE FROM {}").format(ident))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")


def test_both_logins_use_every_table_across_rotations_and_migrations(
    pg: PostgresServer, deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, sm = deployment, deployment["sm"]
    # Rotations are 30 days apart in AWS and seconds apart here: let the service re-read the
    # secret as often as a rotation happens.
    monkeypatch.setattr(credentials, "MIN_REFRESH_INTERVAL_S", 0.0)
    # Given the stack's first deploy: the schema and the application login
    deploy(d)
    current = json.loads(sm.get_secret_value(SecretId=d["app"])["SecretString"])
    passwords = {current["username"]: current["password"]}
    roles = AppRoles.for_user(APP_USER)
    with serve(make_settings(pg.conninfo(d["db"], APP_USER, current["password"]), db_secret_arn=d["app"])) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "rot"})[0] == 201
        # When rotations and deploys that add tables interleave: a deploy while the secret
        # names the clone, and one while it names the original login
        for step, action in enumerate(["rotate", "migrate", "rotate", "migrate", "rotate", "rotate"]):
            if action == "rotate":
                current = rotation.rotate(sm, d["app"])
                passwords[current["username"]] = current["password"]
                with psycopg.connect(pg.conninfo(d["db"]), autocommit=True) as admin:
                    # Tasks reconnect over time; make every new connection log in again now.
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                        (list(roles.logins),),
                    )
            else:
                add_migration(d, 100 + step)
                assert deploy(d)["Data"]["Applied"] == "1"
            # Then the service keeps working across each flip
            status, body, _ = call("POST", f"{url}/conversations/rot/messages", {"role": "user", "content": action})
            assert status == 201, (step, action, body)
            assert call("GET", f"{url}/conversations/rot")[0] == 200
            # And every login the rotation made can use every table, the new ones included
            for username, password in passwords.items():
                assert_login_can_use_every_table(pg, d["db"], username, password)
    assert set(passwords) == set(roles.logins)
    # And the privileges belong to the group: neither login holds a table privilege itself
    with psycopg.connect(pg.conninfo(d["db"]), autocommit=True) as admin:
        direct = admin.execute(
            "SELECT grantee, table_name FROM information_schema.role_table_grants"
            " WHERE table_schema = 'public' AND grantee = ANY(%s)",
            (list(roles.logins),),
        ).fetchall()
        assert direct == []
        group_login = admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (roles.group,)).fetchone()
        assert group_login == (False,)
