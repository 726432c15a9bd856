"""The AWS checks, from the stack outputs: stacks, the ECS service and its targets, the database
(instance or Aurora cluster: status, encryption, privacy, forced and trusted TLS), rotation, alarms."""

from __future__ import annotations

import functools
import re
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from conversations.tls import RDS_CA_BUNDLE
from stacks import outputs  # pure Python: no CDK needed

from .checks import CheckFailed, Target, _aws_error, _need


class Aws:
    def __init__(self, session: Any) -> None:
        self.session = session
        self._clients: dict[str, Any] = {}

    def client(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = self.session.client(name)
        return self._clients[name]


def load_stack_outputs(aws: Aws, profile: str) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name in outputs.stack_names(profile).all():
        try:
            stack = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
        except Exception as exc:  # noqa: BLE001 - a missing stack is reported by the stack check
            found[name] = {"__error__": _aws_error(exc)}
            continue
        found[name] = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        found[name]["__status__"] = stack["StackStatus"]
    return found


def aws_checks(aws: Aws, target: Target) -> Iterator[tuple[str, Callable[[], str]]]:
    """The AWS checks in the order the table shows them, each bound to this deployment."""
    profile = target.profile or target.output(outputs.PROFILE) or "dev"
    yield "aws: stacks", functools.partial(_check_stacks, aws, target, profile)
    yield "aws: ecs service", functools.partial(_check_ecs_service, aws, target)
    yield "aws: target health", functools.partial(_check_targets, aws, target)
    yield "aws: rds instance", functools.partial(_check_database, aws, target, profile)
    yield "aws: secret rotation", functools.partial(_check_rotation, aws, target)
    yield "aws: alarms", functools.partial(_check_alarms, aws, target, profile)
    yield "aws: alarm subscribers", functools.partial(_check_subscribers, aws, target, profile)


def _check_stacks(aws: Aws, target: Target, profile: str) -> str:
    bad, states = [], []
    for name in outputs.stack_names(profile).all():
        try:
            status = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{name}: {_aws_error(exc)}")
            continue
        states.append(f"{name.rsplit('-', 1)[-1]} {status}")
        if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
            bad.append(f"{name} is {status}")
    if bad:
        raise CheckFailed("; ".join(bad), "see the stack events in the CloudFormation console for the reason")
    return ", ".join(states)


def _check_ecs_service(aws: Aws, target: Target) -> str:
    cluster, name = _need(target, outputs.CLUSTER_NAME), _need(target, outputs.SERVICE_NAME)
    services = aws.client("ecs").describe_services(cluster=cluster, services=[name])["services"]
    if not services:
        raise CheckFailed(f"service {name} not found in {cluster}")
    service = services[0]
    running, desired = service["runningCount"], service["desiredCount"]
    primary: dict[str, Any] = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    state, reason = primary.get("rolloutState"), primary.get("rolloutStateReason", "")
    log_group = target.output(outputs.LOG_GROUP_NAME) or "the service log group"
    if state == "FAILED" or "circuit breaker" in reason.lower() or "rolling back" in reason.lower():
        raise CheckFailed(f"deployment rolled back: {reason}", f"tasks failed to start; read {log_group}")
    if running != desired:
        raise CheckFailed(
            f"{running} of {desired} tasks running (rollout {state})",
            f"stopped tasks say why (aws ecs list-tasks --desired-status STOPPED); read {log_group}",
        )
    if state != "COMPLETED":
        raise CheckFailed(f"rollout {state}: {reason}", "a deployment is still settling; use --wait")
    return f"{running}/{desired} tasks running, rollout COMPLETED"


def _check_targets(aws: Aws, target: Target) -> str:
    arn = _need(target, outputs.TARGET_GROUP_ARN)
    health = aws.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    if not health:
        raise CheckFailed("no targets registered", "the ECS service has no running task behind the load balancer")
    unhealthy = [h for h in health if h["TargetHealth"]["State"] != "healthy"]
    if unhealthy:
        reasons = "; ".join(
            f"{h['Target']['Id']} {h['TargetHealth']['State']}"
            f" ({h['TargetHealth'].get('Reason', '')}: {h['TargetHealth'].get('Description', '')})"
            for h in unhealthy
        )
        raise CheckFailed(reasons, "the target check calls /health/live: read the service log group")
    return f"{len(health)} of {len(health)} targets healthy"


def _check_database(aws: Aws, target: Target, profile: str) -> str:
    rds = aws.client("rds")
    if target.output(outputs.DATABASE_CLUSTER_ID):
        return _cluster(rds, _need(target, outputs.DATABASE_CLUSTER_ID))
    identifier = _need(target, outputs.DATABASE_INSTANCE_ID)
    instance = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    problems = []
    if instance["DBInstanceStatus"] != "available":
        problems.append(f"status {instance['DBInstanceStatus']}")
    if not instance.get("StorageEncrypted"):
        problems.append("storage not encrypted")
    if instance.get("PubliclyAccessible"):
        problems.append("publicly accessible")
    # What the Data stack was deployed with (its output), not what the profile's name suggests:
    # a dev stack deployed with -c dbMultiAz=true is Multi-AZ on purpose.
    declared = target.output(outputs.DATABASE_MULTI_AZ)
    want_multi_az = declared == "true" if declared is not None else profile == "prod"
    source = f"the {outputs.DATABASE_MULTI_AZ} output" if declared is not None else f"the {profile} profile"
    pending = ""
    if bool(instance.get("MultiAZ")) != want_multi_az:
        # dbApplyImmediately=false (prod): RDS holds the change for the maintenance window and
        # says so. That is the deploy working as configured, not drift.
        if instance.get("PendingModifiedValues", {}).get("MultiAZ") == want_multi_az:
            pending = f" (MultiAZ={want_multi_az} pending: applied in the maintenance window)"
        else:
            problems.append(f"MultiAZ is {instance.get('MultiAZ')}, {source} expects {want_multi_az}")
    groups = [g["DBParameterGroupName"] for g in instance.get("DBParameterGroups", [])]
    force_ssl = _parameter(rds, groups[0], "rds.force_ssl") if groups else None
    if force_ssl != "1":
        problems.append(f"rds.force_ssl is {force_ssl}")
    problems += _untrusted_ca([instance], rds.meta.region_name)
    if problems:
        raise CheckFailed("; ".join(problems), "compare the instance with the Data stack (drift detection)")
    return (
        f"{instance['Engine']} {instance['EngineVersion']} {instance['DBInstanceClass']} available, "
        f"encrypted, private, MultiAZ={instance.get('MultiAZ')}{pending}, force_ssl on, "
        f"CA {instance.get('CACertificateIdentifier')} trusted"
    )


def _check_rotation(aws: Aws, target: Target) -> str:
    done = []
    now = time.time()
    for key in (outputs.MASTER_SECRET_ARN, outputs.APP_SECRET_ARN):
        name = key.removesuffix("Arn")
        described = aws.client("secretsmanager").describe_secret(SecretId=_need(target, key))
        if not described.get("RotationEnabled"):
            raise CheckFailed(f"{key}: rotation is not enabled", "the Data stack configures rotation: redeploy it")
        days = described.get("RotationRules", {}).get("AutomaticallyAfterDays")
        # A rotation that failed leaves its new version staged AWSPENDING beside AWSCURRENT;
        # the secret keeps working with the old value, and nothing else says so.
        stuck = [
            version
            for version, stages in described.get("VersionIdsToStages", {}).items()
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages
        ]
        if stuck:
            raise CheckFailed(
                f"{name}: the last rotation did not finish (version {stuck[0][:8]} is still AWSPENDING)",
                "read the rotation function's log group (/aws/lambda/...Rotation...); "
                f"retry with: aws secretsmanager rotate-secret --secret-id {described.get('Name', key)}",
            )
        last = described.get("LastRotatedDate")
        if last is None:
            done.append(f"{name} every {days} d (not rotated yet)")
            continue
        age_days = (now - last.timestamp()) / 86400
        if days and age_days > days + 1:
            raise CheckFailed(
                f"{name}: last rotated {age_days:.0f} d ago, schedule is every {days} d (rotations are failing)",
                "read the rotation function's log group; the alarm topic also receives RotationFailed events",
            )
        done.append(f"{name} every {days} d, last {age_days:.0f} d ago")
    return "rotation on and succeeding: " + ", ".join(done)


def _check_alarms(aws: Aws, target: Target, profile: str) -> str:
    names = outputs.stack_names(profile)
    firing, total = [], 0
    paginator = aws.client("cloudwatch").get_paginator("describe_alarms")
    for prefix in (names.service, names.data):
        for page in paginator.paginate(AlarmNamePrefix=prefix):
            for alarm in page["MetricAlarms"]:
                total += 1
                if alarm["StateValue"] == "ALARM":
                    firing.append(f"{alarm['AlarmName']} ({alarm.get('StateReason', '')[:120]})")
    if firing:
        raise CheckFailed(
            "in ALARM: " + "; ".join(firing), f"see the {target.output(outputs.DASHBOARD_NAME)} dashboard"
        )
    return f"{total} alarms, none in ALARM"


def _check_subscribers(aws: Aws, target: Target, profile: str) -> str:
    """Someone hears the alarms: the topic has a confirmed subscription (an e-mail subscription
    stays pending until its owner follows the link AWS sends)."""
    topic = _need(target, outputs.ALARM_TOPIC_ARN)
    sns = aws.client("sns")
    confirmed: list[str] = []
    pending: list[str] = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic):
        for subscription in page["Subscriptions"]:
            arn = subscription["SubscriptionArn"]
            waiting = arn == "PendingConfirmation" or (
                sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"].get("PendingConfirmation") == "true"
            )
            (pending if waiting else confirmed).append(f"{subscription['Protocol']}:{subscription['Endpoint']}")
    if pending:
        raise CheckFailed(
            f"unconfirmed: {', '.join(pending)}",
            "follow the link in the e-mail AWS sent to that address (or resubscribe it to the topic)",
        )
    if not confirmed:
        if profile == "prod":
            raise CheckFailed("nobody is subscribed to the alarm topic", "deploy with -c alarmEmail=you@example.com")
        return f"no subscriber: this {profile} stack's alarms reach nobody (-c alarmEmail=...)"
    return f"{len(confirmed)} confirmed: {', '.join(confirmed)}"


