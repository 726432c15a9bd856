"""Every store call a route makes goes through Service.run, typed with the called function's own
parameters: a misspelled or mistyped argument is a mypy error, not a 500 in production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
from conversations.routes import Caller

async def route(caller: Caller) -> None:
    await caller.run(caller.store.delete_conversation, "c1", usr_id="u1")
    await caller.run(caller.store.list_conversations, user_id=None, limit="20")
    await caller.run(caller.store.delete_conversation, "c1", user_id="u1")
"""


def test_mypy_checks_the_arguments_of_calls_made_through_service_run(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(probe)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert any('Unexpected keyword argument "usr_id"' in line for line in errors), result.stdout
    assert any('"limit"' in line or 'incompatible type "str"' in line for line in errors), result.stdout
    assert len(errors) == 2, result.stdout  # the correct call passes
