"""Before a first deploy: credentials and region, the CDK bootstrap, the ECS service-linked role,
Docker with BuildKit, the certificate."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from .aws import Aws
from .checks import CheckFailed, CheckSkipped, _aws_error

BOOTSTRAP_STACK = "CDKToolkit"
# The bootstrap version aws-cdk-lib 2.x's default synthesizer requires (its templates check it).
MIN_BOOTSTRAP_VERSION = 6
ECS_SERVICE_LINKED_ROLE = "AWSServiceRoleForECS"
DOCKER_COMMAND = ("docker", "info", "--format", "{{.ServerVersion}}")


def preflight_checks(  # noqa: C901, PLR0915 - owed: #24, one function per check as aws.py has
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