def _cluster(rds: Any, identifier: str) -> str:
    """An Aurora cluster (database=aurora-serverless-v2): available, encrypted, every member
    available and private, TLS forced by its cluster parameter group."""
    cluster = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
    problems = []
    if cluster["Status"] != "available":
        problems.append(f"status {cluster['Status']}")
    if not cluster.get("StorageEncrypted"):
        problems.append("storage not encrypted")
    members = cluster.get("DBClusterMembers", [])
    if not any(m.get("IsClusterWriter") for m in members):
        problems.append("no writer instance")
    instances = []
    for member in members:
        instance = rds.describe_db_instances(DBInstanceIdentifier=member["DBInstanceIdentifier"])["DBInstances"][0]
        instances.append(instance)
        if instance["DBInstanceStatus"] != "available":
            problems.append(f"{member['DBInstanceIdentifier']} {instance['DBInstanceStatus']}")
        if instance.get("PubliclyAccessible"):
            problems.append(f"{member['DBInstanceIdentifier']} publicly accessible")
    problems += _untrusted_ca(instances, rds.meta.region_name)
    group = cluster.get("DBClusterParameterGroup")
    force_ssl = None
    if group:
        for page in rds.get_paginator("describe_db_cluster_parameters").paginate(DBClusterParameterGroupName=group):
            force_ssl = next(
                (p.get("ParameterValue") for p in page["Parameters"] if p["ParameterName"] == "rds.force_ssl"),
                force_ssl,
            )
    if force_ssl != "1":
        problems.append(f"rds.force_ssl is {force_ssl}")
    if problems:
        raise CheckFailed("; ".join(problems), "compare the cluster with the Data stack (drift detection)")
    scaling = cluster.get("ServerlessV2ScalingConfiguration", {})
    return (
        f"{cluster['Engine']} {cluster['EngineVersion']} cluster available, {len(members)} instance(s), "
        f"{scaling.get('MinCapacity', 0):g}-{scaling.get('MaxCapacity', 0):g} ACU, encrypted, private, force_ssl on, "
        "CAs trusted"
    )


