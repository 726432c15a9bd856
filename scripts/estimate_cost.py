#!/usr/bin/env python3
"""Monthly cost of a deployment profile, read from its synthesized templates.

    python scripts/estimate_cost.py                 # dev and prod, synthesized in-process
    python scripts/estimate_cost.py --profile prod --json
    python scripts/estimate_cost.py --cdk-out cdk.out  # templates already synthesized

One line per billable resource (quantity, unit price, monthly USD), then the total. Prices and
usage assumptions live in scripts/prices.json, dated; nothing is fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRICES = Path(__file__).resolve().parent / "prices.json"


@dataclass
class Line:
    item: str
    quantity: str
    unit_price: str
    monthly: float


def load_prices(path: Path = PRICES, overrides: Iterable[str] = ()) -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(path.read_text())
    for override in overrides:
        key, _, value = override.partition("=")
        if key not in prices["assumptions"] or not value:
            raise SystemExit(f"--assume takes key=value with a key of: {', '.join(prices['assumptions'])}")
        prices["assumptions"][key] = float(value)
    return prices


def resources(templates: Iterable[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [r for t in templates for r in t.get("Resources", {}).values() if r.get("Type") == type_]


def estimate(templates: list[dict[str, Any]], prices: dict[str, Any]) -> list[Line]:
    hours = prices["hours_per_month"]
    usage = prices["assumptions"]
    lines: list[Line] = []

    def add(item: str, quantity: str, unit: str, monthly: float) -> None:
        if monthly > 0:
            lines.append(Line(item, quantity, unit, round(monthly, 2)))

    nats = len(resources(templates, "AWS::EC2::NatGateway"))
    add(
        "NAT gateways",
        f"{nats} x {hours} h",
        f"${prices['nat_gateway_hour']}/h",
        nats * hours * prices["nat_gateway_hour"],
    )
    add(
        "NAT data processed",
        f"{usage['nat_gb_month']:g} GB",
        f"${prices['nat_gateway_gb']}/GB",
        usage["nat_gb_month"] * prices["nat_gateway_gb"] if nats else 0,
    )

    albs = resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    add(
        "Application Load Balancer",
        f"{len(albs)} x {hours} h",
        f"${prices['alb_hour']}/h",
        len(albs) * hours * prices["alb_hour"],
    )
    add(
        "ALB capacity units",
        f"{usage['alb_lcu_average']:g} LCU avg",
        f"${prices['alb_lcu_hour']}/LCU-h",
        len(albs) * usage["alb_lcu_average"] * hours * prices["alb_lcu_hour"],
    )
    public_subnets = sum(
        1 for s in resources(templates, "AWS::EC2::Subnet") if s["Properties"].get("MapPublicIpOnLaunch")
    )
    ips = nats + (public_subnets if albs else 0)
    add(
        "Public IPv4 addresses (NAT, ALB nodes)",
        f"{ips} x {hours} h",
        f"${prices['public_ipv4_hour']}/h",
        ips * hours * prices["public_ipv4_hour"],
    )

    tasks = 0
    for service in resources(templates, "AWS::ECS::Service"):
        count = int(service["Properties"].get("DesiredCount", 1))
        tasks += count
        (task,) = resources(templates, "AWS::ECS::TaskDefinition")
        vcpu = int(task["Properties"]["Cpu"]) / 1024
        gb = int(task["Properties"]["Memory"]) / 1024
        add(
            "Fargate vCPU",
            f"{count} task x {vcpu:g} vCPU x {hours} h",
            f"${prices['fargate_vcpu_hour']}/vCPU-h",
            count * vcpu * hours * prices["fargate_vcpu_hour"],
        )
        add(
            "Fargate memory",
            f"{count} task x {gb:g} GB x {hours} h",
            f"${prices['fargate_gb_hour']}/GB-h",
            count * gb * hours * prices["fargate_gb_hour"],
        )

    for db in resources(templates, "AWS::RDS::DBInstance"):
        props = db["Properties"]
        klass = props["DBInstanceClass"]
        if klass not in prices["rds_instance_hour"]:
            raise SystemExit(f"no price for {klass} in {PRICES.name}: add it (and its date)")
        copies = 2 if props.get("MultiAZ") else 1
        storage = int(props.get("AllocatedStorage", 20))
        add(
            f"RDS {klass}{' Multi-AZ' if copies == 2 else ''}",
            f"{copies} x {hours} h",
            f"${prices['rds_instance_hour'][klass]}/h",
            copies * hours * prices["rds_instance_hour"][klass],
        )
        add(
            "RDS gp3 storage",
            f"{copies} x {storage} GB",
            f"${prices['rds_gp3_gb_month']}/GB-mo",
            copies * storage * prices["rds_gp3_gb_month"],
        )
        # Backup storage up to the provisioned size is free; beyond it, daily changes kept for
        # the retention period are billed.
        retention = int(props.get("BackupRetentionPeriod", 1))
        backup_gb = storage * (1 + usage["backup_daily_change_fraction"] * retention)
        beyond = max(0.0, backup_gb - storage)
        add(
            "RDS backups beyond the free allowance",
            f"{beyond:.0f} GB ({retention} days)",
            f"${prices['rds_backup_gb_month']}/GB-mo",
            beyond * prices["rds_backup_gb_month"],
        )

    endpoints = [
        e
        for e in resources(templates, "AWS::EC2::VPCEndpoint")
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    endpoint_azs = sum(len(e["Properties"].get("SubnetIds", [])) for e in endpoints)
    add(
        "Interface VPC endpoints",
        f"{len(endpoints)} x {endpoint_azs} AZ x {hours} h",
        f"${prices['interface_endpoint_az_hour']}/AZ-h",
        endpoint_azs * hours * prices["interface_endpoint_az_hour"],
    )
    add(
        "Interface endpoint data",
        f"{usage['endpoint_gb_month']:g} GB",
        f"${prices['interface_endpoint_gb']}/GB",
        len(endpoints) * usage["endpoint_gb_month"] * prices["interface_endpoint_gb"],
    )

    secrets = len(resources(templates, "AWS::SecretsManager::Secret"))
    add("Secrets Manager secrets", str(secrets), f"${prices['secret_month']}/mo", secrets * prices["secret_month"])
    keys = len(resources(templates, "AWS::KMS::Key"))
    add("KMS keys", str(keys), f"${prices['kms_key_month']}/mo", keys * prices["kms_key_month"])
    alarms = len(resources(templates, "AWS::CloudWatch::Alarm"))
    add(
        "CloudWatch alarms",
        str(alarms),
        f"${prices['cloudwatch_alarm_month']}/mo",
        alarms * prices["cloudwatch_alarm_month"],
    )
    dashboards = len(resources(templates, "AWS::CloudWatch::Dashboard"))
    add(
        "CloudWatch dashboards",
        str(dashboards),
        f"${prices['cloudwatch_dashboard_month']}/mo",
        dashboards * prices["cloudwatch_dashboard_month"],
    )
    flow = len(resources(templates, "AWS::EC2::FlowLog"))
    log_gb = tasks * usage["log_gb_month_per_task"] + flow * usage["flow_log_gb_month"] + usage["rds_log_gb_month"]
    add(
        "CloudWatch Logs ingestion",
        f"{log_gb:g} GB (service, flow logs, RDS)",
        f"${prices['cloudwatch_logs_ingest_gb']}/GB",
        log_gb * prices["cloudwatch_logs_ingest_gb"],
    )
    return lines


@dataclass
class PerRequest:
    """What traffic adds: per million requests, at the per-core figure the benchmark measured."""

    rps_per_vcpu: int
    task_vcpu: float
    compute: float
    load_balancer: float
    fixed_capacity_millions: float

    @property
    def total(self) -> float:
        return self.compute + self.load_balancer


def per_million_requests(templates: list[dict[str, Any]], prices: dict[str, Any]) -> PerRequest:
    """Fargate time and load-balancer LCUs for a million requests, with each vCPU serving
    stacks.config.HTTP_RPS_PER_CORE requests/s (the recorded benchmark run) and each request
    moving ``kb_per_request`` KB through the load balancer (1 LCU-hour per GB processed); and
    how many million requests a month the profile's fixed tasks serve at that rate."""
    from stacks.config import HTTP_RPS_PER_CORE

    (task,) = resources(templates, "AWS::ECS::TaskDefinition")
    vcpu = int(task["Properties"]["Cpu"]) / 1024
    gb = int(task["Properties"]["Memory"]) / 1024
    task_hour = vcpu * prices["fargate_vcpu_hour"] + gb * prices["fargate_gb_hour"]
    requests_per_task_hour = HTTP_RPS_PER_CORE * vcpu * 3600
    # A million requests of N KB each move N GB.
    processed_gb = prices["assumptions"]["kb_per_request"]
    tasks = sum(int(s["Properties"].get("DesiredCount", 1)) for s in resources(templates, "AWS::ECS::Service"))
    return PerRequest(
        rps_per_vcpu=HTTP_RPS_PER_CORE,
        task_vcpu=vcpu,
        compute=1e6 / requests_per_task_hour * task_hour,
        load_balancer=processed_gb * prices["alb_lcu_hour"],
        fixed_capacity_millions=tasks * requests_per_task_hour * prices["hours_per_month"] / 1e6,
    )


