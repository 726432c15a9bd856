"""Before a deploy: credentials and region, the CDK bootstrap, the ECS service-linked role,
Docker with BuildKit, the certificate; and, against what is deployed, the settings that cannot
change (database kind, zones, proxy zones, embedding dimension) and a restored database kept."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stacks import outputs
from stacks.config import AURORA, DEFAULT_REGION, INSTANCE, context_value, default_zones, setting_value

from .aws import Aws
from .checks import CheckFailed, CheckSkipped, _aws_error

BOOTSTRAP_STACK = "CDKToolkit"
# The bootstrap version aws-cdk-lib 2.x's default synthesizer requires (its templates check it).
MIN_BOOTSTRAP_VERSION = 6
ECS_SERVICE_LINKED_ROLE = "AWSServiceRoleForECS"
DOCKER_COMMAND = ("docker", "info", "--format", "{{.ServerVersion}}")


@dataclass
class _Account:
    """The account the preflight looks at: its session's region, and who the credentials are
    (filled by the first check; the others are skipped without it)."""

    aws: Aws
    region: str | None
    identity: dict[str, str] = field(default_factory=dict)

    def require_identity(self) -> None:
        if not self.identity:
            raise CheckSkipped("not checked: no usable credentials and region (see the first row)")


def preflight_checks(
    aws: Aws,
    *,
    profile: str,
    certificate_arn: str | None,
    docker_command: tuple[str, ...] = DOCKER_COMMAND,
    context: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, Callable[[], str]]]:
    """What a ``cdk deploy`` into an account needs, checked before it starts; ``context`` is the
    one it deploys with (cdk.json's)."""
    context = context or {}
    snapshot = context_value(context, "restoreSnapshot", profile) or None
    ctx = _Account(aws, aws.session.region_name)
    yield "preflight: credentials and region", functools.partial(_check_credentials, ctx)
    yield "preflight: cdk bootstrap", functools.partial(_check_bootstrap, ctx)
    yield "preflight: ecs service-linked role", functools.partial(_check_ecs_role, ctx)
    yield "preflight: docker", functools.partial(_check_docker, docker_command)
    yield "preflight: certificate", functools.partial(_check_certificate, ctx, profile, certificate_arn)
    yield "preflight: fixed settings", functools.partial(_check_fixed_settings, ctx, profile, context)
    yield "preflight: restore", functools.partial(_check_restore, ctx, profile, snapshot)


def _check_credentials(ctx: _Account) -> str:
    if not ctx.region:
        raise CheckFailed("no AWS region", "set AWS_REGION, or pass --region")
    if ctx.aws.session.get_credentials() is None:
        raise CheckFailed("no AWS credentials found", "run `aws configure`, `aws sso login`, or set AWS_PROFILE")
    try:
        ctx.identity.update(ctx.aws.client("sts").get_caller_identity())
    except Exception as exc:  # noqa: BLE001 - botocore raises many types; the code is enough
        raise CheckFailed(
            f"the credentials are refused ({_aws_error(exc)})", "refresh them: `aws sso login` or new keys"
        ) from None
    return f"account {ctx.identity['Account']} in {ctx.region} as {ctx.identity['Arn']}"


def _check_bootstrap(ctx: _Account) -> str:
    ctx.require_identity()
    fix = f"npx cdk bootstrap aws://{ctx.identity.get('Account', 'ACCOUNT')}/{ctx.region}"
    try:
        stack = ctx.aws.client("cloudformation").describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"][0]
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"no {BOOTSTRAP_STACK} stack in {ctx.region} ({_aws_error(exc)})", fix) from None
    status = stack["StackStatus"]
    # UPDATE_ROLLBACK_COMPLETE is a working stack; ROLLBACK_COMPLETE is a bootstrap that never worked.
    if not status.endswith("_COMPLETE") or status in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        raise CheckFailed(f"{BOOTSTRAP_STACK} is {status}", fix)
    found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}.get("BootstrapVersion")
    if found is None or int(found) < MIN_BOOTSTRAP_VERSION:
        raise CheckFailed(f"bootstrap version {found}, at least {MIN_BOOTSTRAP_VERSION} needed", fix)
    return f"{BOOTSTRAP_STACK} {status}, version {found}"


