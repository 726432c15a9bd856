"""The typed deployment configuration: three profiles in code, context only selects and overrides.

Every context key is declared once, as a field of the config group of the construct that uses
it (``NetworkConfig``, ``DatabaseConfig``, ``ServiceConfig``, ``AlarmsConfig``, ``LogsConfig``):
its parser, its default in each profile, and whether a deployed stack may change it. The stacks
wire constructs; each construct receives only its own group. ``app.py`` is the only caller of
:func:`load_config`. The README's configuration table is tested against these declarations
(tests/infra/test_config.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_REGION = "eu-west-1"
PROFILES = ("dev", "lean", "prod")
INSTANCE = "instance"
AURORA = "aurora-serverless-v2"
MAX_ACU = 256  # Aurora Serverless v2's largest capacity per instance (recent versions)
MAX_READERS = 5
MAX_AZS = 3
_INSTANCE_CLASS_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_CERT_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ZONE_ID_RE = re.compile(r"^Z[A-Z0-9]{4,31}$")
# A DB (or DB cluster) snapshot: its identifier (an automated one starts "rds:"), or its ARN.
_SNAPSHOT_RE = re.compile(
    r"^((rds:)?[a-zA-Z][a-zA-Z0-9-]{0,254}|arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:(cluster-)?snapshot:(rds:)?[a-zA-Z][a-zA-Z0-9-]{0,254})$"
)
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


# --- parsers: (context key, raw value) -> value, or ConfigError naming the key -------------------

Parser = Callable[[str, Any], Any]


def _int(lo: int, hi: int) -> Parser:
    def parse(key: str, raw: Any) -> int:
        try:
            value = int(str(raw))
        except ValueError:
            raise ConfigError(f"context '{key}' must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"context '{key}' must be between {lo} and {hi}, got {value}")
        return value

    return parse


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


def _choice(*allowed: str) -> Parser:
    def parse(key: str, raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ConfigError(f"context '{key}' must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _acu(lo: float) -> Parser:
    def parse(key: str, raw: Any) -> float:
        try:
            value = float(str(raw))
        except ValueError:
            raise ConfigError(f"context '{key}' must be a number of ACUs, got {raw!r}") from None
        if not lo <= value <= MAX_ACU or value * 2 != int(value * 2):
            raise ConfigError(f"context '{key}' must be between {lo:g} and {MAX_ACU} in steps of 0.5, got {raw!r}")
        return value

    return parse


def _instance_class(key: str, raw: Any) -> str:
    value = str(raw).removeprefix("db.")
    if not _INSTANCE_CLASS_RE.match(value):
        raise ConfigError(f"context '{key}' must look like t4g.micro or m7g.large, got {raw!r}")
    family = value.split(".")[0]
    if not family.endswith("g") and "g" not in family[2:]:
        raise ConfigError(f"context '{key}' must be a Graviton class (t4g, m7g, r7g ...), got {raw!r}")
    return value


def _optional(pattern: re.Pattern[str], what: str, clean: Callable[[str], str] = lambda value: value) -> Parser:
    """A parser for an optional text key: unset or empty is None; otherwise ``clean`` of its text
    must match ``pattern``, or the key ``must be <what>``."""

    def parse(key: str, raw: Any) -> str | None:
        if raw in (None, ""):
            return None
        value = clean(str(raw))
        if not pattern.match(value):
            raise ConfigError(f"context '{key}' must be {what}, got {raw!r}")
        return value

    return parse


_certificate = _optional(_CERT_ARN_RE, "an ACM certificate ARN")
_email = _optional(_EMAIL_RE, "an e-mail address")
_domain = _optional(_DOMAIN_RE, "a DNS name such as api.example.com", lambda v: v.strip().lower().rstrip("."))
_zone_id = _optional(
    _ZONE_ID_RE, "a Route 53 hosted zone id such as Z0123456789ABC", lambda v: v.strip().removeprefix("/hostedzone/")
)
_snapshot = _optional(_SNAPSHOT_RE, "a DB snapshot identifier or ARN", str.strip)


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


def _azs(key: str, raw: Any) -> tuple[str, ...]:
    values = _list(raw)
    if len(values) < 2:
        raise ConfigError(f"context '{key}' needs at least two availability zones")
    return tuple(values)


# --- declarations ---------------------------------------------------------------------------------

Change = Literal["redeploy", "grow only", "create-time only", "set by make restore"]
_SAME: Any = object()


@dataclass(frozen=True)
class Setting:
    """One context key: how it parses, its default per profile, and whether it may change."""

    key: str
    parse: Parser
    defaults: Mapping[str, Any]
    change: Change
    why: str
    """For a key that may not change freely: what it fixes, shown when its value is refused."""
    unset: str
    """How the README's table shows a default of None."""


