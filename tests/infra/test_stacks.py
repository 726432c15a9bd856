"""What a security reviewer checks in the synthesized templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from stacks import outputs
from stacks.database import POSTGRES_MAJOR
from tests.infra.conftest import Synth


@pytest.fixture(params=["dev", "lean"])
def small(request: pytest.FixtureRequest) -> Synth:
    """The checks every profile must pass, on the two small ones (prod has its own)."""
    synth: Synth = request.getfixturevalue(request.param)
    return synth


def resources(template: Template, type_: str) -> dict[str, Any]:
    return dict(template.find_resources(type_))


def only(template: Template, type_: str) -> dict[str, Any]:
    found = resources(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return next(iter(found.values()))


# ------------------------------------------------------------------ network


def test_vpc_has_public_private_and_isolated_subnets_in_two_azs(dev: Synth) -> None:
    subnets = resources(dev.network, "AWS::EC2::Subnet")
    kinds: dict[str, set[str]] = {}
    for sub in subnets.values():
        tags = {t["Key"]: t["Value"] for t in sub["Properties"]["Tags"]}
        kinds.setdefault(tags["aws-cdk:subnet-type"], set()).add(sub["Properties"]["AvailabilityZone"])
    assert kinds == {
        "Public": {"eu-west-1a", "eu-west-1b"},
        "Private": {"eu-west-1a", "eu-west-1b"},
        "Isolated": {"eu-west-1a", "eu-west-1b"},
    }


def test_nat_gateways_follow_the_profile(dev: Synth, prod: Synth) -> None:
    dev.network.resource_count_is("AWS::EC2::NatGateway", 1)
    prod.network.resource_count_is("AWS::EC2::NatGateway", 3)
    assert len(resources(prod.network, "AWS::EC2::Subnet")) == 9


def test_flow_logs_capture_all_traffic_with_retention(dev: Synth) -> None:
    dev.network.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
    dev.network.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_secrets_manager_endpoint_in_private_subnets_with_private_dns(dev: Synth) -> None:
    dev.network.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "ServiceName": "com.amazonaws.eu-west-1.secretsmanager",
            "VpcEndpointType": "Interface",
            "PrivateDnsEnabled": True,
        },
    )


# ------------------------------------------------------------------ database


def db(template: Template) -> dict[str, Any]:
    return only(template, "AWS::RDS::DBInstance")


def test_database_is_postgres_private_encrypted_and_in_isolated_subnets(small: Synth) -> None:
    props = db(small.data)["Properties"]
    assert props["Engine"] == "postgres"
    assert props["EngineVersion"] == POSTGRES_MAJOR
    assert props["PubliclyAccessible"] is False
    assert props["StorageEncrypted"] is True
    assert props["StorageType"] == "gp3"
    assert int(props["MaxAllocatedStorage"]) > int(props["AllocatedStorage"])
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert props["DBInstanceClass"] == "db.t4g.micro"
    assert props["MasterUsername"] == "raguser" and props["DBName"] == "ragdb"
    assert set(props["EnableCloudwatchLogsExports"]) == {"postgresql", "upgrade"}
    group = only(small.data, "AWS::RDS::DBSubnetGroup")
    subnet_refs = group["Properties"]["SubnetIds"]
    assert all("Isolated" in json.dumps(ref) or "Database" in json.dumps(ref) for ref in subnet_refs)


def test_parameter_group_forces_tls_and_logs_slow_queries(small: Synth) -> None:
    small.data.has_resource_properties(
        "AWS::RDS::DBParameterGroup",
        {
            "Family": f"postgres{POSTGRES_MAJOR}",
            "Parameters": Match.object_like({"rds.force_ssl": "1", "log_min_duration_statement": "500"}),
        },
    )


def test_dev_profile_is_cheap_and_disposable(dev: Synth) -> None:
    resource = db(dev.data)
    assert resource["Properties"]["MultiAZ"] is False
    assert resource["Properties"]["DeletionProtection"] is False
    assert resource["Properties"]["BackupRetentionPeriod"] == 7
    assert resource["DeletionPolicy"] == "Delete"


def test_prod_profile_is_multi_az_protected_and_snapshots_on_delete(prod: Synth) -> None:
    resource = db(prod.data)
    assert resource["Properties"]["MultiAZ"] is True
    assert resource["Properties"]["DeletionProtection"] is True
    assert resource["Properties"]["BackupRetentionPeriod"] >= 14
    assert resource["Properties"]["EnablePerformanceInsights"] is True
    assert resource["Properties"]["DBInstanceClass"].startswith("db.m7g")
    assert resource["DeletionPolicy"] == "Snapshot" and resource["UpdateReplacePolicy"] == "Snapshot"
    for secret in resources(prod.data, "AWS::SecretsManager::Secret").values():
        assert secret["DeletionPolicy"] == "Retain"


def test_prod_data_stack_has_termination_protection(prod: Synth, dev: Synth) -> None:
    from tests.infra.conftest import ROOT  # noqa: F401

    manifest = json.loads((prod.outdir / "manifest.json").read_text())
    props = manifest["artifacts"][outputs.stack_names("prod").data]["properties"]
    assert props.get("terminationProtection") is True
    dev_manifest = json.loads((dev.outdir / "manifest.json").read_text())
    assert not dev_manifest["artifacts"][outputs.stack_names("dev").data]["properties"].get("terminationProtection")


def test_both_secrets_rotate(small: Synth) -> None:
    schedules = resources(small.data, "AWS::SecretsManager::RotationSchedule")
    assert len(schedules) == 2
    for schedule in schedules.values():
        assert schedule["Properties"]["RotationRules"]["ScheduleExpression"] == "rate(30 days)"


def test_master_secret_is_generated_for_raguser(dev: Synth) -> None:
    dev.data.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": Match.object_like({"SecretStringTemplate": '{"username":"raguser"}'})},
    )
    app = [
        s
        for s in resources(dev.data, "AWS::SecretsManager::Secret").values()
        if s["Metadata"]["aws:cdk:path"].endswith("Database/AppSecret/Resource")
    ]
    assert len(app) == 1
    assert '\\"username\\":\\"conversations_app\\"' in json.dumps(app[0]["Properties"]["GenerateSecretString"])


# ------------------------------------------------------------------ schema custom resource


def test_schema_resource_names_the_exact_migration_set_and_verifies_tls(small: Synth) -> None:
    from conversations.migrate import migration_set as handler_migration_set
    from stacks.schema import migration_set

    resource = only(small.data, "Custom::ConversationSchema")
    props = resource["Properties"]
    # The set the handler applies, named as the handler names it: a rollback sends it back
    assert props["Migrations"] == migration_set() == handler_migration_set()
    assert set(props) >= {"ServiceToken", "MasterSecretArn", "AppSecretArn", "EmbeddingDimension", "SslMode"}
    assert props["SslMode"] == "verify-full" and props["EmbeddingDimension"] == "1536"
    # It waits for the instance and the network paths to it, and gives up well under an hour.
    depends = resource["DependsOn"]
    assert any(d.startswith("DatabaseInstance") for d in depends)
    assert any("SecurityGroup" in d for d in depends)
    assert int(props["ServiceTimeout"]) <= 900


def test_migration_set_changes_with_any_migration(tmp_path: Path) -> None:
    import shutil

    from stacks.schema import MIGRATIONS_DIR, migration_set

    copy = tmp_path / "m"
    shutil.copytree(MIGRATIONS_DIR, copy)
    before = migration_set(copy)
    assert before == migration_set()
    (copy / "0999_new.sql").write_text("SELECT 1;")
    assert migration_set(copy)[:-1] == before and migration_set(copy)[-1].startswith("0999_new.sql:")
    (copy / "0002_conversations.sql").write_text("-- edited\n")
    assert migration_set(copy)[1] != before[1]


def test_schema_lambda_runs_in_private_subnets_with_a_bounded_timeout(small: Synth) -> None:
    functions = resources(small.data, "AWS::Lambda::Function")
    (handler,) = [
        f for f in functions.values() if f["Properties"].get("Handler") == "conversations.cfn_handler.handler"
    ]
    props = handler["Properties"]
    # Long enough for a migration that rewrites a large messages table, and still under the
    # custom resource's wait, so a hung database is a reported failure.
    assert 600 <= props["Timeout"] <= 840
    resource = only(small.data, "Custom::ConversationSchema")
    assert props["Timeout"] < int(resource["Properties"]["ServiceTimeout"]) <= 900
    assert props["Runtime"].startswith("python3.")
    assert "VpcConfig" in props
    # The provider framework Lambda stays outside the VPC.
    framework = [f for f in functions.values() if "framework" in json.dumps(f.get("Metadata", {}))]
    assert framework and all("VpcConfig" not in f["Properties"] for f in framework)


def test_schema_lambda_may_read_only_its_two_secrets(small: Synth) -> None:
    policies = resources(small.data, "AWS::IAM::Policy")
    (policy,) = [p for k, p in policies.items() if k.startswith("SchemaMigrationsHandlerServiceRoleDefaultPolicy")]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        assert statement["Resource"] != "*"
    actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions <= {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}


# ------------------------------------------------------------------ security groups


def ingress_rules(synth: Synth) -> list[dict[str, Any]]:
    rules = []
    for template in synth.templates().values():
        for res in resources(template, "AWS::EC2::SecurityGroupIngress").values():
            rules.append(res["Properties"])
        for res in resources(template, "AWS::EC2::SecurityGroup").values():
            for rule in res["Properties"].get("SecurityGroupIngress", []):
                rules.append({**rule, "GroupId": {"inline": res}})
    return rules


def test_database_port_is_open_only_to_the_service_the_schema_lambda_and_rotation(small: Synth) -> None:
    rules = ingress_rules(small)
    to_db = [r for r in rules if "DatabaseSecurityGroup" in json.dumps(r.get("GroupId"))]
    assert to_db, "no rule found: the search is broken"
    for rule in to_db:
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, "no CIDR may reach the database"
        assert rule.get("SourceSecurityGroupId")
        assert rule["FromPort"] == rule["ToPort"]
        assert rule["FromPort"] == 5432 or re.search(r"Endpoint\.?Port", json.dumps(rule["FromPort"]))
    sources = " ".join(json.dumps(r["SourceSecurityGroupId"]) for r in to_db)
    assert "SchemaMigrationsSecurityGroup" in sources and "ApiSecurityGroup" in sources
    assert len(to_db) == 4  # service, schema Lambda, two rotation Lambdas


def test_database_security_group_allows_no_egress(small: Synth) -> None:
    groups = resources(small.data, "AWS::EC2::SecurityGroup")
    (database,) = [g for k, g in groups.items() if k.startswith("DatabaseSecurityGroup")]
    assert database["Properties"]["SecurityGroupEgress"][0]["CidrIp"] == "255.255.255.255/32"


def test_load_balancer_accepts_only_the_allowed_cidrs(prod: Synth) -> None:
    sg = next(
        r
        for r in resources(prod.service, "AWS::EC2::SecurityGroup").values()
        if "load balancer" in r["Properties"]["GroupDescription"]
    )
    cidrs = {(i.get("CidrIp") or i.get("CidrIpv6"), i["FromPort"]) for i in sg["Properties"]["SecurityGroupIngress"]}
    assert cidrs == {("203.0.113.0/24", 443), ("203.0.113.0/24", 80), ("2001:db8::/32", 443), ("2001:db8::/32", 80)}


# ------------------------------------------------------------------ service


def test_service_has_circuit_breaker_with_rollback_and_keeps_full_capacity(dev: Synth) -> None:
    dev.service.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}, "MinimumHealthyPercent": 100}
            ),
            "LaunchType": "FARGATE",
            "NetworkConfiguration": {"AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})},
        },
    )


def test_target_health_check_is_liveness(small: Synth) -> None:
    small.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup", {"HealthCheckPath": "/health/live", "TargetType": "ip"}
    )


def test_http_without_certificate_and_https_with_redirect_when_given(dev: Synth, prod: Synth) -> None:
    dev_listeners = resources(dev.service, "AWS::ElasticLoadBalancingV2::Listener")
    assert [listener["Properties"]["Protocol"] for listener in dev_listeners.values()] == ["HTTP"]
    prod.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Protocol": "HTTPS", "Port": 443, "Certificates": [{"CertificateArn": Match.string_like_regexp("acm")}]},
    )
    prod.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Protocol": "HTTP",
            "Port": 80,
            "DefaultActions": [
                Match.object_like({"Type": "redirect", "RedirectConfig": Match.object_like({"Protocol": "HTTPS"})})
            ],
        },
    )


def test_credentials_are_injected_from_secrets_never_plain_environment(small: Synth) -> None:
    task = only(small.service, "AWS::ECS::TaskDefinition")
    (container,) = task["Properties"]["ContainerDefinitions"]
    secret_names = {s["Name"] for s in container["Secrets"]}
    assert secret_names == {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "API_TOKEN"}
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert not {"DB_PASSWORD", "API_TOKEN", "DATABASE_URL"} & set(env)
    # TLS to the database is verified (the image carries the RDS CAs), never only encrypted
    assert env["DB_SSLMODE"] == "verify-full" and "DB_SSLROOTCERT" not in env
    assert container["ReadonlyRootFilesystem"] is True
    assert container["User"] == "10001"


def test_task_role_has_no_wildcard_data_actions(small: Synth) -> None:
    task = only(small.service, "AWS::ECS::TaskDefinition")
    task_role = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    for policy in resources(small.service, "AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if task_role not in roles:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a.endswith("*") for a in actions if a.split(":")[0] in ("secretsmanager", "rds", "s3"))
    # The execution role reads exactly the app secret and the API token, nothing else.
    execution = task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
    for policy in resources(small.service, "AWS::IAM::Policy").values():
        if execution not in [r["Ref"] for r in policy["Properties"]["Roles"]]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(a.startswith("secretsmanager:") for a in actions):
                assert statement["Resource"] != "*"


def test_autoscaling_on_cpu_and_requests(small: Synth) -> None:
    policies = resources(small.service, "AWS::ApplicationAutoScaling::ScalingPolicy")
    metrics = {
        json.dumps(
            p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
                "PredefinedMetricType"
            ]
        )
        for p in policies.values()
    }
    assert metrics == {'"ECSServiceAverageCPUUtilization"', '"ALBRequestCountPerTarget"'}


def test_a_deploy_never_sets_the_task_count_that_scaling_owns(small: Synth, prod: Synth) -> None:
    """A DesiredCount in the template resets a scaled-out service to it on every deploy
    (aws/aws-cdk#13130): the service has none, and the scalable target's minimum starts it."""
    for synth, floor in ((small, 1), (prod, 2)):
        service = only(synth.service, "AWS::ECS::Service")["Properties"]
        assert "DesiredCount" not in service
        target = only(synth.service, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
        assert target["ScalableDimension"] == "ecs:service:DesiredCount" and target["MinCapacity"] == floor


def test_access_logs_go_to_an_encrypted_private_bucket(small: Synth) -> None:
    bucket = only(small.service, "AWS::S3::Bucket")
    props = bucket["Properties"]
    assert (
        props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"
        ]
        == "AES256"
    )
    assert all(props["PublicAccessBlockConfiguration"].values())
    small.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"LoadBalancerAttributes": Match.array_with([{"Key": "access_logs.s3.enabled", "Value": "true"}])},
    )