def _check_ecs_role(ctx: _Account) -> str:
    ctx.require_identity()
    try:
        ctx.aws.client("iam").get_role(RoleName=ECS_SERVICE_LINKED_ROLE)
    except Exception as exc:  # noqa: BLE001
        if _aws_error(exc) != "NoSuchEntity":
            raise CheckFailed(f"cannot read IAM role {ECS_SERVICE_LINKED_ROLE} ({_aws_error(exc)})") from None
        raise CheckFailed(
            f"{ECS_SERVICE_LINKED_ROLE} does not exist (the first ECS service in an account can fail on it)",
            "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com",
        ) from None
    return f"{ECS_SERVICE_LINKED_ROLE} exists"


def _check_docker(docker_command: tuple[str, ...]) -> str:
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


def _check_certificate(ctx: _Account, profile: str, certificate_arn: str | None) -> str:
    if not certificate_arn:
        if profile == "prod":
            raise CheckFailed(
                "the prod profile needs an HTTPS certificate",
                "request one in ACM in this region and pass --certificate-arn (and -c certificateArn to cdk), "
                "or accept plain HTTP with -c allowPlainHttp=true",
            )
        return "none given: the load balancer serves plain HTTP (fine for dev)"
    ctx.require_identity()
    cert_region = certificate_arn.split(":")[3] if certificate_arn.count(":") >= 5 else ""
    if cert_region != ctx.region:
        raise CheckFailed(
            f"the certificate is in {cert_region or 'an unknown region'}, the stacks deploy to {ctx.region}",
            f"a load balancer needs a certificate from ACM in {ctx.region}: request or import one there",
        )
    try:
        cert = ctx.aws.client("acm").describe_certificate(CertificateArn=certificate_arn)["Certificate"]
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"cannot read the certificate ({_aws_error(exc)})", "check the ARN and the account") from None
    if cert.get("Status") != "ISSUED":
        raise CheckFailed(
            f"the certificate for {cert.get('DomainName')} is {cert.get('Status')}, not ISSUED",
            "finish its validation (DNS record) in ACM, then run the preflight again",
        )
    return f"{cert.get('DomainName')} ISSUED in {ctx.region}"


def _check_restore(ctx: _Account, profile: str, snapshot: str | None) -> str:
    """A database restored from a snapshot (make restore) must be deployed with that snapshot
    named again: CloudFormation would otherwise replace it with an empty one (or another)."""
    ctx.require_identity()
    stack = outputs.stack_names(profile).data
    try:
        found = ctx.aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except Exception as exc:  # noqa: BLE001
        if "does not exist" in str(exc):
            restoring = f", created from snapshot {snapshot}" if snapshot else ""
            return f"{stack} is not deployed yet: a new database{restoring}"
        raise CheckFailed(f"cannot read stack {stack} ({_aws_error(exc)})") from None
    deployed = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}.get(outputs.RESTORED_FROM)
    if deployed and not snapshot:
        raise CheckFailed(
            f"{stack}'s database was restored from {deployed}; a deploy without restoreSnapshot would replace "
            "it with an empty database",
            f'put it back in cdk.json\'s context: "restoreSnapshot": {{"{profile}": "{deployed}"}}',
        )
    if deployed and snapshot != deployed:
        return f"this deploy replaces {stack}'s database (restored from {deployed}) with one from {snapshot}"
    if snapshot and snapshot != deployed:
        return f"this deploy replaces {stack}'s database with one restored from {snapshot}"
    return f"restored from {deployed}: kept" if deployed else "not a restored database"


def _template(ctx: _Account, stack: str) -> dict[str, Any]:
    body = ctx.aws.client("cloudformation").get_template(StackName=stack)["TemplateBody"]
    return dict(json.loads(body) if isinstance(body, str) else body)


