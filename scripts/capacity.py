#!/usr/bin/env python3
"""What to deploy for a traffic: tasks, the database (instance class or ACU range), readers,
RDS Proxy, and what it costs (make capacity RPS=... [P99_MS=...] [PROFILE=...]).

The inputs are the benchmark's recorded run (bench/results/, the newest full run):
  - requests per vCPU-second of the service at the p99 budget (the HTTP step-up's highest
    rate whose p99 met the budget; 360/s at 25 ms in the recorded run), for the benchmark's mix
    (60% read last 50 messages, 30% append, 10% list);
  - database operations per second per database vCPU: the store's mixed workload at 8 clients
    (one operation per request), divided by the benchmark machine's cores (the load generator
    shared them, so this is a floor).

The formula (README, "Scaling"):
  tasks          = max(profile's minTasks, ceil(RPS / (rps_per_vcpu(P99) x task vCPU x 0.6)))
  database vCPUs = RPS / db_ops_per_vcpu / 0.6     (0.6: headroom, under the 80% CPU alarm)
  instance       = the cheapest Graviton class in prices.json with at least that many vCPUs,
                   never cheaper than the profile's own class
  Aurora maxAcu  = ceil(database vCPUs / 0.25) (1 ACU ~ 2 GiB and a quarter vCPU), at least 1
  connections    = tasks x POOL_MAX_SIZE (10); RDS Proxy when that passes 80% of the database's
                   max_connections (RDS: memory / 9531392 bytes, at most 5000)
  cost           = make cost's model for those settings, at RPS sustained all month.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import estimate_cost
from stacks.config import PROFILE_DEFAULTS, SCALING_HEADROOM

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
POOL_MAX_SIZE = 10  # stacks/api_service.py's POOL_MAX_SIZE per task
VCPU_PER_ACU = 0.25
CONNECTION_BYTES = 9_531_392  # RDS for PostgreSQL's default max_connections divisor
SECONDS_PER_MONTH = 730 * 3600


@dataclass(frozen=True)
class Measured:
    source: str
    rps_per_vcpu: float
    p99_ms: float
    db_ops_per_vcpu: float


def measured(p99_ms: float, results: Path = RESULTS) -> Measured:
    """The newest full benchmark run's figures at the p99 budget."""
    runs = sorted(p for p in results.glob("*.json") if "soak" not in p.name)
    for path in reversed(runs):
        run = json.loads(path.read_text())
        if run.get("mode") == "full" or "http" in run:
            break
    else:
        raise SystemExit(f"no benchmark run in {results}: run `make bench`")
    http = run["http"]
    cores = float(run["machine"]["cores"])
    met = [s for s in http["steps"] if s["passed"] and s["p99_ms"] <= p99_ms]
    if not met:
        lowest = min(s["p99_ms"] for s in http["steps"])
        raise SystemExit(f"P99_MS={p99_ms:g}: no measured rate met it (the lowest p99 measured is {lowest} ms)")
    rate = max(s["achieved_rps"] for s in met)
    # The budget the run was confirmed at caps the figure: past it nothing was measured.
    rate = min(rate, http["rps_per_core"]) if p99_ms >= http["p99_budget_ms"] else rate
    mixed = run["mixed"][max(run["mixed"], key=int)]
    # The step-up runs one service process, on one core: its rate is the rate per vCPU.
    return Measured(path.name, rate, p99_ms, mixed["ops_per_s"] / cores)


def max_connections(memory_gib: float) -> int:
    return min(int(memory_gib * 1024**3 / CONNECTION_BYTES), 5000)


