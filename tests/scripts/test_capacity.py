"""make capacity: the formula on the recorded benchmark, and make cost's price for its answer."""

from __future__ import annotations

import json
import math

import pytest

from scripts import capacity, estimate_cost
from stacks.config import HTTP_RPS_PER_CORE


def test_the_inputs_are_the_recorded_benchmarks() -> None:
    m = capacity.measured(25)
    run = json.loads((capacity.RESULTS / m.source).read_text())
    assert m.rps_per_vcpu == pytest.approx(HTTP_RPS_PER_CORE, rel=0.01)
    assert m.db_ops_per_vcpu == pytest.approx(run["mixed"]["8"]["ops_per_s"] / run["machine"]["cores"])
    with pytest.raises(SystemExit, match="no measured rate met it"):
        capacity.measured(0.5)


def test_a_large_traffic_on_aurora_gets_tasks_acus_a_proxy_and_a_price() -> None:
    prices = estimate_cost.load_prices()
    result = capacity.plan(6000, 25, "prod", "aurora-serverless-v2", prices)
    m = capacity.measured(25)
    assert result["tasks"] == math.ceil(6000 / (m.rps_per_vcpu * 1.0 * 0.6))
    db_vcpus = 6000 / m.db_ops_per_vcpu / 0.6
    assert result["context"]["maxAcu"] == f"{math.ceil(db_vcpus / 0.25 * 2) / 2:g}"
    # tasks x 10 pooled connections against max_connections of maxAcu x 2 GiB
    limit = capacity.max_connections(float(result["context"]["maxAcu"]) * 2)
    assert result["rds_proxy"] == (result["tasks"] * 10 > 0.8 * limit)
    assert result["monthly_usd"] > 1000
    assert any(line.item.startswith("Aurora Serverless v2") for line in result["lines"])


def test_a_small_traffic_keeps_the_profiles_instance_and_needs_no_proxy() -> None:
    result = capacity.plan(50, 25, "dev", "instance", estimate_cost.load_prices())
    assert result["tasks"] == 1 and result["context"]["dbInstanceClass"] == "t4g.micro"
    assert not result["rds_proxy"] and "rdsProxy" not in result["context"]
    text = capacity.render(result)
    assert "cdk deploy --all -c profile=dev -c minTasks=1" in text


def test_the_prod_deploy_command_names_what_prod_needs_and_then_synthesizes() -> None:
    """It used to print a prod command that fails (no certificate, no domain, no alarm address)."""
    from stacks.config import load_config

    text = capacity.render(capacity.plan(500, 25, "prod", "instance", estimate_cost.load_prices()))
    deploy = next(line for line in text.splitlines() if "deploy:" in line)
    filled = (
        deploy.replace("<ACM certificate ARN>", "arn:aws:acm:eu-west-1:123456789012:certificate/abcd-1234")
        .replace("<api.example.com>", "api.example.com")
        .replace("<you@example.com>", "ops@example.com")
    )
    context = dict(flag.split("=", 1) for flag in filled.split(" -c ")[1:])
    assert load_config(context, {}).profile == "prod"
