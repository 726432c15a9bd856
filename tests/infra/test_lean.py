"""The lean profile's differences from dev, on its templates: no NAT, the tasks in the public
subnets behind a closed door, one Secrets Manager endpoint interface for the Lambdas, Graviton on
Spot, and the same outputs, so verify_deployment.py needs no change."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks import outputs
from stacks.load_balancer import CONTAINER_PORT
from stacks.network import VPC_CIDR
from tests.infra.conftest import Synth


def resources(template: Template, type_: str) -> dict[str, Any]:
    return dict(template.find_resources(type_))


def only(template: Template, type_: str) -> dict[str, Any]:
    (found,) = resources(template, type_).values()
    return dict(found)


def subnet_ids_of(template: Template, group: str) -> set[str]:
    """Logical ids of one subnet group's subnets (Public, Private, Database)."""
    return {
        lid
        for lid, subnet in resources(template, "AWS::EC2::Subnet").items()
        if {t["Key"]: t["Value"] for t in subnet["Properties"]["Tags"]}["aws-cdk:subnet-name"] == group
    }


def imported_subnet(ref: dict[str, Any]) -> str:
    """The Network stack's subnet logical id behind a cross-stack reference: aws-cdk-lib names the
    output it reads "PublishOutputRef<logical id><8-character hash>"."""
    return str(ref["Fn::GetStackOutput"]["OutputName"].split("PublishOutputRef")[1][:-8])


def test_no_nat_and_only_the_public_subnets_route_out(lean: Synth, dev: Synth) -> None:
    lean.network.resource_count_is("AWS::EC2::NatGateway", 0)
    lean.network.resource_count_is("AWS::EC2::EIP", 0)
    dev.network.resource_count_is("AWS::EC2::NatGateway", 1)
    tables = {
        rid: {
            assoc["Properties"]["SubnetId"]["Ref"]
            for assoc in resources(lean.network, "AWS::EC2::SubnetRouteTableAssociation").values()
            if assoc["Properties"]["RouteTableId"]["Ref"] == rid
        }
        for rid in resources(lean.network, "AWS::EC2::RouteTable")
    }
    out = [r["Properties"] for r in resources(lean.network, "AWS::EC2::Route").values()]
    assert all(set(r) == {"DestinationCidrBlock", "GatewayId", "RouteTableId"} for r in out)  # the IGW only
    routed = set().union(*(tables[r["RouteTableId"]["Ref"]] for r in out))
    assert routed == subnet_ids_of(lean.network, "Public")
    assert len(subnet_ids_of(lean.network, "Private")) == len(subnet_ids_of(lean.network, "Database")) == 2


