"""ConversationService: the ECS cluster, the Fargate service and its task, the load balancer in
front of it, scaling; and the container's environment."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import findings
from .config import LogsConfig, NetworkConfig, ServiceConfig
from .database import PORT as DATABASE_PORT
from .database import Database
from .load_balancer import CONTAINER_PORT, LIVENESS_PATH, LoadBalancer
from .network import VPC_CIDR, task_subnets
from .util import log_removal, retention

SERVICE_DIR = Path(__file__).resolve().parent.parent / "service"
# taskArchitecture -> (the task's CPU architecture, the image's build platform)
ARCHITECTURES = {
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
}


def database_environment(database: Database, app_secret: secretsmanager.ISecret) -> dict[str, str]:
    """The container's plain environment: configuration only; every credential is a secret."""
    env = {
        "PORT": str(CONTAINER_PORT),
        "EMBEDDING_DIMENSION": str(database.config.embedding_dimension),
        # Verified TLS: the image carries the RDS certificate authorities (conversations/tls.py).
        "DB_SSLMODE": "verify-full",
        "POOL_MAX_SIZE": "10",
        "LOG_LEVEL": "INFO",
        # The load balancer's nodes are in the VPC: only their X-Forwarded-For is believed.
        "FORWARDED_ALLOW_IPS": VPC_CIDR,
        # After a rotation the service re-reads its credentials from this secret.
        "DB_SECRET_ARN": app_secret.secret_arn,
    }
    if database.proxy is not None:
        # The proxy's endpoint, not the secret's host (the writer, which the schema Lambda uses).
        env["DB_HOST"] = database.service_endpoint
        env["DB_PROXY"] = "true"
    read = database.service_read_endpoint
    if read is not None:
        env["DB_READ_HOST"] = read
    if database.config.auto_pause:
        # An Aurora cluster pauses only with no connection open: idle connections close after
        # two minutes, and none is kept (the first request after a pause waits for the resume).
        env["POOL_MIN_SIZE"] = "0"
        env["POOL_MAX_IDLE_SECONDS"] = "120"
        # Resuming takes about 15 s (AWS's figure); Aurora holds the connection attempt until
        # then, so the first request waits for it instead of failing after 3 s (or 5 s).
        env["DB_CONNECT_TIMEOUT_SECONDS"] = "30"
        env["POOL_TIMEOUT_SECONDS"] = "30"
    return env


class ConversationService(Construct):
    """The Fargate service, its task, its load balancer and its scaling."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ServiceConfig,
        network: NetworkConfig,
        logs_config: LogsConfig,
        vpc: ec2.IVpc,
        database: Database,
        app_secret: secretsmanager.ISecret,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        insights = ecs.ContainerInsights.ENABLED if config.container_insights else ecs.ContainerInsights.DISABLED
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc, container_insights_v2=insights)
        self.api_token = secretsmanager.Secret(
            self,
            "ApiToken",
            description="Bearer token for the conversation service API",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=48, exclude_punctuation=True),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=retention(logs_config.retention_days), removal_policy=log_removal(logs_config)
        )
        self.task_definition = task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ARCHITECTURES[config.task_architecture][0],
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        task.add_container(
            "Api",
            # service/.dockerignore is an allowlist: nothing untracked reaches the image.
            # An arm64 image builds on any machine without emulation: service/Dockerfile runs pip
            # on the builder's own platform and fetches the target's wheels.
            image=ecs.ContainerImage.from_asset(str(SERVICE_DIR), platform=ARCHITECTURES[config.task_architecture][1]),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="api", log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            environment=database_environment(database, app_secret),
            secrets={
                **({} if database.proxy else {"DB_HOST": ecs.Secret.from_secrets_manager(app_secret, "host")}),
                "DB_PORT": ecs.Secret.from_secrets_manager(app_secret, "port"),
                "DB_NAME": ecs.Secret.from_secrets_manager(app_secret, "dbname"),
                "DB_USER": ecs.Secret.from_secrets_manager(app_secret, "username"),
                "DB_PASSWORD": ecs.Secret.from_secrets_manager(app_secret, "password"),
                "API_TOKEN": ecs.Secret.from_secrets_manager(self.api_token),
            },
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}"
                    f"{LIVENESS_PATH}', timeout=2)",
                ],
                interval=cdk.Duration.seconds(15),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(30),
            ),
            readonly_root_filesystem=True,
            user="10001",
            stop_timeout=cdk.Duration.seconds(30),
        )
        # The task itself reads the application secret only to follow a rotation.
        app_secret.grant_read(task.task_role)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Conversation service tasks",
            allow_all_outbound=False,
        )
        # Out: HTTPS (through NAT, or from a public address without it) and PostgreSQL below;
        # nothing else. In: only the load balancer, on the container port (below).
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "ECR, CloudWatch Logs and Secrets Manager over HTTPS"
        )
        # Called from this side so the ingress rule lives in this stack: the stateful stack
        # never references (or waits for) the service.
        # The port as a literal, not the instance's attribute: one cross-stack import fewer.
        for target in database.service_targets:
            self.security_group.connections.allow_to(target, ec2.Port.tcp(DATABASE_PORT), "Conversation service tasks")

        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=task,
            # No desired count: the scalable target's minTasks sets it at creation, and target
            # tracking owns it afterwards; a DesiredCount in the template would cut a scaled-out
            # service back to it on every deploy (aws/aws-cdk#13130).
            vpc_subnets=task_subnets(network),
            security_groups=[self.security_group],
            # Without NAT a task needs a public address to pull its image, ship its logs and read
            # its secrets; its security group still admits only the load balancer.
            assign_public_ip=network.tasks_in_public_subnets,
            capacity_provider_strategies=[ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1)]
            if config.fargate_spot
            else None,
            # Never below the desired count during a deploy; a failing deploy rolls back.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=cdk.Duration.seconds(60),
            enable_execute_command=False,
        )
        if config.fargate_spot:
            # Made here rather than by enable_fargate_capacity_providers (which adds it only at
            # synth), so the service can depend on it: CloudFormation does not order the two, and
            # a service created before the association fails ("... is not associated with the
            # cluster").
            association = ecs.CfnClusterCapacityProviderAssociations(
                self,
                "CapacityProviders",
                cluster=self.cluster.cluster_name,
                capacity_providers=["FARGATE", "FARGATE_SPOT"],
                default_capacity_provider_strategy=[],
            )
            self.service.node.add_dependency(association)

        endpoint = LoadBalancer(
            self,
            config=config,
            logs_config=logs_config,
            vpc=vpc,
            service=self.service,
            tasks=self.security_group,
        )
        self.access_logs, self.load_balancer_security_group = endpoint.access_logs, endpoint.security_group
        self.load_balancer, self.target_group = endpoint.load_balancer, endpoint.target_group
        self.listener, self.url = endpoint.listener, endpoint.url

        scaling = self.service.auto_scale_task_count(min_capacity=config.min_tasks, max_capacity=config.max_tasks)
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=65,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )
        scaling.scale_on_request_count(
            "Requests",
            requests_per_target=config.requests_per_target,
            target_group=self.target_group,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )

        findings.service(self)
