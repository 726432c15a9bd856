"""The deployment config: profiles in code, context only selects and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError, DeploymentConfig, load_config
from tests.support.templates import CERT, PROD

ENV = {"CDK_DEFAULT_REGION": "eu-west-1"}


def test_dev_is_the_default_and_cheap() -> None:
    config = load_config({}, ENV)
    assert config.profile == "dev"
    assert (config.network.nat_gateways, config.database.instance_class, config.database.multi_az) == (
        1,
        "t4g.micro",
        False,
    )
    assert config.database.backup_retention_days == 7 and not config.database.performance_insights
    assert config.account is None and config.region == "eu-west-1"
    assert config.network.azs == ("eu-west-1a", "eu-west-1b")


def test_lean_gives_up_nat_and_redundancy_not_the_security_bar() -> None:
    lean, dev = load_config({"profile": "lean"}, ENV), load_config({}, ENV)
    assert lean.network.nat_gateways == 0 and lean.network.tasks_in_public_subnets
    assert lean.network.endpoint_azs == ("eu-west-1a",) and dev.network.endpoint_azs == ("eu-west-1a", "eu-west-1b")
    assert (lean.service.task_architecture, lean.service.fargate_spot, lean.service.container_insights) == (
        "arm64",
        True,
        False,
    )
    assert (lean.network.flow_logs, lean.database.backup_retention_days) == ("reject", 1)

    # what it keeps from dev: the database, the task size, HTTPS when a certificate is given
    def kept(c: DeploymentConfig) -> tuple[object, ...]:
        d, s = c.database, c.service
        return (d.instance_class, d.allocated_storage_gib, s.cpu, s.memory_mib, s.allowed_cidrs, c.network.max_azs)

    assert kept(lean) == kept(dev)
    assert (
        not dev.network.tasks_in_public_subnets
        and not dev.service.fargate_spot
        and dev.service.task_architecture == "x86_64"
    )
    # each lean choice is a key any profile can take
    dev_without_nat = load_config({"natGateways": "0", "secretsEndpointAzs": "3"}, ENV)
    assert dev_without_nat.network.tasks_in_public_subnets and dev_without_nat.network.endpoint_azs == dev.network.azs


def test_prod_is_safe() -> None:
    config = load_config(PROD, ENV)
    assert config.database.multi_az and config.database.deletion_protection and config.database.termination_protection
    assert config.database.backup_retention_days >= 14
    assert config.network.nat_gateways == len(config.network.azs) == 3
    assert config.database.performance_insights
    assert config.service.min_tasks >= 2


def test_overrides_by_context() -> None:
    config = load_config(
        {
            "profile": "prod",
            "dbInstanceClass": "db.r7g.xlarge",
            "minTasks": "4",
            "cpu": "2048",
            "memoryMiB": 4096,
            "natGateways": "1",
            "certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abcd-ef",
            "domainName": "API.example.com.",
            "allowedCidrs": "10.0.0.0/8, 192.0.2.0/24",
            "alarmEmail": "ops@example.com",
            "embeddingDimension": "768",
            "availabilityZones": "eu-west-1b,eu-west-1c,eu-west-1a",
        },
        {**ENV, "CDK_DEFAULT_ACCOUNT": "111122223333"},
    )
    assert config.database.instance_class == "r7g.xlarge"
    assert (
        config.service.min_tasks,
        config.service.cpu,
        config.service.memory_mib,
        config.network.nat_gateways,
    ) == (4, 2048, 4096, 1)
    assert config.service.allowed_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert config.service.domain_name == "api.example.com"
    assert config.database.embedding_dimension == 768 and config.alarms.email == "ops@example.com"
    assert config.network.azs == ("eu-west-1b", "eu-west-1c", "eu-west-1a") and config.account == "111122223333"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"profile": "staging"}, "profile"),
        ({"dbInstanceClass": "t3.micro"}, "Graviton"),
        ({"dbInstanceClass": "big"}, "dbInstanceClass"),
        ({"minTasks": "zero"}, "minTasks"),
        ({"cpu": "300"}, "cpu"),
        ({"memoryMiB": "8192"}, "not valid with cpu 256"),
        ({"allowedCidrs": "10.0.0.1/8"}, "invalid CIDR"),
        ({"certificateArn": "arn:aws:iam::1:cert"}, "certificateArn"),
        ({"alarmEmail": "nobody"}, "alarmEmail"),
        ({"certificateArn": CERT}, "'certificateArn' needs 'domainName', the name the certificate covers"),
        ({"domainName": "not a name"}, "domainName' must be a DNS name"),
        ({"domainName": "api.example.com", "hostedZoneId": "Z0123456789ABC"}, "go together"),
        ({"hostedZoneId": "nope", "hostedZoneName": "example.com"}, "hosted zone id"),
        (
            {"domainName": "api.example.org", "hostedZoneId": "Z0123456789ABC", "hostedZoneName": "example.com"},
            "is not in the hosted zone 'example.com'",
        ),
        ({"embeddingDimension": "4096"}, "embeddingDimension"),
        ({"natGateways": "4"}, "natGateways"),
        ({"taskArchitecture": "sparc"}, "taskArchitecture' must be one of x86_64, arm64"),
        ({"flowLogs": "some"}, "flowLogs"),
        ({"secretsEndpointAzs": "0"}, "secretsEndpointAzs"),
        ({"fargateSpot": "maybe"}, "fargateSpot"),
        ({"minTasks": "5"}, "minTasks \\(5\\) must not be larger than maxTasks \\(3\\)"),
        ({"availabilityZones": "eu-west-1a"}, "at least two"),
        ({"database": "dynamodb"}, "database' must be one of instance, aurora-serverless-v2"),
        ({"minAcu": "1"}, "applies only with -c database=aurora-serverless-v2"),
        ({"database": "aurora-serverless-v2", "minAcu": "0.3"}, "steps of 0.5"),
        ({"database": "aurora-serverless-v2", "maxAcu": "0"}, "maxAcu' must be between 1 and 256"),
        ({"database": "aurora-serverless-v2", "maxAcu": "300"}, "maxAcu"),
        ({"database": "aurora-serverless-v2", "minAcu": "8", "maxAcu": "4"}, "minAcu \\(8\\) must not be larger"),
        ({"readers": "6"}, "readers' must be between 0 and 5"),
        ({"rdsProxy": "perhaps"}, "rdsProxy"),
    ],
)
def test_invalid_context_is_refused_naming_the_key(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(context, ENV)


def test_scaling_keys_default_to_one_instance_without_proxy_and_aurora_pauses_outside_prod() -> None:
    for profile in ("dev", "lean", "prod"):
        prod = {"allowPlainHttp": "true", "alarmEmail": "ops@example.com"}
        context = {"profile": profile, **(prod if profile == "prod" else {})}
        config = load_config(context, ENV)
        assert (config.database.kind, config.database.readers, config.database.rds_proxy) == ("instance", 0, False)
        aurora = load_config({**context, "database": "aurora-serverless-v2"}, ENV)
        assert aurora.database.aurora and aurora.database.auto_pause == (profile != "prod")
        assert (aurora.database.min_acu, aurora.database.max_acu) == ((2, 16) if profile == "prod" else (0, 4))
    config = load_config({"database": "aurora-serverless-v2", "minAcu": "0.5", "maxAcu": "64", "readers": "2"}, ENV)
    assert (config.database.min_acu, config.database.max_acu, config.database.readers, config.database.auto_pause) == (
        0.5,
        64,
        2,
        False,
    )


def test_region_comes_from_the_cdk_environment() -> None:
    assert load_config({}, {"CDK_DEFAULT_REGION": "us-east-2"}).network.azs == ("us-east-2a", "us-east-2b")
    assert load_config({}, {"AWS_REGION": "ap-southeast-2"}).region == "ap-southeast-2"


def readme_configuration_rows() -> dict[str, list[str]]:
    """The README's deployment-configuration table: context key -> its cells (dev, lean, prod,
    what it does); a row naming two keys (`minAcu` / `maxAcu`) gives each its half of a cell."""
    from tests.infra.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Deployment configuration", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        keys = [k.strip().strip("`") for k in cells[0].split(" / ")]
        for i, key in enumerate(keys):
            parts = [c.split(" / ")[i] if len(keys) > 1 else c for c in cells[1:4]]
            rows[key] = [*parts, cells[4]]
    return rows


def shown(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def test_readme_table_matches_every_declared_context_key() -> None:
    """Each key is declared once (stacks/config.py); the README's table is checked against it:
    the same keys, each profile's default, and which keys a deployed stack may not change."""
    from stacks.config import CONTEXT_KEYS, PROFILES

    rows = readme_configuration_rows()
    assert set(rows) == {"profile", *CONTEXT_KEYS}, "the README's table and stacks/config.py name different keys"
    for key, declared in CONTEXT_KEYS.items():
        *defaults, what = rows[key]
        for profile, cell in zip(PROFILES, defaults, strict=True):
            value = declared.defaults[profile]
            expected = declared.unset if value is None else shown(value)
            assert cell.startswith(expected), f"README: {key}'s {profile} default is {cell!r}, declared {expected}"
        marks = {
            "create-time only": "**Create-time only**",
            "grow only": "**Grow only**",
            "set by make restore": "**Set by make restore**",
        }
        for change, mark in marks.items():
            assert (mark in what) == (declared.change == change), f"README: {key} should say {mark!r} iff {change}"


