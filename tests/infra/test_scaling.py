"""The scaled variants on the template: an Aurora Serverless v2 cluster, readers, RDS Proxy.

``cdk synth -c database=aurora-serverless-v2 -c readers=1 -c rdsProxy=true`` (any profile), and
``-c readers=2 -c rdsProxy=true`` on the RDS instance. The gates run on them too (SCALED)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks import outputs
from tests.infra.conftest import Synth, synthesize


def resources(template: Template, type_: str) -> dict[str, Any]:
    return dict(template.find_resources(type_))


def only(template: Template, type_: str) -> dict[str, Any]:
    (found,) = resources(template, type_).values()
    return dict(found)


def container_env(synth: Synth) -> tuple[dict[str, Any], dict[str, Any]]:
    task = only(synth.service, "AWS::ECS::TaskDefinition")
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    return env, secrets


def logical_id(template: Template, type_: str) -> str:
    (found,) = resources(template, type_)
    return str(found)


def test_aurora_serverless_v2_cluster_pauses_in_dev_and_stays_warm_in_prod(
    dev_aurora: Synth, prod_aurora: Synth
) -> None:
    pausing = synthesize("dev", database="aurora-serverless-v2")
    for synth, scaling in (
        (pausing, {"MinCapacity": 0, "MaxCapacity": 4, "SecondsUntilAutoPause": 600}),
        (dev_aurora, {"MinCapacity": 0.5, "MaxCapacity": 4}),
        (prod_aurora, {"MinCapacity": 2, "MaxCapacity": 16}),
    ):
        cluster = only(synth.data, "AWS::RDS::DBCluster")["Properties"]
        assert cluster["Engine"] == "aurora-postgresql" and cluster["EngineVersion"] == "18"
        assert cluster["ServerlessV2ScalingConfiguration"] == scaling
        assert cluster["StorageEncrypted"] is True and cluster["EnableIAMDatabaseAuthentication"] is True
        assert cluster["DatabaseName"] == "ragdb" and cluster["Port"] == 5432
        assert cluster["EnableCloudwatchLogsExports"] == ["postgresql"]
        assert not resources(synth.data, "AWS::RDS::DBInstance").keys() & {"DatabaseInstance"}
        parameters = only(synth.data, "AWS::RDS::DBClusterParameterGroup")["Properties"]
        assert parameters["Family"] == "aurora-postgresql18"
        assert parameters["Parameters"]["rds.force_ssl"] == "1"
        assert parameters["Parameters"]["log_parameter_max_length"] == "0"
    assert only(prod_aurora.data, "AWS::RDS::DBCluster")["Properties"]["DeletionProtection"] is True
    assert only(prod_aurora.data, "AWS::RDS::DBCluster")["DeletionPolicy"] == "Snapshot"


def test_a_writer_and_a_reader_that_scales_with_it(dev_aurora: Synth) -> None:
    instances = resources(dev_aurora.data, "AWS::RDS::DBInstance")
    assert len(instances) == 2
    props = sorted((i["Properties"] for i in instances.values()), key=lambda p: p.get("PromotionTier", 0))
    assert all(p["DBInstanceClass"] == "db.serverless" and p["PubliclyAccessible"] is False for p in props)
    assert all(p["Engine"] == "aurora-postgresql" for p in props)
    # The reader is promotion tier 0 or 1: it scales with the writer and can take over at its size.
    assert props[-1]["PromotionTier"] <= 1


def test_the_schema_resource_waits_for_the_cluster_and_its_instances(dev_aurora: Synth) -> None:
    schema = only(dev_aurora.data, "Custom::ConversationSchema")
    cluster = logical_id(dev_aurora.data, "AWS::RDS::DBCluster")
    assert cluster in schema["DependsOn"]
    for instance in resources(dev_aurora.data, "AWS::RDS::DBInstance"):
        assert instance in schema["DependsOn"]


def test_both_secrets_rotate_on_the_cluster(dev_aurora: Synth) -> None:
    schedules = resources(dev_aurora.data, "AWS::SecretsManager::RotationSchedule")
    assert len(schedules) == 2
    schema = logical_id(dev_aurora.data, "Custom::ConversationSchema")
    for schedule in schedules.values():
        assert schema in schedule["DependsOn"]
    attachments = resources(dev_aurora.data, "AWS::SecretsManager::SecretTargetAttachment")
    assert {a["Properties"]["TargetType"] for a in attachments.values()} == {"AWS::RDS::DBCluster"}


@pytest.mark.parametrize("variant", ["dev_aurora", "dev_replicas"])
def test_rds_proxy_requires_tls_and_reads_only_the_application_secret(
    variant: str, request: pytest.FixtureRequest
) -> None:
    synth = request.getfixturevalue(variant)
    proxy = only(synth.data, "AWS::RDS::DBProxy")["Properties"]
    assert proxy["EngineFamily"] == "POSTGRESQL" and proxy["RequireTLS"] is True
    (auth,) = proxy["Auth"]
    (attachment,) = [
        k for k in resources(synth.data, "AWS::SecretsManager::SecretTargetAttachment") if "AppSecret" in k
    ]
    assert auth["SecretArn"] == {"Ref": attachment}
    assert auth["IAMAuth"] == "DISABLED"
    group = only(synth.data, "AWS::RDS::DBProxyTargetGroup")["Properties"]["ConnectionPoolConfigurationInfo"]
    assert group["MaxConnectionsPercent"] == 90
    assert group["MaxIdleConnectionsPercent"] == 10


def test_the_service_connects_through_the_proxy_and_reads_from_the_readers(dev_aurora: Synth) -> None:
    env, secrets = container_env(dev_aurora)
    assert env["DB_PROXY"] == "true"
    assert "DB_HOST" not in secrets and "Fn::GetStackOutput" in env["DB_HOST"]
    assert "Fn::GetStackOutput" in env["DB_READ_HOST"]
    assert {"DB_USER", "DB_PASSWORD", "DB_PORT", "DB_NAME"} <= secrets.keys()
    # Aurora's readers are reached through the proxy's read-only endpoint.
    endpoint = only(dev_aurora.data, "AWS::RDS::DBProxyEndpoint")["Properties"]
    assert endpoint["TargetRole"] == "READ_ONLY"
    # Behind the proxy the cluster never pauses: the pool is the usual one.
    assert "POOL_MIN_SIZE" not in env and "DB_CONNECT_TIMEOUT_SECONDS" not in env


def test_a_cluster_that_pauses_gets_a_pool_that_lets_it() -> None:
    """No pooled connection is kept, so an idle dev cluster pauses, and a request waits out a resume."""
    env, _ = container_env(synthesize("dev", database="aurora-serverless-v2"))
    assert env["POOL_MIN_SIZE"] == "0" and int(env["POOL_MAX_IDLE_SECONDS"]) < 600
    assert int(env["DB_CONNECT_TIMEOUT_SECONDS"]) >= 20


def test_prod_aurora_keeps_its_pool(prod_aurora: Synth) -> None:
    env, _ = container_env(prod_aurora)
    assert "POOL_MIN_SIZE" not in env and "DB_CONNECT_TIMEOUT_SECONDS" not in env


def test_instance_read_replicas_stream_from_the_instance(dev_replicas: Synth, dev: Synth) -> None:
    instances = resources(dev_replicas.data, "AWS::RDS::DBInstance")
    source = next(k for k, v in instances.items() if "SourceDBInstanceIdentifier" not in v["Properties"])
    replicas = [v["Properties"] for v in instances.values() if "SourceDBInstanceIdentifier" in v["Properties"]]
    assert len(replicas) == 2
    for replica in replicas:
        assert {"Ref": source} in replica["SourceDBInstanceIdentifier"]["Fn::Join"][1]
        assert replica["PubliclyAccessible"] is False and replica["DBInstanceClass"] == "db.t4g.micro"
        assert "StorageEncrypted" not in replica  # inherited from the encrypted source
    assert instances[source]["Properties"]["StorageEncrypted"] is True
    env, _ = container_env(dev_replicas)
    # Writes through the proxy; reads straight from both replicas (RDS Proxy has no reader
    # endpoint for an instance's replicas), which libpq balances.
    assert env["DB_PROXY"] == "true" and "Fn::GetStackOutput" in str(env["DB_READ_HOST"])
    dev_env, dev_secrets = container_env(dev)
    assert "DB_READ_HOST" not in dev_env and "DB_PROXY" not in dev_env and "DB_HOST" in dev_secrets


def test_tasks_reach_the_proxy_and_the_replicas_and_nothing_else(dev_aurora: Synth, dev_replicas: Synth) -> None:
    def task_egress(synth: Synth) -> set[tuple[int, str]]:
        groups = resources(synth.service, "AWS::EC2::SecurityGroupEgress")
        return {
            (g["Properties"]["ToPort"], str(g["Properties"]["DestinationSecurityGroupId"])) for g in groups.values()
        }

    aurora = task_egress(dev_aurora)
    assert len([e for e in aurora if e[0] == 5432]) == 1 and "Proxy" in str(aurora)
    replicas = task_egress(dev_replicas)
    assert len([e for e in replicas if e[0] == 5432]) == 2  # the proxy, and the database group
    # The proxy's own group: in from the tasks only, out to PostgreSQL only.
    groups = resources(dev_aurora.data, "AWS::EC2::SecurityGroup")
    (proxy_group,) = [g for k, g in groups.items() if "ProxySecurityGroup" in k]
    assert "SecurityGroupEgress" not in proxy_group["Properties"]  # no allow-all egress
    rules = resources(dev_aurora.data, "AWS::EC2::SecurityGroupEgress")
    (out,) = [r["Properties"] for k, r in rules.items() if "Proxy" in k]
    assert "DatabaseSecurityGroup" in str(out["DestinationSecurityGroupId"])
    assert out["ToPort"] == {"Fn::GetAtt": [logical_id(dev_aurora.data, "AWS::RDS::DBCluster"), "Endpoint.Port"]}
    ingress = [
        r["Properties"]
        for r in resources(dev_aurora.service, "AWS::EC2::SecurityGroupIngress").values()
        if "Proxy" in str(r["Properties"]["GroupId"])
    ]
    assert len(ingress) == 1 and ingress[0]["FromPort"] == 5432 and "SourceSecurityGroupId" in ingress[0]


@pytest.mark.parametrize("variant", ["dev_aurora", "prod_aurora", "dev_replicas"])
def test_outputs_name_the_cluster_readers_and_proxy(variant: str, request: pytest.FixtureRequest) -> None:
    synth = request.getfixturevalue(variant)
    found = set(synth.raw[next(n for n in synth.raw if n.endswith("-Data"))]["Outputs"])
    assert {outputs.DATABASE_READ_ENDPOINT, outputs.DATABASE_PROXY_ENDPOINT} <= found
    if variant == "dev_replicas":
        assert outputs.DATABASE_INSTANCE_ID in found and outputs.DATABASE_CLUSTER_ID not in found
    else:
        assert outputs.DATABASE_CLUSTER_ID in found and outputs.DATABASE_INSTANCE_ID not in found


def test_aurora_alarms_on_capacity_not_storage(dev_aurora: Synth, dev: Synth) -> None:
    def alarm_names(synth: Synth) -> set[str]:
        return {k for k in resources(synth.service, "AWS::CloudWatch::Alarm")}

    assert any("DatabaseCapacity" in k for k in alarm_names(dev_aurora))
    assert not any("DatabaseFreeStorage" in k for k in alarm_names(dev_aurora))
    assert any("DatabaseFreeStorage" in k for k in alarm_names(dev))
    (capacity,) = [a for k, a in resources(dev_aurora.service, "AWS::CloudWatch::Alarm").items() if "Capacity" in k]
    assert capacity["Properties"]["MetricName"] == "ACUUtilization" and capacity["Properties"]["Threshold"] == 90