def plan(rps: float, p99_ms: float, profile: str, database: str, prices: dict[str, Any]) -> dict[str, Any]:
    m = measured(p99_ms)
    defaults = PROFILE_DEFAULTS[profile]
    task_vcpu = defaults["cpu"] / 1024
    tasks = max(defaults["minTasks"], math.ceil(rps / (m.rps_per_vcpu * task_vcpu * SCALING_HEADROOM)))
    db_vcpus = rps / m.db_ops_per_vcpu / SCALING_HEADROOM
    connections = tasks * POOL_MAX_SIZE
    context: dict[str, str] = {
        # The floor target tracking keeps: the rate is sustained all month (the cost below).
        "minTasks": str(tasks),
        "maxTasks": str(min(100, max(tasks * 2, defaults["maxTasks"]))),
    }
    if database == "aurora-serverless-v2":
        max_acu = max(1.0, math.ceil(db_vcpus / VCPU_PER_ACU * 2) / 2)
        min_acu = min(defaults["minAcu"], max_acu)
        limit = max_connections(max_acu * 2)
        context |= {"database": database, "maxAcu": f"{max_acu:g}", "minAcu": f"{min_acu:g}"}
        sized = f"Aurora Serverless v2, {min_acu:g}-{max_acu:g} ACU"
        overrides = [f"aurora_average_acu={max_acu}", "aurora_awake_fraction=1"]
    else:
        # Never below the profile's own class (prod's m7g.large is not traded for a burstable one).
        floor = prices["rds_instance_hour"]["db." + defaults["dbInstanceClass"]]
        candidates = sorted(
            (price, klass)
            for klass, price in prices["rds_instance_hour"].items()
            if prices["rds_vcpus"][klass] >= db_vcpus and price >= floor
        )
        if not candidates:
            raise SystemExit(
                f"{db_vcpus:.1f} database vCPUs: larger than any class in prices.json; use Aurora or readers"
            )
        klass = candidates[0][1]
        limit = max_connections(prices["rds_memory_gib"][klass])
        context["dbInstanceClass"] = klass.removeprefix("db.")
        sized = f"RDS {klass} ({prices['rds_vcpus'][klass]} vCPU)"
        overrides = []
    proxy = connections > 0.8 * limit
    if proxy:
        context["rdsProxy"] = "true"
    requests = rps * SECONDS_PER_MONTH
    priced = estimate_cost.load_prices(overrides=[*overrides, f"requests_per_month={requests:.0f}"])
    templates = estimate_cost.synthesize(profile, **context)
    lines = estimate_cost.estimate(templates, priced)
    return {
        "inputs": {
            "rps": rps,
            "p99_ms": p99_ms,
            "profile": profile,
            "benchmark": m.source,
            "rps_per_vcpu": m.rps_per_vcpu,
            "db_ops_per_vcpu": round(m.db_ops_per_vcpu, 1),
        },
        "tasks": tasks,
        "task_vcpu": task_vcpu,
        "database_vcpus": round(db_vcpus, 2),
        "database": sized,
        "connections": connections,
        "max_connections": limit,
        "rds_proxy": proxy,
        "context": context,
        "monthly_usd": estimate_cost.total(lines),
        "lines": lines,
    }


# What prod refuses to synth without (stacks/config.py): the command says so, with placeholders.
_PROD_NEEDS = " -c certificateArn=<ACM certificate ARN> -c domainName=<api.example.com> -c alarmEmail=<you@example.com>"


def render(result: dict[str, Any]) -> str:
    i = result["inputs"]
    flags = " ".join(f"-c {k}={v}" for k, v in result["context"].items())
    out = [
        f"{i['rps']:g} requests/s at p99 <= {i['p99_ms']:g} ms, {i['profile']} profile"
        f" (benchmark {i['benchmark']}: {i['rps_per_vcpu']:g} requests/s per service vCPU,"
        f" {i['db_ops_per_vcpu']:g} database operations/s per database vCPU)",
        f"  tasks:        {result['tasks']} x {result['task_vcpu']:g} vCPU"
        f" (minTasks; target tracking scales out to {result['context']['maxTasks']})",
        f"  database:     {result['database']} (needs {result['database_vcpus']:g} vCPU at 60% CPU)",
        f"  connections:  {result['connections']} pooled of {result['max_connections']} allowed"
        f"{': RDS Proxy in front' if result['rds_proxy'] else ''}",
        "  readers:      optional; they take list, search and similar (10% of the benchmark's mix)",
        f"  cost:         ${result['monthly_usd']:.2f} a month at that rate all month (make cost's model);"
        " the largest lines:",
        *(
            f"                {line.item}: ${line.monthly:,.2f}"
            for line in sorted(result["lines"], key=lambda x: -x.monthly)[:4]
        ),
        f"  deploy:       node_modules/.bin/cdk deploy --all -c profile={i['profile']} {flags}"
        + (_PROD_NEEDS if i["profile"] == "prod" else ""),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, required=True, help="peak requests per second to serve")
    parser.add_argument("--p99-ms", type=float, default=25.0, help="p99 latency budget in ms (default 25)")
    parser.add_argument("--profile", choices=list(PROFILE_DEFAULTS), default="prod")
    parser.add_argument("--database", choices=["instance", "aurora-serverless-v2"], default="instance")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rps <= 0:
        parser.error("--rps must be positive")
    result = plan(args.rps, args.p99_ms, args.profile, args.database, estimate_cost.load_prices())
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "lines"}, indent=2))
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
