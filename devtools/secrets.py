"""The Data stack's two database secrets, in (moto's) Secrets Manager, shaped as aws-cdk-lib
writes them: the master secret with the connection, the application secret with the same plus
``masterarn`` (what AWS's multi-user rotation reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StackSecrets:
    master_arn: str
    app_arn: str


def create_stack_secrets(
    client: Any,
    *,
    host: str,
    port: int,
    dbname: str,
    master: tuple[str, str],
    app: tuple[str, str],
    prefix: str = "",
) -> StackSecrets:
    """Create both secrets; ``master`` and ``app`` are (username, password)."""
    where = {"engine": "postgres", "host": host, "port": port, "dbname": dbname}
    master_arn = client.create_secret(
        Name=f"{prefix}master", SecretString=json.dumps({**where, "username": master[0], "password": master[1]})
    )["ARN"]
    app_arn = client.create_secret(
        Name=f"{prefix}app",
        SecretString=json.dumps({**where, "username": app[0], "password": app[1], "masterarn": master_arn}),
    )["ARN"]
    return StackSecrets(master_arn, app_arn)
