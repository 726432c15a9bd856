"""SchemaMigrations: the custom resource that applies service/migrations with the one migrator.

The Lambda's code is built from ``service/`` by local bundling (no Docker): the handler and
the migrator modules, the SQL files, and psycopg with its binary wheel for the Lambda
platform, fetched by ``pip install --platform`` into a wheel cache under ``.local/`` so a
second synth needs no network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct, IDependable

from . import findings
from .network import LAMBDA_SUBNETS
from .util import retention

ROOT = Path(__file__).resolve().parent.parent
SERVICE_DIR = ROOT / "service"
MIGRATIONS_DIR = SERVICE_DIR / "migrations"
WHEEL_CACHE = ROOT / ".local" / "lambda-wheels"
HANDLER = "conversations.cfn_handler.handler"
# Only what the handler imports: no web framework, no store, no settings; and the RDS
# certificate authorities it verifies the database against (conversations/tls.py).
HANDLER_FILES = ("__init__.py", "cfn_handler.py", "credentials.py", "migrate.py", "tls.py", "rds-ca-bundle.pem")
LAMBDA_PYTHON = "3.14"
ASSET_SOURCES = [
    "*",
    "!conversations",
    *(f"!conversations/{module}" for module in HANDLER_FILES),
    "!migrations",
    "!migrations/*.sql",
    "!requirements.txt",
]
LAMBDA_PLATFORM = "manylinux2014_x86_64"
# The schema Lambda's time limit (the custom resource waits a minute more).
SCHEMA_TIMEOUT_MINUTES = 14


def psycopg_requirement() -> str:
    """psycopg's pin from the service's requirements, so the Lambda and the image agree."""
    for line in (SERVICE_DIR / "requirements.txt").read_text().splitlines():
        if line.startswith("psycopg[binary]=="):
            return line.split("#")[0].strip()
    raise RuntimeError("service/requirements.txt must pin psycopg[binary]")


def migration_set(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The exact migration set the handler applies, ``0001_name.sql:<sha-256 of its text>``
    each, in order: the same names and checksums as conversations.migrate.migration_set (a test
    compares them), computed here because stacks/ imports nothing from service/. Any added,
    removed or edited file changes it, so CloudFormation sends an Update exactly then; and a
    rollback sends the old set back, which the handler leaves applied as it is."""
    return [
        f"{path.name}:{hashlib.sha256(path.read_text(encoding='utf-8').encode('utf-8')).hexdigest()}"
        for path in sorted(directory.glob("*.sql"))
    ]


@jsii.implements(cdk.ILocalBundling)
class LocalPipBundling:
    """Builds the Lambda bundle on this machine: copy the handler, pip-install psycopg's
    Lambda-platform wheel. Returning True tells CDK not to fall back to Docker."""

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        out = Path(output_dir)
        package = out / "conversations"
        package.mkdir(parents=True, exist_ok=True)
        for module in HANDLER_FILES:
            shutil.copy2(SERVICE_DIR / "conversations" / module, package / module)
        (out / "migrations").mkdir(exist_ok=True)
        for migration in sorted(MIGRATIONS_DIR.glob("*.sql")):
            shutil.copy2(migration, out / "migrations" / migration.name)
        platform = [
            "--platform",
            LAMBDA_PLATFORM,
            "--only-binary=:all:",
            "--python-version",
            LAMBDA_PYTHON,
            "--implementation",
            "cp",
        ]
        requirement = psycopg_requirement()
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        offline = [
            *pip,
            "install",
            *platform,
            "--no-index",
            "--find-links",
            str(WHEEL_CACHE),
            "--target",
            str(out),
            requirement,
        ]
        if subprocess.run(offline, capture_output=True, check=False).returncode != 0:  # noqa: S603
            download = [*pip, "download", *platform, "--dest", str(WHEEL_CACHE), requirement]
            subprocess.run(download, check=True)  # noqa: S603
            subprocess.run(offline, check=True)  # noqa: S603
        for cache in out.rglob("__pycache__"):
            shutil.rmtree(cache)
        return True


