"""verify_deployment.py --preflight against moto: what a first `cdk deploy` into an account
needs, each missing piece named with the command that fixes it."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from scripts import verify_deployment as verify

REGION = "eu-west-1"
DOCKER_UP = ("echo", "28.2.2")
DOCKER_DOWN = ("sh", "-c", "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2; exit 1")


@pytest.fixture
def account() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def ready(session: boto3.session.Session) -> None:
    """An account prepared as the README says: bootstrapped, with ECS's service-linked role."""
    session.client("cloudformation").create_stack(
        StackName="CDKToolkit",
        TemplateBody=json.dumps(
            {
                "Resources": {"StagingBucket": {"Type": "AWS::S3::Bucket"}},
                "Outputs": {"BootstrapVersion": {"Value": "29"}},
            }
        ),
    )
    session.client("iam").create_role(
        RoleName="AWSServiceRoleForECS", Path="/aws-service-role/ecs.amazonaws.com/", AssumeRolePolicyDocument="{}"
    )


def issued_certificate(session: boto3.session.Session, domain: str = "api.example.com") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    imported = session.client("acm").import_certificate(
        Certificate=cert.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return str(imported["CertificateArn"])


def preflight(
    session: boto3.session.Session,
    *,
    profile: str = "dev",
    certificate_arn: str | None = None,
    docker: tuple[str, ...] = DOCKER_UP,
) -> dict[str, verify.Check]:
    checks = verify.preflight_checks(
        verify.Aws(session), profile=profile, certificate_arn=certificate_arn, docker_command=docker
    )
    return {r.name.removeprefix("preflight: "): r for r in verify.run_checks(list(checks))}


def test_a_prepared_account_passes_every_check(account: boto3.session.Session) -> None:
    ready(account)
    rows = preflight(account, profile="prod", certificate_arn=issued_certificate(account))
    assert {name: r.result for name, r in rows.items()} == {
        "credentials and region": "PASS",
        "cdk bootstrap": "PASS",
        "ecs service-linked role": "PASS",
        "docker": "PASS",
        "certificate": "PASS",
        "fixed settings": "PASS",
        "restore": "PASS",
    }, verify.render_table(list(rows.values()))
    assert "123456789012" in rows["credentials and region"].detail and REGION in rows["credentials and region"].detail
    assert "version 29" in rows["cdk bootstrap"].detail
    assert "api.example.com ISSUED" in rows["certificate"].detail


def test_a_fresh_account_fails_each_check_with_its_fix(account: boto3.session.Session) -> None:
    rows = preflight(account, profile="prod", docker=DOCKER_DOWN)
    assert rows["credentials and region"].result == "PASS"
    assert rows["cdk bootstrap"].result == "FAIL"
    assert rows["cdk bootstrap"].hint == f"npx cdk bootstrap aws://123456789012/{REGION}"
    assert rows["ecs service-linked role"].result == "FAIL"
    assert rows["ecs service-linked role"].hint == (
        "aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com"
    )
    assert rows["docker"].result == "FAIL" and "Cannot connect to the Docker daemon" in rows["docker"].detail
    assert rows["certificate"].result == "FAIL" and "allowPlainHttp" in rows["certificate"].hint


def test_an_old_bootstrap_is_refused(account: boto3.session.Session) -> None:
    ready(account)
    account.client("cloudformation").update_stack(
        StackName="CDKToolkit",
        TemplateBody=json.dumps(
            {
                "Resources": {"StagingBucket": {"Type": "AWS::S3::Bucket"}},
                "Outputs": {"BootstrapVersion": {"Value": "4"}},
            }
        ),
    )
    row = preflight(account)["cdk bootstrap"]
    assert row.result == "FAIL" and "bootstrap version 4, at least 6 needed" in row.detail


def test_a_certificate_not_issued_or_in_another_region_is_refused(account: boto3.session.Session) -> None:
    ready(account)
    pending = account.client("acm").request_certificate(DomainName="api.example.com")["CertificateArn"]
    row = preflight(account, certificate_arn=pending)["certificate"]
    assert row.result == "FAIL" and "PENDING_VALIDATION, not ISSUED" in row.detail
    elsewhere = issued_certificate(boto3.session.Session(region_name="us-east-1"))
    row = preflight(account, certificate_arn=elsewhere)["certificate"]
    assert row.result == "FAIL" and f"in us-east-1, the stacks deploy to {REGION}" in row.detail


def test_dev_without_a_certificate_is_fine(account: boto3.session.Session) -> None:
    ready(account)
    assert preflight(account)["certificate"].result == "PASS"


def test_no_region_and_no_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    row = preflight(boto3.session.Session(region_name=REGION))["credentials and region"]
    assert row.result == "FAIL" and row.detail == "no AWS credentials found"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    rows = preflight(boto3.session.Session())
    assert rows["credentials and region"].result == "FAIL" and rows["credentials and region"].detail == "no AWS region"
    # What depends on the account is not checked (and not reported as a second failure)
    for name in ("cdk bootstrap", "ecs service-linked role"):
        assert rows[name].result == "SKIP" and "see the first row" in rows[name].detail


def test_the_region_is_resolved_as_the_cdk_cli_does_aws_region_first(
    account: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 alone ignores AWS_REGION; the CDK CLI honours it, so preflight must look there too."""
    asked: list[str | None] = []

    def session(region_name: str | None = None) -> boto3.session.Session:
        asked.append(region_name)
        return account

    monkeypatch.setattr(boto3.session, "Session", session)
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    verify.main(["--preflight"])
    assert asked == ["eu-west-2"]


def test_cli_preflight_prints_the_table_and_exits_1_on_a_failure(
    account: boto3.session.Session, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(boto3.session, "Session", lambda region_name=None: account)
    assert verify.main(["--preflight", "--profile", "dev"]) == 1
    out = capsys.readouterr().out
    assert "preflight: cdk bootstrap" in out and "npx cdk bootstrap" in out
    assert "preflight: ecs service-linked role" in out


@pytest.mark.parametrize(
    ("version", "env", "result", "words"),
    [
        ("28.2.2", {}, "PASS", "BuildKit"),
        ("28.2.2", {"DOCKER_BUILDKIT": "0"}, "FAIL", "legacy builder"),
        ("20.10.24", {}, "FAIL", "needs BuildKit"),
        ("20.10.24", {"DOCKER_BUILDKIT": "1"}, "PASS", "BuildKit"),
    ],
)
def test_docker_must_build_with_buildkit(
    account: boto3.session.Session,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    env: dict[str, Any],
    result: str,
    words: str,
) -> None:
    """service/Dockerfile cross-builds (arm64 on an x86 machine) only with BuildKit."""
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    row = preflight(account, docker=("echo", version))["docker"]
    assert row.result == result and words in row.detail, row


def test_a_setting_the_deployed_stacks_fix_is_refused_with_the_way_back(account: boto3.session.Session) -> None:
    """The Network stack as deployed with -c maxAzs=3 (a subnet in zone c); this deploy's
    context has the dev default, 2 zones: the preflight stops it before CloudFormation does."""
    ready(account)
    cloudformation = account.client("cloudformation")
    network = {
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "SubnetC": {
                "Type": "AWS::EC2::Subnet",
                "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.3.0/24", "AvailabilityZone": f"{REGION}c"},
            },
        }
    }
    cloudformation.create_stack(StackName="Conversations-dev-Network", TemplateBody=json.dumps(network))
    data = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    cloudformation.create_stack(StackName="Conversations-dev-Data", TemplateBody=json.dumps(data))
    row = preflight(account)["fixed settings"]
    assert row.result == "FAIL" and f"subnets in {REGION}c are deployed" in row.detail
    assert row.hint == "keep maxAzs at 3 or more (it may only grow)"
    checks = verify.preflight_checks(
        verify.Aws(account), profile="dev", certificate_arn=None, docker_command=DOCKER_UP, context={"maxAzs": "3"}
    )
    rows = {r.name: r for r in verify.run_checks(list(checks))}
    assert rows["preflight: fixed settings"].result == "PASS"
