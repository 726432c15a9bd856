#!/usr/bin/env python3
"""Monthly cost of a deployment profile, read from its synthesized templates.

    python scripts/estimate_cost.py                 # dev, lean and prod, synthesized in-process
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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stacks.config import PROFILE_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
PRICES = Path(__file__).resolve().parent / "prices.json"


@dataclass
class Line:
    item: str
    quantity: str
    unit_price: str
    monthly: float


# add(item, quantity, unit, monthly dollars): one line of the estimate (skipped at $0).
Add = Callable[[str, str, str, float], None]


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


@dataclass
class Task:
    """The service's task as priced: its size, its architecture, Spot or not, and the hourly
    prices that follow from those."""

    vcpu: float
    gb: float
    arch: str
    spot: bool
    vcpu_price: float
    gb_price: float

    @property
    def hourly(self) -> float:
        return self.vcpu * self.vcpu_price + self.gb * self.gb_price


def fargate_task(templates: list[dict[str, Any]], prices: dict[str, Any]) -> Task:
    """The one task definition, priced by architecture, less the Spot discount when a service
    runs it on FARGATE_SPOT."""
    (task,) = resources(templates, "AWS::ECS::TaskDefinition")
    arm = task["Properties"].get("RuntimePlatform", {}).get("CpuArchitecture", "X86_64") == "ARM64"
    vcpu_price = prices["fargate_arm_vcpu_hour"] if arm else prices["fargate_vcpu_hour"]
    gb_price = prices["fargate_arm_gb_hour"] if arm else prices["fargate_gb_hour"]
    spot = any(
        item.get("CapacityProvider") == "FARGATE_SPOT" and item.get("Weight", 0) > 0
        for service in resources(templates, "AWS::ECS::Service")
        for item in service["Properties"].get("CapacityProviderStrategy", [])
    )
    keep = 1 - prices["assumptions"]["fargate_spot_discount"] if spot else 1.0
    return Task(
        vcpu=int(task["Properties"]["Cpu"]) / 1024,
        gb=int(task["Properties"]["Memory"]) / 1024,
        arch="arm64" if arm else "x86_64",
        spot=spot,
        vcpu_price=vcpu_price * keep,
        gb_price=gb_price * keep,
    )


def _aurora(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add) -> None:
    """An Aurora Serverless v2 cluster: ACU-hours of each instance (see the _aurora assumption),
    storage, I/O, and RDS Proxy by the ACUs behind it (at least 8)."""
    clusters = resources(templates, "AWS::RDS::DBCluster")
    if not clusters:
        return
    (cluster,) = clusters
    usage = prices["assumptions"]
    hours = prices["hours_per_month"]
    scaling = cluster["Properties"]["ServerlessV2ScalingConfiguration"]
    low, high = float(scaling["MinCapacity"]), float(scaling["MaxCapacity"])
    acus = min(max(low, usage["aurora_average_acu"]), high)
    awake = usage["aurora_awake_fraction"] if low == 0 else 1.0
    instances = sum(
        1 for i in resources(templates, "AWS::RDS::DBInstance") if i["Properties"]["DBInstanceClass"] == "db.serverless"
    )
    awake_hours = hours * awake
    add(
        f"Aurora Serverless v2 ({low:g}-{high:g} ACU{', pauses' if low == 0 else ''})",
        f"{instances} inst x {acus:g} ACU x {awake_hours:.0f} h",
        f"${prices['aurora_acu_hour']}/ACU-h",
        instances * acus * awake_hours * prices["aurora_acu_hour"],
    )
    add(
        "Aurora storage and I/O",
        f"{usage['aurora_storage_gb']} GB, {usage['aurora_io_million_per_month']}M I/O",
        f"${prices['aurora_storage_gb_month']}/GB-mo",
        usage["aurora_storage_gb"] * prices["aurora_storage_gb_month"]
        + usage["aurora_io_million_per_month"] * prices["aurora_io_million"],
    )
    if resources(templates, "AWS::RDS::DBProxy"):
        # Billed on the ACUs behind it, at least 8, and for as long as the proxy exists.
        proxy_acus = max(instances * acus, prices["rds_proxy_min_acus"])
        add(
            "RDS Proxy",
            f"{proxy_acus:g} ACU x {hours} h",
            f"${prices['rds_proxy_vcpu_or_acu_hour']}/ACU-h",
            proxy_acus * hours * prices["rds_proxy_vcpu_or_acu_hour"],
        )


def _alarm_metrics(alarm: dict[str, Any]) -> int:
    """CloudWatch bills an alarm per metric it evaluates: a metric-math alarm counts each metric."""
    metrics = alarm["Properties"].get("Metrics")
    return sum(1 for m in metrics if "MetricStat" in m) if metrics else 1


def estimate(templates: list[dict[str, Any]], prices: dict[str, Any]) -> list[Line]:
    """Every priced line of one deployment's templates, one pricer per kind of resource, in the
    order the table shows them."""
    lines: list[Line] = []

    def add(item: str, quantity: str, unit: str, monthly: float) -> None:
        if monthly > 0:
            lines.append(Line(item, quantity, unit, round(monthly, 2)))

    usage = prices["assumptions"]
    traffic_gb = usage["requests_per_month"] * usage["kb_per_request"] / 1e6
    nats = _nat_gateways(templates, prices, add)
    _load_balancer(templates, prices, add, nats=nats, traffic_gb=traffic_gb)
    tasks = _fargate(templates, prices, add)
    _aurora(templates, prices, add)
    _rds_instances(templates, prices, add)
    _interface_endpoints(templates, prices, add)
    _account_wide(templates, prices, add, traffic_gb=traffic_gb)
    lines.extend(_cloudwatch(templates, prices, tasks=tasks))
    return lines


def _nat_gateways(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add) -> int:
    hours = prices["hours_per_month"]
    usage = prices["assumptions"]
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

    return nats


def _load_balancer(
    templates: list[dict[str, Any]], prices: dict[str, Any], add: Add, *, nats: int, traffic_gb: float
) -> None:
    """The load balancer, its capacity units, and every public IPv4 address (NAT, its nodes, tasks)."""
    hours = prices["hours_per_month"]
    usage = prices["assumptions"]
    albs = resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    add(
        "Application Load Balancer",
        f"{len(albs)} x {hours} h",
        f"${prices['alb_hour']}/h",
        len(albs) * hours * prices["alb_hour"],
    )
    # At light traffic the bytes a load balancer processes set its capacity units (1 LCU-hour per
    # GB; 25 new connections/s would be another LCU, far above this traffic).
    add(
        "ALB capacity units",
        f"{traffic_gb:g} GB ({usage['requests_per_month'] / 1e6:g}M requests)",
        f"${prices['alb_lcu_hour']}/LCU-h",
        len(albs) * traffic_gb * prices["alb_lcu_hour"],
    )
    alb_nodes = (
        sum(1 for s in resources(templates, "AWS::EC2::Subnet") if s["Properties"].get("MapPublicIpOnLaunch"))
        if albs
        else 0
    )
    services = resources(templates, "AWS::ECS::Service")
    public_tasks = sum(
        baseline_tasks(templates, s)
        for s in services
        if s["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"].get("AssignPublicIp") == "ENABLED"
    )
    ips = nats + alb_nodes + public_tasks
    add(
        "Public IPv4 addresses (NAT, ALB nodes, tasks)",
        f"{ips} x {hours} h",
        f"${prices['public_ipv4_hour']}/h",
        ips * hours * prices["public_ipv4_hour"],
    )


def baseline_tasks(templates: list[dict[str, Any]], service: dict[str, Any]) -> int:
    """The tasks a service runs when idle: its scalable target's minimum (the template sets no
    DesiredCount, which scaling owns), else its DesiredCount, else ECS's default of 1."""
    if "DesiredCount" in service["Properties"]:
        return int(service["Properties"]["DesiredCount"])
    targets = [
        t
        for t in resources(templates, "AWS::ApplicationAutoScaling::ScalableTarget")
        if t["Properties"].get("ScalableDimension") == "ecs:service:DesiredCount"
    ]
    return int(targets[0]["Properties"]["MinCapacity"]) if len(targets) == 1 else 1


