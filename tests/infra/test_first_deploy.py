"""What only a live account exercises, decided by the template: a fresh account's Lambda quota,
the order CloudFormation creates things in, minor upgrades, parameters in the database log,
plain HTTP in prod, alarms on missing data, what deleting a stack keeps, subnet renumbering."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from conversations.server import KEEP_ALIVE_S
from stacks.config import ConfigError, load_config
from stacks.database import POSTGRES_MAJOR
from stacks.network import NetworkStack
from tests.infra.conftest import Synth
from tests.support.templates import ACCOUNT, CERT, PROD, REGION

ENV = {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}


def resources(template: Template, type_: str) -> dict[str, Any]:
    return dict(template.find_resources(type_))


@pytest.mark.parametrize("profile", ["dev", "lean", "prod"])
def test_no_function_reserves_concurrency_a_new_account_does_not_have(
    profile: str, request: pytest.FixtureRequest
) -> None:
    """A new account's quota is often 10, all of it unreservable: any reservation fails the deploy."""
    synth = request.getfixturevalue(profile)
    for name, template in synth.templates().items():
        for logical_id, function in resources(template, "AWS::Lambda::Function").items():
            assert "ReservedConcurrentExecutions" not in function["Properties"], f"{name}/{logical_id}"


@pytest.mark.parametrize("profile", ["dev", "lean", "prod"])
def test_rotation_schedules_wait_for_the_schema_resource(profile: str, request: pytest.FixtureRequest) -> None:
    """Secrets Manager rotates as soon as a schedule exists: not before the app login does."""
    data = request.getfixturevalue(profile).data
    (schema_id,) = resources(data, "Custom::ConversationSchema")
    schedules = resources(data, "AWS::SecretsManager::RotationSchedule")
    assert len(schedules) == 2  # the master (single user) and the application (multi user) secret
    for logical_id, schedule in schedules.items():
        assert schema_id in schedule.get("DependsOn", []), logical_id


def test_engine_version_is_the_major_only_with_minor_upgrades_on(dev: Synth, prod: Synth) -> None:
    for synth in (dev, prod):
        (instance,) = resources(synth.data, "AWS::RDS::DBInstance").values()
        assert instance["Properties"]["EngineVersion"] == POSTGRES_MAJOR
        assert instance["Properties"]["AutoMinorVersionUpgrade"] is True
        # A major upgrade is never implied by a deploy: the operator allows it, after a snapshot
        assert instance["Properties"].get("AllowMajorVersionUpgrade") in (None, False)
        synth.data.has_resource_properties("AWS::RDS::DBParameterGroup", {"Family": f"postgres{POSTGRES_MAJOR}"})


def test_a_major_upgrade_is_allowed_only_when_asked_for() -> None:
    assert load_config({"profile": "dev"}, ENV).database.allow_major_version_upgrade is False
    assert load_config({"profile": "dev", "allowMajorVersionUpgrade": "true"}, ENV).database.allow_major_version_upgrade


def test_slow_statements_are_logged_without_their_parameters(dev: Synth) -> None:
    dev.data.has_resource_properties(
        "AWS::RDS::DBParameterGroup",
        {
            "Parameters": Match.object_like(
                {
                    "log_min_duration_statement": "500",
                    "log_parameter_max_length": "0",
                    "log_parameter_max_length_on_error": "0",
                }
            )
        },
    )


def test_prod_refuses_to_deploy_alarms_nobody_receives() -> None:
    with pytest.raises(ConfigError, match="the prod profile needs context 'alarmEmail'"):
        load_config({"profile": "prod", "certificateArn": CERT}, ENV)
    assert load_config(PROD, ENV).alarms.email


def test_prod_refuses_plain_http_unless_the_operator_opts_out() -> None:
    with pytest.raises(ConfigError, match="certificateArn") as refused:
        load_config({"profile": "prod"}, ENV)
    assert "allowPlainHttp" in str(refused.value)
    plain = {"profile": "prod", "allowPlainHttp": "true", "alarmEmail": "ops@example.com"}
    assert load_config(plain, ENV).service.certificate_arn is None
    assert load_config({"profile": "dev"}, ENV).service.certificate_arn is None  # dev may stay HTTP


def alarm(template: Template, name: str) -> dict[str, Any]:
    found = [
        a for lid, a in resources(template, "AWS::CloudWatch::Alarm").items() if lid.startswith(f"Monitoring{name}")
    ]
    assert len(found) == 1, f"alarm {name}: found {len(found)}"
    props: dict[str, Any] = found[0]["Properties"]
    return props


def notifies_the_topic(props: dict[str, Any]) -> bool:
    return "AlarmsTopic" in json.dumps(props["AlarmActions"]) and "AlarmsTopic" in json.dumps(props["OKActions"])


