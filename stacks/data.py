"""DataStack (stateful): wires the database (database.py) and the schema custom resource
(schema.py), the alarm topic, and declares the outputs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import outputs
from .alarms import AlarmTopic
from .config import DeploymentConfig
from .database import Database
from .schema import SchemaMigrations
from .util import acknowledge, checkov_skip, log_removal, output


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
        super().__init__(scope, construct_id, termination_protection=config.termination_protection, **kwargs)  # type: ignore[arg-type]
        self.database = database = Database(self, "Database", vpc=vpc, config=config)

        self.schema = SchemaMigrations(
            self,
            "SchemaMigrations",
            vpc=vpc,
            database=database.target,
            database_resources=database.resources,
            secrets_endpoint=secrets_endpoint,
            master_secret=self.database.master_secret,
            app_secret=self.database.app_secret,
            embedding_dimension=config.embedding_dimension,
            log_retention_days=config.log_retention_days,
            log_removal=log_removal(config),
            depends_on=[s.internet_connectivity_established for s in vpc.private_subnets],
        )
        # Secrets Manager rotates as soon as a schedule exists. Before the schema resource has
        # run, the application login does not exist (multi-user rotation would fail) and the
        # handler may be reading the master password that rotation is changing.
        for schedule in self.node.find_all():
            if isinstance(schedule, secretsmanager.CfnRotationSchedule):
                schedule.add_resource_dependency(self.schema.resource.node.default_child)  # type: ignore[arg-type]

        self.alarms = AlarmTopic(self, "Alarms", alarm_email=config.alarm_email)
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
        if database.read_endpoint is not None:
            output(
                self, outputs.DATABASE_READ_ENDPOINT, database.read_endpoint, "Read replicas (list, search, similar)"
            )
        if database.proxy is not None:
            output(self, outputs.DATABASE_PROXY_ENDPOINT, database.proxy.endpoint, "RDS Proxy endpoint (the service's)")
        output(self, outputs.DATABASE_MULTI_AZ, str(config.db_multi_az).lower(), "Whether the database is Multi-AZ")
        output(self, outputs.MASTER_SECRET_ARN, self.database.master_secret.secret_arn, "Master user secret")
        output(self, outputs.APP_SECRET_ARN, self.database.app_secret.secret_arn, "Application role secret")
        output(self, outputs.SCHEMA_VERSION, self.schema.schema_version, "Schema version applied by the migrations")
        output(self, outputs.ALARM_TOPIC_ARN, self.alarms.topic.topic_arn, "SNS topic of the alarms")

        self._acknowledge_database(config)
        # aws-cdk-lib's singleton that sets retention on the RDS log groups it exports to.
        log_retention = next(c for c in self.node.children if c.node.id.startswith("LogRetention"))
        acknowledge(
            log_retention,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "aws-cdk-lib's LogRetention function (it sets the retention of the RDS log groups) writes only "
            "its own CloudWatch Logs with this policy.",
        )
        acknowledge(
            log_retention,
            "IAM5[Resource::*]",
            "logs:PutRetentionPolicy and logs:DeleteRetentionPolicy on '*': the RDS log group names are only "
            "known once the instance exists; the function can change retention, never read or delete logs.",
        )
        log_function = log_retention.node.find_child("Resource")
        checkov_skip(
            log_function,
            "CKV_AWS_116",
            "aws-cdk-lib's LogRetention custom resource is invoked synchronously "
            "by CloudFormation, which reports failures; a dead-letter queue does not apply.",
        )
        checkov_skip(
            log_function,
            "CKV_AWS_117",
            "aws-cdk-lib's LogRetention function calls only the CloudWatch Logs "
            "API to set retention; it reaches no resource inside the VPC.",
        )
        checkov_skip(
            log_function,
            "CKV_AWS_115",
            "aws-cdk-lib's LogRetention function runs only during deployments, "
            "once per log group; a concurrency cap would add nothing.",
        )
        checkov_skip(
            log_retention.node.find_child("ServiceRole").node.find_child("DefaultPolicy"),
            "CKV_AWS_111",
            "logs:PutRetentionPolicy/DeleteRetentionPolicy on '*' because the RDS log group names exist only "
            "after the instance does; these actions change retention and cannot read or delete logs.",
        )
        for secret in (self.database.master_secret_resource, self.database.app_secret_resource):
            checkov_skip(
                secret,
                "CKV_AWS_149",
                "Encrypted with Secrets Manager's AWS-managed key; no other account or "
                "service needs to decrypt, so a customer-managed key would add cost and no control.",
            )

    def _acknowledge_database(self, config: DeploymentConfig) -> None:
        database = self.database
        port = (
            "PostgreSQL keeps its default port 5432, which clients and runbooks expect; the database is in "
            "isolated subnets and its security group admits only the service and the schema Lambda, so a "
            "non-default port would add no protection."
        )
        no_protection = (
            "Deletion protection is off only in the dev and lean profiles so 'make destroy' can remove it; the "
            "prod profile enables it and snapshots the database on delete."
        )
        monitoring = (
            "Enhanced monitoring (OS metrics) is not needed for the alarms here: "
            "CPU, storage and connections come from CloudWatch's RDS metrics; Performance Insights covers prod."
        )
        if database.instance is not None:
            instance = database.instance
            if not config.db_multi_az:
                acknowledge(
                    instance,
                    "RDS3",
                    "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is "
                    "Multi-AZ (dbMultiAz=true turns it on for any profile).",
                )
            if not config.db_deletion_protection:
                acknowledge(instance, "RDS10", no_protection)
            checkov_skip(instance, "CKV_AWS_118", monitoring)
            if not config.db_multi_az:
                checkov_skip(
                    instance,
                    "CKV_AWS_157",
                    "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is Multi-AZ.",
                )
            acknowledge(instance, "RDS11", port)
        for replica in database.replicas:
            single_az = (
                "A read replica serves only reads that tolerate lag, and the service falls back to the writer "
                "when it is down; durability is the source instance's (Multi-AZ in prod). A Multi-AZ replica "
                "would double its price for no data safety."
            )
            acknowledge(replica, "RDS3", single_az)
            inherited = (
                "A read replica is encrypted because its source is (StorageEncrypted: true on the instance): RDS "
                "gives it the source's encryption and key, and CloudFormation refuses StorageEncrypted beside "
                "SourceDBInstanceIdentifier."
            )
            acknowledge(replica, "RDS2", inherited)
            checkov_skip(replica, "CKV_AWS_16", inherited)
            checkov_skip(replica, "CKV_AWS_157", single_az)
            checkov_skip(replica, "CKV_AWS_118", monitoring)
            acknowledge(replica, "RDS11", port)
            if not config.db_deletion_protection:
                acknowledge(replica, "RDS10", no_protection)
        if database.cluster is not None:
            cluster = database.cluster
            if not config.db_deletion_protection:
                acknowledge(cluster, "RDS10", no_protection)
            for member in cluster.node.find_all():
                if isinstance(member, rds.CfnDBInstance):
                    checkov_skip(member, "CKV_AWS_118", monitoring)
