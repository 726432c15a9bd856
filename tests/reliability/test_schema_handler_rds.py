"""The schema handler against PostgreSQL as RDS and Aurora run it: a server that accepts only TLS
(``rds.force_ssl``), verified with ``verify-full``; a server with another CA refused, saying so;
and a paused Aurora Serverless v2 cluster that answers only once it has resumed."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from conversations import cfn_handler
from conversations.cfn_handler import SchemaError, handler
from conversations.tls import RDS_CA_BUNDLE
from devtools.lambda_context import LambdaContext
from devtools.net import LateForwarder
from devtools.postgres import PostgresServer, remove, start_embedded_server
from devtools.secrets import create_stack_secrets
from devtools.serving import serve
from tests.support.cloudformation import APP_ROLE, schema_event, stack_secrets_for
from tests.support.http import call
from tests.support.service import make_settings


@pytest.fixture(scope="module")
def tls_pg() -> Iterator[PostgresServer]:
    """PostgreSQL 18 with OpenSSL accepting TLS only, its certificate from a CA made here."""
    server = start_embedded_server(Path(tempfile.mkdtemp(prefix="conversations-tls-")), tls_only=True)
    try:
        yield server
    finally:
        remove(server)


def deployment(pg: PostgresServer, *, host: str | None = None, port: int | None = None) -> Iterator[dict[str, Any]]:
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        yield from stack_secrets_for(pg, pg.create_database("rds"), sm, host=host, port=port)


@pytest.fixture
def on_tls(tls_pg: PostgresServer) -> Iterator[dict[str, Any]]:
    yield from deployment(tls_pg)


def as_deployed(request_type: str, d: dict[str, Any]) -> dict[str, Any]:
    """The event as the template sends it: SslMode verify-full."""
    return schema_event(request_type, d, SslMode="verify-full")


def test_the_server_accepts_only_tls(tls_pg: PostgresServer) -> None:
    params = tls_pg.conninfo().replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(params, connect_timeout=5).close()


def test_handler_and_service_run_over_verified_tls_as_the_master(
    tls_pg: PostgresServer, on_tls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the CA that signed the database's certificate (on AWS: the RDS bundle shipped with the code)
    assert tls_pg.sslrootcert is not None
    monkeypatch.setenv("DB_SSLROOTCERT", tls_pg.sslrootcert)
    # When CloudFormation creates, updates and deletes the schema resource
    for request_type in ("Create", "Update", "Update", "Delete"):
        result = handler(as_deployed(request_type, on_tls), LambdaContext())
        assert result["PhysicalResourceId"].startswith("conversations-schema")
    # Then the application login, over verify-full too, serves the API
    conninfo = tls_pg.conninfo(on_tls["db"], APP_ROLE, on_tls["app_password"])
    assert "sslmode=verify-full" in conninfo
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with serve(make_settings(conninfo)) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "tls"})[0] == 201
        status, body, _ = call("GET", f"{url}/health")
        assert status == 200 and body["status"] == "healthy"


def test_a_server_whose_certificate_another_ca_signed_is_refused_at_once_saying_why(
    on_tls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the default: the RDS certificate authorities, which did not sign this server's certificate
    monkeypatch.delenv("DB_SSLROOTCERT", raising=False)
    started = time.monotonic()
    with pytest.raises(SchemaError) as refused:
        handler(as_deployed("Create", on_tls), LambdaContext())
    message = str(refused.value)
    assert "TLS certificate is not signed by a certificate authority in" in message
    assert str(RDS_CA_BUNDLE) in message and "verify-full" in message
    # And it does not wait for a database that will never be trusted
    assert time.monotonic() - started < 5
    assert on_tls["app_password"] not in message


def test_a_resuming_database_is_waited_for_with_a_log_line(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A paused Aurora Serverless v2 cluster: no answer for 20 s, then it accepts."""
    forwarder = LateForwarder((pg.host, pg.port), after_s=20)
    try:
        for d in deployment(pg, host="127.0.0.1", port=forwarder.port):
            caplog.set_level("INFO", logger="conversations.cfn")
            started = time.monotonic()
            result = handler(schema_event("Create", d), LambdaContext())
            elapsed = time.monotonic() - started
            assert result["Data"]["Applied"] != "0"
            assert 20 <= elapsed < 20 + 15, f"waited {elapsed:.1f} s"
            assert "does not answer yet" in caplog.text and "Aurora Serverless v2" in caplog.text
    finally:
        forwarder.close()


def test_the_wait_for_a_database_is_bounded_by_the_lambdas_remaining_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A database that never comes back: the wait ends within a third of what the Lambda has left
    forwarder = LateForwarder(("127.0.0.1", 9), after_s=3600)
    monkeypatch.setattr(cfn_handler, "RESUME_WAIT_S", 4.0)
    try:
        with mock_aws():
            sm = boto3.client("secretsmanager", region_name="eu-west-1")
            arns = create_stack_secrets(
                sm,
                host="127.0.0.1",
                port=forwarder.port,
                dbname="ragdb",
                master=("raguser", "pw-123456"),
                app=("app", "app-pw-1"),
            )
            d = {"master": arns.master_arn, "app": arns.app_arn, "db": "ragdb"}
            started = time.monotonic()
            with pytest.raises(SchemaError, match=r"cannot reach or use database 127\.0\.0\.1"):
                handler(schema_event("Create", d), LambdaContext(60_000))
            assert time.monotonic() - started < 4.0 + 2
    finally:
        forwarder.close()
