"""Database faults with the real service over HTTP: the database stopped and restarted, and
connections killed server-side. Nothing acknowledged is lost; nothing is written twice."""

from __future__ import annotations

import threading
import time
from email.message import Message
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from conversations.database import SweepingCheck
from devtools.net import LateForwarder
from devtools.postgres import PostgresServer, scalar
from devtools.serving import serve
from tests.support.http import call
from tests.support.service import MigratedDatabase, make_settings


def test_database_down_means_fast_503s_unhealthy_but_alive_then_recovery_without_restart(
    own_pg: PostgresServer, fault_db: MigratedDatabase
) -> None:
    with serve(make_settings(fault_db.app, pool_timeout=2.0, pool_min_size=2)) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "before"})[0] == 201
        # Given the database goes away
        own_pg.stop("fast")
        try:
            # When a write arrives, Then it is refused quickly with 503 and Retry-After
            started = time.monotonic()
            status, body, headers = call(
                "POST", f"{url}/conversations/before/messages", {"role": "user", "content": "while down"}
            )
            elapsed = time.monotonic() - started
            assert status == 503 and body["error"] == "database_unavailable"
            assert headers["Retry-After"] == "5"
            assert elapsed < 2.0 + 3.0, f"the write hung for {elapsed:.1f} s"
            # And readiness says unhealthy while liveness stays up (the ALB keeps the task)
            assert call("GET", f"{url}/health")[0] == 503
            assert call("GET", f"{url}/health/live")[0] == 200
        finally:
            own_pg.start()
        # When it returns, Then the same process serves again within seconds
        started = time.monotonic()
        while True:
            status, _, _ = call("POST", f"{url}/conversations/before/messages", {"role": "user", "content": "back"})
            if status == 201:
                break
            assert time.monotonic() - started < 15, "the service did not recover"
            time.sleep(0.2)
        recovery = time.monotonic() - started
        assert recovery < 10
        assert call("GET", f"{url}/health")[1]["status"] == "healthy"
    with psycopg.connect(fault_db.admin) as conn:
        assert conn.execute("SELECT content FROM messages ORDER BY seq").fetchall() == [("back",)]


def test_concurrent_writers_across_a_restart_lose_nothing_and_duplicate_nothing(
    own_pg: PostgresServer, fault_db: MigratedDatabase
) -> None:
    writers, per_writer = 4, 60
    acknowledged: dict[int, list[tuple[int, str]]] = {n: [] for n in range(writers)}
    attempts = {"total": 0, "retries": 0, "replayed": 0}
    lock = threading.Lock()
    with serve(make_settings(fault_db.app, pool_timeout=1.0, pool_min_size=2)) as url:
        for n in range(writers):
            assert call("POST", f"{url}/conversations", {"conversation_id": f"w{n}"})[0] == 201

        def writer(n: int) -> None:
            for k in range(per_writer):
                key = f"w{n}-m{k}"
                deadline = time.monotonic() + 60
                while True:
                    with lock:
                        attempts["total"] += 1
                    try:
                        status, body, headers = call(
                            "POST",
                            f"{url}/conversations/w{n}/messages",
                            {"role": "user", "content": key},
                            {"Idempotency-Key": key},
                            timeout=10,
                        )
                    except OSError:
                        status, body, headers = 0, {}, Message()
                    if 200 <= status < 300:
                        with lock:
                            acknowledged[n].append((body["seq"], body["content"]))
                            attempts["replayed"] += headers.get("Idempotency-Replayed") == "true"
                        break
                    assert status in (0, 503), (status, body)
                    assert time.monotonic() < deadline, f"{key} never succeeded"
                    with lock:
                        attempts["retries"] += 1
                    time.sleep(0.1)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        # Crash the database while every writer is mid-sequence.
        while sum(len(v) for v in acknowledged.values()) < writers * per_writer // 4:
            time.sleep(0.01)
        own_pg.stop("immediate")  # a crash, not a clean shutdown
        time.sleep(1.5)
        own_pg.start()
        for t in threads:
            t.join(120)
    with psycopg.connect(fault_db.admin) as conn:
        for n in range(writers):
            rows = conn.execute(
                "SELECT seq, content FROM messages WHERE conversation_id = %s ORDER BY seq", (f"w{n}",)
            ).fetchall()
            # Every acknowledged write is there, in order, exactly once, with the seq it was given.
            assert [c for _, c in rows] == [f"w{n}-m{k}" for k in range(per_writer)]
            assert rows == sorted(acknowledged[n])
            count = scalar(
                conn.execute("SELECT message_count FROM conversations WHERE conversation_id = %s", (f"w{n}",))
            )
            assert count == per_writer
    assert attempts["retries"] > 0, "the restart happened after the writes: the test proved nothing"
    print(
        f"\n  restart under load: {writers * per_writer} writes acknowledged, {writers * per_writer} found, "
        f"{attempts['retries']} retries, {attempts['replayed']} replayed by Idempotency-Key"
    )