def setting(
    key: str,
    parse: Parser,
    *,
    dev: Any,
    lean: Any = _SAME,
    prod: Any = _SAME,
    change: Change = "redeploy",
    why: str = "",
    unset: str = "none",
) -> Any:
    """A config group's field that a context key sets (``lean`` and ``prod`` default to ``dev``)."""
    defaults = {
        "dev": dev,
        "lean": dev if lean is _SAME else lean,
        "prod": dev if prod is _SAME else prod,
    }
    declared = Setting(key, parse, defaults, change, why, unset)
    return dataclasses.field(metadata={"setting": declared})


@dataclass(frozen=True)
class NetworkConfig:
    availability_zones: tuple[str, ...] = setting(
        "availabilityZones",
        _azs,
        dev=None,  # seeded from the region (<region>a, b, c): synth never asks EC2
        change="create-time only",
        why="subnets are placed in these zones; other zones mean new subnets for the database",
        unset="`<region>a,b,c`",
    )
    max_azs: int = setting(
        "maxAzs",
        _int(2, MAX_AZS),
        dev=2,
        prod=3,
        change="grow only",
        why="may grow up to 3 (the layout reserves room), never shrink: the database and tasks use those subnets",
    )
    nat_gateways: int = setting("natGateways", _int(0, 3), dev=1, lean=0, prod=3)
    """0: no NAT; the tasks run in the public subnets with a public IPv4 address (the lean profile)."""
    secrets_endpoint_azs: int | None = setting("secretsEndpointAzs", _int(1, 3), dev=None, lean=1, unset="every AZ")
    """Zones that get a Secrets Manager endpoint interface; None: every zone in use."""
    flow_logs: str = setting("flowLogs", _choice("all", "reject"), dev="all", lean="reject")
    """"all" or "reject": which traffic the VPC flow logs record."""

    @property
    def azs(self) -> tuple[str, ...]:
        return self.availability_zones[: self.max_azs]

    @property
    def endpoint_azs(self) -> tuple[str, ...]:
        """The zones of the Secrets Manager endpoint's interfaces."""
        return self.azs[: self.secrets_endpoint_azs or len(self.azs)]

    @property
    def tasks_in_public_subnets(self) -> bool:
        """Without NAT the tasks need a public address to reach ECR, CloudWatch Logs and Secrets
        Manager; their security group still admits only the load balancer."""
        return self.nat_gateways == 0


