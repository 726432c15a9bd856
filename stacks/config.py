"""The typed deployment configuration: three profiles in code, context only selects and overrides.

``app.py`` is the only caller of :func:`load_config`; every stack receives the frozen result.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_REGION = "eu-west-1"
_INSTANCE_CLASS_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_CERT_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Fargate's valid (cpu units -> memory MiB) combinations, for the sizes we offer.
_FARGATE_MEMORY = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
}


# Requests per second one core of the service sustains at p99 <= 25 ms: the HTTP figure of
# the benchmark (bench/README.md, the full run recorded in bench/results/). A task's
# request-count scaling target is this, times its vCPUs, at 60% so scale-out starts before
# latency suffers. tests/infra/test_config.py keeps it equal to the recorded run.
HTTP_RPS_PER_CORE = 360
SCALING_HEADROOM = 0.6


def requests_per_target_per_minute(cpu_units: int) -> int:
    """The ALB requests per task per minute that the request-count scaling policy targets."""
    return max(10, int(HTTP_RPS_PER_CORE * cpu_units / 1024 * SCALING_HEADROOM * 60))


class ConfigError(ValueError):
    """A context value is invalid; the message names the key."""


@dataclass(frozen=True)
class DeploymentConfig:
    profile: str
    account: str | None
    region: str
    availability_zones: tuple[str, ...]
    # network
    max_azs: int
    nat_gateways: int
    """0: no NAT; the tasks run in the public subnets with a public IPv4 address (the lean profile)."""
    secrets_endpoint_azs: int | None
    """Zones that get a Secrets Manager endpoint interface; None: every zone in use."""
    flow_logs: str
    """"all" or "reject": which traffic the VPC flow logs record."""
    # database
    database: str
    """"instance" (RDS for PostgreSQL) or "aurora-serverless-v2" (an Aurora PostgreSQL cluster)."""
    min_acu: float
    """Aurora Serverless v2: the least capacity per instance; 0 lets an idle cluster pause."""
    max_acu: float
    readers: int
    """Read replicas (instance) or reader instances (Aurora) for list, search and similar."""
    rds_proxy: bool
    """The service connects through RDS Proxy (the writer; and Aurora's readers, by a read-only endpoint)."""
    db_instance_class: str
    db_multi_az: bool
    db_allocated_storage_gib: int
    db_max_allocated_storage_gib: int
    db_backup_retention_days: int
    db_deletion_protection: bool
    db_connections_alarm: int
    # service
    desired_count: int
    min_tasks: int
    max_tasks: int
    cpu: int
    memory_mib: int
    task_architecture: str
    """"x86_64" or "arm64" (Graviton, about 20% cheaper; the image cross-builds, see service/Dockerfile)."""
    fargate_spot: bool
    """Run the tasks on Fargate Spot: a large discount, and a task may be stopped with 2 minutes' notice."""
    requests_per_target_per_minute: int | None
    """None: derived from the benchmark (requests_per_target_per_minute()) for the task's CPU."""
    certificate_arn: str | None
    allowed_cidrs: tuple[str, ...]
    alarm_email: str | None
    embedding_dimension: int
    log_retention_days: int
    termination_protection: bool
    container_insights: bool
    allow_major_version_upgrade: bool
    """Let a deploy move the instance to a new major version (irreversible: snapshot first)."""
    allow_plain_http: bool
    """Explicit opt-out: prod serves plain HTTP without a certificate (never the default)."""

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"

    @property
    def tasks_in_public_subnets(self) -> bool:
        """Without NAT the tasks need a public address to reach ECR, CloudWatch Logs and Secrets
        Manager; their security group still admits only the load balancer."""
        return self.nat_gateways == 0

    @property
    def endpoint_azs(self) -> tuple[str, ...]:
        """The zones of the Secrets Manager endpoint's interfaces."""
        return self.azs[: self.secrets_endpoint_azs or len(self.azs)]

    @property
    def aurora(self) -> bool:
        return self.database == AURORA

    @property
    def auto_pause(self) -> bool:
        """An Aurora cluster that scales to zero when idle (minAcu 0)."""
        return self.aurora and self.min_acu == 0

    @property
    def retain_logs(self) -> bool:
        """Prod keeps its log groups (and their history) when a stack is deleted."""
        return self.is_prod

    @property
    def performance_insights(self) -> bool:
        # Performance Insights is not offered on the smallest burstable classes.
        size = self.db_instance_class.split(".")[-1]
        return size not in ("micro", "small")

    @property
    def requests_per_target(self) -> int:
        if self.requests_per_target_per_minute is not None:
            return self.requests_per_target_per_minute
        return requests_per_target_per_minute(self.cpu)

    @property
    def azs(self) -> tuple[str, ...]:
        return self.availability_zones[: self.max_azs]


INSTANCE = "instance"
AURORA = "aurora-serverless-v2"
MAX_ACU = 256  # Aurora Serverless v2's largest capacity per instance (recent versions)
MAX_READERS = 5

_DEV: dict[str, Any] = dict(
    database=INSTANCE,
    # Aurora only: dev and lean pause when idle; prod keeps 2 ACUs (about 4 GiB) warm.
    min_acu=0.0,
    max_acu=4.0,
    readers=0,
    rds_proxy=False,
    max_azs=2,
    nat_gateways=1,
    secrets_endpoint_azs=None,
    flow_logs="all",
    db_instance_class="t4g.micro",
    db_multi_az=False,
    db_allocated_storage_gib=20,
    db_max_allocated_storage_gib=100,
    db_backup_retention_days=7,
    db_deletion_protection=False,
    db_connections_alarm=60,
    desired_count=1,
    min_tasks=1,
    max_tasks=3,
    cpu=256,
    memory_mib=512,
    task_architecture="x86_64",
    fargate_spot=False,
    requests_per_target_per_minute=None,
    certificate_arn=None,
    allowed_cidrs=("0.0.0.0/0",),
    alarm_email=None,
    embedding_dimension=1536,
    log_retention_days=30,
    termination_protection=False,
    container_insights=True,
    allow_major_version_upgrade=False,
    allow_plain_http=False,
)

_PROD: dict[str, Any] = {
    **_DEV,
    "max_azs": 3,
    "nat_gateways": 3,
    "min_acu": 2.0,
    "max_acu": 16.0,
    "db_instance_class": "m7g.large",
    "db_multi_az": True,
    "db_allocated_storage_gib": 100,
    "db_max_allocated_storage_gib": 1000,
    "db_backup_retention_days": 14,
    "db_deletion_protection": True,
    "db_connections_alarm": 500,
    "desired_count": 2,
    "min_tasks": 2,
    "max_tasks": 10,
    "cpu": 1024,
    "memory_mib": 2048,
    "log_retention_days": 365,
    "termination_protection": True,
}

# The cheapest stack at the same security bar (README, "Cost"): no NAT gateway (tasks in the
# public subnets, ingress from the load balancer only), one Secrets Manager endpoint interface
# (the schema and rotation Lambdas have no other way out), Graviton tasks on Fargate Spot,
# no Container Insights, flow logs of rejected traffic only, one day of backups.
_LEAN: dict[str, Any] = {
    **_DEV,
    "nat_gateways": 0,
    "secrets_endpoint_azs": 1,
    "flow_logs": "reject",
    "db_backup_retention_days": 1,
    "task_architecture": "arm64",
    "fargate_spot": True,
    "container_insights": False,
}

PROFILE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"dev": _DEV, "lean": _LEAN, "prod": _PROD}