class SchemaMigrations(Construct):
    """Runs the migrations (and creates the application role) as a custom resource.

    Create and Update apply exactly the migration set in ``Migrations``; Delete leaves the data
    alone. The resource re-runs exactly when that set changes or the secrets or dimension do.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        database: rds.DatabaseInstance | rds.DatabaseCluster,
        database_resources: Sequence[IConstruct],
        secrets_endpoint: ec2.InterfaceVpcEndpoint,
        master_secret: secretsmanager.ISecret,
        app_secret: secretsmanager.ISecret,
        embedding_dimension: int,
        restored_from: str | None,
        log_retention_days: int,
        log_removal: cdk.RemovalPolicy,
        depends_on: Sequence[IDependable],
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Schema migration Lambda: PostgreSQL and HTTPS (Secrets Manager endpoint) only",
        )
        self.security_group.connections.allow_to(secrets_endpoint, ec2.Port.tcp(443), "Secrets Manager endpoint")
        self.security_group.connections.allow_to_default_port(database, "PostgreSQL")

        log_group = logs.LogGroup(self, "Logs", retention=retention(log_retention_days), removal_policy=log_removal)
        self.function = lambda_.Function(
            self,
            "Handler",
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.X86_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(SERVICE_DIR),
                bundling=cdk.BundlingOptions(
                    # Never used: local bundling always succeeds or raises.
                    image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
                    local=LocalPipBundling(),
                ),
                # The source hash covers only what the bundle is built from (an allowlist):
                # a local database or a stray file under service/ never changes it.
                exclude=ASSET_SOURCES,
            ),
            description="Applies the conversation service's SQL migrations (CloudFormation custom resource)",
            # Under the custom resource's own limit below, so a slow database ends in a
            # reported failure, never a stack waiting for an hour; long enough for a migration
            # that rewrites the messages table (0005: 233 s for ~950k messages on 2 cores).
            timeout=cdk.Duration.minutes(SCHEMA_TIMEOUT_MINUTES),
            memory_size=256,
            vpc=vpc,
            vpc_subnets=LAMBDA_SUBNETS,
            security_groups=[self.security_group],
            log_group=log_group,
            # No reserved concurrency: Lambda keeps a minimum of the account's concurrency
            # unreserved, and a new account's quota (often 10) leaves nothing to reserve, so
            # any reservation fails the deploy. The migrator's advisory lock serialises runs.
        )
        master_secret.grant_read(self.function)
        app_secret.grant_read(self.function)

        provider_logs = logs.LogGroup(
            self, "ProviderLogs", retention=retention(log_retention_days), removal_policy=log_removal
        )
        # The provider framework Lambda stays outside the VPC: it only invokes the handler
        # and answers CloudFormation's pre-signed S3 URL.
        provider = cr.Provider(self, "Provider", on_event_handler=self.function, log_group=provider_logs)
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=provider.service_token,
            resource_type="Custom::ConversationSchema",
            service_timeout=cdk.Duration.minutes(SCHEMA_TIMEOUT_MINUTES + 1),
            properties={
                "MasterSecretArn": master_secret.secret_arn,
                "AppSecretArn": app_secret.secret_arn,
                "EmbeddingDimension": str(embedding_dimension),
                # TLS verified against the RDS CAs in the bundle (conversations/tls.py).
                "SslMode": "verify-full",
                "Migrations": migration_set(),
                # A restored database is a new one: the resource runs again on it (the snapshot
                # may predate migrations; its application role has the snapshot's password).
                **({"RestoredFrom": restored_from} if restored_from else {}),
            },
            removal_policy=cdk.RemovalPolicy.DESTROY,  # Delete is a no-op on the data
        )
        # Everything the handler needs to reach the database exists before it runs and is
        # removed only after it: the instance (or the cluster and its instances), its ingress
        # rule, the endpoint, the routes.
        self.resource.node.add_dependency(
            *database_resources,
            *database.connections.security_groups,
            self.security_group,
            secrets_endpoint,
            *depends_on,
        )
        self.schema_version = self.resource.get_att_string("SchemaVersion")

        findings.schema(self, provider, log_groups=(log_group, provider_logs))
