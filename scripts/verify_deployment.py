#!/usr/bin/env python3
"""Post-deploy verification: is the deployed conversation service healthy, and if not, why?

Finds everything from the stack outputs (names shared with the stacks via stacks/outputs.py):

    python scripts/verify_deployment.py --profile dev              # stacks by name, via boto3
    python scripts/verify_deployment.py --outputs-file cdk-outputs-dev.json
    python scripts/verify_deployment.py --url http://127.0.0.1:8080 --token ...   # no AWS at all

Prints one table (check, result, detail, time), or JSON with --json; exits 0 only when every
check passed. --wait SECONDS re-checks until everything passes or the time is up, showing
progress, so it can follow a deploy that is still settling. --read-only skips the write round
trip (for production). Never prints the API token or any secret value.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conversations.tls import RDS_CA_BUNDLE
from stacks import outputs  # pure Python: no CDK needed

ROOT = Path(__file__).resolve().parent.parent

MIGRATIONS_DIR = ROOT / "service" / "migrations"
ONE_MIB = 1024 * 1024
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    result: str
    detail: str
    seconds: float = 0.0
    hint: str = ""


@dataclass
class Target:
    """What to verify: a URL, and the AWS side when there is one."""

    url: str
    profile: str | None = None
    stack_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    token: str | None = None

    def output(self, key: str) -> str | None:
        for values in self.stack_outputs.values():
            if key in values:
                return values[key]
        return None


class CheckFailed(Exception):
    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


class CheckSkipped(Exception):
    """A check that cannot run because an earlier one failed; the detail says which."""


def expected_schema_version() -> int | None:
    versions = [int(p.name[:4]) for p in MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")]
    return max(versions) if versions else None


# ---------------------------------------------------------------- HTTP


class Http:
    def __init__(self, base: str, token: str | None, timeout: float = 15.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise CheckFailed(
                f"{method} {path}: cannot connect ({reason})", "is the service running, and is the URL right?"
            ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"raw": raw[:200].decode("utf-8", "replace")}


def http_checks(
    target: Target, *, read_only: bool, schema_version: int | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    http = Http(target.url, target.token)

    def live() -> str:
        status, _ = http.call("GET", "/health/live", auth=False)
        if status != 200:
            raise CheckFailed(f"HTTP {status}", "the process is not answering; read the service log group")
        return "200 alive"

    def health() -> str:
        status, body = http.call("GET", "/health", auth=False)
        body = body or {}
        if status != 200 or body.get("status") != "healthy":
            raise CheckFailed(
                f"HTTP {status}: {body.get('reason') or body}",
                "the service cannot use its database: check RDS status, security groups, the app secret",
            )
        if not body.get("pgvector_version"):
            raise CheckFailed("pgvector is not installed", "the schema custom resource creates it: check its log group")
        if schema_version is not None and body.get("schema_version") != schema_version:
            raise CheckFailed(
                f"schema version {body.get('schema_version')}, expected {schema_version}",
                "the schema custom resource did not apply every migration",
            )
        return (
            f"{body['database'].get('backend')} {body['database'].get('server_version')}, "
            f"pgvector {body['pgvector_version']}, schema {body['schema_version']}, "
            f"about {body.get('approximate_conversations') or 0} conversations"
        )

    def auth_required() -> str:
        status, _ = http.call("GET", "/conversations?limit=1", auth=False)
        if status != 401:
            raise CheckFailed(f"an unauthenticated request got HTTP {status}", "API_TOKEN is not enforced")
        status, body = http.call("GET", "/conversations?limit=1")
        if status != 200:
            raise CheckFailed(
                f"the API token was refused (HTTP {status}: {(body or {}).get('error')})",
                "pass --token, set API_TOKEN, or check the ApiTokenSecretArn secret",
            )
        return "401 without the token, 200 with it"

    yield "http: /health/live", live
    yield "http: /health", health
    yield "http: token required", auth_required
    if not read_only:
        yield "http: write round trip", lambda: round_trip(http)


def round_trip(http: Http) -> str:
    """Create, append (one of 1 MiB), read back byte for byte, list, search, delete, 404."""
    cid = f"verify-{secrets.token_hex(6)}"
    marker = f"verifymarker{secrets.token_hex(4)}"
    big = ("0123456789abcdef" * (ONE_MIB // 16))[:-2] + "é"  # 1 MiB of UTF-8, non-ASCII at the end
    sent = [("user", f"deployment check {marker}"), ("assistant", big)]
    created = False
    try:
        status, body = http.call("POST", "/conversations", {"conversation_id": cid, "title": "deployment check"})
        _expect(status, 201, "create", body)
        created = True
        for role, content in sent:
            status, body = http.call("POST", f"/conversations/{cid}/messages", {"role": role, "content": content})
            _expect(status, 201, f"append {role}", body)
        status, body = http.call("GET", f"/conversations/{cid}")
        _expect(status, 200, "read", body)
        got = [(m["role"], m["content"]) for m in body["messages"]]
        if got != sent:
            raise CheckFailed("messages read back differ from those written", "data is being altered or lost")
        status, body = http.call("GET", "/conversations?limit=100")
        _expect(status, 200, "list", body)
        if cid not in [c["conversation_id"] for c in body["items"]]:
            raise CheckFailed("the new conversation is not in the recent list")
        status, body = http.call("GET", f"/search?q={marker}")
        _expect(status, 200, "search", body)
        if cid not in [hit["conversation_id"] for hit in body["items"]]:
            raise CheckFailed("full-text search did not find the new message")
        status, body = http.call("DELETE", f"/conversations/{cid}")
        _expect(status, 204, "delete", body)
        created = False
        status, body = http.call("GET", f"/conversations/{cid}")
        _expect(status, 404, "read after delete", body)
        return "create, append (incl. 1 MiB), read back exact, list, search, delete, 404"
    finally:
        if created:
            http.call("DELETE", f"/conversations/{cid}")


def _expect(status: int, wanted: int, step: str, body: Any) -> None:
    if status != wanted:
        error = (body or {}).get("error") if isinstance(body, dict) else None
        hint = {
            401: "the API token was refused",
            503: "the database is unavailable",
            413: "the body limit is below 1 MiB",
        }.get(status, "read the service log group")
        raise CheckFailed(f"{step}: HTTP {status} ({error}), expected {wanted}", hint)


# ---------------------------------------------------------------- AWS


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
    profile = target.profile or target.output(outputs.PROFILE) or "dev"

    def stacks() -> str:
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

    def ecs_service() -> str:
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

    def targets() -> str:
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

    def database() -> str:
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
        if bool(instance.get("MultiAZ")) != want_multi_az:
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
            f"encrypted, private, MultiAZ={instance.get('MultiAZ')}, force_ssl on, "
            f"CA {instance.get('CACertificateIdentifier')} trusted"
        )

    def rotation() -> str:
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

    def alarms() -> str:
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

    yield "aws: stacks", stacks
    yield "aws: ecs service", ecs_service
    yield "aws: target health", targets
    yield "aws: rds instance", database
    yield "aws: secret rotation", rotation
    yield "aws: alarms", alarms


# ---------------------------------------------------------------- preflight (before any deploy)

BOOTSTRAP_STACK = "CDKToolkit"
# The bootstrap version aws-cdk-lib 2.x's default synthesizer requires (its templates check it).
MIN_BOOTSTRAP_VERSION = 6
ECS_SERVICE_LINKED_ROLE = "AWSServiceRoleForECS"
DOCKER_COMMAND = ("docker", "info", "--format", "{{.ServerVersion}}")


def preflight_checks(
    aws: Aws,
    *,
    profile: str,
    certificate_arn: str | None,
    docker_command: tuple[str, ...] = DOCKER_COMMAND,
) -> Iterator[tuple[str, Callable[[], str]]]:
    """What a first ``cdk deploy`` into an account needs, checked before it starts."""
    region = aws.session.region_name
    identity: dict[str, str] = {}

    def credentials() -> str:
        if not region:
            raise CheckFailed("no AWS region", "set AWS_REGION, or pass --region")
        if aws.session.get_credentials() is None:
            raise CheckFailed("no AWS credentials found", "run `aws configure`, `aws sso login`, or set AWS_PROFILE")
        try:
            identity.update(aws.client("sts").get_caller_identity())
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; the code is enough
            raise CheckFailed(
                f"the credentials are refused ({_aws_error(exc)})", "refresh them: `aws sso login` or new keys"
            ) from None
        return f"account {identity['Account']} in {region} as {identity['Arn']}"

    def account() -> None:
        if not identity:
            raise CheckSkipped("not checked: no usable credentials and region (see the first row)")

    def bootstrap() -> str:
        account()
        fix = f"npx cdk bootstrap aws://{identity.get('Account', 'ACCOUNT')}/{region}"
        try:
            stack = aws.client("cloudformation").describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"][0]
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"no {BOOTSTRAP_STACK} stack in {region} ({_aws_error(exc)})", fix) from None
        status = stack["StackStatus"]
        # UPDATE_ROLLBACK_COMPLETE is a working stack; ROLLBACK_COMPLETE is a bootstrap that never worked.
        if not status.endswith("_COMPLETE") or status in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
            raise CheckFailed(f"{BOOTSTRAP_STACK} is {status}", fix)
        found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}.get("BootstrapVersion")
        if found is None or int(found) < MIN_BOOTSTRAP_VERSION:
            raise CheckFailed(f"bootstrap version {found}, at least {MIN_BOOTSTRAP_VERSION} needed", fix)
        return f"{BOOTSTRAP_STACK} {status}, version {found}"

    def ecs_role() -> str:
        account()
        try:
            aws.client("iam").get_role(RoleName=ECS_SERVICE_LINKED_ROLE)
        except Exception as exc:  # noqa: BLE001
            if _aws_error(exc) != "NoSuchEntity":
                raise CheckFailed(f"cannot read IAM role {ECS_SERVICE_LINKED_ROLE} ({_aws_error(exc)})") from None
            raise CheckFailed(
                f"{ECS_SERVICE_LINKED_ROLE} does not exist (the first ECS service in an account can fail on it)",
                "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com",
            ) from None
        return f"{ECS_SERVICE_LINKED_ROLE} exists"

    def docker() -> str:
        import subprocess

        try:
            answer = subprocess.run(  # noqa: S603 - a fixed command, no shell
                list(docker_command), capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckFailed(
                f"`{' '.join(docker_command[:2])}` did not run ({type(exc).__name__})",
                "install Docker (cdk deploy builds the service image with it) and start it",
            ) from None
        if answer.returncode != 0:
            reason = (answer.stderr or answer.stdout).strip().splitlines()
            raise CheckFailed(
                f"Docker does not answer: {reason[-1][:160] if reason else answer.returncode}",
                "start the Docker daemon (cdk deploy builds the service image with it)",
            )
        version = answer.stdout.strip()
        # service/Dockerfile needs BuildKit (its first stage runs on $BUILDPLATFORM, which is how
        # an arm64 image builds without emulation); Docker 23 and later use it unless told not to.
        buildkit = os.environ.get("DOCKER_BUILDKIT")
        if buildkit == "0":
            raise CheckFailed(
                f"Docker {version}, but DOCKER_BUILDKIT=0 selects the legacy builder, which cannot build "
                "service/Dockerfile",
                "unset DOCKER_BUILDKIT (BuildKit is Docker's default builder)",
            )
        major = version.split(".")[0]
        if buildkit != "1" and major.isdigit() and int(major) < 23:
            raise CheckFailed(
                f"Docker {version} builds with the legacy builder by default; service/Dockerfile needs BuildKit",
                "upgrade Docker to 23 or later, or export DOCKER_BUILDKIT=1 (also for Podman, which builds it)",
            )
        return f"Docker {version or 'answers'}, BuildKit"

    def certificate() -> str:
        if not certificate_arn:
            if profile == "prod":
                raise CheckFailed(
                    "the prod profile needs an HTTPS certificate",
                    "request one in ACM in this region and pass --certificate-arn (and -c certificateArn to cdk), "
                    "or accept plain HTTP with -c allowPlainHttp=true",
                )
            return "none given: the load balancer serves plain HTTP (fine for dev)"
        account()
        cert_region = certificate_arn.split(":")[3] if certificate_arn.count(":") >= 5 else ""
        if cert_region != region:
            raise CheckFailed(
                f"the certificate is in {cert_region or 'an unknown region'}, the stacks deploy to {region}",
                f"a load balancer needs a certificate from ACM in {region}: request or import one there",
            )
        try:
            cert = aws.client("acm").describe_certificate(CertificateArn=certificate_arn)["Certificate"]
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(
                f"cannot read the certificate ({_aws_error(exc)})", "check the ARN and the account"
            ) from None
        if cert.get("Status") != "ISSUED":
            raise CheckFailed(
                f"the certificate for {cert.get('DomainName')} is {cert.get('Status')}, not ISSUED",
                "finish its validation (DNS record) in ACM, then run the preflight again",
            )
        return f"{cert.get('DomainName')} ISSUED in {region}"

    yield "preflight: credentials and region", credentials
    yield "preflight: cdk bootstrap", bootstrap
    yield "preflight: ecs service-linked role", ecs_role
    yield "preflight: docker", docker
    yield "preflight: certificate", certificate


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
                return parameter.get("ParameterValue")
    return None


def _need(target: Target, key: str) -> str:
    value = target.output(key)
    if not value:
        raise CheckFailed(f"stack output {key} not found", "deploy the stacks, or pass the right --profile")
    return value


def _aws_error(exc: Exception) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code or type(exc).__name__


# ---------------------------------------------------------------- running


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> list[Check]:
    results = []
    for name, fn in checks:
        started = time.monotonic()
        try:
            detail = fn()
            results.append(Check(name, PASS, detail, time.monotonic() - started))
        except CheckFailed as failure:
            results.append(Check(name, FAIL, failure.detail, time.monotonic() - started, failure.hint))
        except CheckSkipped as skipped:
            results.append(Check(name, SKIP, str(skipped), time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failed check, with its type
            results.append(
                Check(
                    name,
                    FAIL,
                    f"{type(exc).__name__}: {str(exc)[:200]}",
                    time.monotonic() - started,
                    "unexpected error in the check",
                )
            )
    return results


def verify(
    target: Target,
    *,
    aws: Aws | None,
    read_only: bool = False,
    wait: float = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Check]:
    schema_version = expected_schema_version()
    if target.output(outputs.SCHEMA_VERSION):
        schema_version = int(target.output(outputs.SCHEMA_VERSION) or 0)
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        attempt += 1
        checks: list[tuple[str, Callable[[], str]]] = []
        if aws is not None:
            checks += list(aws_checks(aws, target))
        checks += list(http_checks(target, read_only=read_only, schema_version=schema_version))
        results = run_checks(checks)
        failing = [r for r in results if r.result == FAIL]
        left = deadline - time.monotonic()
        if not failing or left <= 0:
            return results
        if progress:
            progress(
                f"attempt {attempt}: {len(failing)} failing ({', '.join(r.name for r in failing)}); "
                f"retrying for {left:.0f}s more"
            )
        time.sleep(min(15.0, max(1.0, left)))


def render_table(results: list[Check]) -> str:
    rows = [("CHECK", "RESULT", "DETAIL", "TIME")]
    for r in results:
        detail = r.detail if not r.hint or r.result == PASS else f"{r.detail} -> next: {r.hint}"
        rows.append((r.name, r.result, detail, f"{r.seconds:.2f}s"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    passed = sum(r.result == PASS for r in results)
    skipped = sum(r.result == SKIP for r in results)
    failed = len(results) - passed - skipped
    lines.append(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines)


def resolve_target(args: argparse.Namespace, aws: Aws | None) -> Target:
    stack_outputs: dict[str, dict[str, str]] = {}
    if args.outputs_file:
        try:
            stack_outputs = json.loads(Path(args.outputs_file).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read outputs file {args.outputs_file}: {exc}") from None
    elif aws is not None:
        stack_outputs = load_stack_outputs(aws, args.profile)
    target = Target(url=args.url or "", profile=args.profile, stack_outputs=stack_outputs)
    if not target.url:
        target.url = target.output(outputs.SERVICE_URL) or ""
    if not target.url:
        raise SystemExit("no service URL: pass --url, or deploy the stacks (output ServiceUrl)")
    target.token = args.token or os.environ.get("API_TOKEN") or None
    if target.token is None and aws is not None and target.output(outputs.API_TOKEN_SECRET_ARN):
        secret = aws.client("secretsmanager").get_secret_value(SecretId=target.output(outputs.API_TOKEN_SECRET_ARN))
        target.token = secret["SecretString"]
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--outputs-file", help="the JSON written by `cdk deploy --outputs-file`")
    source.add_argument("--url", help="service base URL; with no AWS options, only the HTTP checks run")
    parser.add_argument("--profile", default=None, help="deployment profile whose stacks to check (dev, lean, prod)")
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--token", help="API token (default: API_TOKEN, else the ApiTokenSecretArn secret)")
    parser.add_argument("--read-only", action="store_true", help="skip the write round trip (production)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep re-checking for up to SECONDS while a deploy settles",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--preflight",
        action="store_true",
        help="before a first deploy: credentials, region, CDK bootstrap, the ECS service-linked role, Docker, "
        "the certificate",
    )
    parser.add_argument("--certificate-arn", help="with --preflight: the certificateArn you will deploy with")
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must not be negative")
    if args.preflight and (args.url or args.outputs_file):
        parser.error("--preflight checks the account, not a deployment: it takes no --url or --outputs-file")

    local = bool(args.url) and not args.profile and not args.outputs_file
    aws = None
    if not local:
        import boto3

        args.profile = args.profile or "dev"
        # The region as the CDK CLI resolves it: AWS_REGION first (boto3 alone reads only
        # AWS_DEFAULT_REGION and the profile), so preflight and verify look where cdk deploys.
        aws = Aws(boto3.session.Session(region_name=args.region or os.environ.get("AWS_REGION") or None))
    if args.preflight:
        assert aws is not None
        checks = list(preflight_checks(aws, profile=args.profile, certificate_arn=args.certificate_arn))
        return report(run_checks(checks), args.json, url=None)
    if aws is not None and aws.session.get_credentials() is None:
        print(
            "no AWS credentials found: run `aws configure` or `aws sso login` (or set AWS_PROFILE), "
            "or pass --url to run only the HTTP checks",
            file=sys.stderr,
        )
        return 2
    target = resolve_target(args, aws)
    results = verify(
        target,
        aws=aws,
        read_only=args.read_only,
        wait=args.wait,
        progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True),
    )
    return report(results, args.json, url=target.url)


def report(results: list[Check], as_json: bool, *, url: str | None) -> int:
    """Print the results (a table, or JSON); the exit status: 0 only when every check passed."""
    if as_json:
        print(
            json.dumps(
                {"ok": all(r.result == PASS for r in results), "url": url, "checks": [asdict(r) for r in results]},
                indent=2,
            )
        )
    else:
        print(render_table(results))
    return 0 if all(r.result == PASS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
