"""The one migrator: applies ``service/migrations/*.sql`` in order, wherever it runs.

Each file runs in its own transaction and is recorded in the ``schema_migrations`` ledger
with a SHA-256 checksum of its text. A session-level advisory lock serialises concurrent
runs (two deploys, or the custom resource racing a local run), re-running is a no-op, and
an applied file whose text changed is an error: schema changes go in a new file.

A caller may name the exact set to apply (``target``: file names and checksums, as the
custom resource's properties carry them). Only that set is applied; a set the database
already has, or a prefix of it, changes nothing: that is how CloudFormation's rollback,
which sends the *old* set to the *new* code, leaves the schema alone.

The module also creates and maintains the least-privilege application role. It imports
nothing but psycopg, so the Lambda that runs it stays small.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Any constant works; this one is "conversations" folded into a bigint.
ADVISORY_LOCK_KEY = 0x636F6E7665727361
LEDGER_TABLE = "schema_migrations"
DEFAULT_EMBEDDING_DIMENSION = 1536
# pgvector's HNSW index handles at most 2,000 dimensions for the vector type.
MAX_EMBEDDING_DIMENSION = 2000

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REF_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql:([0-9a-f]{64})$")


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class MigrationRef:
    """One migration as a deployment names it: ``0002_conversations.sql:<sha-256 of its text>``."""

    version: int
    name: str
    checksum: str

    @property
    def file_name(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    def __str__(self) -> str:
        return f"{self.file_name}:{self.checksum}"

    @classmethod
    def parse(cls, text: object) -> MigrationRef:
        match = _REF_RE.match(text) if isinstance(text, str) else None
        if match is None:
            raise MigrationError(f"a migration must be named as 0001_name.sql:<sha-256>, got {str(text)[:90]!r}")
        return cls(int(match.group(1)), match.group(2), match.group(3))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def ref(self) -> MigrationRef:
        return MigrationRef(self.version, self.name, self.checksum)

    def render(self, embedding_dimension: int) -> str:
        return self.text.replace("{{embedding_dimension}}", str(embedding_dimension))


@dataclass
class MigrationResult:
    applied: list[str] = field(default_factory=list)
    schema_version: int = 0
    pgvector_version: str | None = None
    ahead: list[str] = field(default_factory=list)
    """Applied migrations the requested set does not name (a rollback): they stay applied."""


def default_migrations_dir() -> Path:
    """``migrations/`` beside the package: the repo's ``service/``, the image and the Lambda
    asset all lay it out that way. ``MIGRATIONS_DIR`` overrides it."""
    override = os.environ.get("MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: list[Migration] = []
    seen: dict[int, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"two migrations with version {version}: {seen[version]}, {path.name}")
        seen[version] = path.name
        found.append(Migration(version, match.group(2), path, path.read_text(encoding="utf-8")))
    if not found:
        raise MigrationError(f"no migrations in {directory}")
    return found


def migration_set(directory: Path | None = None) -> list[str]:
    """Every migration in ``directory`` as a deployment names it (the custom resource's
    ``Migrations`` property)."""
    return [str(migration.ref) for migration in load_migrations(directory)]


def parse_migration_set(raw: object) -> list[MigrationRef]:
    """The ``Migrations`` property: a list of refs, each version once, in any order."""
    if not isinstance(raw, list | tuple):
        raise MigrationError("the migration set must be a list of 0001_name.sql:<sha-256> entries")
    refs = sorted((MigrationRef.parse(item) for item in raw), key=lambda ref: ref.version)
    versions = [ref.version for ref in refs]
    if len(set(versions)) != len(versions):
        raise MigrationError("the migration set names a version twice")
    return refs


def plan(
    bundle: list[Migration], applied: dict[int, tuple[str, str]], target: list[MigrationRef] | None
) -> tuple[list[Migration], list[int]]:
    """What to apply, and which applied versions the target does not name. ``target`` None
    means every migration in the bundle. Refuses an edited file, a requested migration the
    bundle lacks, and a pending one older than an applied one the target does not name."""
    by_version = {migration.version: migration for migration in bundle}
    wanted = [migration.ref for migration in bundle] if target is None else target
    pending: list[Migration] = []
    for ref in wanted:
        if ref.version in applied:
            _, checksum = applied[ref.version]
            if checksum != ref.checksum:
                raise MigrationError(
                    f"migration {ref.file_name} was edited after it was applied "
                    f"(recorded checksum {checksum[:12]}, file {ref.checksum[:12]}); "
                    "add a new migration file instead"
                )
            continue
        migration = by_version.get(ref.version)
        if migration is None or migration.ref != ref:
            has = f"has {migration.path.name}:{migration.checksum[:12]}" if migration else "does not have it"
            raise MigrationError(
                f"the deployment asks for {ref.file_name}:{ref.checksum[:12]} but this code {has}; "
                "the template and the function's bundle come from different builds"
            )
        pending.append(migration)
    named = {ref.version for ref in wanted}
    ahead = sorted(version for version in applied if version not in named)
    if pending and ahead and ahead[-1] > pending[0].version:
        raise MigrationError(
            f"{pending[0].path.name} is not applied but a later migration the deployment does not name is "
            f"(version {ahead[-1]}); migrations are applied in order only"
        )
    return pending, ahead


def validate_embedding_dimension(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MigrationError("embedding dimension must be an integer")
    if not 1 <= value <= MAX_EMBEDDING_DIMENSION:
        raise MigrationError(f"embedding dimension must be between 1 and {MAX_EMBEDDING_DIMENSION}, got {value}")
    return value


def migrate(
    conn: psycopg.Connection,
    *,
    migrations_dir: Path | None = None,
    embedding_dimension: int = DEFAULT_EMBEDDING_DIMENSION,
    progress: Callable[[str], None] | None = None,
    target: list[MigrationRef] | None = None,
) -> MigrationResult:
    """Apply pending migrations on ``conn`` (which must be in autocommit mode): every file in
    ``migrations_dir``, or exactly the ``target`` set (see the module's docstring)."""
    validate_embedding_dimension(embedding_dimension)
    migrations = load_migrations(migrations_dir)
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection: each file runs in its own transaction")
    say = progress or (lambda message: log.info(message))
    result = MigrationResult()
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(LEDGER_TABLE))
        )
        applied = {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                sql.SQL("SELECT version, name, checksum FROM {}").format(sql.Identifier(LEDGER_TABLE))
            )
        }
        pending, ahead = plan(migrations, applied, target)
        for migration in pending:
            say(f"applying {migration.path.name}")
            try:
                with conn.transaction():
                    conn.execute(migration.render(embedding_dimension))
                    conn.execute(
                        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(
                            sql.Identifier(LEDGER_TABLE)
                        ),
                        (migration.version, migration.name, migration.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"migration {migration.path.name} failed: {first_line(exc)}") from exc
            result.applied.append(migration.path.name)
        result.ahead = [f"{version:04d}_{applied[version][0]}.sql" for version in ahead]
        if result.ahead:
            say(f"applied, and not named by this deployment (migrations are never undone): {result.ahead}")
        _check_embedding_dimension(conn, embedding_dimension)
        result.schema_version = schema_version(conn)
        result.pgvector_version = pgvector_version(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return result


def _check_embedding_dimension(conn: psycopg.Connection, expected: int) -> None:
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute"
        " WHERE attrelid = 'messages'::regclass AND attname = 'embedding' AND NOT attisdropped"
    ).fetchone()
    if row is not None and row[0] != expected:
        raise MigrationError(
            f"messages.embedding has dimension {row[0]} but {expected} is configured; "
            "changing it needs a new migration that rewrites the column"
        )


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(sql.Identifier(LEDGER_TABLE))
    ).fetchone()
    return int(row[0]) if row else 0


