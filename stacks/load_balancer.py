"""The load balancer in front of the service: its security group, its access-log bucket, the
target group of the tasks, and the listeners (HTTPS with a redirect, or plain HTTP)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .config import LogsConfig, ServiceConfig
from .network import PUBLIC

CONTAINER_PORT = 8080
LIVENESS_PATH = "/health/live"
ALB_IDLE_TIMEOUT_S = 60


class LoadBalancer:
    """Builds the load balancer's resources in the scope of the service construct that owns it:
    their construct ids, and so their CloudFormation logical ids, are those they had when this
    code lived in api_service.py (a changed logical id would replace the load balancer)."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: ServiceConfig,
        logs_config: LogsConfig,
        vpc: ec2.IVpc,
        service: ecs.FargateService,
        tasks: ec2.SecurityGroup,
    ) -> None:
        self.access_logs = s3.Bucket(
            scope,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption ALB log delivery supports
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(logs_config.retention_days))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.security_group = alb_sg = ec2.SecurityGroup(
            scope,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="Conversation service load balancer",
        )
        listener_port = 443 if config.certificate_arn else 80
        for cidr in config.allowed_cidrs or ():  # none: closed until allowedCidrs names someone
            peer = ec2.Peer.ipv6(cidr) if ":" in cidr else ec2.Peer.ipv4(cidr)
            alb_sg.add_ingress_rule(peer, ec2.Port.tcp(listener_port), "API clients")
            if config.certificate_arn:
                alb_sg.add_ingress_rule(peer, ec2.Port.tcp(80), "Redirect to HTTPS")
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            scope,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name=PUBLIC),
            security_group=alb_sg,
            drop_invalid_header_fields=True,
            # The service's keep-alive (conversations.server.KEEP_ALIVE_S) must outlive this,
            # or the load balancer reuses a connection the task just closed: a sporadic 502.
            idle_timeout=cdk.Duration.seconds(ALB_IDLE_TIMEOUT_S),
            deletion_protection=config.prod,
        )
        self.load_balancer.log_access_logs(self.access_logs, prefix="alb")
        self.load_balancer.connections.allow_to(tasks, ec2.Port.tcp(CONTAINER_PORT), "ALB to tasks")

        self.target_group = elbv2.ApplicationTargetGroup(
            scope,
            "Targets",
            vpc=vpc,
            port=CONTAINER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[service],
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
            certificate = acm.Certificate.from_certificate_arn(scope, "Certificate", config.certificate_arn)
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
        else:
            self.listener = self.load_balancer.add_listener(
                "Http",
                port=80,
                protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group],
                open=False,
            )
        host = config.domain_name or self.load_balancer.load_balancer_dns_name
        self.url = f"{'https' if config.certificate_arn else 'http'}://{host}"
        if config.hosted_zone_id and config.hosted_zone_name and config.domain_name:
            # An alias to the load balancer, in a zone given by id and name: no lookup at synth.
            zone = route53.HostedZone.from_hosted_zone_attributes(
                scope, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.hosted_zone_name
            )
            route53.ARecord(
                scope,
                "Alias",
                zone=zone,
                record_name=f"{config.domain_name}.",
                target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(self.load_balancer)),
            )