@dataclass(frozen=True)
class DatabaseConfig:
    prod: bool
    """The prod profile: snapshot on delete, keep the secrets and the automated backups."""
    kind: str = setting(
        "database",
        _choice(INSTANCE, AURORA),
        dev=INSTANCE,
        change="create-time only",
        why="moving between an RDS instance and Aurora is a new database: migrate the data (README, Scaling)",
    )
    """"instance" (RDS for PostgreSQL) or "aurora-serverless-v2" (an Aurora PostgreSQL cluster)."""
    # Aurora only: dev and lean pause when idle; prod keeps 2 ACUs (about 4 GiB) warm.
    min_acu: float = setting("minAcu", _acu(0), dev=0.0, prod=2.0)
    """Aurora Serverless v2: the least capacity per instance; 0 lets an idle cluster pause."""
    max_acu: float = setting("maxAcu", _acu(1), dev=4.0, prod=16.0)
    readers: int = setting("readers", _int(0, MAX_READERS), dev=0)
    """Read replicas (instance) or reader instances (Aurora) for list, search and similar."""
    rds_proxy: bool = setting("rdsProxy", _bool, dev=False)
    """The service connects through RDS Proxy (the writer; and Aurora's readers, by a read-only endpoint)."""
    proxy_azs: int = setting(
        "proxyAzs",
        _int(2, MAX_AZS),
        dev=2,
        change="create-time only",
        why=(
            "a proxy's subnets are fixed when it is created; it stays in the first proxyAzs zones whatever "
            "maxAzs grows to (a proxy created by an earlier release in 3 zones keeps -c proxyAzs=3)"
        ),
    )
    """RDS Proxy's zones: the first N of the database subnets, so growing maxAzs never replaces it."""
    instance_class: str = setting("dbInstanceClass", _instance_class, dev="t4g.micro", prod="m7g.large")
    multi_az: bool = setting("dbMultiAz", _bool, dev=False, prod=True)
    allocated_storage_gib: int = setting("dbAllocatedStorage", _int(20, 65536), dev=20, prod=100)
    max_allocated_storage_gib: int = setting("dbMaxAllocatedStorage", _int(21, 65536), dev=100, prod=1000)
    backup_retention_days: int = setting("dbBackupRetentionDays", _int(1, 35), dev=7, lean=1, prod=14)
    deletion_protection: bool = setting("dbDeletionProtection", _bool, dev=False, prod=True)
    apply_immediately: bool = setting("dbApplyImmediately", _bool, dev=True, prod=False)
    """A class, storage or Multi-AZ change restarts (or fails over) the database at deploy time;
    false: RDS holds it until the maintenance window (Sunday 03:30-04:30 UTC)."""
    termination_protection: bool = setting("terminationProtection", _bool, dev=False, prod=True)
    """CloudFormation termination protection on the Data stack."""
    embedding_dimension: int = setting(
        "embeddingDimension",
        _int(1, 2000),
        dev=1536,
        change="create-time only",
        why="the embedding column's type is fixed by the first migration",
    )
    allow_major_version_upgrade: bool = setting("allowMajorVersionUpgrade", _bool, dev=False)
    """Let a deploy move the instance to a new major version (irreversible: snapshot first)."""
    restore_snapshot: str | None = setting(
        "restoreSnapshot",
        _snapshot,
        dev=None,
        change="set by make restore",
        why=(
            "the database is created from this snapshot: naming another (or none) replaces it with a new one "
            "(or an empty one). make restore sets it in cdk.json, per profile; keep it there afterwards"
        ),
    )
    """The DB (Aurora: DB cluster) snapshot the database was restored from (scripts/restore.py)."""

    @property
    def aurora(self) -> bool:
        return self.kind == AURORA

    @property
    def auto_pause(self) -> bool:
        """An Aurora cluster that scales to zero when idle (minAcu 0)."""
        return self.aurora and self.min_acu == 0

    @property
    def performance_insights(self) -> bool:
        # Performance Insights is not offered on the smallest burstable classes.
        size = self.instance_class.split(".")[-1]
        return size not in ("micro", "small")


