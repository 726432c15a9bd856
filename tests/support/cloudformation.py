"""CloudFormation as it drives the schema custom resource, replayed here: the events it sends
(Create, Update with the new properties, and on rollback another Update with the *old* ones,
served by the *new* function: aws/aws-cdk#17040), the answer custom_resources.Provider's
framework sends back for each, and the stack status that follows from those answers."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from conversations.cfn_handler import handler
from conversations.migrate import migration_set
from devtools.lambda_context import LambdaContext
from devtools.postgres import PostgresServer
from devtools.secrets import create_stack_secrets
from tests.support.service import drop_roles

APP_ROLE = "cfn_test_app"
# CloudFormation's limit on a custom resource's whole response.
MAX_RESPONSE_BYTES = 4096


def stack_secrets_for(
    pg: PostgresServer, db: str, secretsmanager: Any, *, host: str | None = None, port: int | None = None
) -> Iterator[dict[str, Any]]:
    """The Data stack's two secrets for database ``db`` on ``pg`` (or at ``host``/``port``, a
    forwarder in front of it), with the RDS-like master; the database and the application's
    roles are removed afterwards."""
    password = secrets.token_urlsafe(18)
    arns = create_stack_secrets(
        secretsmanager,
        host=host or pg.host,
        port=port or pg.port,
        dbname=db,
        master=(pg.master, pg.master_password),
        app=(APP_ROLE, password),
    )
    yield {"master": arns.master_arn, "app": arns.app_arn, "app_password": password, "db": db}
    pg.drop_database(db)
    drop_roles(pg, APP_ROLE)


def schema_event(request_type: str, s: dict[str, Any], **props: Any) -> dict[str, Any]:
    """An event for the schema resource of the stack whose secrets are ``s``; its Migrations
    are the bundle's (MIGRATIONS_DIR's, if set), as the template built with it names them."""
    body: dict[str, Any] = {
        "RequestType": request_type,
        "LogicalResourceId": "SchemaMigrations",
        "ResourceProperties": {
            "ServiceToken": "arn:x",
            "MasterSecretArn": s["master"],
            "AppSecretArn": s["app"],
            "SslMode": "disable",
            "EmbeddingDimension": "8",
            "Migrations": migration_set(),
            **props,
        },
    }
    if request_type != "Create":
        body["PhysicalResourceId"] = f"conversations-schema:{s['db']}"
    return body


def provider_answer(event: dict[str, Any]) -> dict[str, Any]:
    """What the Provider framework sends CloudFormation: SUCCESS with the handler's id and
    data, or FAILED with the exception's message as the reason."""
    try:
        result = handler(event, LambdaContext())
    except Exception as exc:  # the framework turns any exception into FAILED
        answer = {"Status": "FAILED", "Reason": str(exc), "PhysicalResourceId": event.get("PhysicalResourceId")}
    else:
        answer = {"Status": "SUCCESS", "PhysicalResourceId": result["PhysicalResourceId"], "Data": result.get("Data")}
    assert len(json.dumps(answer)) < MAX_RESPONSE_BYTES, "CloudFormation refuses a response this large"
    return answer


@dataclass
class SchemaResourceStack:
    """One stack holding the schema resource, deployed and updated as CloudFormation does."""

    secrets: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    physical_id: str | None = None
    status: str = "NONE"
    answers: list[dict[str, Any]] = field(default_factory=list)

    def _send(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = provider_answer(event)
        self.answers.append({"RequestType": event["RequestType"], **answer})
        return answer

    def create(self) -> str:
        event = schema_event("Create", self.secrets)
        answer = self._send(event)
        if answer["Status"] == "SUCCESS":
            self.properties, self.physical_id = event["ResourceProperties"], answer["PhysicalResourceId"]
            self.status = "CREATE_COMPLETE"
        else:
            self.status = "ROLLBACK_COMPLETE"
        return self.status

    def update(self, *, later_resource_fails: bool = False, **overrides: Any) -> str:
        """Update with the current bundle's properties (and ``overrides``); roll back as
        CloudFormation does when the resource, or a resource updated after it, fails."""
        event = schema_event("Update", self.secrets, **overrides)
        event["PhysicalResourceId"] = self.physical_id
        event["OldResourceProperties"] = self.properties
        answer = self._send(event)
        if answer["Status"] == "SUCCESS" and not later_resource_fails:
            assert answer["PhysicalResourceId"] == self.physical_id, "a new physical id would replace the resource"
            self.properties = event["ResourceProperties"]
            self.status = "UPDATE_COMPLETE"
            return self.status
        rollback = {
            **event,
            "ResourceProperties": self.properties,
            "OldResourceProperties": event["ResourceProperties"],
        }
        undone = self._send(rollback)
        ok = undone["Status"] == "SUCCESS" and undone["PhysicalResourceId"] == self.physical_id
        self.status = "UPDATE_ROLLBACK_COMPLETE" if ok else "UPDATE_ROLLBACK_FAILED"
        return self.status
