"""CloudFormation custom resource: the schema, applied by the migrator.

Runs as the ``onEvent`` handler behind ``custom_resources.Provider``: it returns the
physical id and data, and a raised exception becomes a FAILED response whose reason is the
exception's message, so every message raised from here is short and free of secrets.

Resource properties:
  MasterSecretArn     secret with host, port, dbname, username, password (the RDS master)
  AppSecretArn        secret with username, password for the application role
  Migrations          the exact migration set, ``0001_name.sql:<sha-256>`` each: exactly these
                      are applied. Required on Create. A set the database already has, or a
                      prefix of it (CloudFormation's rollback sends the old properties to this
                      new code, aws/aws-cdk#17040), applies nothing. An Update without it comes
                      from a template older than the property: it applies nothing either.
  EmbeddingDimension  optional, default 1536
  RestoredFrom        set after make restore: the snapshot the database was created from. Not read;
                      its change makes CloudFormation send the Update that migrates the restored
                      database and sets the application role's password from the secret again
  SslMode             optional libpq sslmode, default "verify-full" against the RDS certificate
                      authorities shipped in the bundle (``DB_SSLROOTCERT`` overrides the file)

A database that does not answer yet (an Aurora Serverless v2 cluster resuming from a pause
takes 15 s, 30 s or more after a long idle) is waited for, bounded by RESUME_WAIT_S and the
Lambda's remaining time, with a log line each try.

No web framework is imported: the Lambda bundle carries psycopg, boto3 (from the runtime)
and this package's migrator only.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

# Importing credentials also keeps botocore's DEBUG logging (whole secret values) off.
from .credentials import is_auth_failure
from .credentials import secrets_client as _secrets_client
from .migrate import (
    DEFAULT_EMBEDDING_DIMENSION,
    MigrationError,
    MigrationRef,
    MigrationResult,
    ensure_app_role,
    first_line,
    migrate,
    parse_migration_set,
)
from .tls import describe_tls_failure, ssl_params

log = logging.getLogger("conversations.cfn")
log.setLevel(logging.INFO)

PHYSICAL_ID_PREFIX = "conversations-schema"
MAX_REASON_CHARS = 500
# Leave the Lambda this much time to report a failure instead of being killed mid-flight.
SAFETY_MARGIN_MS = 5_000
# How long to wait for a database that does not answer yet: a paused Aurora Serverless v2
# cluster resumes in ~15 s, 30 s or more after a day idle. Never more than a third of the
# Lambda's remaining time, so a database that stays away still ends in a reported failure.
RESUME_WAIT_S = 180.0
CONNECT_TIMEOUT_S = 10
# Refused by a server that is starting up, or full: worth another try. Any other answer is final.
TRANSIENT_REFUSALS = ("the database system is starting up", "not yet accepting connections", "too many clients")


class SchemaError(RuntimeError):
    """A failure whose message is safe to hand to CloudFormation."""


def handler(event: dict[str, Any], context: Any = None, *, secrets_client: Any = None) -> dict[str, Any]:
    request_type = event.get("RequestType")
    props = event.get("ResourceProperties") or {}
    _log("event", request_type=request_type, logical_id=event.get("LogicalResourceId"))
    if request_type == "Delete":
        # The schema and its data outlive the resource: dropping tables on a stack
        # delete or a resource replacement would destroy every conversation.
        return {"PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID_PREFIX}
    if request_type not in ("Create", "Update"):
        raise SchemaError(f"unsupported RequestType {request_type!r}")

    secrets: list[str] = []
    try:
        started = time.monotonic()
        client = secrets_client or _secrets_client()
        master = _read_secret(client, props, "MasterSecretArn", secrets)
        app = _read_secret(client, props, "AppSecretArn", secrets)
        dimension = _dimension(props.get("EmbeddingDimension", DEFAULT_EMBEDDING_DIMENSION))
        target = _migration_set(props, request_type)
        host, port, dbname = (
            _require(master, "host", "MasterSecretArn"),
            master.get("port", 5432),
            master.get("dbname", "postgres"),
        )

        def apply(master: dict[str, Any], app: dict[str, Any]) -> MigrationResult:
            with _connect_waiting(master, props, context) as conn:
                result = migrate(conn, embedding_dimension=dimension, progress=lambda m: _log(m), target=target)
                # Roles and grants follow the secret this deployment names, a rollback's too;
                # the schema above is never undone.
                ensure_app_role(
                    conn,
                    str(_require(app, "username", "AppSecretArn")),
                    str(_require(app, "password", "AppSecretArn")),
                )
                return result

        try:
            try:
                result = apply(master, app)
            except psycopg.OperationalError as exc:
                if not is_auth_failure(exc):
                    raise
                # The master secret's rotation may have changed the password between our read
                # and our login (it runs on its own schedule): read both secrets again, once.
                _log("authentication failed; reading the secrets again")
                master = _read_secret(client, props, "MasterSecretArn", secrets)
                app = _read_secret(client, props, "AppSecretArn", secrets)
                result = apply(master, app)
        except psycopg.OperationalError as exc:
            tls = describe_tls_failure(str(exc), ssl_params(sslmode=_sslmode(props)).get("sslrootcert"))
            raise SchemaError(
                f"cannot reach or use database {host}:{port}/{dbname}: {tls or first_line(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise SchemaError(f"database error: {first_line(exc)}") from None
        except MigrationError as exc:
            raise SchemaError(str(exc)) from None
        data = {
            "SchemaVersion": str(result.schema_version),
            "PgvectorVersion": result.pgvector_version or "",
            "Applied": str(len(result.applied)),
        }
        if result.ahead:
            _log("the database keeps migrations this deployment does not name", ahead=result.ahead)
        _log("schema ready", elapsed_s=round(time.monotonic() - started, 2), **data)
        return {"PhysicalResourceId": f"{PHYSICAL_ID_PREFIX}:{dbname}", "Data": data}
    except SchemaError as exc:
        reason = _scrub(str(exc), secrets)
        _log("failed", reason=reason)
        raise SchemaError(reason) from None
    except Exception as exc:  # noqa: BLE001 - anything else still fails fast, with no secret in it
        reason = _scrub(f"{type(exc).__name__}: {first_line(exc)}", secrets)
        _log("failed", reason=reason)
        raise SchemaError(reason) from None


def _connect_waiting(master: dict[str, Any], props: dict[str, Any], context: Any) -> psycopg.Connection[Any]:
    """Connect, waiting for a database that does not answer yet (see RESUME_WAIT_S)."""
    deadline = time.monotonic() + min(RESUME_WAIT_S, _remaining_seconds(context) / 3)
    pause = 1.0
    while True:
        try:
            return _connect(master, props, _remaining_seconds(context))
        except psycopg.OperationalError as exc:
            if not _worth_waiting(exc) or time.monotonic() + pause >= deadline:
                raise
            _log(
                "the database does not answer yet (an Aurora Serverless v2 cluster resumes from a pause "
                "in 15-30 s); waiting",
                retry_in_s=pause,
                error=first_line(exc),
            )
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def _worth_waiting(exc: psycopg.OperationalError) -> bool:
    """No answer at all (refused, timed out) or a server starting up or full; never a refused
    login, database or certificate, which waiting does not mend. (libpq reports a failed
    connection as text only, with no SQLSTATE.)"""
    text = str(exc)
    if is_auth_failure(exc) or describe_tls_failure(text, None) or "does not support SSL" in text:
        return False
    if "FATAL:" in text:
        return any(reason in text for reason in TRANSIENT_REFUSALS)
    return True


def _connect(master: dict[str, Any], props: dict[str, Any], budget_s: float) -> psycopg.Connection[Any]:
    conninfo = make_conninfo(
        host=str(_require(master, "host", "MasterSecretArn")),
        port=str(master.get("port", 5432)),
        dbname=str(master.get("dbname", "postgres")),
        user=str(_require(master, "username", "MasterSecretArn")),
        password=str(_require(master, "password", "MasterSecretArn")),
        connect_timeout=str(max(2, min(CONNECT_TIMEOUT_S, int(budget_s / 3)))),
        application_name="conversations-schema",
        # No single statement may outlive the Lambda: fail and report instead.
        options=f"-c statement_timeout={int(max(1.0, budget_s - 10) * 1000)} -c lock_timeout=30000",
        **ssl_params(sslmode=_sslmode(props)),
    )
    return psycopg.connect(conninfo, autocommit=True)


def _sslmode(props: dict[str, Any]) -> str | None:
    return str(props["SslMode"]) if props.get("SslMode") else None


def _migration_set(props: dict[str, Any], request_type: str) -> list[MigrationRef]:
    raw = props.get("Migrations")
    if raw is None:
        if request_type == "Create":
            raise SchemaError("resource property Migrations is required")
        _log("no Migrations property (a template older than it): applying nothing")
        return []
    try:
        return parse_migration_set(raw)
    except MigrationError as exc:
        raise SchemaError(f"resource property Migrations: {exc}") from None


def _read_secret(client: Any, props: dict[str, Any], key: str, collected: list[str]) -> dict[str, Any]:
    arn = props.get(key)
    if not arn:
        raise SchemaError(f"resource property {key} is required")
    try:
        raw = client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; the name is enough
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise SchemaError(f"cannot read secret {key}: {code}") from None
    try:
        value = json.loads(raw)
    except ValueError:
        raise SchemaError(f"secret {key} is not a JSON object") from None
    if not isinstance(value, dict):
        raise SchemaError(f"secret {key} is not a JSON object")
    if value.get("password"):
        collected.append(str(value["password"]))
    return value


def _require(secret: dict[str, Any], field: str, key: str) -> Any:
    if secret.get(field) in (None, ""):
        raise SchemaError(f"secret {key} has no '{field}'")
    return secret[field]


def _dimension(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SchemaError(f"EmbeddingDimension must be an integer, got {str(raw)[:20]!r}") from None


def _remaining_seconds(context: Any) -> float:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if getter is None:
        return 300.0
    return max(1.0, (float(getter()) - SAFETY_MARGIN_MS) / 1000)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:MAX_REASON_CHARS]


def _log(message: str, **fields: Any) -> None:
    # One JSON object per line in CloudWatch; fields are ids and counts, never secrets.
    log.info(json.dumps({"message": message, **fields}, default=str))
