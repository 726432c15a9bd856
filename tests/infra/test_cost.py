"""scripts/estimate_cost.py: lines from the synthesized templates, totals the README quotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import estimate_cost
from tests.infra.conftest import ROOT, Synth


def totals(synth: Synth) -> tuple[list[estimate_cost.Line], float]:
    lines = estimate_cost.estimate(list(synth.raw.values()), estimate_cost.load_prices())
    return lines, round(sum(line.monthly for line in lines), 2)


def test_dev_lines_follow_the_template(dev: Synth) -> None:
    lines, total = totals(dev)
    by_item = {line.item: line for line in lines}
    prices = estimate_cost.load_prices()
    assert by_item["NAT gateways"].monthly == pytest.approx(1 * 730 * prices["nat_gateway_hour"], abs=0.01)
    assert by_item["RDS db.t4g.micro"].monthly == pytest.approx(
        730 * prices["rds_instance_hour"]["db.t4g.micro"], abs=0.01
    )
    assert by_item["Fargate x86_64 vCPU"].quantity == "1 task x 0.25 vCPU x 730 h"
    assert by_item["Interface VPC endpoints"].quantity == "1 x 2 AZ x 730 h"
    assert by_item["Secrets Manager secrets"].quantity == "3"
    assert 50 < total < 250


def test_prod_costs_more_for_the_reasons_it_should(dev: Synth, prod: Synth) -> None:
    dev_lines, dev_total = totals(dev)
    prod_lines, prod_total = totals(prod)
    prod_items = {line.item for line in prod_lines}
    assert "RDS db.m7g.large Multi-AZ" in prod_items
    nat = {line.item: line.monthly for line in prod_lines}["NAT gateways"]
    assert nat == pytest.approx(3 * {line.item: line.monthly for line in dev_lines}["NAT gateways"], abs=0.01)
    assert prod_total > 3 * dev_total


def readme_cost_row(readme: str, label: str) -> dict[str, str]:
    """One row of the README's cost table, by profile (the header names the columns)."""
    header = next(line for line in readme.splitlines() if line.startswith("| | **dev** |"))
    row = next(line for line in readme.splitlines() if line.startswith(f"| {label} |"))
    profiles = [c.strip().strip("*") for c in header.strip("|").split("|")][1:]
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")][1:]
    return dict(zip(profiles, cells, strict=True))


def test_readme_quotes_the_current_totals() -> None:
    report = json.loads(_run(["--json"]))
    readme = (ROOT / "README.md").read_text()
    totals_row = readme_cost_row(readme, "Monthly total")
    without_row = readme_cost_row(readme, "Without CloudWatch's free tier")
    further_row = readme_cost_row(readme, "Each further million requests")
    for profile in ("dev", "lean", "prod"):
        entry = report["profiles"][profile]
        assert totals_row[profile] == f"${entry['total']:,.2f}", f"README's {profile} total: update the cost section"
        credit = -sum(line["monthly"] for line in entry["lines"] if line["monthly"] < 0)
        assert without_row[profile] == f"${entry['total'] + credit:,.2f}"
        assert further_row[profile] == f"${entry['per_million_requests']['total']:,.2f}"
    assert report["prices_as_of"] in readme
    # The lean price without Spot, quoted where the README says what lean rests on.
    from tests.infra.conftest import synthesize

    on_demand = synthesize("lean", fargateSpot="false")
    _, on_demand_total = totals(on_demand)
    assert f"`-c fargateSpot=false`: ${on_demand_total:,.2f}" in readme


def test_lean_stays_within_60_dollars_and_says_what_it_leans_on(lean: Synth, dev: Synth) -> None:
    prices = estimate_cost.load_prices()
    lines, total = totals(lean)
    by_item = {line.item: line for line in lines}
    assert total <= 60
    assert "NAT gateways" not in by_item
    assert by_item["Interface VPC endpoints"].quantity == "1 x 1 AZ x 730 h"
    assert by_item["Public IPv4 addresses (NAT, ALB nodes, tasks)"].quantity == "3 x 730 h"  # 2 ALB nodes, 1 task
    spot = by_item["Fargate Spot arm64 vCPU"].monthly
    assert spot == pytest.approx(0.25 * 730 * prices["fargate_arm_vcpu_hour"] * 0.4, abs=0.01)
    assert "Container Insights metrics" not in by_item
    assert "Container Insights metrics" in {line.item for line in totals(dev)[0]}
    # The free tier covers the lean stack's dashboard and ten of its alarm metrics (all but the
    # deployment alarm's three), and is a line of its own.
    assert by_item["CloudWatch alarms"].quantity == "13 alarm metrics"
    assert by_item["CloudWatch free tier (per account)"].monthly < 0
    # What the $60 leans on, priced: no free tier, and on-demand tasks.
    without_free_tier = estimate_cost.load_prices(overrides=["use_free_tier=0"])
    assert sum(x.monthly for x in estimate_cost.estimate(list(lean.raw.values()), without_free_tier)) > 60


def test_free_tier_and_log_storage_and_insights_follow_the_templates(dev: Synth, prod: Synth) -> None:
    dev_lines = {line.item: line for line in totals(dev)[0]}
    prod_lines = {line.item: line for line in totals(prod)[0]}
    # metric-math alarms are billed per metric: 11 alarms here evaluate 15 metrics
    assert dev_lines["CloudWatch alarms"].quantity == "15 alarm metrics"
    assert prod_lines["CloudWatch Logs storage"].monthly > 10 * dev_lines["CloudWatch Logs storage"].monthly
    credit = -dev_lines["CloudWatch free tier (per account)"].monthly
    prices = estimate_cost.load_prices()
    free = prices["cloudwatch_free_tier"]
    assert credit == pytest.approx(
        free["alarm_metrics"] * prices["cloudwatch_alarm_month"]
        + prices["cloudwatch_dashboard_month"]
        + free["custom_metrics"] * prices["cloudwatch_custom_metric_month"]
        + free["logs_gb"] * prices["cloudwatch_logs_ingest_gb"],
        abs=0.02,
    )


def test_unknown_instance_class_is_an_error(dev: Synth) -> None:
    templates = json.loads(json.dumps(list(dev.raw.values())))
    for template in templates:
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::RDS::DBInstance":
                resource["Properties"]["DBInstanceClass"] = "db.x99g.huge"
    with pytest.raises(SystemExit, match=r"no price for db\.x99g\.huge"):
        estimate_cost.estimate(templates, estimate_cost.load_prices())


def test_assumptions_can_be_overridden_and_are_checked() -> None:
    assert estimate_cost.load_prices(overrides=["nat_gb_month=100"])["assumptions"]["nat_gb_month"] == 100
    with pytest.raises(SystemExit, match="--assume takes key=value"):
        estimate_cost.load_prices(overrides=["bogus=1"])


def _run(args: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert estimate_cost.main(args) == 0
    return buffer.getvalue()


def test_the_scripts_import_the_cdk_app_from_any_directory(tmp_path: Path) -> None:
    """`make cost` runs scripts/estimate_cost.py, which synthesizes through app.build: the
    editable install must provide ``app`` wherever the script runs from."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import app; print(app.build.__name__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "build"