def test_tasks_run_in_the_public_subnets_with_a_public_address(lean: Synth, dev: Synth) -> None:
    service = only(lean.service, "AWS::ECS::Service")["Properties"]
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    assert {imported_subnet(ref) for ref in network["Subnets"]} == subnet_ids_of(lean.network, "Public")
    dev_network = only(dev.service, "AWS::ECS::Service")["Properties"]["NetworkConfiguration"]
    assert dev_network["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def test_the_task_security_group_admits_only_the_load_balancer(lean: Synth) -> None:
    groups = resources(lean.service, "AWS::EC2::SecurityGroup")
    (task_sg,) = [
        lid for lid, g in groups.items() if g["Properties"]["GroupDescription"] == "Conversation service tasks"
    ]
    (alb_sg,) = [lid for lid, g in groups.items() if "load balancer" in g["Properties"]["GroupDescription"]]
    assert "SecurityGroupIngress" not in groups[task_sg]["Properties"]
    ingress = [
        r["Properties"]
        for r in resources(lean.service, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_sg, "GroupId"]}
    ]
    assert ingress == [
        {
            "Description": "ALB to tasks",
            "FromPort": CONTAINER_PORT,
            "ToPort": CONTAINER_PORT,
            "GroupId": {"Fn::GetAtt": [task_sg, "GroupId"]},
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": {"Fn::GetAtt": [alb_sg, "GroupId"]},
        }
    ]
    # out: HTTPS anywhere (ECR, logs, secrets) and PostgreSQL to the database's group, nothing else
    inline = groups[task_sg]["Properties"]["SecurityGroupEgress"]
    assert [(e["CidrIp"], e["FromPort"], e["ToPort"]) for e in inline] == [("0.0.0.0/0", 443, 443)]
    separate = [
        r["Properties"]
        for r in resources(lean.service, "AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_sg, "GroupId"]}
    ]
    assert [(e["FromPort"], "DestinationSecurityGroupId" in e) for e in separate] == [(5432, True)]


def test_one_secrets_manager_interface_in_an_isolated_subnet_serves_the_lambdas(lean: Synth, dev: Synth) -> None:
    interfaces = [
        e["Properties"]
        for e in resources(lean.network, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(interfaces) == 1
    (interface,) = interfaces
    assert interface["PrivateDnsEnabled"] is True
    assert [s["Ref"] for s in interface["SubnetIds"]] == sorted(subnet_ids_of(lean.network, "Private"))[:1]
    (dev_interface,) = [
        e["Properties"]
        for e in resources(dev.network, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(dev_interface["SubnetIds"]) == 2
    # The endpoint admits HTTPS from the VPC only.
    (sg,) = [
        g["Properties"]
        for g in resources(lean.network, "AWS::EC2::SecurityGroup").values()
        if "SecretsManager" in str(g["Properties"].get("GroupDescription"))
    ]
    assert [(r["CidrIp"], r["FromPort"]) for r in sg["SecurityGroupIngress"]] == [(VPC_CIDR, 443)]
    # The schema Lambda and both rotation functions sit in the isolated Private subnets.
    private = subnet_ids_of(lean.network, "Private")
    (schema,) = [
        f["Properties"]
        for f in resources(lean.data, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "conversations.cfn_handler.handler"
    ]
    assert {imported_subnet(ref) for ref in schema["VpcConfig"]["SubnetIds"]} == private
    rotations = resources(lean.data, "AWS::Serverless::Application")
    assert len(rotations) == 2
    for app in rotations.values():
        joined = app["Properties"]["Parameters"]["vpcSubnetIds"]["Fn::Join"][1]
        assert {imported_subnet(ref) for ref in joined if isinstance(ref, dict)} == private


def test_graviton_tasks_on_spot_after_the_capacity_provider_association(lean: Synth, dev: Synth) -> None:
    service = only(lean.service, "AWS::ECS::Service")
    assert service["Properties"]["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    assert "LaunchType" not in service["Properties"]
    deployment = service["Properties"]["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["MinimumHealthyPercent"] == 100  # a deploy starts the new task before stopping the old
    ((association_id, association),) = resources(lean.service, "AWS::ECS::ClusterCapacityProviderAssociations").items()
    assert "FARGATE_SPOT" in association["Properties"]["CapacityProviders"]
    assert association_id in service["DependsOn"]
    dev.service.resource_count_is("AWS::ECS::ClusterCapacityProviderAssociations", 0)
    assert only(dev.service, "AWS::ECS::Service")["Properties"]["LaunchType"] == "FARGATE"


def test_monitoring_and_backups_trimmed(lean: Synth, dev: Synth) -> None:
    lean.network.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "REJECT"})
    cluster = only(lean.service, "AWS::ECS::Cluster")["Properties"]
    assert cluster["ClusterSettings"] == [{"Name": "containerInsights", "Value": "disabled"}]
    assert only(lean.data, "AWS::RDS::DBInstance")["Properties"]["BackupRetentionPeriod"] == 1

    def alarms(synth: Synth) -> set[str]:
        return {
            a["Properties"]["AlarmDescription"].split(":")[0]
            for a in resources(synth.service, "AWS::CloudWatch::Alarm").values()
        }

    gone = alarms(dev) - alarms(lean)
    assert len(gone) == 1 and "Fewer tasks running than desired" in gone.pop()
    assert any("No healthy target" in a for a in alarms(lean))


@pytest.mark.parametrize("stack", ["network", "data", "service"])
def test_the_outputs_verify_deployment_reads_are_the_same_as_dev(lean: Synth, dev: Synth, stack: str) -> None:
    """verify_deployment.py finds everything from these outputs, by stack name and key."""
    lean_outputs = {k for k in getattr(lean, stack).to_json()["Outputs"] if not k.startswith(("Exports", "Publish"))}
    dev_outputs = {k for k in getattr(dev, stack).to_json()["Outputs"] if not k.startswith(("Exports", "Publish"))}
    assert lean_outputs == dev_outputs
    expected = {"network": outputs.NETWORK_OUTPUTS, "data": outputs.DATA_OUTPUTS, "service": outputs.SERVICE_OUTPUTS}
    assert lean_outputs == set(expected[stack])
    names = outputs.stack_names("lean")
    assert set(lean.raw) == set(names.all())