def test_every_log_group_has_retention(dev: Synth, prod: Synth) -> None:
    for synth in (dev, prod):
        for template in synth.templates().values():
            for group in resources(template, "AWS::Logs::LogGroup").values():
                assert group["Properties"].get("RetentionInDays"), group
    prod.service.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_alarms_cover_errors_latency_hosts_and_database_and_notify_sns(prod: Synth) -> None:
    alarms = resources(prod.service, "AWS::CloudWatch::Alarm")
    descriptions = " | ".join(a["Properties"]["AlarmDescription"] for a in alarms.values())
    for expected in ("5xx", "p99", "/health/live", "RDS CPU", "free storage", "database connections"):
        assert expected in descriptions
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"]
    prod.data.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"})
    prod.data.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    prod.service.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_container_insights_enabled(dev: Synth) -> None:
    dev.service.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )


# ------------------------------------------------------------------ outputs and identity


@pytest.mark.parametrize(
    ("stack", "keys"),
    [("network", outputs.NETWORK_OUTPUTS), ("data", outputs.DATA_OUTPUTS), ("service", outputs.SERVICE_OUTPUTS)],
)
def test_outputs_have_the_shared_names(dev: Synth, stack: str, keys: Any) -> None:
    template = getattr(dev, stack).to_json()
    # CDK adds PublishOutput* (and ExportsOutput*) for cross-stack references by itself.
    assert {k for k in template["Outputs"] if not k.startswith(("ExportsOutput", "PublishOutput"))} == set(keys)