def test_pool_recovers_from_connections_killed_server_side(fault_db: MigratedDatabase) -> None:
    with serve(make_settings(fault_db.app, pool_min_size=4, pool_max_size=4)) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "k"})[0] == 201
        with psycopg.connect(fault_db.admin, autocommit=True) as admin:
            killed = scalar(
                admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                    (fault_db.app_role,),
                )
            )
        assert killed >= 1
        statuses = [
            call("POST", f"{url}/conversations/k/messages", {"role": "user", "content": f"after {i}"})[0]
            for i in range(20)
        ]
        assert statuses == [201] * 20


def test_a_request_waiting_past_the_pool_timeout_for_a_store_thread_answers_503_and_a_started_write_completes(
    fault_db: MigratedDatabase,
) -> None:
    """The store's threads are as many as pooled connections (one here). A request queued
    behind a blocked one is withdrawn at the pool timeout with a 503; the blocked write, which
    had started, is waited for and acknowledged."""
    with serve(make_settings(fault_db.app, pool_min_size=1, pool_max_size=1, store_threads=1, pool_timeout=1.0)) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "q"})[0] == 201
        with psycopg.connect(fault_db.admin) as admin:
            admin.execute("SELECT 1 FROM conversations WHERE conversation_id = 'q' FOR UPDATE")
            results: dict[str, tuple[int, float]] = {}

            def send(name: str, method: str, path: str, body: dict[str, Any] | None) -> None:
                started = time.monotonic()
                status = call(method, f"{url}{path}", body, timeout=30)[0]
                results[name] = (status, time.monotonic() - started)

            blocked = threading.Thread(
                target=send, args=("append", "POST", "/conversations/q/messages", {"role": "user", "content": "x"})
            )
            blocked.start()
            time.sleep(0.3)  # the append holds the only thread, waiting for the row lock
            send("list", "GET", "/conversations", None)
            time.sleep(1.0)
            admin.rollback()  # the lock goes: the append completes
            blocked.join(30)
    status, waited = results["list"]
    assert status == 503
    assert 0.9 <= waited < 2.0, waited
    assert results["append"][0] == 201


def test_a_healthy_pooled_connection_is_lent_without_a_round_trip_and_a_killed_one_is_checked(
    fault_db: MigratedDatabase,
) -> None:
    """SweepingCheck: nothing to read on an idle connection's socket means it is lent as is; a
    backend ended server-side leaves its FATAL message to read, and the full check fails it."""
    checks = []
    original = ConnectionPool.check_connection

    def counting(conn: psycopg.Connection[Any]) -> None:
        checks.append(conn)
        return original(conn)

    sweep = SweepingCheck()
    with (
        psycopg.connect(fault_db.app, autocommit=True) as conn,
        psycopg.connect(fault_db.admin, autocommit=True) as admin,
    ):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
            sweep(conn)
            assert checks == []
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            time.sleep(0.2)
            with pytest.raises(psycopg.OperationalError):
                sweep(conn)
            assert checks == [conn]