# The identifiers RDS gives its certificate authorities (rds-ca-rsa2048-g1) and the roots' names.
_CA_IDENTIFIER = re.compile(r"rds-ca-(rsa2048|rsa4096|ecc384)-g1")


def _untrusted_ca(instances: list[dict[str, Any]], region: str) -> list[str]:
    """Instances whose certificate authority is not in the bundle the tasks and the schema
    Lambda verify against (sslmode=verify-full would refuse them)."""
    bundle: list[dict[str, Any]] = ssl.create_default_context(cafile=str(RDS_CA_BUNDLE)).get_ca_certs()
    # Each subject: relative distinguished names, each a tuple of (attribute, value) pairs.
    roots = {value for cert in bundle for rdn in cert["subject"] for key, value in rdn if key == "commonName"}
    problems = []
    for instance in instances:
        identifier = str(instance.get("CACertificateIdentifier"))
        match = _CA_IDENTIFIER.fullmatch(identifier)
        if match is None or f"Amazon RDS {region} Root CA {match.group(1).upper()} G1" not in roots:
            problems.append(
                f"{instance['DBInstanceIdentifier']} uses certificate authority {identifier}, which "
                f"{RDS_CA_BUNDLE.name} does not hold: the service's verify-full connections would be refused "
                "(the stack pins rds-ca-rsa2048-g1; for another CA refresh the bundle: make rds-ca)"
            )
    return problems


def _parameter(rds: Any, group: str, name: str, *, cluster: bool = False) -> str | None:
    """A parameter's value in an instance's parameter group, or a cluster's."""
    if cluster:
        pages = rds.get_paginator("describe_db_cluster_parameters").paginate(DBClusterParameterGroupName=group)
    else:
        pages = rds.get_paginator("describe_db_parameters").paginate(DBParameterGroupName=group)
    for page in pages:
        for parameter in page["Parameters"]:
            if parameter["ParameterName"] == name:
                value = parameter.get("ParameterValue")
                return None if value is None else str(value)
    return None