def test_request_scaling_target_cites_the_recorded_benchmark() -> None:
    import json

    from stacks.config import HTTP_RPS_PER_CORE, requests_per_target_per_minute
    from tests.infra.conftest import ROOT

    runs = sorted(
        p for p in (ROOT / "bench" / "results").glob("*.json") if "quick" not in p.name and "soak" not in p.name
    )
    assert runs, "no full benchmark run is recorded in bench/results/"
    recorded = json.loads(runs[-1].read_text())["http"]["rps_per_core"]
    assert recorded == HTTP_RPS_PER_CORE, "update HTTP_RPS_PER_CORE in stacks/config.py from the latest run"
    dev, prod = load_config({}, ENV), load_config(PROD, ENV)
    assert (
        dev.service.requests_per_target
        == requests_per_target_per_minute(256)
        == int(HTTP_RPS_PER_CORE * 0.25 * 0.6 * 60)
    )
    assert prod.service.requests_per_target == requests_per_target_per_minute(1024)
    assert load_config({"requestsPerTarget": "500"}, ENV).service.requests_per_target == 500
    readme = (ROOT / "README.md").read_text()
    assert (
        f"derived: `{dev.service.requests_per_target}`" in readme
        and f"derived: `{prod.service.requests_per_target}`" in readme
    )