def pgvector_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return row[0] if row else None


# AWS's multi-user rotation alternates two logins, <user> and <user>_clone, and creates the
# clone with GRANT <user> TO <user>_clone. Privileges therefore never belong to a login:
# they belong to one NOLOGIN group role that both logins are members of, and every migration
# run grants the tables it finds to that group, so whichever login the secret names next can
# use every table.
CLONE_SUFFIX = "_clone"
GROUP_SUFFIX = "_group"
MAX_ROLE_NAME = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated
APP_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# The database's own default statement timeout. The service sets its own on each connection
# (STATEMENT_TIMEOUT_MS) except through RDS Proxy, which refuses startup options: this applies.
DEFAULT_STATEMENT_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class AppRoles:
    """The two logins that rotation alternates and the group that holds their privileges."""

    login: str
    clone: str
    group: str

    @classmethod
    def for_user(cls, username: str) -> AppRoles:
        base = username.removesuffix(CLONE_SUFFIX)
        if not base:
            raise MigrationError("the application user name is empty")
        if len(base) + len(CLONE_SUFFIX) > MAX_ROLE_NAME:
            raise MigrationError(
                f"the application user name must be at most {MAX_ROLE_NAME - len(CLONE_SUFFIX)} characters, "
                "so that rotation can create its _clone login"
            )
        return cls(base, base + CLONE_SUFFIX, base + GROUP_SUFFIX)

    @property
    def logins(self) -> tuple[str, str]:
        return (self.login, self.clone)


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed here by libpq: the server receives
    (and could log) only the verifier, never the password."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def ensure_app_role(conn: psycopg.Connection, role: str, password: str) -> AppRoles:
    """Create or update the application's roles: a NOLOGIN group that may run DML on the
    application tables and read the ledger (for /health), and the login ``role`` (one of the
    two rotation logins) with ``password``. Both logins that exist are members of the group;
    neither may change the schema. Returns the role names."""
    roles = AppRoles.for_user(role)  # refuses an empty name
    # Neither rotation login (``role`` is one of them) nor the group may be the migrating user.
    if conn.info.user in (*roles.logins, roles.group):
        raise MigrationError("the application role must be a different user from the migrating one")
    verifier = scram_verifier(conn, role, password)
    group = sql.Identifier(roles.group)
    # Since PostgreSQL 16 a membership carries its own INHERIT option, taken from the member
    # at GRANT time; say it explicitly so a NOINHERIT login from an older deploy still inherits.
    inherit = sql.SQL(" WITH INHERIT TRUE") if conn.info.server_version >= 160000 else sql.SQL("")
    with conn.transaction():
        # Only attributes the migrating user holds itself: RDS's master (CREATEROLE, CREATEDB, not a
        # superuser) may not even *name* SUPERUSER, REPLICATION or BYPASSRLS in ALTER ROLE, nor alter
        # a superuser role at all, so those are checked first instead of set. CREATE ROLE leaves all
        # three off.
        _refuse_privileged(conn, (*roles.logins, roles.group))
        verb = "ALTER" if _role_exists(conn, roles.group) else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} WITH NOLOGIN NOCREATEDB NOCREATEROLE").format(group))
        # Utility statements take no bind parameters; sql.Literal quotes the verifier safely.
        verb = "ALTER" if _role_exists(conn, role) else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
        logins = [sql.Identifier(name) for name in roles.logins if _role_exists(conn, name)]
        for login in logins:
            conn.execute(sql.SQL("ALTER ROLE {} WITH INHERIT").format(login))
            conn.execute(sql.SQL("GRANT {} TO {}").format(group, login) + inherit)
        everyone = sql.SQL(", ").join([sql.SQL("PUBLIC"), group, *logins])
        direct = sql.SQL(", ").join(logins)
        database = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM {}").format(database, everyone))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, group))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(everyone))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(group))
        # Privileges held by a login directly (as older deploys granted them) go; the group's stay.
        conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(direct))
        # Every table the migrations created, including those of migrations added later.
        conn.execute(sql.SQL("GRANT " + APP_PRIVILEGES + " ON ALL TABLES IN SCHEMA public TO {}").format(group))
        ledger = sql.Identifier(LEDGER_TABLE)
        conn.execute(sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(ledger, group))
        # For every new session of either login (a role's own setting would not follow the
        # clone that rotation creates); a session's own setting still wins.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
                database, sql.Literal(DEFAULT_STATEMENT_TIMEOUT_MS)
            )
        )
    return roles


def _refuse_privileged(conn: psycopg.Connection, names: tuple[str, ...]) -> None:
    """An application role must hold no attribute that bypasses privileges. Only a superuser
    can clear one, so the error names the statement for the operator to run as one."""
    rows = conn.execute(
        "SELECT rolname, rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
        (list(names),),
    ).fetchall()
    for name, superuser, replication, bypassrls in rows:
        held = [
            attr
            for attr, on in (("SUPERUSER", superuser), ("REPLICATION", replication), ("BYPASSRLS", bypassrls))
            if on
        ]
        if held:
            clear = " ".join("NO" + attr for attr in held)
            raise MigrationError(
                f"application role {name} has {', '.join(held)}, which lets it bypass its privileges; "
                f"only a superuser can clear that: ALTER ROLE {name} {clear}"
            )


def _role_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A short, single-line description of an error, for messages that leave the process."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:limit]
