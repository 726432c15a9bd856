"""`make up`'s local stack end to end: embedded PostgreSQL, the schema through the real
custom-resource handler with secrets from moto, the service as the app role, verification."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from conversations.embedded import stop_embedded
from conversations.migrate import load_migrations
from tests.support.live import free_port


def test_local_stack_sets_up_verifies_and_persists(tmp_path):
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