def synthesize(profile: str) -> list[dict[str, Any]]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk

    from app import build
    from stacks.config import load_config

    context = {
        **json.loads((ROOT / "cdk.json").read_text())["context"],
        "profile": profile,
        "aws:cdk:bundling-stacks": [],
        # HTTPS or HTTP changes no price; a prod estimate needs no certificate.
        "allowPlainHttp": "true",
    }  # the Lambda bundle does not change the bill
    app = cdk.App(context=context, outdir=tempfile.mkdtemp(prefix="cost-"))
    build(app, load_config(context, os.environ))
    return [stack.template for stack in app.synth().stacks]


def render(profile: str, lines: list[Line], prices: dict[str, Any], traffic: PerRequest | None = None) -> str:
    width = max(len(line.item) for line in lines)
    qty = max(len(line.quantity) for line in lines)
    out = [f"{profile} profile, {prices['region']}, prices as of {prices['as_of']} (USD per month)"]
    for line in lines:
        out.append(f"  {line.item:<{width}}  {line.quantity:<{qty}}  {line.unit_price:>16}  {line.monthly:>9.2f}")
    out.append(f"  {'Total':<{width}}  {'':<{qty}}  {'':>16}  {sum(x.monthly for x in lines):>9.2f}")
    if traffic is not None:
        out.append(
            f"  Per million requests: ${traffic.total:.3f} (Fargate ${traffic.compute:.3f} at"
            f" {traffic.rps_per_vcpu} requests/s per vCPU, the benchmark's figure; load balancer"
            f" ${traffic.load_balancer:.3f} for {prices['assumptions']['kb_per_request']:g} KB a request)."
            f" The total above already serves up to {traffic.fixed_capacity_millions:,.0f} million"
            " requests a month on its tasks; past that, autoscaling adds tasks at this rate."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile", action="append", choices=["dev", "prod"], help="profile to estimate (repeatable; default both)"
    )
    parser.add_argument("--cdk-out", type=Path, help="read *.template.json from this directory instead of synthesizing")
    parser.add_argument(
        "--assume",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a usage assumption from prices.json",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    prices = load_prices(overrides=args.assume)
    report: dict[str, Any] = {}
    traffic: dict[str, PerRequest] = {}
    if args.cdk_out:
        templates = [json.loads(p.read_text()) for p in sorted(args.cdk_out.glob("*.template.json"))]
        if not templates:
            raise SystemExit(f"no *.template.json in {args.cdk_out}: run `make synth` first")
        report["templates"] = estimate(templates, prices)
        traffic["templates"] = per_million_requests(templates, prices)
    else:
        for profile in args.profile or ["dev", "prod"]:
            templates = synthesize(profile)
            report[profile] = estimate(templates, prices)
            traffic[profile] = per_million_requests(templates, prices)
    if args.json:
        print(
            json.dumps(
                {
                    "prices_as_of": prices["as_of"],
                    "region": prices["region"],
                    "profiles": {
                        k: {
                            "lines": [asdict(x) for x in v],
                            "total": round(sum(x.monthly for x in v), 2),
                            "per_million_requests": asdict(traffic[k]) | {"total": round(traffic[k].total, 4)},
                        }
                        for k, v in report.items()
                    },
                },
                indent=2,
            )
        )
    else:
        print("\n\n".join(render(k, v, prices, traffic[k]) for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
