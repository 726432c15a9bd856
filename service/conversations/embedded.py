"""The embedded local default: PostgreSQL with pgvector from the ``pgserver`` package.

Used when no database is configured. Data lives under ``<LOCAL_DATA_DIR>/pgdata`` so
conversations survive a restart; the server is shared by every local process that asks for
the same directory (the service, the import tools) and keeps running after them. It listens
on a Unix socket only, never on a network port.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .migrate import ensure_app_role, migrate

log = logging.getLogger(__name__)

DATABASE_NAME = "ragdb"
APP_ROLE = "conversations_app"
# The socket accepts local connections without a password (trust); the role still needs
# one to exist, and it never leaves this machine.
LOCAL_APP_PASSWORD = "local-only"  # noqa: S105 - trust auth on a local socket ignores it


@dataclass(frozen=True)
class EmbeddedDatabase:
    admin_conninfo: str
    """The superuser, for migrations and tools."""
    app_conninfo: str
    """The least-privilege application role the service runs as."""


class EmbeddedDataError(RuntimeError):
    """The embedded data directory cannot be opened by these binaries; the message says what to do."""


def local_major() -> int:
    """The major version of the embedded PostgreSQL binaries (the ``pgserver`` package)."""
    import subprocess

    from pgserver._commands import POSTGRES_BIN_PATH

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
    """Start (or join) the embedded server for ``data_dir`` and make sure ``ragdb`` exists.

    Returns the superuser's conninfo for ``ragdb`` (Unix socket, trust authentication)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); /tmp is fine.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - only without the dev requirements
        raise RuntimeError(
            "no database is configured (DATABASE_URL or DB_HOST...) and the embedded default needs "
            "the 'pgserver' package: pip install -r requirements-dev.txt"
        ) from exc

    pgdata = data_dir.resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    check_data_version(pgdata)
    server = get_server(pgdata, cleanup_mode=None)
    # get_server() hands back a cached handle within one process; make sure the server
    # behind it still runs (it may have been stopped since).
    with server._lock:
        server.ensure_postgres_running()
    socket_dir = str(server.get_postmaster_info().socket_dir)
    with psycopg.connect(make_conninfo(host=socket_dir, user="postgres", dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    return make_conninfo(host=socket_dir, user="postgres", dbname=DATABASE_NAME)


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

    from pgserver._commands import POSTGRES_BIN_PATH

    pgdata = data_dir.resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    subprocess.run(  # noqa: S603 - fixed binary and arguments
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        check=True,
        capture_output=True,
        user="pgserver" if os.geteuid() == 0 else None,
    )
    return True
