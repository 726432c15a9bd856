"""The service under test: a migrated database, its least-privilege role, settings."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from conversations.migrate import AppRoles, ensure_app_role, migrate
from conversations.settings import Settings
from devtools.postgres import PostgresServer

TOKEN = "test-token-" + "x" * 20
EMBEDDING_DIMENSION = 8


@dataclass(frozen=True)
class MigratedDatabase:
    name: str
    admin: str
    app: str
    app_role: str


def migrated_database(pg: PostgresServer) -> Iterator[MigratedDatabase]:
    """A new database, migrated by the RDS-like master (small embeddings keep tests fast), with
    its own app role."""
    name = pg.create_database("svc")
    role = f"app_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    with psycopg.connect(pg.master_conninfo(name), autocommit=True) as conn:
        migrate(conn, embedding_dimension=EMBEDDING_DIMENSION)
        ensure_app_role(conn, role, password)
    try:
        yield MigratedDatabase(name, pg.conninfo(name), pg.conninfo(name, role, password), role)
    finally:
        pg.drop_database(name)
        drop_roles(pg, role)


def drop_roles(pg: PostgresServer, login: str) -> None:
    """Drop an application login, its rotation clone and their group (roles are cluster-wide)."""
    roles = AppRoles.for_user(login)
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        for name in (*roles.logins, roles.group):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def truncate(db: MigratedDatabase) -> None:
    with psycopg.connect(db.admin, autocommit=True) as conn:
        conn.execute("TRUNCATE conversations CASCADE")


def make_settings(conninfo: str, **overrides: object) -> Settings:
    login = conninfo_to_dict(conninfo)
    values: dict[str, object] = dict(
        database_url=conninfo,
        database_user=login.get("user"),
        database_password=login.get("password"),
        api_token=TOKEN,
        local_data_dir=None,
        pool_min_size=1,
        pool_max_size=8,
        pool_timeout=2.0,
        embedding_dimension=EMBEDDING_DIMENSION,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
