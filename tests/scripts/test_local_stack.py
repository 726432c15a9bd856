"""`make up`'s local stack end to end: embedded PostgreSQL, the schema through the real
custom-resource handler with secrets from moto, the service as the app role, verification."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from conversations.embedded import stop_embedded
from conversations.migrate import load_migrations
from devtools.net import free_port


def test_local_stack_sets_up_verifies_and_persists(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LOCAL_DATA_DIR": str(tmp_path / "local"),
        "PORT": str(free_port()),
        "API_TOKEN": "t" * 24,
        "EMBEDDING_DIMENSION": "8",
    }
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "local_stack.py")
    try:
        # Given a fresh data directory, When the local stack runs once
        first = subprocess.run(
            [sys.executable, script, "--verify-only"], env=env, capture_output=True, text=True, timeout=300
        )
        # Then every step ran and every verification row passed
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{len(load_migrations())} migration(s) applied" in first.stdout
        assert "4 passed, 0 failed" in first.stdout
        assert "t" * 24 not in first.stdout  # --verify-only prints no token
        # When it runs again on the same data, Then the handler finds nothing to do
        second = subprocess.run(
            [sys.executable, script, "--verify-only"], env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "0 migration(s) applied" in second.stdout
        # And the service ran as the application role, which owns nothing
        socket_dir = tmp_path / "local" / "pgdata"
        with psycopg.connect(host=str(socket_dir), dbname="ragdb", user="postgres") as conn:
            roles = conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'conversations_app'"
            ).fetchall()
            assert roles == [("conversations_app", False, False)]
        assert oct((tmp_path / "local" / "app-secret.json").stat().st_mode & 0o777) == "0o600"
    finally:
        stop_embedded(tmp_path / "local")


SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "local_stack.py")


def local_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LOCAL_DATA_DIR": str(tmp_path / "local"),
        "PORT": str(free_port()),
        "API_TOKEN": "t" * 24,
        "EMBEDDING_DIMENSION": "8",
    }


def test_ctrl_c_during_the_first_run_prints_one_line_and_the_next_run_recovers(tmp_path: Path) -> None:
    import signal
    import time

    env = local_env(tmp_path)
    try:
        # Given the first `make up`, interrupted from the terminal (SIGINT to the whole process
        # group, as Ctrl-C sends it) while the embedded database is being created
        first = subprocess.Popen(
            [sys.executable, SCRIPT, "--verify-only"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not (tmp_path / "local" / "pgdata").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        os.killpg(first.pid, signal.SIGINT)
        _, err = first.communicate(timeout=60)
        # Then it says so in one line, with no traceback
        assert "Traceback" not in err, err
        assert first.returncode in (130, 0), err
        if first.returncode == 130:
            assert err.strip().splitlines()[-1].startswith("interrupted; `make up` starts again")
        # When it runs again, Then it finishes the set-up and verifies
        second = subprocess.run(
            [sys.executable, SCRIPT, "--verify-only"], env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "4 passed, 0 failed" in second.stdout
    finally:
        stop_embedded(tmp_path / "local")


def test_down_stops_and_reset_deletes_only_after_confirmation(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    try:
        assert subprocess.run([sys.executable, SCRIPT, "--verify-only"], env=env, capture_output=True).returncode == 0
        pgdata = tmp_path / "local" / "pgdata"
        assert (pgdata / "postmaster.pid").exists()
        down = subprocess.run([sys.executable, SCRIPT, "--down"], env=env, capture_output=True, text=True)
        assert down.returncode == 0 and "stopped" in down.stdout
        assert not (pgdata / "postmaster.pid").exists() and (pgdata / "PG_VERSION").exists()
        # Without a terminal to confirm on, reset refuses and deletes nothing
        refused = subprocess.run(
            [sys.executable, SCRIPT, "--reset"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        assert refused.returncode == 2 and "--yes" in refused.stderr
        assert (pgdata / "PG_VERSION").exists()
        reset = subprocess.run([sys.executable, SCRIPT, "--reset", "--yes"], env=env, capture_output=True, text=True)
        assert reset.returncode == 0 and not pgdata.exists()
        assert not (tmp_path / "local" / "app-secret.json").exists()
    finally:
        stop_embedded(tmp_path / "local")