def _fargate(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add) -> int:
    """The service's tasks (vCPU and memory); returns how many run."""
    hours = prices["hours_per_month"]
    services = resources(templates, "AWS::ECS::Service")
    tasks = 0
    if services:
        task = fargate_task(templates, prices)
        kind = f"Fargate{' Spot' if task.spot else ''} {task.arch}"
        for service in services:
            count = baseline_tasks(templates, service)
            tasks += count
            add(
                f"{kind} vCPU",
                f"{count} task x {task.vcpu:g} vCPU x {hours} h",
                f"${task.vcpu_price:.5f}/vCPU-h",
                count * task.vcpu * hours * task.vcpu_price,
            )
            add(
                f"{kind} memory",
                f"{count} task x {task.gb:g} GB x {hours} h",
                f"${task.gb_price:.5f}/GB-h",
                count * task.gb * hours * task.gb_price,
            )

    return tasks


def _rds_instances(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add) -> None:
    """RDS instances and read replicas (Aurora's are _aurora's), their storage and backups, and
    RDS Proxy priced per vCPU of the instances behind it."""
    hours = prices["hours_per_month"]
    usage = prices["assumptions"]
    proxied_vcpus = 0
    for db in resources(templates, "AWS::RDS::DBInstance"):
        props = db["Properties"]
        klass = props["DBInstanceClass"]
        if klass == "db.serverless":
            continue  # an Aurora instance: _aurora priced it
        if klass not in prices["rds_instance_hour"]:
            raise SystemExit(f"no price for {klass} in {PRICES.name}: add it (and its date)")
        replica = "SourceDBInstanceIdentifier" in props
        if not replica:
            proxied_vcpus += prices["rds_vcpus"][klass]  # the primary; a Multi-AZ standby is not billed
        copies = 2 if props.get("MultiAZ") else 1
        storage = int(props.get("AllocatedStorage", 20))
        add(
            f"RDS {klass}{' Multi-AZ' if copies == 2 else ''}{' read replica' if replica else ''}",
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
        if replica:
            continue  # a replica keeps no backups of its own
        # Backup storage up to the provisioned size is free; beyond it, daily changes kept for
        # the retention period are billed.
        retention = int(props.get("BackupRetentionPeriod", 1))
        backup_gb = storage * (1 + usage["backup_daily_change_fraction"] * retention)
        beyond = max(0.0, backup_gb - storage)
        add(
            "RDS backups beyond the free allowance",
            f"{beyond:.0f} GB ({retention} day{'s' if retention != 1 else ''})",
            f"${prices['rds_backup_gb_month']}/GB-mo",
            beyond * prices["rds_backup_gb_month"],
        )

    if resources(templates, "AWS::RDS::DBProxy") and proxied_vcpus:
        vcpus = max(proxied_vcpus, prices["rds_proxy_min_vcpus"])
        add(
            "RDS Proxy",
            f"{vcpus} vCPU x {hours} h",
            f"${prices['rds_proxy_vcpu_or_acu_hour']}/vCPU-h",
            vcpus * hours * prices["rds_proxy_vcpu_or_acu_hour"],
        )


def _interface_endpoints(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add) -> None:
    hours = prices["hours_per_month"]
    usage = prices["assumptions"]
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


def _account_wide(templates: list[dict[str, Any]], prices: dict[str, Any], add: Add, *, traffic_gb: float) -> None:
    """Secrets, KMS keys and data out to the internet."""
    secrets = len(resources(templates, "AWS::SecretsManager::Secret"))
    add("Secrets Manager secrets", str(secrets), f"${prices['secret_month']}/mo", secrets * prices["secret_month"])
    keys = len(resources(templates, "AWS::KMS::Key"))
    add("KMS keys", str(keys), f"${prices['kms_key_month']}/mo", keys * prices["kms_key_month"])
    out_gb = max(0.0, traffic_gb - prices["data_transfer_out_free_gb"])
    add(
        f"Data transfer out (past the first {prices['data_transfer_out_free_gb']} GB)",
        f"{out_gb:g} GB",
        f"${prices['data_transfer_out_gb']}/GB",
        out_gb * prices["data_transfer_out_gb"],
    )


def _cloudwatch(templates: list[dict[str, Any]], prices: dict[str, Any], *, tasks: int) -> list[Line]:
    """Alarms, dashboards, Container Insights, log ingestion and storage; then the free tier."""
    usage = prices["assumptions"]
    free = prices["cloudwatch_free_tier"]
    lines: list[Line] = []
    alarm_metrics = sum(_alarm_metrics(a) for a in resources(templates, "AWS::CloudWatch::Alarm"))
    dashboards = len(resources(templates, "AWS::CloudWatch::Dashboard"))
    insights_clusters = [
        c
        for c in resources(templates, "AWS::ECS::Cluster")
        if {"Name": "containerInsights", "Value": "enabled"} in c["Properties"].get("ClusterSettings", [])
    ]
    services = len(resources(templates, "AWS::ECS::Service")) if insights_clusters else 0
    insights_metrics = services * usage["container_insights_metrics_per_service"]
    flows = [f["Properties"].get("TrafficType") for f in resources(templates, "AWS::EC2::FlowLog")]
    flow_gb = sum(usage["flow_log_reject_gb_month" if t == "REJECT" else "flow_log_gb_month"] for t in flows)
    insights_gb = tasks * usage["container_insights_gb_month_per_task"] if insights_clusters else 0.0
    log_gb = tasks * usage["log_gb_month_per_task"] + flow_gb + usage["rds_log_gb_month"] + insights_gb
    # Steady state: a month's logs times the months they are kept.
    retention_days = max(
        (g["Properties"].get("RetentionInDays", 3653) for g in resources(templates, "AWS::Logs::LogGroup")),
        default=30,
    )
    stored_gb = log_gb * retention_days / 30
    charges = [
        (
            "CloudWatch alarms",
            f"{alarm_metrics} alarm metrics",
            prices["cloudwatch_alarm_month"],
            alarm_metrics,
            free["alarm_metrics"],
        ),
        (
            "CloudWatch dashboards",
            str(dashboards),
            prices["cloudwatch_dashboard_month"],
            dashboards,
            free["dashboards"],
        ),
        (
            "Container Insights metrics",
            f"{insights_metrics:g} metrics",
            prices["cloudwatch_custom_metric_month"],
            insights_metrics,
            free["custom_metrics"],
        ),
        (
            "CloudWatch Logs ingestion",
            f"{log_gb:g} GB (service, flow logs, RDS{', insights' if insights_gb else ''})",
            prices["cloudwatch_logs_ingest_gb"],
            log_gb,
            free["logs_gb"],
        ),
        (
            "CloudWatch Logs storage",
            f"{stored_gb:.1f} GB ({retention_days} days kept)",
            prices["cloudwatch_logs_store_gb_month"],
            stored_gb,
            0,
        ),
    ]
    credit = 0.0
    logs_left = float(free["logs_gb"])  # one allowance for ingestion and storage together
    for item, quantity, unit_price, amount, allowance in charges:
        if amount <= 0:
            continue
        lines.append(
            Line(item, quantity, f"${unit_price:g}/{'GB' if 'GB' in quantity else 'mo'}", round(amount * unit_price, 2))
        )
        if item.startswith("CloudWatch Logs"):
            covered = min(amount, logs_left)
            logs_left -= covered
        else:
            covered = min(amount, allowance)
        credit += covered * unit_price
    if usage["use_free_tier"] and credit > 0:
        lines.append(
            Line("CloudWatch free tier (per account)", "alarms, dashboards, metrics, 5 GB logs", "", -round(credit, 2))
        )
    return lines


@dataclass
class PerRequest:
    """What traffic adds: per million requests, at the per-core figure the benchmark measured."""

    rps_per_vcpu: int
    task_vcpu: float
    compute: float
    load_balancer: float
    data_out: float
    """Past the first 100 GB a month (the estimate's own traffic stays within them at light use)."""
    fixed_capacity_millions: float

    @property
    def total(self) -> float:
        return self.compute + self.load_balancer + self.data_out


def per_million_requests(templates: list[dict[str, Any]], prices: dict[str, Any]) -> PerRequest:
    """Fargate time, load-balancer LCUs and data out for a million requests, with each vCPU
    serving stacks.config.HTTP_RPS_PER_CORE requests/s (the recorded benchmark run; Graviton
    assumed equal per vCPU) and each request moving ``kb_per_request`` KB through the load
    balancer (1 LCU-hour per GB processed) and out to the internet; and how many million
    requests a month the profile's fixed tasks serve at that rate."""
    from stacks.config import HTTP_RPS_PER_CORE

    task = fargate_task(templates, prices)
    requests_per_task_hour = HTTP_RPS_PER_CORE * task.vcpu * 3600
    # A million requests of N KB each move N GB.
    processed_gb = prices["assumptions"]["kb_per_request"]
    tasks = sum(baseline_tasks(templates, s) for s in resources(templates, "AWS::ECS::Service"))
    return PerRequest(
        rps_per_vcpu=HTTP_RPS_PER_CORE,
        task_vcpu=task.vcpu,
        compute=1e6 / requests_per_task_hour * task.hourly,
        load_balancer=processed_gb * prices["alb_lcu_hour"],
        data_out=processed_gb * prices["data_transfer_out_gb"],
        fixed_capacity_millions=tasks * requests_per_task_hour * prices["hours_per_month"] / 1e6,
    )


def synthesize(profile: str, **extra: str) -> list[dict[str, Any]]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import aws_cdk as cdk

    from app import build
    from stacks.config import load_config

    context = {
        **json.loads((ROOT / "cdk.json").read_text())["context"],
        "profile": profile,
        "aws:cdk:bundling-stacks": [],
        # HTTPS or HTTP changes no price; a prod estimate needs no certificate, and an e-mail
        # subscription costs nothing.
        "allowPlainHttp": "true",
        "alarmEmail": "estimate@example.com",
        **extra,
    }  # the Lambda bundle does not change the bill
    app = cdk.App(context=context, outdir=tempfile.mkdtemp(prefix="cost-"))
    build(app, load_config(context, os.environ))
    return [stack.template for stack in app.synth().stacks]


def total(lines: list[Line]) -> float:
    return round(sum(x.monthly for x in lines), 2)


def render(profile: str, lines: list[Line], prices: dict[str, Any], traffic: PerRequest | None = None) -> str:
    width = max(len(line.item) for line in lines)
    qty = max(len(line.quantity) for line in lines)
    out = [f"{profile} profile, {prices['region']}, prices as of {prices['as_of']} (USD per month)"]
    for line in lines:
        out.append(f"  {line.item:<{width}}  {line.quantity:<{qty}}  {line.unit_price:>16}  {line.monthly:>9.2f}")
    out.append(f"  {'Total':<{width}}  {'':<{qty}}  {'':>16}  {total(lines):>9.2f}")
    credit = -sum(x.monthly for x in lines if x.monthly < 0)
    if credit:
        out.append(
            f"  Without CloudWatch's free tier (an account that already uses it elsewhere): {total(lines) + credit:.2f}"
        )
    if traffic is not None:
        usage = prices["assumptions"]
        out.append(
            f"  The total is for {usage['requests_per_month'] / 1e6:g} million requests a month"
            f" ({usage['kb_per_request']:g} KB each). Each further million adds ${traffic.total:.2f}:"
            f" Fargate ${traffic.compute:.3f} (at {traffic.rps_per_vcpu} requests/s per vCPU, the benchmark's"
            f" figure), load balancer ${traffic.load_balancer:.3f}, data out ${traffic.data_out:.2f} (past the"
            f" first {prices['data_transfer_out_free_gb']} GB a month). The tasks above serve up to"
            f" {traffic.fixed_capacity_millions:,.0f} million requests a month; past that, autoscaling adds tasks."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        action="append",
        choices=list(PROFILE_DEFAULTS),
        help="profile to estimate (repeatable; default all three)",
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
        for profile in args.profile or list(PROFILE_DEFAULTS):
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
                            "total": total(v),
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