def test_a_total_outage_raises_alarms_even_though_the_target_metrics_go_missing(dev: Synth) -> None:
    no_healthy = alarm(dev.service, "NoHealthyHosts")
    assert no_healthy["MetricName"] == "HealthyHostCount"
    assert no_healthy["ComparisonOperator"] == "LessThanThreshold" and no_healthy["Threshold"] == 1
    assert no_healthy["TreatMissingData"] == "breaching"
    elb = alarm(dev.service, "LoadBalancer5xx")
    assert elb["MetricName"] == "HTTPCode_ELB_5XX_Count" and elb["Namespace"] == "AWS/ApplicationELB"
    tasks = alarm(dev.service, "TasksBelowDesired")
    metrics = json.dumps(tasks["Metrics"])
    assert "RunningTaskCount" in metrics and "DesiredTaskCount" in metrics and "desired - running" in metrics
    assert tasks["TreatMissingData"] == "breaching"
    for props in (no_healthy, elb, tasks):
        assert notifies_the_topic(props)


def test_failed_rotations_and_schema_lambda_errors_reach_the_alarm_topic(dev: Synth) -> None:
    (rule,) = resources(dev.data, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.secretsmanager"]
    assert set(pattern["detail"]["eventName"]) == {"RotationFailed", "RotationAbandoned"}
    assert "AlarmsTopic" in json.dumps(rule["Properties"]["Targets"])
    # EventBridge may publish to the encrypted topic: its key and the topic policy admit it
    key_policy = json.dumps(resources(dev.data, "AWS::KMS::Key"))
    assert "events.amazonaws.com" in key_policy
    dev.data.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Action": "sns:Publish", "Principal": {"Service": "events.amazonaws.com"}})]
                )
            }
        },
    )
    (schema_alarm,) = [
        a["Properties"]
        for a in resources(dev.data, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "Errors"
    ]
    assert "SchemaMigrationsHandler" in json.dumps(schema_alarm["Dimensions"])
    assert notifies_the_topic(schema_alarm)


def test_prod_keeps_its_logs_and_protects_its_load_balancer(dev: Synth, prod: Synth) -> None:
    for synth, policy in ((prod, "Retain"), (dev, "Delete")):
        for name, template in synth.templates().items():
            for logical_id, group in resources(template, "AWS::Logs::LogGroup").items():
                assert group["DeletionPolicy"] == policy, f"{synth.network}/{name}/{logical_id}"
    protection = {"Key": "deletion_protection.enabled", "Value": "true"}
    prod.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"LoadBalancerAttributes": Match.array_with([protection])}
    )
    dev.service.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"LoadBalancerAttributes": Match.array_with([{"Key": "deletion_protection.enabled", "Value": "false"}])},
    )


def subnet_cidrs(max_azs: int) -> dict[tuple[str, str], str]:
    app = cdk.App()
    config = load_config({"profile": "dev", "maxAzs": str(max_azs)}, ENV)
    stack = NetworkStack(app, "Net", config=config, env=cdk.Environment(account=ACCOUNT, region=REGION))
    found = {}
    for subnet in Template.from_stack(stack).find_resources("AWS::EC2::Subnet").values():
        props = subnet["Properties"]
        tags = {t["Key"]: t["Value"] for t in props["Tags"]}
        found[(tags["aws-cdk:subnet-name"], props["AvailabilityZone"])] = props["CidrBlock"]
    return found


def test_growing_max_azs_adds_subnets_without_renumbering_any() -> None:
    """The other stacks import the subnets: a renumbered subnet is replaced, and the export blocks it."""
    two, three = subnet_cidrs(2), subnet_cidrs(3)
    assert len(two) == 6 and len(three) == 9
    assert {key: three[key] for key in two} == two


def test_max_azs_error_says_it_is_set_at_the_first_deploy_only() -> None:
    with pytest.raises(ConfigError, match="first deploy only"):
        load_config({"profile": "dev", "maxAzs": "4"}, ENV)


def test_the_service_keeps_idle_connections_longer_than_the_load_balancer(dev: Synth) -> None:
    (alb,) = resources(dev.service, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    attributes = {a["Key"]: a["Value"] for a in alb["Properties"]["LoadBalancerAttributes"]}
    assert KEEP_ALIVE_S > int(attributes["idle_timeout.timeout_seconds"])


def test_the_service_does_not_import_the_database_port(dev: Synth) -> None:
    """Each import is a value the Data stack can never change while the Service stack exists."""
    imports = json.dumps(dev.service.to_json())
    assert "EndpointPort" not in imports


def test_synth_of_prod_without_a_certificate_stops_with_one_line_naming_the_key() -> None:
    import os
    import subprocess
    import sys

    from tests.infra.conftest import ROOT

    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"profile": "prod"}), "CDK_OUTDIR": "/nonexistent"}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("configuration error")]
    assert len(lines) == 1 and "certificateArn" in lines[0] and "allowPlainHttp" in lines[0]
    assert "Traceback" not in result.stderr
