"""A replay of AWS's published multi-user rotation function for PostgreSQL
(aws-samples/aws-secrets-manager-rotation-lambdas, SecretsManagerRDSPostgreSQLRotationMultiUser):
the same four steps against (emulated) Secrets Manager, and in ``setSecret`` the very SQL it
sends, bound on the client as its driver (PyGreSQL's pgdb) binds it."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from devtools.postgres import scalar

CLONE_SUFFIX = "_clone"


def alt_username(current: str) -> str:
    """The function's get_alt_username: <user> <-> <user>_clone."""
    if current.endswith(CLONE_SUFFIX):
        return current[: -len(CLONE_SUFFIX)]
    new = current + CLONE_SUFFIX
    if len(new) > 63:
        raise ValueError("Unable to clone user, username length with _clone appended would exceed 63 characters")
    return new


def connect(secret: dict[str, Any]) -> psycopg.Connection | None:
    """The function's get_connection: a connection, or None when login fails."""
    try:
        return psycopg.connect(
            make_conninfo(
                host=secret["host"],
                port=str(secret.get("port", 5432)),
                dbname=secret.get("dbname") or "postgres",
                user=secret["username"],
                password=secret["password"],
                connect_timeout="5",
                sslmode="disable",  # the embedded server has no TLS; RDS forces it
            ),
            cursor_factory=psycopg.ClientCursor,
        )
    except psycopg.OperationalError:
        return None


def _secret(client: Any, arn: str, stage: str, token: str | None = None) -> dict[str, Any]:
    kwargs = {"VersionId": token} if token else {}
    secret: dict[str, Any] = json.loads(
        client.get_secret_value(SecretId=arn, VersionStage=stage, **kwargs)["SecretString"]
    )
    return secret


def rotate(client: Any, arn: str) -> dict[str, Any]:
    """One whole rotation of the secret ``arn`` (createSecret, setSecret, testSecret,
    finishSecret); returns the new current secret."""
    token = str(uuid.uuid4())
    # createSecret
    current = _secret(client, arn, "AWSCURRENT")
    pending = {**current, "username": alt_username(current["username"]), "password": secrets.token_urlsafe(24)}
    client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(pending), VersionStages=["AWSPENDING"]
    )
    # setSecret
    pending = _secret(client, arn, "AWSPENDING", token)
    already = connect(pending)
    if already is not None:
        already.close()
    else:
        if alt_username(current["username"]) != pending["username"]:
            raise ValueError("Attempting to modify user other than current user or clone")
        check = connect(current)
        if check is None:
            raise ValueError("Unable to log into database using current credentials")
        check.close()
        master = _secret(client, current["masterarn"], "AWSCURRENT")
        master["dbname"] = current.get("dbname")
        conn = connect(master)
        if conn is None:
            raise ValueError("Unable to log into database using credentials in master secret")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT quote_ident(%s)", (pending["username"],))
                pending_username = scalar(cur)
                cur.execute("SELECT quote_ident(%s)", (current["username"],))
                current_username = scalar(cur)
                cur.execute("SELECT 1 FROM pg_roles where rolname = %s", (pending["username"],))
                if len(cur.fetchall()) == 0:
                    create_role = "CREATE ROLE %s" % pending_username  # noqa: UP031 - the function's own SQL
                    cur.execute(create_role + " WITH LOGIN PASSWORD %s", (pending["password"],))
                    cur.execute("GRANT %s TO %s" % (current_username, pending_username))  # noqa: UP031
                else:
                    alter_role = "ALTER USER %s" % pending_username  # noqa: UP031
                    cur.execute(alter_role + " WITH PASSWORD %s", (pending["password"],))
                conn.commit()
        finally:
            conn.close()
    # testSecret
    conn = connect(_secret(client, arn, "AWSPENDING", token))
    if conn is None:
        raise ValueError("Unable to log into database with pending secret")
    with conn:
        conn.execute("SELECT NOW()")
    # finishSecret
    stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current_version = next(v for v, s in stages.items() if "AWSCURRENT" in s)
    client.update_secret_version_stage(
        SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current_version
    )
    return _secret(client, arn, "AWSCURRENT")
