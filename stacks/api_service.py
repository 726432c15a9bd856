"""ConversationService: the ECS cluster, the Fargate service and its task, the load balancer in
front of it, scaling; and the container's environment."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import findings
from .config import LogsConfig, NetworkConfig, ServiceConfig
from .database import PORT as DATABASE_PORT
from .database import Database
from .network import PUBLIC, task_subnets
from .util import log_removal, retention

SERVICE_DIR = Path(__file__).resolve().parent.parent / "service"
CONTAINER_PORT = 8080
LIVENESS_PATH = "/health/live"
ALB_IDLE_TIMEOUT_S = 60
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
            desired_count=config.desired_count,
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

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption ALB log delivery supports
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(logs_config.retention_days))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.load_balancer_security_group = alb_sg = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Conversation service load balancer",
        )
        listener_port = 443 if config.certificate_arn else 80
        for cidr in config.allowed_cidrs:
            peer = ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr)
            alb_sg.add_ingress_rule(peer, ec2.Port.tcp(listener_port), "API clients")
            if config.certificate_arn:
                alb_sg.add_ingress_rule(peer, ec2.Port.tcp(80), "Redirect to HTTPS")
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name=PUBLIC),
            security_group=alb_sg,
            drop_invalid_header_fields=True,
            # The service's keep-alive (conversations.__main__.KEEP_ALIVE_S) must outlive this,
            # or the load balancer reuses a connection the task just closed: a sporadic 502.
            idle_timeout=cdk.Duration.seconds(ALB_IDLE_TIMEOUT_S),
            deletion_protection=config.prod,
        )
        self.load_balancer.log_access_logs(self.access_logs, prefix="alb")
        self.load_balancer.connections.allow_to(self.security_group, ec2.Port.tcp(CONTAINER_PORT), "ALB to tasks")

        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "Targets",
            vpc=vpc,
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[self.service],
            deregistration_delay=cdk.Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                # Liveness, not readiness: a database failover must not make ECS replace every task.
                path=LIVENESS_PATH,
                healthy_http_codes="200",
                interval=cdk.Duration.seconds(15),
                timeout=cdk.Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
        )
        if config.certificate_arn:
            certificate = acm.Certificate.from_certificate_arn(self, "Certificate", config.certificate_arn)
            self.listener = self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                default_target_groups=[self.target_group],
                open=False,
            )
            # add_redirect() would open port 80 to the world; this keeps it to allowedCidrs.
            self.load_balancer.add_listener(
                "HttpRedirect",
                port=80,
                protocol=elbv2.ApplicationProtocol.HTTP,
                open=False,
                default_action=elbv2.ListenerAction.redirect(protocol="HTTPS", port="443", permanent=True),
            )
            self.url = f"https://{self.load_balancer.load_balancer_dns_name}"
        else:
            self.listener = self.load_balancer.add_listener(
                "Http",
                port=80,
                protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group],
                open=False,
            )
            self.url = f"http://{self.load_balancer.load_balancer_dns_name}"

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
