"""Credential rotation: the application password changes (as Secrets Manager rotation does)
and the service re-reads it by ARN on the authentication failure, without a restart."""

from __future__ import annotations

import json
import logging

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from devtools.serving import serve
from tests.support.http import call
from tests.support.service import MigratedDatabase, make_settings


def password_of(conninfo: str) -> str:
    return next(p.split("=", 1)[1] for p in conninfo.split() if p.startswith("password="))


def rotate(db: MigratedDatabase, new_password: str) -> None:
    with psycopg.connect(db.admin, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(db.app_role), sql.Literal(new_password))
        )
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (db.app_role,))


def test_service_follows_a_password_rotation_without_restart(
    fault_db: MigratedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old = password_of(fault_db.app)
    new = "rotated-" + "Z" * 24
    with mock_aws():
        sm = boto3.client("secretsmanager")
        arn = sm.create_secret(Name="app", SecretString=json.dumps({"username": fault_db.app_role, "password": old}))[
            "ARN"
        ]
        with serve(make_settings(fault_db.app, db_secret_arn=arn, pool_min_size=1, pool_timeout=5.0)) as url:
            assert call("POST", f"{url}/conversations", {"conversation_id": "rot"})[0] == 201
            # Given rotation sets a new password in the database and in the secret
            sm.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": fault_db.app_role, "password": new}))
            rotate(fault_db, new)
            # When requests arrive, Then they succeed: the pool re-read the secret and reconnected
            statuses = [
                call("POST", f"{url}/conversations/rot/messages", {"role": "user", "content": f"m{i}"})[0]
                for i in range(5)
            ]
            assert statuses == [201] * 5
        rotate(fault_db, old)  # leave the role as the other tests know it
    assert old not in caplog.text and new not in caplog.text


def test_without_the_secret_a_rotation_is_a_clear_503_not_a_hang(fault_db: MigratedDatabase) -> None:
    old = password_of(fault_db.app)
    try:
        with serve(make_settings(fault_db.app, pool_min_size=1, pool_timeout=2.0)) as url:
            assert call("POST", f"{url}/conversations", {"conversation_id": "rot2"})[0] == 201
            rotate(fault_db, "someone-else-changed-it-123")
            status, _, headers = call("POST", f"{url}/conversations/rot2/messages", {"role": "user", "content": "x"})
            assert status == 503 and headers["Retry-After"]
    finally:
        rotate(fault_db, old)
