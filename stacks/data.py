"""DataStack (stateful): wires the database (database.py) and the schema custom resource
(schema.py), the alarm topic, and declares the outputs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import findings, outputs
from .alarms import AlarmTopic
from .config import DeploymentConfig
from .database import Database
from .schema import SchemaMigrations
from .util import log_removal, output


class DataStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        vpc: ec2.IVpc,
        secrets_endpoint: ec2.InterfaceVpcEndpoint,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, termination_protection=config.database.termination_protection, **kwargs)  # type: ignore[arg-type]
        self.database = database = Database(self, "Database", vpc=vpc, config=config.database, logs_config=config.logs)

        self.schema = SchemaMigrations(
            self,
            "SchemaMigrations",
            vpc=vpc,
            database=database.target,
            database_resources=database.resources,
            secrets_endpoint=secrets_endpoint,
            master_secret=self.database.master_secret,
            app_secret=self.database.app_secret,
            embedding_dimension=config.database.embedding_dimension,
            restored_from=config.database.restore_snapshot,
            log_retention_days=config.logs.retention_days,
            log_removal=log_removal(config.logs),
            depends_on=[s.internet_connectivity_established for s in vpc.private_subnets],
        )
        # Secrets Manager rotates as soon as a schedule exists. Before the schema resource has
        # run, the application login does not exist (multi-user rotation would fail) and the
        # handler may be reading the master password that rotation is changing.
        for schedule in self.node.find_all():
            if isinstance(schedule, secretsmanager.CfnRotationSchedule):
                schedule.add_resource_dependency(self.schema.resource.node.default_child)  # type: ignore[arg-type]

        self.alarms = AlarmTopic(self, "Alarms", alarm_email=config.alarms.email)
        self.alarms.on_rotation_failure(self)
        self.alarms.alarm(
            self.schema.function.metric_errors(period=cdk.Duration.minutes(5)),
            "SchemaMigrationErrors",
            "The schema custom resource's Lambda failed (a deploy's migration): read its log group",
            threshold=0,
        )

        output(self, outputs.DATABASE_ENDPOINT, database.endpoint, "PostgreSQL endpoint")
        port = (
            database.instance.db_instance_endpoint_port
            if database.instance is not None
            else database.target.cluster_endpoint.port  # type: ignore[union-attr]
        )
        output(self, outputs.DATABASE_PORT, cdk.Token.as_string(port), "PostgreSQL port")
        if database.instance is not None:
            output(self, outputs.DATABASE_INSTANCE_ID, database.identifier, "RDS instance identifier")
        else:
            output(self, outputs.DATABASE_CLUSTER_ID, database.identifier, "Aurora cluster identifier")
        if config.database.restore_snapshot:
            restored = config.database.restore_snapshot
            output(self, outputs.RESTORED_FROM, restored, "Snapshot the database was restored from")
        if database.read_endpoint is not None:
            output(
                self, outputs.DATABASE_READ_ENDPOINT, database.read_endpoint, "Read replicas (list, search, similar)"
            )
        if database.proxy is not None:
            output(self, outputs.DATABASE_PROXY_ENDPOINT, database.proxy.endpoint, "RDS Proxy endpoint (the service's)")
        output(
            self, outputs.DATABASE_MULTI_AZ, str(config.database.multi_az).lower(), "Whether the database is Multi-AZ"
        )
        output(self, outputs.MASTER_SECRET_ARN, self.database.master_secret.secret_arn, "Master user secret")
        output(self, outputs.APP_SECRET_ARN, self.database.app_secret.secret_arn, "Application role secret")
        output(self, outputs.SCHEMA_VERSION, self.schema.schema_version, "Schema version applied by the migrations")
        output(self, outputs.ALARM_TOPIC_ARN, self.alarms.topic.topic_arn, "SNS topic of the alarms")

        findings.database(database)
        findings.log_retention(self, database)
