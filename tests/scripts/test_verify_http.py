"""verify_deployment.py's HTTP checks against the real service on a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from devtools.postgres import scalar
from devtools.serving import serve
from scripts import verify_deployment as verify
from tests.support.service import TOKEN, MigratedDatabase, make_settings


@pytest.fixture
def live_url(clean_db: MigratedDatabase) -> Iterator[str]:
    with serve(make_settings(clean_db.app)) as url:
        yield url


def rows(results: list[verify.Check]) -> dict[str, verify.Check]:
    return {r.name: r for r in results}


def test_every_http_check_passes_and_the_round_trip_cleans_up(
    live_url: str, clean_db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the service on a migrated database
    # When the script runs in local mode
    code = verify.main(["--url", live_url, "--token", TOKEN])
    out = capsys.readouterr().out
    # Then every check passes, the table says so, and nothing is left behind
    assert code == 0, out
    for name in ("http: /health/live", "http: /health", "http: token required", "http: write round trip"):
        assert name in out
    assert "4 passed, 0 failed" in out
    assert TOKEN not in out
    with psycopg.connect(clean_db.admin) as conn:
        assert scalar(conn.execute("SELECT count(*) FROM conversations")) == 0


def test_json_output_for_machines(live_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = verify.main(["--url", live_url, "--token", TOKEN, "--json", "--read-only"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["http: /health/live", "http: /health", "http: token required"]
    assert all(c["result"] == "PASS" and c["seconds"] >= 0 for c in report["checks"])


def test_wrong_token_fails_with_a_hint_and_exit_1(live_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = verify.main(["--url", live_url, "--token", "not-the-token-at-all"])
    out = capsys.readouterr().out
    assert code == 1
    failed = [line for line in out.splitlines() if " FAIL " in line]
    assert any("token required" in line and "refused" in line and "next:" in line for line in failed)
    assert any("write round trip" in line and "HTTP 401" in line for line in failed)
    assert "not-the-token-at-all" not in out


def test_database_down_fails_health_but_not_liveness(clean_db: MigratedDatabase) -> None:
    dead = " ".join(p if not p.startswith("port=") else "port=9" for p in clean_db.app.split())
    with serve(make_settings(dead, pool_min_size=0, pool_timeout=1.0)) as url:
        results = verify.verify(verify.Target(url=url, token=TOKEN), aws=None)
    by_name = rows(results)
    assert by_name["http: /health/live"].result == "PASS"
    assert by_name["http: /health"].result == "FAIL"
    assert "database unavailable" in by_name["http: /health"].detail
    assert by_name["http: write round trip"].result == "FAIL"
    assert "HTTP 503" in by_name["http: write round trip"].detail


def test_schema_behind_is_reported(live_url: str) -> None:
    target = verify.Target(url=live_url, token=TOKEN, stack_outputs={"Data": {"SchemaVersion": "99"}})
    by_name = rows(verify.verify(target, aws=None, read_only=True))
    assert by_name["http: /health"].result == "FAIL"
    assert "expected 99" in by_name["http: /health"].detail


def test_unreachable_service_fails_every_http_check_with_a_hint() -> None:
    from devtools.net import free_port

    results = verify.verify(verify.Target(url=f"http://127.0.0.1:{free_port()}", token=TOKEN), aws=None)
    assert all(r.result == "FAIL" for r in results)
    assert "cannot connect" in results[0].detail and results[0].hint


def test_wait_retries_until_the_deadline_with_progress(capsys: pytest.CaptureFixture[str]) -> None:
    from devtools.net import free_port

    lines: list[str] = []
    target = verify.Target(url=f"http://127.0.0.1:{free_port()}", token=TOKEN)
    results = verify.verify(target, aws=None, wait=2, progress=lines.append)
    assert any(r.result == "FAIL" for r in results)
    assert lines and "retrying for" in lines[0]