def _check_fixed_settings(ctx: _Account, profile: str, context: Mapping[str, Any]) -> str:
    """The keys a deployed stack cannot change, compared with what it was deployed with (synth
    cannot: it never asks AWS)."""
    ctx.require_identity()
    names = outputs.stack_names(profile)
    try:
        network, data = _template(ctx, names.network), _template(ctx, names.data)
    except Exception as exc:  # noqa: BLE001
        if "does not exist" in str(exc):
            return f"{names.data} is not deployed yet: every setting is still free"
        raise CheckFailed(f"cannot read the deployed templates ({_aws_error(exc)})") from None
    changes = fixed_setting_changes(network, data, context, profile, ctx.region or DEFAULT_REGION)
    if changes:
        raise CheckFailed("; ".join(problem for problem, _ in changes), "; ".join(fix for _, fix in changes))
    return "database kind, zones, proxy zones and embedding dimension as deployed"


def fixed_setting_changes(
    network: Mapping[str, Any], data: Mapping[str, Any], context: Mapping[str, Any], profile: str, region: str
) -> list[tuple[str, str]]:
    """What this deploy's context changes that the deployed templates fix: (problem, way out)."""
    found: list[tuple[str, str]] = []
    data_resources = list(data.get("Resources", {}).values())
    types = {r.get("Type") for r in data_resources}
    if types & {"AWS::RDS::DBCluster", "AWS::RDS::DBInstance"}:
        deployed = AURORA if "AWS::RDS::DBCluster" in types else INSTANCE
        kind = setting_value(context, "database", profile)
        if kind != deployed:
            found.append(
                (
                    f"the deployed database is {deployed}; database={kind} would be a new, empty one",
                    f'keep "database": "{deployed}" in cdk.json (moving is a data migration: README, Scaling)',
                )
            )
    for schema in (r for r in data_resources if r.get("Type") == "Custom::ConversationSchema"):
        deployed_dimension = schema.get("Properties", {}).get("EmbeddingDimension")
        dimension = setting_value(context, "embeddingDimension", profile)
        if deployed_dimension is not None and int(deployed_dimension) != dimension:
            found.append(
                (
                    f"the embedding column has {deployed_dimension} dimensions; embeddingDimension={dimension} "
                    "would fail the schema update",
                    f'keep "embeddingDimension": {deployed_dimension} in cdk.json',
                )
            )
    deployed_zones = {
        r["Properties"]["AvailabilityZone"]
        for r in network.get("Resources", {}).values()
        if r.get("Type") == "AWS::EC2::Subnet" and isinstance(r.get("Properties", {}).get("AvailabilityZone"), str)
    }
    zones = setting_value(context, "availabilityZones", profile) or default_zones(region)
    used = tuple(zones[: setting_value(context, "maxAzs", profile)])
    gone = sorted(deployed_zones - set(used))
    if gone:
        if deployed_zones <= set(zones):
            fix = f"keep maxAzs at {max(zones.index(z) for z in deployed_zones) + 1} or more (it may only grow)"
        else:
            fix = f"keep availabilityZones as deployed: {','.join(sorted(deployed_zones))}"
        found.append(
            (
                f"subnets in {', '.join(gone)} are deployed; this deploy uses {', '.join(used)} and would delete "
                "subnets the database and tasks use",
                fix,
            )
        )
    if setting_value(context, "rdsProxy", profile):
        for proxy in (r for r in data_resources if r.get("Type") == "AWS::RDS::DBProxy"):
            deployed_azs = len(proxy.get("Properties", {}).get("VpcSubnetIds", []))
            proxy_azs = setting_value(context, "proxyAzs", profile)
            if deployed_azs and deployed_azs != proxy_azs:
                found.append(
                    (
                        f"RDS Proxy is deployed in {deployed_azs} zones; proxyAzs={proxy_azs} would replace it, "
                        "and its fixed name refuses that",
                        f'keep "proxyAzs": {deployed_azs} in cdk.json',
                    )
                )
    return found