def test_idempotency_key_replays_and_refuses_reuse(fault_db: MigratedDatabase) -> None:
    with serve(make_settings(fault_db.app)) as url:
        call("POST", f"{url}/conversations", {"conversation_id": "idem"})
        first = call(
            "POST",
            f"{url}/conversations/idem/messages",
            {"role": "user", "content": "once"},
            {"Idempotency-Key": "abc"},
        )
        again = call(
            "POST",
            f"{url}/conversations/idem/messages",
            {"role": "user", "content": "once"},
            {"Idempotency-Key": "abc"},
        )
        assert first[0] == again[0] == 201 and first[1] == again[1]
        assert again[2].get("Idempotency-Replayed") == "true" and "Idempotency-Replayed" not in first[2]
        other = call(
            "POST",
            f"{url}/conversations/idem/messages",
            {"role": "user", "content": "different"},
            {"Idempotency-Key": "abc"},
        )
        assert other[0] == 422 and other[1]["error"] == "idempotency_key_reused"
        # Keys are per caller: another user's same key is a different request.
        created = call(
            "POST", f"{url}/conversations", {"conversation_id": "idem2"}, {"Idempotency-Key": "abc", "X-User-Id": "u2"}
        )
        assert created[0] == 201
        replay = call(
            "POST", f"{url}/conversations", {"conversation_id": "idem2"}, {"Idempotency-Key": "abc", "X-User-Id": "u2"}
        )
        assert replay[0] == 201 and replay[2].get("Idempotency-Replayed") == "true"
    with psycopg.connect(fault_db.admin) as conn:
        assert scalar(conn.execute("SELECT count(*) FROM messages WHERE conversation_id = 'idem'")) == 1


def test_once_the_database_is_known_unreachable_requests_fail_within_a_second(
    own_pg: PostgresServer, fault_db: MigratedDatabase
) -> None:
    """The pool timeout stays 5 s (a busy pool is worth waiting for); an unreachable database
    is not: once a connection attempt has failed, every request answers 503 at once."""
    with serve(make_settings(fault_db.app, pool_timeout=5.0, pool_min_size=2)) as url:
        assert call("POST", f"{url}/conversations", {"conversation_id": "ff"})[0] == 201
        own_pg.stop("fast")
        try:
            timings = []
            for i in range(6):
                started = time.monotonic()
                path, body = (
                    ("/conversations/ff/messages", {"role": "user", "content": f"down {i}"})
                    if i % 2
                    else ("/conversations/ff", None)
                )
                status, answer, headers = call("POST" if body else "GET", f"{url}{path}", body)
                timings.append(time.monotonic() - started)
                assert status == 503 and answer["error"] == "database_unavailable" and headers["Retry-After"] == "5"
            assert max(timings) < 1.0, [round(t, 2) for t in timings]
            started = time.monotonic()
            assert call("GET", f"{url}/health")[0] == 503
            assert time.monotonic() - started < 1.0
        finally:
            own_pg.start()
        started = time.monotonic()
        while call("POST", f"{url}/conversations/ff/messages", {"role": "user", "content": "back"})[0] != 201:
            assert time.monotonic() - started < 10, "the service did not recover"
            time.sleep(0.1)
    with psycopg.connect(fault_db.admin) as conn:
        # Nothing acknowledged is lost, nothing refused was written.
        assert conn.execute("SELECT content FROM messages WHERE conversation_id = 'ff'").fetchall() == [("back",)]


def _stored_response_bytes(db: MigratedDatabase, key: str) -> int:
    with psycopg.connect(db.admin) as conn:
        return int(
            scalar(conn.execute("SELECT octet_length(response::text) FROM idempotency_keys WHERE key = %s", (key,)))
        )


def test_an_idempotency_key_past_its_expiry_is_not_a_replay(fault_db: MigratedDatabase) -> None:
    with serve(make_settings(fault_db.app)) as url:
        call("POST", f"{url}/conversations", {"conversation_id": "exp"})
        message = {"role": "user", "content": "again tomorrow"}
        first = call("POST", f"{url}/conversations/exp/messages", message, {"Idempotency-Key": "daily"})
        with psycopg.connect(fault_db.admin) as conn:
            conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'daily'")
        later = call("POST", f"{url}/conversations/exp/messages", message, {"Idempotency-Key": "daily"})
        assert first[0] == later[0] == 201
        assert "Idempotency-Replayed" not in later[2] and later[1]["seq"] == first[1]["seq"] + 1
        # And the key now guards the new request.
        replay = call("POST", f"{url}/conversations/exp/messages", message, {"Idempotency-Key": "daily"})
        assert replay[2].get("Idempotency-Replayed") == "true" and replay[1] == later[1]