@dataclass(frozen=True)
class ServiceConfig:
    prod: bool
    """The prod profile: the load balancer has deletion protection."""
    min_tasks: int = setting("minTasks", _int(1, 100), dev=1, prod=2)
    max_tasks: int = setting("maxTasks", _int(1, 100), dev=3, prod=10)
    cpu: int = setting("cpu", _int(256, 4096), dev=256, prod=1024)
    memory_mib: int = setting("memoryMiB", _int(512, 30720), dev=512, prod=2048)
    task_architecture: str = setting("taskArchitecture", _choice("x86_64", "arm64"), dev="x86_64", lean="arm64")
    """"x86_64" or "arm64" (Graviton, about 20% cheaper; the image cross-builds, see service/Dockerfile)."""
    fargate_spot: bool = setting("fargateSpot", _bool, dev=False, lean=True)
    """Run the tasks on Fargate Spot: a large discount, and a task may be stopped with 2 minutes' notice."""
    requests_per_target_per_minute: int | None = setting(
        "requestsPerTarget", _int(10, 1_000_000), dev=None, unset="derived"
    )
    """None: derived from the benchmark (requests_per_target_per_minute()) for the task's CPU."""
    container_insights: bool = setting("containerInsights", _bool, dev=True, lean=False)
    certificate_arn: str | None = setting("certificateArn", _certificate, dev=None)
    domain_name: str | None = setting("domainName", _domain, dev=None)
    """The name clients use (the certificate's); the service URL and make verify use it."""
    hosted_zone_id: str | None = setting("hostedZoneId", _zone_id, dev=None)
    """With domainName: the Route 53 zone (of hostedZoneName) that gets the alias record to the load balancer."""
    hosted_zone_name: str | None = setting("hostedZoneName", _domain, dev=None)
    allow_plain_http: bool = setting("allowPlainHttp", _bool, dev=False)
    """Explicit opt-out: plain HTTP without a certificate to the whole internet (in prod: at all)."""
    allowed_cidrs: tuple[str, ...] | None = setting(
        "allowedCidrs", _cidrs, dev=None, prod=("0.0.0.0/0",), unset="none: closed"
    )
    """Who may reach the load balancer. None: nobody (dev and lean serve plain HTTP, so they are
    closed until told whom to admit; make deploy admits the deploying machine's address)."""

    @property
    def open_to_the_internet(self) -> bool:
        return any(cidr in ("0.0.0.0/0", "::/0") for cidr in self.allowed_cidrs or ())

    @property
    def requests_per_target(self) -> int:
        if self.requests_per_target_per_minute is not None:
            return self.requests_per_target_per_minute
        return requests_per_target_per_minute(self.cpu)


@dataclass(frozen=True)
class AlarmsConfig:
    email: str | None = setting("alarmEmail", _email, dev=None)
    db_connections: int = setting("dbConnectionsAlarm", _int(1, 100000), dev=60, prod=500)


@dataclass(frozen=True)
class LogsConfig:
    retain: bool
    """Prod keeps its log groups (and their history) when a stack is deleted."""
    retention_days: int = setting("logRetentionDays", _int(1, 3653), dev=30, prod=365)


GROUPS: Mapping[str, type[Any]] = {
    "network": NetworkConfig,
    "database": DatabaseConfig,
    "service": ServiceConfig,
    "alarms": AlarmsConfig,
    "logs": LogsConfig,
}


@dataclass(frozen=True)
class DeploymentConfig:
    profile: str
    account: str | None
    region: str
    network: NetworkConfig
    database: DatabaseConfig
    service: ServiceConfig
    alarms: AlarmsConfig
    logs: LogsConfig

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"


def _settings() -> Iterator[tuple[str, str, Setting]]:
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            if "setting" in f.metadata:
                yield group, f.name, f.metadata["setting"]


# context key -> its declaration, in declaration order
CONTEXT_KEYS: Mapping[str, Setting] = {s.key: s for _, _, s in _settings()}
# profile -> {context key: default}: what a profile means, for scripts (capacity, cost)
PROFILE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    profile: {s.key: s.defaults[profile] for s in CONTEXT_KEYS.values()} for profile in PROFILES
}


def _is_cdk_key(key: str) -> bool:
    """aws-cdk-lib's own context: feature flags (``@aws-cdk/...``) and ``aws:cdk:...`` settings."""
    return key.startswith("@") or ":" in key


# Keys an earlier release read, and why they are gone: a cdk.json still naming one stops synth
# with the way forward instead of "unknown key".
RETIRED_KEYS: Mapping[str, str] = {
    "desiredCount": (
        "the service starts at minTasks and target tracking owns the task count from then on; a "
        "DesiredCount in the template cut a scaled-out service back on every deploy. Remove it and "
        "set minTasks (and maxTasks) instead"
    ),
}