# context key -> (field, parser)
CONTEXT_KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {}


def _key(name: str, field: str) -> Callable[[Callable[[str, Any], Any]], Callable[[str, Any], Any]]:
    def register(parser: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        CONTEXT_KEYS[name] = (field, parser)
        return parser

    return register


def _int(key: str, raw: Any, lo: int, hi: int) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        raise ConfigError(f"context '{key}' must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"context '{key}' must be between {lo} and {hi}, got {value}")
    return value


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "1", "yes"):
        return True
    if str(raw).lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"context '{key}' must be true or false, got {raw!r}")


def _list(raw: Any) -> list[str]:
    if isinstance(raw, list | tuple):
        return [str(v).strip() for v in raw if str(v).strip()]
    return [v.strip() for v in str(raw).split(",") if v.strip()]


@_key("dbInstanceClass", "db_instance_class")
def _instance_class(key: str, raw: Any) -> str:
    value = str(raw).removeprefix("db.")
    if not _INSTANCE_CLASS_RE.match(value):
        raise ConfigError(f"context '{key}' must look like t4g.micro or m7g.large, got {raw!r}")
    family = value.split(".")[0]
    if not family.endswith("g") and "g" not in family[2:]:
        raise ConfigError(f"context '{key}' must be a Graviton class (t4g, m7g, r7g ...), got {raw!r}")
    return value