def test_expired_idempotency_keys_are_removed_outside_the_request_path(
    fault_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations import api

    def keys() -> set[str]:
        with psycopg.connect(fault_db.admin) as conn:
            return {k for (k,) in conn.execute("SELECT key FROM idempotency_keys WHERE scope = 'hk'")}

    with psycopg.connect(fault_db.admin) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at)"
            " SELECT 'hk', 'old-' || i, 'f', now() - interval '2 days' FROM generate_series(1, 2500) i"
        )
        conn.execute("INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ('hk', 'fresh', 'f')")
    monkeypatch.setattr(api, "HOUSEKEEPING_INTERVAL_S", 0.2)
    # The service is up and gets no request at all: its housekeeping thread removes them.
    with serve(make_settings(fault_db.app)):
        started = time.monotonic()
        while keys() != {"fresh"}:
            assert time.monotonic() - started < 10, f"{len(keys())} keys left"
            time.sleep(0.1)


def test_each_keys_stored_response_is_bounded_and_a_replay_still_answers_the_same(fault_db: MigratedDatabase) -> None:
    big = "z" * 200_000
    with serve(make_settings(fault_db.app)) as url:

        def create() -> tuple[int, Any, Message]:
            return call(
                "POST",
                f"{url}/conversations",
                {"conversation_id": "bigidem", "messages": [{"role": "user", "content": big}] * 3},
                {"Idempotency-Key": "big-create"},
            )

        def append() -> tuple[int, Any, Message]:
            return call(
                "POST",
                f"{url}/conversations/bigidem/messages",
                {"role": "tool", "content": big},
                {"Idempotency-Key": "big-append"},
            )

        created, appended = create(), append()
        assert created[0] == appended[0] == 201
        for key in ("big-create", "big-append"):
            assert _stored_response_bytes(fault_db, key) < 1024, key
        # The same requests again: replays.
        created_again, appended_again = create(), append()
    assert (
        created_again[2].get("Idempotency-Replayed") == "true"
        and appended_again[2].get("Idempotency-Replayed") == "true"
    )
    assert appended_again[1] == appended[1]
    # The conversation as it is now (one message appended since), with the messages that request created.
    assert created_again[1]["messages"] == created[1]["messages"]
    assert created_again[1]["message_count"] == 4


def test_only_a_database_that_does_not_answer_counts_as_unreachable(fault_db: MigratedDatabase) -> None:
    """A refused login (a rotation in progress) must not make every request fail fast."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from conversations.database import unreachable

    params = conninfo_to_dict(fault_db.app)
    with pytest.raises(psycopg.OperationalError) as wrong_password:
        psycopg.connect(make_conninfo("", **{**params, "password": "not-it"}))
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(make_conninfo("", **{**params, "port": "9"}))
    assert not unreachable(wrong_password.value)
    assert unreachable(refused.value)


def test_a_task_started_while_the_database_is_unreachable_serves_503_then_recovers(
    fault_db: MigratedDatabase, own_pg: PostgresServer
) -> None:
    """A scale-out or a Spot replacement during a failover: the task starts (the load balancer's
    /health/live answers), data requests get 503 database_unavailable at once, and the first
    connection that succeeds brings the service back without a restart."""
    from psycopg.conninfo import make_conninfo

    late = LateForwarder((own_pg.host, own_pg.port), after_s=4)
    try:
        settings = make_settings(make_conninfo(fault_db.app, host="127.0.0.1", port=late.port), pool_min_size=2)
        with serve(settings) as url:
            assert call("GET", f"{url}/health/live")[0] == 200
            started = time.monotonic()
            status, answer, _ = call("GET", f"{url}/conversations")
            assert status == 503 and answer["error"] == "database_unavailable"
            assert time.monotonic() - started < 1.0
            while call("POST", f"{url}/conversations", {"conversation_id": "late"})[0] != 201:
                assert time.monotonic() - started < 20, "the service did not recover"
                time.sleep(0.2)
            assert call("GET", f"{url}/conversations/late")[0] == 200
    finally:
        late.close()


def test_a_wrong_password_still_stops_the_start_with_the_reason(fault_db: MigratedDatabase) -> None:
    """An answer from the database (it refused the login) is a setup error, not an outage."""
    from psycopg.conninfo import make_conninfo

    from conversations.api import create_app

    app = create_app(make_settings(make_conninfo(fault_db.app, password="not-the-password")))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        with TestClient(app):
            pass