def test_a_typo_in_a_context_key_is_refused_with_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"minTask": "2"}, ENV)
    message = str(refused.value)
    assert "unknown context key 'minTask' (did you mean 'minTasks'?)" in message
    assert "maxTasks" in message and "certificateArn" in message
    # aws-cdk-lib's own keys (feature flags, aws:cdk:...) pass
    load_config({"@aws-cdk/core:checkSecretUsage": True, "aws:cdk:enable-path-metadata": True}, ENV)


def test_a_proxy_in_front_of_a_cluster_that_should_pause_is_refused() -> None:
    """RDS Proxy keeps a connection open to each instance: the cluster would never pause, while
    minAcu 0 configures and prices it as pausing."""
    aurora = {"database": "aurora-serverless-v2", "rdsProxy": "true"}
    with pytest.raises(ConfigError, match="rdsProxy with minAcu 0: RDS Proxy keeps a connection open"):
        load_config(aurora, ENV)
    assert load_config({**aurora, "minAcu": "0.5"}, ENV).database.rds_proxy
    assert load_config({"database": "aurora-serverless-v2"}, ENV).database.auto_pause


def test_the_retired_desired_count_key_is_refused_with_the_way_forward() -> None:
    """A cdk.json from the release that read desiredCount stops synth saying what to set instead."""
    with pytest.raises(ConfigError, match="'desiredCount' is no longer read: the service starts at minTasks"):
        load_config({"desiredCount": "2"}, ENV)