_key("dbMultiAz", "db_multi_az")(_bool)
_key("dbDeletionProtection", "db_deletion_protection")(_bool)
_key("dbAllocatedStorage", "db_allocated_storage_gib")(lambda k, v: _int(k, v, 20, 65536))
_key("dbMaxAllocatedStorage", "db_max_allocated_storage_gib")(lambda k, v: _int(k, v, 21, 65536))
_key("dbBackupRetentionDays", "db_backup_retention_days")(lambda k, v: _int(k, v, 1, 35))
_key("dbConnectionsAlarm", "db_connections_alarm")(lambda k, v: _int(k, v, 1, 100000))
_key("desiredCount", "desired_count")(lambda k, v: _int(k, v, 1, 100))
_key("minTasks", "min_tasks")(lambda k, v: _int(k, v, 1, 100))
_key("maxTasks", "max_tasks")(lambda k, v: _int(k, v, 1, 100))
_key("cpu", "cpu")(lambda k, v: _int(k, v, 256, 4096))
_key("memoryMiB", "memory_mib")(lambda k, v: _int(k, v, 512, 30720))
_key("natGateways", "nat_gateways")(lambda k, v: _int(k, v, 0, 3))
_key("secretsEndpointAzs", "secrets_endpoint_azs")(lambda k, v: _int(k, v, 1, 3))
_key("fargateSpot", "fargate_spot")(_bool)


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ConfigError(f"context '{key}' must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


_key("taskArchitecture", "task_architecture")(_choice("x86_64", "arm64"))
_key("database", "database")(_choice(INSTANCE, AURORA))
_key("readers", "readers")(lambda k, v: _int(k, v, 0, MAX_READERS))
_key("rdsProxy", "rds_proxy")(_bool)


def _acu(lo: float) -> Callable[[str, Any], float]:
    def parse(key: str, raw: Any) -> float:
        try:
            value = float(str(raw))
        except ValueError:
            raise ConfigError(f"context '{key}' must be a number of ACUs, got {raw!r}") from None
        if not lo <= value <= MAX_ACU or value * 2 != int(value * 2):
            raise ConfigError(f"context '{key}' must be between {lo:g} and {MAX_ACU} in steps of 0.5, got {raw!r}")
        return value

    return parse


_key("minAcu", "min_acu")(_acu(0))
_key("maxAcu", "max_acu")(_acu(1))
_key("flowLogs", "flow_logs")(_choice("all", "reject"))
MAX_AZS = 3
_key("maxAzs", "max_azs")(lambda k, v: _int(k, v, 2, MAX_AZS))
_key("requestsPerTarget", "requests_per_target_per_minute")(lambda k, v: _int(k, v, 10, 1_000_000))
_key("embeddingDimension", "embedding_dimension")(lambda k, v: _int(k, v, 1, 2000))
_key("logRetentionDays", "log_retention_days")(lambda k, v: _int(k, v, 1, 3653))
_key("terminationProtection", "termination_protection")(_bool)
_key("containerInsights", "container_insights")(_bool)
_key("allowPlainHttp", "allow_plain_http")(_bool)
_key("allowMajorVersionUpgrade", "allow_major_version_upgrade")(_bool)


@_key("certificateArn", "certificate_arn")
def _certificate(key: str, raw: Any) -> str | None:
    if raw in (None, ""):
        return None
    if not _CERT_ARN_RE.match(str(raw)):
        raise ConfigError(f"context '{key}' must be an ACM certificate ARN, got {raw!r}")
    return str(raw)


@_key("allowedCidrs", "allowed_cidrs")
def _cidrs(key: str, raw: Any) -> tuple[str, ...]:
    values = _list(raw)
    if not values:
        raise ConfigError(f"context '{key}' needs at least one CIDR")
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise ConfigError(f"context '{key}' has an invalid CIDR {value!r}") from None
    return tuple(values)


@_key("alarmEmail", "alarm_email")
def _email(key: str, raw: Any) -> str | None:
    if raw in (None, ""):
        return None
    if not _EMAIL_RE.match(str(raw)):
        raise ConfigError(f"context '{key}' must be an e-mail address, got {raw!r}")
    return str(raw)


@_key("availabilityZones", "availability_zones")
def _azs(key: str, raw: Any) -> tuple[str, ...]:
    values = _list(raw)
    if len(values) < 2:
        raise ConfigError(f"context '{key}' needs at least two availability zones")
    return tuple(values)


def _is_cdk_key(key: str) -> bool:
    """aws-cdk-lib's own context: feature flags (``@aws-cdk/...``) and ``aws:cdk:...`` settings."""
    return key.startswith("@") or ":" in key


def check_context_keys(context: Mapping[str, Any]) -> None:
    """Refuse a context key this app does not know (a typo would otherwise be ignored silently)."""
    known = ["profile", *CONTEXT_KEYS]
    for key in context:
        if key in known or _is_cdk_key(key):
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown context key {key!r}{hint}; the keys are: {', '.join(known)}")


def load_config(context: Mapping[str, Any], env: Mapping[str, str]) -> DeploymentConfig:
    """Build the config from CDK context (``-c key=value`` and ``cdk.json``) and environment."""
    check_context_keys(context)
    profile = str(context.get("profile") or "dev")
    if profile not in PROFILE_DEFAULTS:
        raise ConfigError(f"context 'profile' must be one of {', '.join(PROFILE_DEFAULTS)}, got {profile!r}")
    region = env.get("CDK_DEFAULT_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    values: dict[str, Any] = dict(PROFILE_DEFAULTS[profile])
    # Seeded, so synth never asks EC2 (no credentials needed). Override with real names
    # where a region's zones differ: -c availabilityZones=us-west-1b,us-west-1c
    values["availability_zones"] = tuple(f"{region}{suffix}" for suffix in "abc")
    for key, (field, parse) in CONTEXT_KEYS.items():
        if context.get(key) not in (None, ""):
            try:
                values[field] = parse(key, context[key])
            except ConfigError as exc:
                if key in CREATE_TIME_ONLY:
                    raise ConfigError(f"{exc} (set at the first deploy only: {CREATE_TIME_ONLY[key]})") from None
                raise
    config = DeploymentConfig(profile=profile, account=env.get("CDK_DEFAULT_ACCOUNT") or None, region=region, **values)
    if not config.aurora:
        given = [key for key in ("minAcu", "maxAcu") if context.get(key) not in (None, "")]
        if given:
            raise ConfigError(f"context {', '.join(repr(k) for k in given)} applies only with -c database={AURORA}")
    return _check(config)


# Settings that CloudFormation cannot change on a deployed stack without replacing what holds
# data or what other stacks import; the README's configuration table marks them too.
CREATE_TIME_ONLY = {
    "availabilityZones": "subnets are placed in these zones; other zones mean new subnets for the database",
    "maxAzs": "may grow up to 3 (the layout reserves room), never shrink: the database and tasks use those subnets",
    "embeddingDimension": "the embedding column's type is fixed by the first migration",
    "database": "moving between an RDS instance and Aurora is a new database: migrate the data (README, Scaling)",
}


def _check(config: DeploymentConfig) -> DeploymentConfig:
    if config.is_prod and not config.certificate_arn and not config.allow_plain_http:
        raise ConfigError(
            "the prod profile needs context 'certificateArn' (an ACM certificate in the stack's region): without "
            "it the API token and every conversation travel over plain HTTP. To accept that anyway, set "
            "-c allowPlainHttp=true"
        )
    if config.max_azs > len(config.availability_zones):
        raise ConfigError(f"maxAzs {config.max_azs} needs that many availabilityZones")
    if config.nat_gateways > config.max_azs:
        config = replace(config, nat_gateways=config.max_azs)
    if config.min_acu > config.max_acu:
        raise ConfigError(f"minAcu ({config.min_acu:g}) must not be larger than maxAcu ({config.max_acu:g})")
    if config.db_max_allocated_storage_gib <= config.db_allocated_storage_gib:
        raise ConfigError("dbMaxAllocatedStorage must be larger than dbAllocatedStorage (storage autoscaling)")
    if not config.min_tasks <= config.desired_count <= config.max_tasks:
        raise ConfigError(
            f"tasks must satisfy minTasks <= desiredCount <= maxTasks, got "
            f"{config.min_tasks} <= {config.desired_count} <= {config.max_tasks}"
        )
    if config.cpu not in _FARGATE_MEMORY:
        raise ConfigError(f"context 'cpu' must be one of {sorted(_FARGATE_MEMORY)}, got {config.cpu}")
    if config.memory_mib not in _FARGATE_MEMORY[config.cpu]:
        allowed = _FARGATE_MEMORY[config.cpu]
        raise ConfigError(
            f"context 'memoryMiB' {config.memory_mib} is not valid with cpu {config.cpu} "
            f"(Fargate allows {allowed.start}-{allowed.stop - 1} in steps of {allowed.step})"
        )
    return config
