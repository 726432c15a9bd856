"""What the deploys after the first one rely on, asserted on the templates: changes that wait
for the maintenance window in prod, read replicas that can be removed and grow, rotations that do
not collide and keep to their own network and logs."""

from __future__ import annotations

import json
from typing import Any

from tests.support.templates import PROD, Templates, synthesized


def variant(**context: str) -> Templates:
    return synthesized(context)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def test_a_change_that_restarts_the_database_waits_for_the_window_in_prod() -> None:
    for context, immediately in (({"profile": "dev", "readers": "1"}, True), ({**PROD, "readers": "1"}, False)):
        instances = of_type(variant(**context)["Data"], "AWS::RDS::DBInstance")
        assert len(instances) == 2  # the instance and its replica
        assert {r["Properties"].get("ApplyImmediately") for r in instances.values()} == {immediately}
    aurora = of_type(variant(**PROD, database="aurora-serverless-v2", readers="1")["Data"], "AWS::RDS::DBInstance")
    assert {r["Properties"].get("ApplyImmediately") for r in aurora.values()} == {False}


def test_prod_read_replicas_can_be_removed_grow_and_are_watched() -> None:
    templates_ = variant(**PROD, readers="2")
    instances = of_type(templates_["Data"], "AWS::RDS::DBInstance")
    replicas = {lid: r["Properties"] for lid, r in instances.items() if "SourceDBInstanceIdentifier" in r["Properties"]}
    (source,) = [r["Properties"] for lid, r in instances.items() if lid not in replicas]
    assert len(replicas) == 2 and source["DeletionProtection"] is True
    for props in replicas.values():
        # Deletion protection would fail readers=1's delete and leave the replica running, billed.
        assert props["DeletionProtection"] is False
        assert props["MaxAllocatedStorage"] == source["MaxAllocatedStorage"]
    alarms = of_type(templates_["Service"], "AWS::CloudWatch::Alarm")
    lag = [a["Properties"] for lid, a in alarms.items() if "Lag" in lid]
    assert len(lag) == 2 and {a["MetricName"] for a in lag} == {"ReplicaLag"}
    assert all(a["TreatMissingData"] == "breaching" and a["Threshold"] == 60 for a in lag)


def test_the_first_deploy_rotates_the_master_alone() -> None:
    """The app secret's multi-user rotation logs in as the master: started together on the first
    deploy, it would use a password the master's own first rotation is changing."""
    schedules = of_type(variant(profile="dev")["Data"], "AWS::SecretsManager::RotationSchedule")
    immediately = {
        "App" if "AppSecret" in lid else "Master": s["Properties"].get("RotateImmediatelyOnUpdate", True)
        for lid, s in schedules.items()
    }
    assert immediately == {"Master": True, "App": False}


def test_rotation_functions_reach_only_secrets_manager_and_postgres_and_their_logs_expire() -> None:
    for context, removal in (({"profile": "dev"}, "destroy"), (PROD, "retain")):
        data = variant(**context)["Data"]
        groups = {lid: g for lid, g in of_type(data, "AWS::EC2::SecurityGroup").items() if "Rotation" in lid}
        assert len(groups) == 2
        for group in groups.values():
            egress = group["Properties"]["SecurityGroupEgress"]
            assert sorted((e["FromPort"], "CidrIp" in e) for e in egress) == [(443, True), (5432, False)]
            assert next(e for e in egress if e["FromPort"] == 443)["CidrIp"] == "10.40.0.0/16"
        names = {
            app["Properties"]["Parameters"]["functionName"]
            for app in of_type(data, "AWS::Serverless::Application").values()
        }
        retained = {
            r["Properties"]["LogGroupName"]: r["Properties"]
            for r in of_type(data, "Custom::LogRetention").values()
            if str(r["Properties"]["LogGroupName"]).startswith("/aws/lambda/")
        }
        assert set(retained) == {f"/aws/lambda/{name}" for name in names} and len(names) == 2
        days = 365 if context is PROD else 30
        assert all(p["RetentionInDays"] == days and p["RemovalPolicy"] == removal for p in retained.values())