def test_with_no_region_configured_anywhere_the_stacks_target_the_readme_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CDK CLI sets CDK_DEFAULT_REGION=us-east-1 when nothing names a region; app.py undoes
    that fallback, so synth targets eu-west-1 as the README says, and a configured region wins."""
    from app import cdk_environment

    config_file = tmp_path / "config"
    config_file.write_text("[default]\noutput = json\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    cli = {"CDK_DEFAULT_REGION": "us-east-1", "CDK_DEFAULT_ACCOUNT": "111122223333"}
    assert load_config({}, cdk_environment(cli)).region == "eu-west-1"
    # A region in the profile (which the CLI read into CDK_DEFAULT_REGION) or in the environment wins.
    config_file.write_text("[default]\nregion = us-west-2\n")
    assert load_config({}, cdk_environment({**cli, "CDK_DEFAULT_REGION": "us-west-2"})).region == "us-west-2"
    config_file.write_text("[default]\noutput = json\n")
    assert load_config({}, cdk_environment({**cli, "AWS_REGION": "us-east-1"})).region == "us-east-1"


def test_a_key_may_be_given_per_profile_as_make_restore_writes_it() -> None:
    context = {"restoreSnapshot": {"prod": "conversations-prod-data-restore-1"}}
    assert load_config({**PROD, **context}, ENV).database.restore_snapshot == "conversations-prod-data-restore-1"
    assert load_config(context, ENV).database.restore_snapshot is None, "dev is not restored by prod's entry"
    with pytest.raises(ConfigError, match="per profile names 'staging'; the profiles are dev, lean, prod"):
        load_config({"restoreSnapshot": {"staging": "x"}}, ENV)


@pytest.mark.parametrize(
    "snapshot",
    [
        "nightly",
        "rds:conversations-prod-2026-12-03-02-10",
        "arn:aws:rds:eu-west-1:123456789012:snapshot:nightly",
        "arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:nightly",
    ],
)
def test_restore_snapshot_takes_identifiers_and_arns(snapshot: str) -> None:
    assert load_config({"restoreSnapshot": snapshot}, ENV).database.restore_snapshot == snapshot


@pytest.mark.parametrize("snapshot", ["1starts-with-a-digit", "has space", "arn:aws:s3:::bucket"])
def test_restore_snapshot_refuses_what_is_no_snapshot(snapshot: str) -> None:
    with pytest.raises(ConfigError, match="must be a DB snapshot identifier or ARN"):
        load_config({"restoreSnapshot": snapshot}, ENV)


def test_dev_and_lean_admit_nobody_to_plain_http_until_told_whom() -> None:
    """They served plain HTTP to 0.0.0.0/0 by default: the token and every conversation in clear
    text across the internet."""
    for profile in ("dev", "lean"):
        assert load_config({"profile": profile}, ENV).service.allowed_cidrs is None
    assert load_config({"allowedCidrs": "203.0.113.7/32"}, ENV).service.allowed_cidrs == ("203.0.113.7/32",)
    with pytest.raises(ConfigError, match="whole internet without a certificate") as refused:
        load_config({"allowedCidrs": "0.0.0.0/0"}, ENV)
    for way_out in ("certificateArn", "allowedCidrs=203.0.113.7/32", "allowPlainHttp=true"):
        assert way_out in str(refused.value)
    assert load_config({"allowedCidrs": "::/0", "allowPlainHttp": "true"}, ENV).service.open_to_the_internet
    assert load_config({"allowedCidrs": "0.0.0.0/0", "certificateArn": CERT, "domainName": "a.example.com"}, ENV)
    assert load_config(PROD, ENV).service.allowed_cidrs == ("0.0.0.0/0",), "prod serves HTTPS: open by default"
