"""CloudFormation custom resource: the schema, applied by the migrator.

Runs as the ``onEvent`` handler behind ``custom_resources.Provider``: it returns the
physical id and data, and a raised exception becomes a FAILED response whose reason is the
exception's message, so every message raised from here is short and free of secrets.

Resource properties:
  MasterSecretArn     secret with host, port, dbname, username, password (the RDS master)
  AppSecretArn        secret with username, password for the application role
  EmbeddingDimension  optional, default 1536
  SslMode             optional libpq sslmode, default "require" (RDS enforces TLS)
  MigrationsHash      changes whenever a migration file does, so CloudFormation sends an
                      Update exactly then (read by CloudFormation, not by this code)

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
from .migrate import DEFAULT_EMBEDDING_DIMENSION, MigrationError, MigrationResult, ensure_app_role, first_line, migrate

log = logging.getLogger("conversations.cfn")
log.setLevel(logging.INFO)

PHYSICAL_ID_PREFIX = "conversations-schema"
MAX_REASON_CHARS = 500
# Leave the Lambda this much time to report a failure instead of being killed mid-flight.
SAFETY_MARGIN_MS = 5_000


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
        host, port, dbname = (
            _require(master, "host", "MasterSecretArn"),
            master.get("port", 5432),
            master.get("dbname", "postgres"),
        )

        def apply(master: dict[str, Any], app: dict[str, Any]) -> MigrationResult:
            with _connect(master, props, _remaining_seconds(context)) as conn:
                result = migrate(conn, embedding_dimension=dimension, progress=lambda m: _log(m))
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
            raise SchemaError(f"cannot reach or use database {host}:{port}/{dbname}: {first_line(exc)}") from None
        except psycopg.Error as exc:
            raise SchemaError(f"database error: {first_line(exc)}") from None
        except MigrationError as exc:
            raise SchemaError(str(exc)) from None
        data = {
            "SchemaVersion": str(result.schema_version),
            "PgvectorVersion": result.pgvector_version or "",
            "Applied": str(len(result.applied)),
        }
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


def _connect(master: dict[str, Any], props: dict[str, Any], budget_s: float) -> psycopg.Connection[Any]:
    conninfo = make_conninfo(
        host=str(_require(master, "host", "MasterSecretArn")),
        port=str(master.get("port", 5432)),
        dbname=str(master.get("dbname", "postgres")),
        user=str(_require(master, "username", "MasterSecretArn")),
        password=str(_require(master, "password", "MasterSecretArn")),
        sslmode=str(props.get("SslMode", "require")),
        connect_timeout=str(max(2, min(10, int(budget_s / 3)))),
        application_name="conversations-schema",
        # No single statement may outlive the Lambda: fail and report instead.
        options=f"-c statement_timeout={int(max(1.0, budget_s - 10) * 1000)} -c lock_timeout=30000",
    )
    return psycopg.connect(conninfo, autocommit=True)


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
