"""The service's one settings object, read from the environment and validated at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .migrate import DEFAULT_EMBEDDING_DIMENSION, DEFAULT_STATEMENT_TIMEOUT_MS, MAX_EMBEDDING_DIMENSION
from .tls import ssl_params

MIB = 1024 * 1024
# A placeholder token is accepted only on the embedded local database.
LOCAL_DEV_TOKEN = "local-dev-token"  # noqa: S105 - refused outside local mode
MIN_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """The environment does not describe a runnable service; the message says which variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    """libpq connection string, or None for the embedded local database."""
    api_token: str
    local_data_dir: Path
    database_user: str | None = None
    database_password: str | None = None
    """The login in ``database_url``, kept apart so that credentials re-read after a rotation
    replace them without parsing the connection string again."""
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 5.0
    store_threads: int = 4
    """Threads the store's calls run on, each holding at most one pooled connection."""
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    max_body_bytes: int = 16 * MIB
    max_concurrent_requests: int = 64
    """Requests in flight per process (health probes excepted); one more answers 503."""
    max_body_bytes_in_flight: int = 32 * MIB
    """Request-body bytes held at once per process, counted as they arrive; past it, 503."""
    body_grace_s: float = 10.0
    min_body_bytes_per_s: int = 16 * 1024
    """A request body must arrive at this rate after body_grace_s (408 and the connection
    closed otherwise): a caller trickling a byte at a time holds nothing for long."""
    search_timeout_ms: int = 2_000
    """A full-text search's own statement timeout; past it the search answers 422."""
    searches_per_user: int = 2
    """Searches (full-text and similar) one user may run at once per process; one more answers
    429 at once, so one user's searches cannot hold every store thread (STORE_THREADS)."""
    embedding_dimension: int = DEFAULT_EMBEDDING_DIMENSION
    db_secret_arn: str | None = None
    """The application secret's ARN: credentials are re-read from it after a rotation."""
    database_read_url: str | None = None
    """A read replica (or several: a comma-separated host list), same login as the writer.
    List, search and similar are read there once it has replayed every write committed before
    the read began (read-your-writes); otherwise, and while it is down, the writer answers."""
    read_wait_ms: int = 100
    """How long a read waits for the replica to catch up before the writer answers it."""
    db_proxy: bool = False
    """Connections go through RDS Proxy: no startup options (the proxy refuses them; the
    database's own default statement_timeout applies) and no server-side prepared statements
    (they would pin each connection to one database session)."""
    connect_timeout_s: int = 3
    """A connection attempt not answered by then has failed (RDS answers within milliseconds
    from inside the VPC). Longer for an Aurora cluster that pauses: it answers once resumed."""
    pool_max_idle_s: float = 600.0
    """A pooled connection idle this long is closed (down to POOL_MIN_SIZE). Short, with
    POOL_MIN_SIZE=0, so an Aurora Serverless v2 cluster with minAcu 0 can pause."""
    host: str = "127.0.0.1"
    """Where to listen: loopback on the embedded database (a local run is not on the
    network with its published token), every interface with a configured database."""
    port: int = 8080
    log_level: str = "INFO"
    forwarded_allow_ips: str = "127.0.0.1"
    """Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks,
    comma-separated): the load balancer's (the stack sets the VPC's range), never anyone's."""

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def database_backend(self) -> str:
        return "embedded-postgresql" if self.embedded else "postgresql"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = _database_url(env)
        embedded = database_url is None
        login = conninfo_to_dict(database_url) if database_url else {}
        token = env.get("API_TOKEN", "")
        if not token:
            if not embedded:
                raise SettingsError("API_TOKEN must be set when a database is configured (it guards every route)")
            token = LOCAL_DEV_TOKEN
        elif not embedded and token == LOCAL_DEV_TOKEN:
            raise SettingsError("API_TOKEN is the local development placeholder; set a real token")
        elif not embedded and len(token) < MIN_TOKEN_LENGTH:
            raise SettingsError(f"API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters")
        pool_min = _int(env, "POOL_MIN_SIZE", 1, minimum=0)
        pool_max = _int(env, "POOL_MAX_SIZE", 10, minimum=1)
        if pool_min > pool_max:
            raise SettingsError(f"POOL_MIN_SIZE ({pool_min}) is larger than POOL_MAX_SIZE ({pool_max})")
        store_threads = _int(env, "STORE_THREADS", min(4, pool_max), minimum=1)
        if store_threads > pool_max:
            raise SettingsError(
                f"STORE_THREADS ({store_threads}) is larger than POOL_MAX_SIZE ({pool_max}):"
                " a thread past the pool's size would only wait for a connection"
            )
        max_body = _int(env, "MAX_BODY_BYTES", 16 * MIB, minimum=1024)
        in_flight = _int(env, "MAX_BODY_BYTES_IN_FLIGHT", max(32 * MIB, max_body), minimum=1024)
        if in_flight < max_body:
            raise SettingsError(
                f"MAX_BODY_BYTES_IN_FLIGHT ({in_flight}) is smaller than MAX_BODY_BYTES ({max_body}):"
                " no body of the largest allowed size could ever be accepted"
            )
        return cls(
            database_url=database_url,
            database_user=str(login["user"]) if login.get("user") else None,
            database_password=str(login["password"]) if login.get("password") else None,
            api_token=token,
            local_data_dir=Path(env["LOCAL_DATA_DIR"]) if env.get("LOCAL_DATA_DIR") else default_local_data_dir(),
            pool_min_size=pool_min,
            pool_max_size=pool_max,
            pool_timeout=_float(env, "POOL_TIMEOUT_SECONDS", 5.0),
            store_threads=store_threads,
            statement_timeout_ms=_int(env, "STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS, minimum=0),
            max_body_bytes=max_body,
            max_concurrent_requests=_int(env, "MAX_CONCURRENT_REQUESTS", 64, minimum=1),
            max_body_bytes_in_flight=in_flight,
            body_grace_s=_float(env, "BODY_GRACE_SECONDS", 10.0),
            min_body_bytes_per_s=_int(env, "MIN_BODY_BYTES_PER_SECOND", 16 * 1024, minimum=1),
            search_timeout_ms=_int(env, "SEARCH_TIMEOUT_MS", 2_000, minimum=100),
            searches_per_user=_int(env, "SEARCHES_PER_USER", max(1, store_threads // 2), minimum=1),
            embedding_dimension=_int(
                env, "EMBEDDING_DIMENSION", DEFAULT_EMBEDDING_DIMENSION, minimum=1, maximum=MAX_EMBEDDING_DIMENSION
            ),
            db_secret_arn=env.get("DB_SECRET_ARN") or None,
            database_read_url=_database_read_url(env, database_url),
            read_wait_ms=_int(env, "READ_WAIT_MS", 100, minimum=0, maximum=10_000),
            db_proxy=_bool(env, "DB_PROXY"),
            pool_max_idle_s=_float(env, "POOL_MAX_IDLE_SECONDS", 600.0),
            connect_timeout_s=_int(env, "DB_CONNECT_TIMEOUT_SECONDS", 3, minimum=1, maximum=120),
            host=env.get("HOST") or ("127.0.0.1" if embedded else "0.0.0.0"),
            port=_int(env, "PORT", 8080, minimum=1, maximum=65535),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            forwarded_allow_ips=_networks(env, "FORWARDED_ALLOW_IPS", "127.0.0.1"),
        )


def _database_url(env: Mapping[str, str]) -> str | None:
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    names = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
    given = [name for name in names if env.get(name)]
    if not given:
        return None
    missing = [name for name in ("DB_HOST", "DB_NAME", "DB_USER", "DB_PASSWORD") if not env.get(name)]
    if missing:
        raise SettingsError(f"{', '.join(missing)} must be set with {', '.join(given)}")
    return make_conninfo(
        host=env["DB_HOST"],
        port=str(_int(env, "DB_PORT", 5432, minimum=1, maximum=65535)),
        dbname=env["DB_NAME"],
        user=env["DB_USER"],
        password=env["DB_PASSWORD"],
        application_name="conversations",
        # verify-full against the RDS CAs shipped in the image, unless DB_SSLMODE says otherwise.
        **ssl_params(env),
    )


def _database_read_url(env: Mapping[str, str], database_url: str | None) -> str | None:
    """DATABASE_READ_URL, or DB_READ_HOST (one host or a comma-separated list) with the
    writer's port, database, login and TLS mode."""
    if env.get("DATABASE_READ_URL"):
        if database_url is None:
            raise SettingsError("DATABASE_READ_URL needs a configured writer (DATABASE_URL or DB_HOST ...)")
        return env["DATABASE_READ_URL"]
    hosts = [h.strip() for h in env.get("DB_READ_HOST", "").split(",") if h.strip()]
    if not hosts:
        return None
    if database_url is None:
        raise SettingsError("DB_READ_HOST needs a configured writer (DATABASE_URL or DB_HOST ...)")
    params = conninfo_to_dict(database_url)
    params["host"] = ",".join(hosts)
    if len(hosts) > 1:
        # Spread the connections over the replicas (libpq 16+), one port for all of them.
        params["load_balance_hosts"] = "random"
    params["application_name"] = "conversations-read"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def _networks(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    values = [v.strip() for v in raw.split(",") if v.strip()]
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SettingsError(f"{name} must list IP addresses or networks (10.0.0.0/16), got {value!r}") from None
    if not values:
        raise SettingsError(f"{name} must list at least one IP address or network")
    return ",".join(values)


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name} must be true or false, got {env[name]!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{name} must be {bound}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


def default_local_data_dir() -> Path:
    """Where the embedded database lives when LOCAL_DATA_DIR is unset: the checkout's ``.local``
    (the one ``make up`` uses), wherever the service is started from; ``.local`` under the
    working directory when the package is not in a checkout."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout / ".local" if (checkout / "cdk.json").is_file() else Path(".local")
