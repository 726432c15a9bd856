"""Read routing against a real streaming replica: two embedded PostgreSQL servers, the second
a physical standby of the first (``pg_basebackup -R``: ``standby.signal`` and the connection
back to the primary), as an RDS read replica is made.

List, search and similar go to the standby once it has replayed every write committed before
the read began; under replication lag (replay paused) the caller still sees its own write;
with the standby stopped, the writer answers."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conversations.api import create_app
from devtools.postgres import PostgresServer, remove, start_embedded_server, start_standby
from tests.support.service import EMBEDDING_DIMENSION, TOKEN, MigratedDatabase, make_settings, migrated_database

AUTH = {"Authorization": f"Bearer {TOKEN}", "X-User-Id": "alice"}
READ_APP = "conversations-read"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    primary = start_embedded_server(Path(tempfile.mkdtemp(prefix="conversations-primary-")), primary=True)
    try:
        standby = start_standby(primary, Path(tempfile.mkdtemp(prefix="conversations-standby-")))
        # Every statement the standby runs, with the session's application name, in its log.
        assert standby.data_dir is not None
        with (standby.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("log_statement = 'all'\nlog_line_prefix = '[%a] '\n")
        standby.stop()
        standby.start()
        try:
            yield primary, standby
        finally:
            remove(standby)
    finally:
        remove(primary)


@pytest.fixture(scope="module")
def replicated(pair: tuple[PostgresServer, PostgresServer]) -> Iterator[MigratedDatabase]:
    primary, standby = pair
    for db in migrated_database(primary):
        _wait_until_replayed(primary, standby)
        yield db


@pytest.fixture
def standby(pair: tuple[PostgresServer, PostgresServer], replicated: MigratedDatabase) -> Iterator[PostgresServer]:
    primary, standby = pair
    yield standby
    # Every test leaves the standby running, replaying and caught up, with no data.
    if not _running(standby):
        standby.start()
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    with psycopg.connect(replicated.admin, autocommit=True) as conn:
        conn.execute("TRUNCATE conversations CASCADE")
    _wait_until_replayed(primary, standby)


def _running(server: PostgresServer) -> bool:
    try:
        psycopg.connect(server.conninfo(), connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def _wait_until_replayed(primary: PostgresServer, standby: PostgresServer, timeout: float = 20) -> None:
    with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        while True:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def _on(server: PostgresServer, conninfo: str) -> str:
    """``conninfo`` (a login of the primary's) pointed at ``server``, named as the read pool."""
    params = conninfo_to_dict(conninfo)
    params.update(host=server.host, port=str(server.port), application_name=READ_APP)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


@pytest.fixture
def api(replicated: MigratedDatabase, standby: PostgresServer) -> Iterator[TestClient]:
    settings = make_settings(replicated.app, database_read_url=_on(standby, replicated.app), read_wait_ms=200)
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def _vector(x: float) -> list[float]:
    return [x, 1.0] + [0.0] * (EMBEDDING_DIMENSION - 2)


def _write(client: TestClient, word: str) -> str:
    created = client.post("/conversations", json={"title": word})
    assert created.status_code == 201, created.text
    cid: str = created.json()["conversation_id"]
    appended = client.post(
        f"/conversations/{cid}/messages", json={"role": "user", "content": f"about {word}", "embedding": _vector(1)}
    )
    assert appended.status_code == 201, appended.text
    return cid


def _reads(client: TestClient, word: str) -> dict[str, Any]:
    listed = client.get("/conversations")
    found = client.get("/search", params={"q": word})
    similar = client.post("/search/similar", json={"embedding": _vector(1), "limit": 5})
    for response in (listed, found, similar):
        assert response.status_code == 200, response.text
    return {
        "list": [c["conversation_id"] for c in listed.json()["items"]],
        "search": [h["conversation_id"] for h in found.json()["items"]],
        "similar": [h["conversation_id"] for h in similar.json()["items"]],
    }


class _StandbyLog:
    """The statements the read pool ran on the standby since the last call."""

    def __init__(self, standby: PostgresServer) -> None:
        assert standby.data_dir is not None
        self.path = standby.data_dir / "server.log"
        self.offset = self.path.stat().st_size

    def statements(self) -> str:
        time.sleep(0.05)  # the logging collector is not used: the write is synchronous, but be kind
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        self.offset += len(text.encode())
        return "\n".join(line for line in text.splitlines() if line.startswith(f"[{READ_APP}]"))


def _standby_has(standby: PostgresServer, db: MigratedDatabase, cid: str) -> bool:
    with psycopg.connect(standby.conninfo(db.name), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM conversations WHERE conversation_id = %s", (cid,)).fetchone() is not None


def test_the_standby_is_a_streaming_replica(replicated: MigratedDatabase, standby: PostgresServer) -> None:
    with psycopg.connect(standby.conninfo(replicated.name), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE t (x int)")


# The SQL that marks each read: the list's order, the search's ranking, the similarity's operator.
MARKERS = {"list": "ORDER BY c.updated_at DESC", "search": "ts_rank", "similar": "embedding <=>"}


def test_list_search_and_similar_are_read_on_the_standby(
    api: TestClient, replicated: MigratedDatabase, standby: PostgresServer
) -> None:
    cid = _write(api, "autovacuum")
    log = _StandbyLog(standby)
    assert _reads(api, "autovacuum") == {"list": [cid], "search": [cid], "similar": [cid]}
    ran = log.statements()
    for kind, marker in MARKERS.items():
        assert marker in ran, f"the {kind} did not run on the standby"
    # Writes and a conversation read never do.
    api.get(f"/conversations/{cid}")
    _write(api, "checkpoint")
    ran = log.statements()
    assert "INSERT" not in ran and "LEFT JOIN LATERAL" not in ran


def test_a_caller_sees_its_own_write_while_the_standby_lags(
    api: TestClient, pair: tuple[PostgresServer, PostgresServer], replicated: MigratedDatabase, standby: PostgresServer
) -> None:
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    cid = _write(api, "vacuum")
    log = _StandbyLog(standby)
    # Replication lag: the standby has not replayed the write ...
    assert not _standby_has(standby, replicated, cid)
    # ... and every read still sees it (the standby was behind the writer's WAL position when
    # the read began, so the writer answered; the standby was only asked how far it was) ...
    assert _reads(api, "vacuum") == {"list": [cid], "search": [cid], "similar": [cid]}
    ran = log.statements()
    assert "pg_last_wal_replay_lsn" in ran
    assert not any(marker in ran for marker in MARKERS.values())
    # ... as does a conversation read.
    assert api.get(f"/conversations/{cid}").status_code == 200
    assert not _standby_has(standby, replicated, cid)
    # Replay resumes: the standby catches up and serves the reads again.
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    _wait_until_replayed(pair[0], standby)
    log = _StandbyLog(standby)
    assert _reads(api, "vacuum")["list"] == [cid]
    assert MARKERS["list"] in log.statements()


def test_another_service_instance_sees_the_write_too(
    api: TestClient, replicated: MigratedDatabase, standby: PostgresServer
) -> None:
    """The guarantee does not rest on the task that wrote: a second service (another task
    behind the load balancer) reading right after the first one wrote sees the write."""
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    settings = make_settings(replicated.app, database_read_url=_on(standby, replicated.app), read_wait_ms=50)
    with TestClient(create_app(settings), headers=AUTH) as other:
        cid = _write(api, "wraparound")
        assert _reads(other, "wraparound") == {"list": [cid], "search": [cid], "similar": [cid]}


def test_reads_fall_back_to_the_writer_when_the_standby_stops(
    api: TestClient, replicated: MigratedDatabase, standby: PostgresServer
) -> None:
    cid = _write(api, "freeze")
    assert _reads(api, "freeze")["list"] == [cid]  # the read pool holds standby connections now
    standby.stop("immediate")
    for _ in range(3):
        assert _reads(api, "freeze") == {"list": [cid], "search": [cid], "similar": [cid]}
    # Writes never touched the standby; they go on.
    other = _write(api, "freeze")
    assert set(_reads(api, "freeze")["list"]) == {cid, other}
    assert api.get("/health").status_code == 200


def test_the_service_starts_while_the_standby_is_down(replicated: MigratedDatabase, standby: PostgresServer) -> None:
    standby.stop("immediate")
    settings = make_settings(replicated.app, database_read_url=_on(standby, replicated.app))
    with TestClient(create_app(settings), headers=AUTH) as client:
        cid = _write(client, "toast")
        assert _reads(client, "toast") == {"list": [cid], "search": [cid], "similar": [cid]}


def test_a_read_endpoint_that_is_not_a_replica_sends_every_read_to_the_writer(
    clean_db: MigratedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """DATABASE_READ_URL pointed at a primary (a misconfiguration, or a platform that reports
    no replay position): reads stay correct, on the writer, and the log says why."""
    settings = make_settings(clean_db.app, database_read_url=clean_db.app)
    with TestClient(create_app(settings), headers=AUTH) as client:
        cid = _write(client, "hint")
        assert _reads(client, "hint") == {"list": [cid], "search": [cid], "similar": [cid]}
    assert any("not a streaming replica" in r.getMessage() for r in caplog.records)