def test_a_release_that_answers_5xx_is_rolled_back_by_its_deployment_alarm() -> None:
    """Its tasks pass /health/live (no database in it), so the circuit breaker alone never trips:
    the service's deployment alarm, on the share of 5xx answers, does."""
    service = variant(profile="dev")["Service"]
    (ecs_service,) = of_type(service, "AWS::ECS::Service").values()
    deployment = ecs_service["Properties"]["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["Alarms"]["Enable"] is True and deployment["Alarms"]["Rollback"] is True
    ((alarm_ref,),) = [deployment["Alarms"]["AlarmNames"]]
    alarm = service["Resources"][alarm_ref["Ref"]]["Properties"]
    (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
    used = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert used == {"HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count", "RequestCount"}
    assert all(m["MetricStat"]["Period"] == 60 for m in alarm["Metrics"] if "MetricStat" in m)
    assert "errors + lb_errors" in expression["Expression"] and alarm["Threshold"] == 10
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 2


def test_prod_is_reached_by_its_domain_name_with_an_optional_alias() -> None:
    """The load balancer's own DNS name is covered by no certificate of the operator's: prod's
    ServiceUrl (what make verify calls) is the domain name, and Route 53 can point it there."""
    plain = variant(**PROD)["Service"]
    assert plain["Outputs"]["ServiceUrl"]["Value"] == "https://api.example.com"
    assert not of_type(plain, "AWS::Route53::RecordSet")
    aliased = variant(**PROD, hostedZoneId="Z0123456789ABC", hostedZoneName="example.com")["Service"]
    (record,) = of_type(aliased, "AWS::Route53::RecordSet").values()
    props = record["Properties"]
    assert props["Name"] == "api.example.com." and props["Type"] == "A" and props["HostedZoneId"] == "Z0123456789ABC"
    assert "CanonicalHostedZoneID" in json.dumps(props["AliasTarget"])


def test_eventbridge_may_publish_to_the_alarm_topic_for_the_rotation_rule_only() -> None:
    """Confused-deputy prevention: the topic trusts events.amazonaws.com only for this account's
    RotationFailed rule, not for any rule of any account."""
    data = variant(profile="dev")["Data"]
    (policy,) = of_type(data, "AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert len(allows) == 1 and allows[0]["Effect"] == "Allow"
    (rule_id,) = of_type(data, "AWS::Events::Rule")
    for statement in allows:
        assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_every_alarm_may_publish_to_the_topic_and_use_its_key() -> None:
    """The topic policy replaces SNS's default one, which let the account's alarms publish; and
    the topic is encrypted. Both must admit CloudWatch for this account's alarms, or every alarm
    action fails (alarm history: "not authorized to perform: SNS:Publish") and nobody is told."""
    for context in ({"profile": "dev"}, PROD):
        templates_ = variant(**context)
        data = templates_["Data"]
        (topic_id,) = of_type(data, "AWS::SNS::Topic")
        (policy,) = of_type(data, "AWS::SNS::TopicPolicy").values()
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        (alarms,) = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
        assert alarms["Effect"] == "Allow" and alarms["Action"] == "sns:Publish"
        assert alarms["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
        source = json.dumps(alarms["Condition"]["ArnLike"]["aws:SourceArn"])
        assert ":cloudwatch:eu-west-1:123456789012:alarm:*" in source
        (key,) = of_type(data, "AWS::KMS::Key").values()
        grants = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if "Service" in s["Principal"]]
        cloudwatch = [s for s in grants if s["Principal"]["Service"] == "cloudwatch.amazonaws.com"]
        assert len(cloudwatch) == 1 and cloudwatch[0]["Condition"] == {
            "StringEquals": {"aws:SourceAccount": "123456789012"}
        }
        assert set(cloudwatch[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        # And every alarm of both stacks does send to that topic.
        for stack in ("Data", "Service"):
            for alarm in of_type(templates_[stack], "AWS::CloudWatch::Alarm").values():
                assert alarm["Properties"].get("AlarmActions"), alarm["Properties"].get("AlarmDescription")
        assert topic_id in json.dumps(of_type(data, "AWS::CloudWatch::Alarm"))


RESTORED = "conversations-dev-data-restore-20261203-093000"


def test_a_restore_creates_the_database_from_its_snapshot_and_runs_the_schema_again() -> None:
    before, after = variant(profile="dev"), variant(profile="dev", restoreSnapshot=RESTORED)
    (instance,) = of_type(after["Data"], "AWS::RDS::DBInstance").values()
    props = instance["Properties"]
    assert props["DBSnapshotIdentifier"] == RESTORED
    # The snapshot fixes the user and database name: CloudFormation refuses them beside it.
    assert not {"MasterUsername", "DBName"} & set(props)
    # The snapshot is encrypted (the restore script refuses any other); the password the secret's.
    assert props["StorageEncrypted"] is True and "MasterUserPassword" in props
    (schema,) = of_type(after["Data"], "Custom::ConversationSchema").values()
    assert schema["Properties"]["RestoredFrom"] == RESTORED, "its change sends the Update that re-syncs the app role"
    assert after["Data"]["Outputs"]["RestoredFrom"]["Value"] == RESTORED
    # Nothing else changes: the secrets, keys, log groups and the service keep their resources.
    changed = {
        (stack, lid)
        for stack in after
        for lid, resource in after[stack]["Resources"].items()
        if before[stack]["Resources"].get(lid) != resource
    }
    assert {lid for _, lid in changed} == {
        next(iter(of_type(after["Data"], "AWS::RDS::DBInstance"))),
        next(iter(of_type(after["Data"], "Custom::ConversationSchema"))),
    }


def test_a_restore_replaces_the_database_and_only_it_and_forgetting_it_replaces_it_again() -> None:
    from tests.support.updates import update_problems

    for base in ({"profile": "dev"}, {"profile": "dev", "database": "aurora-serverless-v2", "minAcu": "0.5"}):
        before, after = synthesized(base), synthesized({**base, "restoreSnapshot": RESTORED})
        restoring = update_problems(before, after)
        assert len(restoring) == 1 and "is replaced" in restoring[0], restoring
        assert ("DBInstance" in restoring[0]) != ("aurora" in base.get("database", "")), restoring
        # Dropping the key later would replace the restored database with an empty one: what
        # make preflight refuses (tests/scripts/test_restore.py).
        assert len(update_problems(after, before)) == 1


def test_an_aurora_restore_names_the_cluster_snapshot() -> None:
    after = variant(profile="dev", database="aurora-serverless-v2", minAcu="0.5", restoreSnapshot=RESTORED)
    (cluster,) = of_type(after["Data"], "AWS::RDS::DBCluster").values()
    assert cluster["Properties"]["SnapshotIdentifier"] == RESTORED
    # A cluster takes all four from its snapshot (the restore script set its password to the secret's).
    assert not {"MasterUsername", "MasterUserPassword", "DatabaseName", "StorageEncrypted"} & set(cluster["Properties"])


def test_the_tasks_believe_forwarded_headers_from_the_vpc_only() -> None:
    (task,) = of_type(variant(profile="dev")["Service"], "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["FORWARDED_ALLOW_IPS"] == "10.40.0.0/16"


def test_a_plain_http_load_balancer_is_closed_until_told_whom_to_admit() -> None:
    closed = of_type(variant(profile="dev")["Service"], "AWS::EC2::SecurityGroup")
    (group,) = [g["Properties"] for lid, g in closed.items() if "LoadBalancer" in lid]
    assert "SecurityGroupIngress" not in group
    opened = of_type(variant(profile="dev", allowedCidrs="203.0.113.7/32")["Service"], "AWS::EC2::SecurityGroup")
    (group,) = [g["Properties"] for lid, g in opened.items() if "LoadBalancer" in lid]
    assert [(r["CidrIp"], r["FromPort"]) for r in group["SecurityGroupIngress"]] == [("203.0.113.7/32", 80)]