# Renaming any of these would make CloudFormation replace the resource: a new, empty
# database, new secrets. Change them only on purpose, with a migration plan.
STATEFUL_LOGICAL_IDS = {
    "AWS::RDS::DBInstance": {"DatabaseInstanceAA8A5FDE"},
    "AWS::SecretsManager::Secret": {
        "ConversationsdevDataDatabaseInstanceSecret65E354C93fdaad7efa858a3daf9490cf0a702aeb",
        "DatabaseAppSecret2E50FD00",
    },
    "AWS::RDS::DBSubnetGroup": {"DatabaseInstanceSubnetGroupDE121BB6"},
    "Custom::ConversationSchema": {"SchemaMigrationsA6E9AE51"},
}


def test_stateful_logical_ids_never_change(dev: Synth) -> None:
    data = dev.data.to_json()["Resources"]
    for type_, ids in STATEFUL_LOGICAL_IDS.items():
        assert {k for k, v in data.items() if v["Type"] == type_} == ids, type_


def test_no_placeholders_in_templates(dev: Synth, prod: Synth) -> None:
    for synth in (dev, prod):
        text = json.dumps(synth.raw)
        for placeholder in ("dummy", "TODO", "CHANGEME", 'example.com"' if synth is dev else "<none>"):
            assert placeholder not in text