def check_context_keys(context: Mapping[str, Any]) -> None:
    """Refuse a context key this app does not know (a typo would otherwise be ignored silently)."""
    known = ["profile", *CONTEXT_KEYS]
    for key in context:
        if key in RETIRED_KEYS:
            raise ConfigError(f"context {key!r} is no longer read: {RETIRED_KEYS[key]}")
        if key in known or _is_cdk_key(key):
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown context key {key!r}{hint}; the keys are: {', '.join(known)}")


def context_value(context: Mapping[str, Any], key: str, profile: str) -> Any:
    """The raw value of ``key`` for ``profile``: cdk.json may give a key per profile, as
    ``{"prod": value, "dev": value}`` (make restore writes restoreSnapshot so)."""
    raw = context.get(key)
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - set(PROFILES))
        if unknown:
            raise ConfigError(
                f"context '{key}' given per profile names {', '.join(map(repr, unknown))}; "
                f"the profiles are {', '.join(PROFILES)}"
            )
        raw = raw.get(profile)
    return raw


def _value(declared: Setting, profile: str, context: Mapping[str, Any]) -> Any:
    raw = context_value(context, declared.key, profile)
    if raw in (None, ""):
        return declared.defaults[profile]
    try:
        return declared.parse(declared.key, raw)
    except ConfigError as exc:
        if declared.change in ("create-time only", "grow only"):
            raise ConfigError(f"{exc} (set at the first deploy only: {declared.why})") from None
        raise


def setting_value(context: Mapping[str, Any], key: str, profile: str) -> Any:
    """One key's value for ``profile`` from ``context`` (its default when unset), parsed: for
    scripts that need a few keys without building a whole, checked, config."""
    return _value(CONTEXT_KEYS[key], profile, context)


def default_zones(region: str) -> tuple[str, ...]:
    """The availability zones synth assumes without -c availabilityZones (never asking EC2)."""
    return tuple(f"{region}{suffix}" for suffix in "abc")


