"""verify_deployment.py's AWS checks against moto, with the resources made as the stacks make
them, and the HTTP half against the real service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devtools.serving import serve
from scripts import verify_deployment as verify
from stacks import outputs
from tests.support.service import TOKEN, MigratedDatabase, make_settings

REGION = "eu-west-1"
NAMES = outputs.stack_names("dev")


@pytest.fixture
def live_url(clean_db: MigratedDatabase) -> Iterator[str]:
    with serve(make_settings(clean_db.app)) as url:
        yield url


@pytest.fixture
def deployed(
    live_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """The dev profile's resources in (emulated) AWS, as the three stacks create them (another
    profile's with ``indirect`` parametrization: its stack names and Profile output)."""
    profile = getattr(request, "param", "dev")
    names = outputs.stack_names(profile)
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")  # moto starts no tasks unless told
    # Rotation invokes its Lambda; moto would need Docker for that, so it answers in-process.
    with mock_aws(config={"lambda": {"use_docker": False}}):
        session = boto3.session.Session(region_name=REGION)
        ec2 = session.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        ecs = session.client("ecs")
        ecs.create_cluster(clusterName="conv-cluster")
        ecs.register_task_definition(
            family="api",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "Api", "image": "api:1", "essential": True}],
        )
        ecs.create_service(
            cluster="conv-cluster",
            serviceName="conv-service",
            taskDefinition="api",
            desiredCount=2,
            launchType="FARGATE",
            deploymentConfiguration={
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "minimumHealthyPercent": 100,
            },
        )
        elbv2 = session.client("elbv2")
        tg = elbv2.create_target_group(
            Name="conv-targets", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip", HealthCheckPath="/health/live"
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.40.4.10"}, {"Id": "10.40.5.10"}])
        rds = session.client("rds")
        rds.create_db_parameter_group(
            DBParameterGroupName="conv-params", DBParameterGroupFamily="postgres17", Description="Conversation service"
        )
        rds.modify_db_parameter_group(
            DBParameterGroupName="conv-params",
            Parameters=[{"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "pending-reboot"}],
        )
        rds.create_db_instance(
            DBInstanceIdentifier="conv-db",
            Engine="postgres",
            EngineVersion="17.9",
            DBInstanceClass="db.t4g.micro",
            AllocatedStorage=20,
            MasterUsername="raguser",
            MasterUserPassword="not-used-here-123",
            StorageEncrypted=True,
            PubliclyAccessible=False,
            MultiAZ=False,
            DBParameterGroupName="conv-params",
            CACertificateIdentifier="rds-ca-rsa2048-g1",  # as the Data stack pins it
        )
        sm = session.client("secretsmanager")
        lam = _rotation_lambda(session)
        secret_arns = {}
        for key, value in (
            (outputs.MASTER_SECRET_ARN, {"username": "raguser", "password": "pw-master-0001"}),
            (outputs.APP_SECRET_ARN, {"username": "conversations_app", "password": "pw-app-0001"}),
        ):
            arn = sm.create_secret(Name=key, SecretString=json.dumps(value))["ARN"]
            sm.rotate_secret(
                SecretId=arn,
                RotationLambdaARN=lam,
                RotationRules={"AutomaticallyAfterDays": 30},
                RotateImmediately=False,
            )
            # moto leaves the scheduled rotation's version AWSPENDING (its stand-in function does
            # nothing); finish it as a successful rotation would, so the secret is as deployed.
            stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
            current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
            for version in (v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s):
                sm.update_secret_version_stage(
                    SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=current
                )
                sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=version)
            secret_arns[key] = arn
        token_arn = sm.create_secret(Name="api-token", SecretString=TOKEN)["ARN"]
        sns = session.client("sns")
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.com")  # moto confirms it
        cw = session.client("cloudwatch")
        for alarm in ("ServerErrorRate", "LatencyP99", "UnhealthyHosts"):
            cw.put_metric_alarm(
                AlarmName=f"{names.service}-Monitoring{alarm}-ABC123",
                MetricName="x",
                Namespace="AWS/ApplicationELB",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1,
                ComparisonOperator="GreaterThanThreshold",
            )
        stack_outputs = {
            names.network: {outputs.VPC_ID: vpc},
            names.data: {
                outputs.DATABASE_INSTANCE_ID: "conv-db",
                outputs.SCHEMA_VERSION: str(verify.expected_schema_version()),
                outputs.ALARM_TOPIC_ARN: topic,
                **secret_arns,
            },
            names.service: {
                outputs.SERVICE_URL: live_url,
                outputs.CLUSTER_NAME: "conv-cluster",
                outputs.SERVICE_NAME: "conv-service",
                outputs.TARGET_GROUP_ARN: tg,
                outputs.LOG_GROUP_NAME: "conv-logs",
                outputs.API_TOKEN_SECRET_ARN: token_arn,
                outputs.DASHBOARD_NAME: "conv-dashboard",
                outputs.PROFILE: profile,
            },
        }
        cfn = session.client("cloudformation")
        for name, values in stack_outputs.items():
            cfn.create_stack(
                StackName=name,
                TemplateBody=json.dumps(
                    {
                        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
                        "Outputs": {k: {"Value": v} for k, v in values.items()},
                    }
                ),
            )
        yield {
            "session": session,
            "outputs": stack_outputs,
            "target_group": tg,
            "ec2": ec2,
            "vpc": vpc,
            "profile": profile,
        }


def _rotation_lambda(session: boto3.session.Session) -> str:
    iam = session.client("iam")
    role = iam.create_role(RoleName="rot", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(e, c):\n    return None\n")
    function: dict[str, Any] = session.client("lambda").create_function(
        FunctionName="rotation",
        Runtime="python3.12",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": buf.getvalue()},
    )
    return str(function["FunctionArn"])


def run(deployed: dict[str, Any], *args: str) -> tuple[int, list[verify.Check]]:
    aws = verify.Aws(deployed["session"])
    profile = deployed["profile"]
    target = verify.Target(url="", profile=profile, stack_outputs=verify.load_stack_outputs(aws, profile))
    target.url = target.output(outputs.SERVICE_URL) or ""
    secret = aws.client("secretsmanager").get_secret_value(SecretId=target.output(outputs.API_TOKEN_SECRET_ARN))
    target.token = secret["SecretString"]
    results = verify.verify(target, aws=aws, read_only="--read-only" in args)
    return (0 if all(r.result == "PASS" for r in results) else 1), results


def by_name(results: list[verify.Check]) -> dict[str, verify.Check]:
    return {r.name: r for r in results}


def test_healthy_deployment_passes_every_check(deployed: dict[str, Any]) -> None:
    code, results = run(deployed)
    table = verify.render_table(results)
    assert code == 0, table
    assert [r.name for r in results] == [
        "aws: stacks",
        "aws: ecs service",
        "aws: target health",
        "aws: rds instance",
        "aws: secret rotation",
        "aws: alarms",
        "aws: alarm subscribers",
        "http: /health/live",
        "http: /health",
        "http: token required",
        "http: write round trip",
    ]
    assert "2/2 tasks running" in by_name(results)["aws: ecs service"].detail
    assert TOKEN not in table and "pw-master-0001" not in table


@pytest.mark.parametrize("deployed", ["lean"], indirect=True)
def test_a_lean_deployment_passes_every_check_with_the_script_unchanged(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean profile keeps every output the script reads (tests/infra/test_lean.py); found by
    its stack names, its deployment passes as dev's does, from the command line too."""
    code, results = run(deployed)
    assert code == 0, verify.render_table(results)
    assert len(results) == 11
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("API_TOKEN", raising=False)  # read from the lean stack's token secret
    assert verify.main(["--profile", "lean", "--read-only"]) == 0
    assert "10 passed, 0 failed" in capsys.readouterr().out


def test_cli_finds_everything_from_the_profile_and_reads_the_token_secret(
    deployed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    import boto3 as real_boto3

    monkeypatch.setattr(real_boto3.session, "Session", lambda region_name=None: deployed["session"])
    code = verify.main(["--profile", "dev", "--read-only"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 passed, 0 failed" in out and TOKEN not in out


def test_outputs_file_mode(
    deployed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3 as real_boto3

    monkeypatch.setattr(real_boto3.session, "Session", lambda region_name=None: deployed["session"])
    path = tmp_path / "cdk-outputs-dev.json"
    path.write_text(json.dumps(deployed["outputs"]))
    code = verify.main(["--outputs-file", str(path), "--read-only", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report


def test_unhealthy_target_fails_with_its_reason(deployed: dict[str, Any]) -> None:
    ec2 = deployed["ec2"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    deployed["session"].client("elbv2").register_targets(
        TargetGroupArn=deployed["target_group"], Targets=[{"Id": instance, "Port": 8080}]
    )
    ec2.stop_instances(InstanceIds=[instance])
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: target health"]
    assert code == 1 and row.result == "FAIL"
    assert instance in row.detail and "Target.InvalidState" in row.detail
    assert "/health/live" in row.hint


def test_circuit_breaker_rollback_is_caught(deployed: dict[str, Any]) -> None:
    from moto.ecs.models import ecs_backends

    backend = ecs_backends["123456789012"][REGION]
    service = backend.services["conv-cluster:conv-service"]
    service.deployments[0].update(
        rolloutState="FAILED", rolloutStateReason="ECS deployment circuit breaker: tasks failed to start."
    )
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: ecs service"]
    assert code == 1 and row.result == "FAIL"
    assert "rolled back" in row.detail and "conv-logs" in row.hint


def test_tasks_not_running_is_caught(deployed: dict[str, Any]) -> None:
    from moto.ecs.models import ecs_backends

    service = ecs_backends["123456789012"][REGION].services["conv-cluster:conv-service"]
    service.running_count = 1
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: ecs service"]
    assert code == 1 and "1 of 2 tasks running" in row.detail


def test_alarm_firing_and_stack_rolled_back_are_caught(deployed: dict[str, Any]) -> None:
    cw = deployed["session"].client("cloudwatch")
    cw.set_alarm_state(
        AlarmName=f"{NAMES.service}-MonitoringLatencyP99-ABC123",
        StateValue="ALARM",
        StateReason="Threshold Crossed: p99 2.3 s",
    )
    from moto.cloudformation.models import cloudformation_backends

    stacks = cloudformation_backends["123456789012"][REGION].stacks
    next(s for s in stacks.values() if s.name == NAMES.service).status = "UPDATE_ROLLBACK_COMPLETE"
    code, results = run(deployed, "--read-only")
    rows = by_name(results)
    assert code == 1
    assert "LatencyP99" in rows["aws: alarms"].detail and "2.3 s" in rows["aws: alarms"].detail
    assert "UPDATE_ROLLBACK_COMPLETE" in rows["aws: stacks"].detail


def test_database_drift_is_caught(deployed: dict[str, Any]) -> None:
    rds = deployed["session"].client("rds")
    rds.modify_db_parameter_group(
        DBParameterGroupName="conv-params",
        Parameters=[{"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}],
    )
    rds.modify_db_instance(DBInstanceIdentifier="conv-db", PubliclyAccessible=True, ApplyImmediately=True)
    code, results = run(deployed, "--read-only")
    detail = by_name(results)["aws: rds instance"].detail
    assert code == 1 and "publicly accessible" in detail and "rds.force_ssl is 0" in detail


def test_a_database_certificate_authority_outside_the_shipped_bundle_is_caught(deployed: dict[str, Any]) -> None:
    rds = deployed["session"].client("rds")
    assert "CA rds-ca-rsa2048-g1 trusted" in by_name(run(deployed, "--read-only")[1])["aws: rds instance"].detail
    # When someone moves the instance to a CA the service's bundle does not hold
    rds.modify_db_instance(DBInstanceIdentifier="conv-db", CACertificateIdentifier="rds-ca-2015", ApplyImmediately=True)
    code, results = run(deployed, "--read-only")
    detail = by_name(results)["aws: rds instance"].detail
    # Then verify says the service's verify-full connections would be refused, and the way out
    assert code == 1 and "conv-db uses certificate authority rds-ca-2015" in detail
    assert "verify-full connections would be refused" in detail and "make rds-ca" in detail


def test_rotation_off_is_caught(deployed: dict[str, Any]) -> None:
    sm = deployed["session"].client("secretsmanager")
    arn = deployed["outputs"][NAMES.data][outputs.APP_SECRET_ARN]
    sm.cancel_rotate_secret(SecretId=arn)
    code, results = run(deployed, "--read-only")
    assert code == 1 and "AppSecretArn: rotation is not enabled" in by_name(results)["aws: secret rotation"].detail


def test_missing_stack_is_caught() -> None:
    with mock_aws():
        aws = verify.Aws(boto3.session.Session(region_name=REGION))
        target = verify.Target(url="http://127.0.0.1:9", profile="dev", stack_outputs={})
        results = by_name(verify.verify(target, aws=aws, read_only=True))
    assert results["aws: stacks"].result == "FAIL" and "ValidationError" in results["aws: stacks"].detail
    assert "stack output ClusterName not found" in results["aws: ecs service"].detail


def test_multi_az_is_expected_from_the_stack_output_not_the_profile_name(deployed: dict[str, Any]) -> None:
    """A prod stack deployed with -c dbMultiAz=false is single-AZ on purpose; a dev one with true is Multi-AZ."""
    aws = verify.Aws(deployed["session"])
    stack_outputs = verify.load_stack_outputs(aws, "dev")
    stack_outputs[NAMES.data][outputs.DATABASE_MULTI_AZ] = "false"
    target = verify.Target(url="", profile="prod", stack_outputs=stack_outputs)
    rows = by_name(verify.run_checks(list(verify.aws_checks(aws, target))))
    assert rows["aws: rds instance"].result == "PASS", rows["aws: rds instance"].detail
    stack_outputs[NAMES.data][outputs.DATABASE_MULTI_AZ] = "true"
    rows = by_name(verify.run_checks(list(verify.aws_checks(aws, target))))
    assert rows["aws: rds instance"].result == "FAIL"
    assert "the DatabaseMultiAz output expects True" in rows["aws: rds instance"].detail


def test_a_multi_az_change_held_for_the_maintenance_window_is_not_drift(deployed: dict[str, Any]) -> None:
    """Prod deploys with dbApplyImmediately=false: a dbMultiAz change waits for the window, and RDS
    reports it under PendingModifiedValues (moto keeps no pending changes: the answer is given
    that field here, as RDS gives it)."""
    session = deployed["session"]
    aws = verify.Aws(session)
    stack_outputs = verify.load_stack_outputs(aws, "dev")
    stack_outputs[NAMES.data][outputs.DATABASE_MULTI_AZ] = "true"
    target = verify.Target(url="", profile="dev", stack_outputs=stack_outputs)

    def pending_multi_az(parsed: dict[str, Any], **_: Any) -> None:
        for instance in parsed.get("DBInstances", []):
            instance["PendingModifiedValues"] = {"MultiAZ": True}

    session.events.register("after-call.rds.DescribeDBInstances", pending_multi_az)
    row = by_name(verify.run_checks(list(verify.aws_checks(aws, target))))["aws: rds instance"]
    assert row.result == "PASS", row.detail
    assert "MultiAZ=False (MultiAZ=True pending: applied in the maintenance window)" in row.detail
    session.events.unregister("after-call.rds.DescribeDBInstances", pending_multi_az)
    row = by_name(verify.run_checks(list(verify.aws_checks(verify.Aws(session), target))))["aws: rds instance"]
    assert row.result == "FAIL" and "the DatabaseMultiAz output expects True" in row.detail


def test_a_rotation_that_did_not_finish_is_caught(deployed: dict[str, Any]) -> None:
    """A failed rotation leaves its new version AWSPENDING and the old one AWSCURRENT: still 'enabled'."""
    sm = deployed["session"].client("secretsmanager")
    arn = deployed["outputs"][NAMES.data][outputs.APP_SECRET_ARN]
    sm.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": "conversations_app_clone"}), VersionStages=["AWSPENDING"]
    )
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: secret rotation"]
    assert code == 1 and "AppSecret: the last rotation did not finish" in row.detail
    assert "rotate-secret" in row.hint


def test_an_overdue_rotation_is_caught(deployed: dict[str, Any]) -> None:
    from moto.secretsmanager.models import FakeSecret, secretsmanager_backends

    arn = deployed["outputs"][NAMES.data][outputs.MASTER_SECRET_ARN]
    secret = secretsmanager_backends["123456789012"][REGION].secrets[arn]
    assert isinstance(secret, FakeSecret)
    secret.last_rotation_date = int(time.time()) - 45 * 86400
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: secret rotation"]
    assert code == 1 and "MasterSecret: last rotated 45 d ago, schedule is every 30 d" in row.detail


def test_without_credentials_it_says_so_instead_of_no_service_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    assert verify.main(["--profile", "dev"]) == 2
    err = capsys.readouterr().err
    assert "no AWS credentials found" in err and "no service URL" not in err


def _aurora(force_ssl: str) -> tuple[Any, str]:
    session = boto3.session.Session(region_name=REGION)
    rds = session.client("rds")
    rds.create_db_cluster_parameter_group(
        DBClusterParameterGroupName="conv-cluster-params",
        DBParameterGroupFamily="aurora-postgresql18",
        Description="Conversation service (Aurora)",
    )
    rds.modify_db_cluster_parameter_group(
        DBClusterParameterGroupName="conv-cluster-params",
        Parameters=[{"ParameterName": "rds.force_ssl", "ParameterValue": force_ssl, "ApplyMethod": "pending-reboot"}],
    )
    rds.create_db_cluster(
        DBClusterIdentifier="conv-cluster",
        Engine="aurora-postgresql",
        EngineVersion="18.3",
        MasterUsername="raguser",
        MasterUserPassword="x" * 16,
        StorageEncrypted=True,
        DBClusterParameterGroupName="conv-cluster-params",
        ServerlessV2ScalingConfiguration={"MinCapacity": 0, "MaxCapacity": 4},
    )
    for name in ("conv-writer", "conv-reader"):
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            DBClusterIdentifier="conv-cluster",
            Engine="aurora-postgresql",
            DBInstanceClass="db.serverless",
            PubliclyAccessible=False,
            CACertificateIdentifier="rds-ca-rsa2048-g1",
        )
    return rds, "conv-cluster"


def test_an_aurora_cluster_is_checked_member_by_member() -> None:
    with mock_aws():
        rds, cluster = _aurora("1")
        summary = verify._cluster(rds, cluster)
        assert "cluster available, 2 instance(s), 0-4 ACU" in summary and "force_ssl on, CAs trusted" in summary
        rds.modify_db_instance(DBInstanceIdentifier="conv-reader", PubliclyAccessible=True)
        with pytest.raises(verify.CheckFailed, match="conv-reader publicly accessible"):
            verify._cluster(rds, cluster)


def test_an_aurora_cluster_without_forced_tls_fails() -> None:
    with mock_aws():
        rds, cluster = _aurora("0")
        with pytest.raises(verify.CheckFailed, match=r"rds\.force_ssl is 0"):
            verify._cluster(rds, cluster)


def test_an_alarm_topic_nobody_confirmed_is_caught(deployed: dict[str, Any]) -> None:
    """An e-mail subscription stays pending until its owner follows AWS's link: until then the
    alarms reach nobody, which is what a deploy without a confirmed subscriber looks like."""
    from moto.sns.models import sns_backends

    code, results = run(deployed, "--read-only")
    assert by_name(results)["aws: alarm subscribers"].detail == "1 confirmed: email:ops@example.com"
    topic = deployed["outputs"][NAMES.data][outputs.ALARM_TOPIC_ARN]
    backend = sns_backends["123456789012"][REGION]
    (subscription,) = [s for s in backend.subscriptions.values() if s.topic.arn == topic]
    subscription.attributes["PendingConfirmation"] = "true"
    code, results = run(deployed, "--read-only")
    row = by_name(results)["aws: alarm subscribers"]
    assert code == 1 and row.result == "FAIL" and "unconfirmed: email:ops@example.com" in row.detail
    assert "follow the link" in row.hint


def test_a_prod_alarm_topic_without_a_subscriber_fails_and_dev_says_so() -> None:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        topic = session.client("sns").create_topic(Name="alarms")["TopicArn"]
        aws = verify.Aws(session)
        for profile, result in (("prod", "FAIL"), ("dev", "PASS")):
            target = verify.Target(
                url="",
                profile=profile,
                stack_outputs={outputs.stack_names(profile).data: {outputs.ALARM_TOPIC_ARN: topic}},
            )
            rows = by_name(
                verify.run_checks([c for c in verify.aws_checks(aws, target) if c[0] == "aws: alarm subscribers"])
            )
            assert rows["aws: alarm subscribers"].result == result, rows["aws: alarm subscribers"].detail
            assert "reach nobody" in rows["aws: alarm subscribers"].detail or profile == "prod"
