"""The update-safety matrix: every change an operator may make after the first deploy, checked on
the templates as CloudFormation would apply it (tests/support/updates.py).

- The last release's templates (tests/infra/released/) move to this checkout's, variant by
  variant, without dropping an export still imported or replacing a stateful or fixed-name
  resource.
- Each context key the README says may change does so safely, in both directions.
- Each key it marks create-time only or grow only is one this check finds unsafe.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.config import CONTEXT_KEYS
from tests.support.templates import CERT, PROD, VARIANTS, recorded, synthesized
from tests.support.updates import update_problems

RELEASED = Path(__file__).parent / "released" / "2026-11-24"
# What an operator adds to the context when upgrading from that release (README, "Upgrading"):
# a proxy it created in three zones stays there.
UPGRADE_CONTEXT: dict[str, dict[str, str]] = {
    "prod-proxy": {"proxyAzs": "3"},
    "prod-aurora": {"proxyAzs": "3"},
}
DEV = {"profile": "dev"}
AURORA = {"profile": "dev", "database": "aurora-serverless-v2", "readers": "1", "rdsProxy": "true", "minAcu": "0.5"}
# For each key a deployed stack may change: the base it changes on, and the value it changes to.
CHANGES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "natGateways": (DEV, {"natGateways": "0"}),
    "secretsEndpointAzs": (DEV, {"secretsEndpointAzs": "1"}),
    "flowLogs": (DEV, {"flowLogs": "reject"}),
    "minAcu": (AURORA, {"minAcu": "1"}),
    "maxAcu": (AURORA, {"maxAcu": "8"}),
    "readers": (DEV, {"readers": "2"}),
    "rdsProxy": (DEV, {"rdsProxy": "true", "readers": "1"}),
    "dbInstanceClass": (DEV, {"dbInstanceClass": "t4g.small"}),
    "dbMultiAz": (DEV, {"dbMultiAz": "true"}),
    "dbAllocatedStorage": (DEV, {"dbAllocatedStorage": "30"}),
    "dbMaxAllocatedStorage": (DEV, {"dbMaxAllocatedStorage": "200"}),
    "dbBackupRetentionDays": (DEV, {"dbBackupRetentionDays": "14"}),
    "dbDeletionProtection": (DEV, {"dbDeletionProtection": "true"}),
    "dbApplyImmediately": (DEV, {"dbApplyImmediately": "false"}),
    "allowMajorVersionUpgrade": (DEV, {"allowMajorVersionUpgrade": "true"}),
    "minTasks": (DEV, {"minTasks": "2"}),
    "maxTasks": (DEV, {"maxTasks": "6"}),
    "cpu": (DEV, {"cpu": "512", "memoryMiB": "1024"}),
    "memoryMiB": (DEV, {"memoryMiB": "1024"}),
    "taskArchitecture": (DEV, {"taskArchitecture": "arm64"}),
    "fargateSpot": (DEV, {"fargateSpot": "true"}),
    "requestsPerTarget": (DEV, {"requestsPerTarget": "500"}),
    "containerInsights": (DEV, {"containerInsights": "false"}),
    "certificateArn": (DEV, {"certificateArn": CERT, "domainName": "api.example.com"}),
    "domainName": (DEV, {"domainName": "api.example.com"}),
    "hostedZoneId": (
        DEV,
        {"domainName": "api.example.com", "hostedZoneId": "Z0123456789ABC", "hostedZoneName": "example.com"},
    ),
    "hostedZoneName": (
        DEV,
        {"domainName": "api.example.com", "hostedZoneId": "Z0123456789ABC", "hostedZoneName": "example.com"},
    ),
    "allowedCidrs": (DEV, {"allowedCidrs": "10.0.0.0/8"}),
    "alarmEmail": (DEV, {"alarmEmail": "ops@example.com"}),
    "dbConnectionsAlarm": (DEV, {"dbConnectionsAlarm": "100"}),
    "logRetentionDays": (DEV, {"logRetentionDays": "90"}),
}
# Keys that change no template, and why.
NOT_IN_TEMPLATES = {
    "terminationProtection": "a stack setting the CLI applies, not a template property",
    "allowPlainHttp": "a synth-time gate: prod refuses to synth without a certificate unless it is set",
}
templates = synthesized


def test_every_key_a_deployed_stack_may_change_is_in_the_matrix() -> None:
    redeploy = {key for key, declared in CONTEXT_KEYS.items() if declared.change == "redeploy"}
    assert set(CHANGES) | set(NOT_IN_TEMPLATES) == redeploy, "a key the README says may change needs a row"
    assert not set(CHANGES) & set(NOT_IN_TEMPLATES)


@pytest.mark.parametrize("key", list(NOT_IN_TEMPLATES))
def test_keys_outside_the_templates_change_none(key: str) -> None:
    prod = dict(PROD)
    assert templates(prod) == templates({**prod, key: "true"})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_last_release_upgrades_to_this_one_in_place(variant: str) -> None:
    before = recorded(RELEASED, variant)
    after = templates({**VARIANTS[variant], **UPGRADE_CONTEXT.get(variant, {})})
    assert update_problems(before, after) == []


def test_a_proxy_created_in_three_zones_needs_proxy_azs_to_stay_there() -> None:
    """Without the upgrade note's -c proxyAzs=3, the proxy's subnets would change: refused."""
    problems = update_problems(recorded(RELEASED, "prod-proxy"), templates(dict(VARIANTS["prod-proxy"])))
    assert problems and all("VpcSubnetIds" in p for p in problems)


@pytest.mark.parametrize("key", list(CHANGES))
def test_a_key_the_readme_says_may_change_changes_safely_both_ways(key: str) -> None:
    base, change = CHANGES[key]
    before, after = templates(base), templates({**base, **change})
    assert before != after, f"{key}: the change makes no difference to the templates; pick another value"
    assert update_problems(before, after) == [], f"setting {change}"
    assert update_problems(after, before) == [], f"undoing {change}"


@pytest.mark.parametrize("base", [DEV, AURORA], ids=["instance", "aurora-with-proxy-and-reader"])
def test_max_azs_grows_in_place(base: dict[str, str]) -> None:
    """The proxy and its read endpoint stay in their zones (their subnets are create-only), the
    address plan renumbers nothing. Shrinking is not checked here: what it breaks (an instance or
    its standby in the zone removed) is in RDS, not in the templates; the README says grow only."""
    assert update_problems(templates(base), templates({**base, "maxAzs": "3"})) == []


@pytest.mark.parametrize(
    ("key", "base", "change"),
    [
        ("database", DEV, {"database": "aurora-serverless-v2"}),
        ("proxyAzs", {**DEV, "rdsProxy": "true", "maxAzs": "3"}, {"proxyAzs": "3"}),
    ],
)
def test_a_create_time_key_is_one_a_deployed_stack_cannot_change(
    key: str, base: dict[str, str], change: dict[str, str]
) -> None:
    assert CONTEXT_KEYS[key].change == "create-time only"
    problems = update_problems(templates(base), templates({**base, **change}))
    assert any("replaced" in p for p in problems), problems


# --- what synth cannot see, make preflight does: the deployed templates against this context -------


@pytest.mark.parametrize(
    ("deployed", "now", "says"),
    [
        (DEV, {**DEV, "database": "aurora-serverless-v2"}, 'keep "database": "instance"'),
        (AURORA, {**AURORA, "database": "instance"}, 'keep "database": "aurora-serverless-v2"'),
        (DEV, {**DEV, "embeddingDimension": "768"}, 'keep "embeddingDimension": 1536'),
        ({**DEV, "maxAzs": "3"}, DEV, "keep maxAzs at 3 or more"),
        (DEV, {**DEV, "availabilityZones": "eu-west-1b,eu-west-1c"}, "availabilityZones as deployed: eu-west-1a,"),
        (
            {**DEV, "rdsProxy": "true", "maxAzs": "3", "proxyAzs": "3"},
            {**DEV, "rdsProxy": "true", "maxAzs": "3"},
            'keep "proxyAzs": 3',
        ),
    ],
    ids=["to-aurora", "to-instance", "dimension", "maxAzs-shrinks", "other-zones", "proxyAzs"],
)
def test_preflight_refuses_a_create_time_key_changed_since_the_deploy(
    deployed: dict[str, str], now: dict[str, str], says: str
) -> None:
    from scripts.verify.preflight import fixed_setting_changes

    before = templates(deployed)
    changes = fixed_setting_changes(before["Network"], before["Data"], now, "dev", "eu-west-1")
    assert len(changes) == 1 and says in changes[0][1], changes


@pytest.mark.parametrize(
    ("deployed", "now"),
    [
        (DEV, DEV),
        (AURORA, AURORA),
        (DEV, {**DEV, "maxAzs": "3"}),
        (DEV, {**DEV, "readers": "1", "rdsProxy": "true"}),
        (dict(PROD), dict(PROD)),
    ],
    ids=["dev", "aurora", "maxAzs-grows", "proxy-added", "prod"],
)
def test_preflight_lets_every_safe_change_through(deployed: dict[str, str], now: dict[str, str]) -> None:
    from scripts.verify.preflight import fixed_setting_changes

    before = templates(deployed)
    assert fixed_setting_changes(before["Network"], before["Data"], now, now["profile"], "eu-west-1") == []