def load_config(context: Mapping[str, Any], env: Mapping[str, str]) -> DeploymentConfig:
    """Build the config from CDK context (``-c key=value`` and ``cdk.json``) and environment."""
    check_context_keys(context)
    profile = str(context.get("profile") or "dev")
    if profile not in PROFILES:
        raise ConfigError(f"context 'profile' must be one of {', '.join(PROFILES)}, got {profile!r}")
    region = env.get("CDK_DEFAULT_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    values: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for group, name, declared in _settings():
        values[group][name] = _value(declared, profile, context)
    # Seeded, so synth never asks EC2 (no credentials needed). Override with real names
    # where a region's zones differ: -c availabilityZones=us-west-1b,us-west-1c
    if values["network"]["availability_zones"] is None:
        values["network"]["availability_zones"] = default_zones(region)
    prod = profile == "prod"
    config = DeploymentConfig(
        profile=profile,
        account=env.get("CDK_DEFAULT_ACCOUNT") or None,
        region=region,
        network=NetworkConfig(**values["network"]),
        database=DatabaseConfig(**values["database"], prod=prod),
        service=ServiceConfig(**values["service"], prod=prod),
        alarms=AlarmsConfig(**values["alarms"]),
        logs=LogsConfig(**values["logs"], retain=prod),
    )
    if not config.database.aurora:
        given = [key for key in ("minAcu", "maxAcu") if context.get(key) not in (None, "")]
        if given:
            raise ConfigError(f"context {', '.join(repr(k) for k in given)} applies only with -c database={AURORA}")
    return _check(config)


def _check(config: DeploymentConfig) -> DeploymentConfig:
    """What no single key can say wrong: the keys together, and what prod requires."""
    _check_prod(config)
    _check_transport(config.service)
    _check_endpoint(config.service)
    _check_database(config.database, config.network)
    _check_tasks(config.service)
    network = config.network
    if network.max_azs > len(network.availability_zones):
        raise ConfigError(f"maxAzs {network.max_azs} needs that many availabilityZones")
    if network.nat_gateways > network.max_azs:
        config = dataclasses.replace(config, network=dataclasses.replace(network, nat_gateways=network.max_azs))
    return config


def _check_prod(config: DeploymentConfig) -> None:
    if config.is_prod and not config.service.certificate_arn and not config.service.allow_plain_http:
        raise ConfigError(
            "the prod profile needs context 'certificateArn' (an ACM certificate in the stack's region): without "
            "it the API token and every conversation travel over plain HTTP. To accept that anyway, set "
            "-c allowPlainHttp=true"
        )
    if config.is_prod and not config.alarms.email:
        raise ConfigError(
            "the prod profile needs context 'alarmEmail' (or make ... ALARM_EMAIL=you@example.com): without a "
            "subscriber its alarms reach nobody. Confirm the e-mail AWS sends after the deploy; make verify "
            "fails until someone has"
        )


def _check_transport(service: ServiceConfig) -> None:
    if service.certificate_arn or service.allow_plain_http or not service.open_to_the_internet:
        return
    raise ConfigError(
        "allowedCidrs opens the load balancer to the whole internet without a certificate: the API token and "
        "every conversation would cross it as plain HTTP. Serve HTTPS (-c certificateArn=... -c domainName=..., "
        "or make deploy CERTIFICATE_ARN=... DOMAIN_NAME=...), admit only your own addresses (-c allowedCidrs="
        "203.0.113.7/32; make deploy does this for the machine it runs on), or accept plain HTTP to everyone "
        "explicitly with -c allowPlainHttp=true"
    )


def _check_endpoint(service: ServiceConfig) -> None:
    if service.certificate_arn and not service.domain_name:
        raise ConfigError(
            "context 'certificateArn' needs 'domainName', the name the certificate covers: clients (and make "
            "verify) would otherwise reach the load balancer's own DNS name, which no certificate of yours covers"
        )
    if bool(service.hosted_zone_id) != bool(service.hosted_zone_name):
        raise ConfigError("context 'hostedZoneId' and 'hostedZoneName' go together (the zone's id and its name)")
    if service.hosted_zone_id:
        zone, domain = service.hosted_zone_name or "", service.domain_name or ""
        if not domain:
            raise ConfigError("context 'hostedZoneId' needs 'domainName': the record to create in that zone")
        if domain != zone and not domain.endswith("." + zone):
            raise ConfigError(f"context 'domainName' {domain!r} is not in the hosted zone {zone!r}")


def _check_database(database: DatabaseConfig, network: NetworkConfig) -> None:
    if database.aurora and database.rds_proxy and database.min_acu == 0:
        raise ConfigError(
            "rdsProxy with minAcu 0: RDS Proxy keeps a connection open to each instance, so the cluster "
            "would never pause, yet be priced and configured as if it did. Set -c minAcu=0.5 (or more) "
            "to pay for what runs, or leave out rdsProxy to let an idle cluster pause"
        )
    if database.proxy_azs > network.max_azs:
        raise ConfigError(f"proxyAzs {database.proxy_azs} needs maxAzs of at least that, got {network.max_azs}")
    if database.min_acu > database.max_acu:
        raise ConfigError(f"minAcu ({database.min_acu:g}) must not be larger than maxAcu ({database.max_acu:g})")
    if database.max_allocated_storage_gib <= database.allocated_storage_gib:
        raise ConfigError("dbMaxAllocatedStorage must be larger than dbAllocatedStorage (storage autoscaling)")


def _check_tasks(service: ServiceConfig) -> None:
    if service.min_tasks > service.max_tasks:
        raise ConfigError(f"minTasks ({service.min_tasks}) must not be larger than maxTasks ({service.max_tasks})")
    if service.cpu not in _FARGATE_MEMORY:
        raise ConfigError(f"context 'cpu' must be one of {sorted(_FARGATE_MEMORY)}, got {service.cpu}")
    if service.memory_mib not in _FARGATE_MEMORY[service.cpu]:
        allowed = _FARGATE_MEMORY[service.cpu]
        raise ConfigError(
            f"context 'memoryMiB' {service.memory_mib} is not valid with cpu {service.cpu} "
            f"(Fargate allows {allowed.start}-{allowed.stop - 1} in steps of {allowed.step})"
        )
