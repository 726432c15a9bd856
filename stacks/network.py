"""NetworkStack: the VPC, its three subnet tiers, flow logs and the endpoints."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from . import findings, outputs
from .config import MAX_AZS, DeploymentConfig, NetworkConfig
from .util import log_removal, output, retention

VPC_CIDR = "10.40.0.0/16"
# The three subnet groups. Stacks select subnets by group name, never by type: without NAT (the
# lean profile) the Private group is isolated too, and a type would then name two groups.
PUBLIC, PRIVATE, DATABASE = "Public", "Private", "Database"


def task_subnets(network: NetworkConfig) -> ec2.SubnetSelection:
    """Where the service's tasks run: the private subnets, or without NAT the public ones."""
    return ec2.SubnetSelection(subnet_group_name=PUBLIC if network.tasks_in_public_subnets else PRIVATE)


LAMBDA_SUBNETS = ec2.SubnetSelection(subnet_group_name=PRIVATE)
"""The schema and rotation Lambdas: they reach Secrets Manager through its endpoint, or NAT."""
DATABASE_SUBNETS = ec2.SubnetSelection(subnet_group_name=DATABASE)


class NetworkStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        network = config.network

        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=retention(config.logs.retention_days), removal_policy=log_removal(config.logs)
        )
        findings.log_group(flow_logs)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            availability_zones=list(network.azs),
            # Address space for MAX_AZS zones is laid out from the start, so growing maxAzs adds
            # subnets and never renumbers the existing ones (which the other stacks import).
            reserved_azs=MAX_AZS - len(network.azs),
            nat_gateways=network.nat_gateways,
            subnet_configuration=[
                # The load balancer; without NAT also the tasks (public address, ingress from
                # the load balancer's security group only).
                ec2.SubnetConfiguration(name=PUBLIC, subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                # Tasks, the schema Lambda and the rotation Lambdas: outbound through NAT. Without
                # NAT only the Lambdas, isolated, with the Secrets Manager endpoint as their way out.
                ec2.SubnetConfiguration(
                    name=PRIVATE,
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED
                    if network.tasks_in_public_subnets
                    else ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=22,
                ),
                # The database: no route out of the VPC at all.
                ec2.SubnetConfiguration(name=DATABASE, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            flow_logs={
                # The construct id stays "All" for every profile, so changing flowLogs updates the
                # flow log in place of adding a second one.
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.REJECT
                    if network.flow_logs == "reject"
                    else ec2.FlowLogTrafficType.ALL,
                )
            },
        )

        # Endpoints, chosen for what they remove, weighed against their hourly price:
        # - S3 gateway endpoint: free, and image layers from ECR are served by S3, so most
        #   pull traffic skips the NAT gateway's per-GB charge.
        # - Secrets Manager interface endpoint: the schema Lambda, the rotation Lambdas and
        #   the ECS agent (injecting the database and API secrets) all read secrets; with the
        #   endpoint none of them depends on NAT, so a NAT outage cannot stop a deploy, a
        #   task start or a rotation. One endpoint ENI per AZ costs about $7/month each.
        # ECR, CloudWatch Logs and STS would need three more interface endpoints per AZ;
        # they stay on NAT to keep the dev profile cheap.
        # Without NAT (lean) the endpoint is the Lambdas' only way to Secrets Manager; one
        # interface (secretsEndpointAzs=1) serves every zone, as private DNS resolves to it
        # from anywhere in the VPC, and the tasks reach it the same way.
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.secrets_endpoint = self.vpc.add_interface_endpoint(
            "SecretsManagerEndpoint",
            service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            subnets=ec2.SubnetSelection(subnet_group_name=PRIVATE, availability_zones=list(network.endpoint_azs)),
            private_dns_enabled=True,
            open=False,
        )
        # HTTPS from inside the VPC only. With private DNS every caller in the VPC resolves
        # Secrets Manager to this endpoint (ECS agents, rotation and schema Lambdas), so all
        # must be admitted; the literal CIDR keeps the rule checkable at synth.
        self.secrets_endpoint.connections.allow_default_port_from(ec2.Peer.ipv4(VPC_CIDR), "HTTPS from the VPC")

        output(self, outputs.VPC_ID, self.vpc.vpc_id, "VPC of the conversation service")
