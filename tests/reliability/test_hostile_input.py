"""Hostile input: the API fuzzed from its own OpenAPI schema (schemathesis, fixed budget), and
the classic attacks by hand. No 5xx, no response that breaks the schema, nothing leaked."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conversations import logs
from conversations.api import create_app
from tests.support.service import TOKEN, MigratedDatabase, make_settings, truncate

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def live_app(migrated_db: MigratedDatabase) -> Iterator[TestClient]:
    app = create_app(make_settings(migrated_db.app, pool_timeout=5.0))
    with TestClient(app, headers=AUTH) as client:
        client.post(
            "/conversations",
            json={"conversation_id": "fuzz-target", "title": "t", "messages": [{"role": "user", "content": "seed"}]},
        )
        yield client
    truncate(migrated_db)  # the shared database is left empty, as other modules expect


FUZZ_LOG: list[str] = []
EXAMPLES_PER_OPERATION = 25


def test_fuzzed_requests_never_get_a_5xx_or_an_off_schema_answer(
    live_app: TestClient, migrated_db: MigratedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Every operation in /openapi.json, EXAMPLES_PER_OPERATION generated requests each
    (valid and invalid data alike), with a fixed seed so a failure reproduces."""
    caplog.set_level(logging.INFO)
    # An app of its own: schemathesis's client runs the app's lifespan around its calls.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_settings(migrated_db.app)))
    tried = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case[Any]) -> None:
            nonlocal tried
            tried += 1
            headers = {} if "authorization" in {k.lower() for k in (case.headers or {})} else AUTH
            response = case.call(headers=headers)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            # Every check but "positive data acceptance": JSON Schema cannot say that free-form
            # metadata must hold no NUL characters or nest deeper than 32 levels, so some
            # schema-valid bodies are rightly refused with 422.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        run()
    FUZZ_LOG.append(caplog.text)
    assert tried >= 10 * EXAMPLES_PER_OPERATION // 2, f"only {tried} requests were generated"
    print(f"\n  fuzzing: {tried} generated requests, no 5xx, every answer within the schema")


@pytest.mark.parametrize(
    "evil",
    [
        "'; DROP TABLE messages; --",
        '" OR 1=1 --',
        "x') UNION SELECT password FROM pg_shadow --",
        "$$; SELECT pg_sleep(10); $$",
        "%' OR '%'='",
        "\\x00\\x27",
    ],
)
def test_sql_injection_is_just_data(live_app: TestClient, evil: str) -> None:
    created = live_app.post(
        "/conversations",
        json={"title": evil, "metadata": {evil: evil}, "messages": [{"role": "user", "content": evil}]},
    )
    assert created.status_code == 201
    cid = created.json()["conversation_id"]
    assert live_app.get(f"/conversations/{cid}").json()["messages"][0]["content"] == evil
    assert live_app.get("/search", params={"q": evil}).status_code == 200
    assert live_app.get(f"/conversations/{evil.replace('/', '')}").status_code in (404, 422)
    assert live_app.get("/conversations", params={"cursor": evil}).status_code == 400
    assert live_app.get("/health").json()["status"] == "healthy"  # the tables are all still there


def test_oversized_nested_invalid_utf8_and_nul_payloads_get_4xx(live_app: TestClient) -> None:
    big = live_app.post(
        "/conversations/fuzz-target/messages",
        content=b'{"role": "user", "content": "' + b"x" * (17 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413
    deep_body = b'{"metadata": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    deep = live_app.post("/conversations", content=deep_body, headers={"Content-Type": "application/json"})
    assert 400 <= deep.status_code < 500
    bad_utf8 = live_app.post(
        "/conversations/fuzz-target/messages",
        content=b'{"role":"user","content":"\xc3\x28"}',
        headers={"Content-Type": "application/json"},
    )
    assert bad_utf8.status_code == 400
    nul = live_app.post("/conversations/fuzz-target/messages", json={"role": "user", "content": "a\u0000b"})
    assert nul.status_code == 422
    nul_key = live_app.post("/conversations", json={"metadata": {"k\u0000": 1}})
    assert nul_key.status_code == 422
    not_json = live_app.post("/conversations", content=b"role=user", headers={"Content-Type": "text/plain"})
    assert 400 <= not_json.status_code < 500


def test_token_is_compared_in_constant_time(live_app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert live_app.get("/conversations", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert live_app.get("/conversations").status_code == 200
    assert len(calls) == 2


def test_no_message_content_or_secret_in_any_log_line(live_app: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("DEBUG")
    try:
        secret_content = "CONTENT-" + "q" * 12
        live_app.post("/conversations/fuzz-target/messages", json={"role": "user", "content": secret_content})
        live_app.get("/search", params={"q": secret_content})
        live_app.get("/conversations", headers={"Authorization": "Bearer not-the-token-XYZ"})
        live_app.post("/conversations", json={"title": secret_content, "bogus": secret_content})
        out = capsys.readouterr()
        text = out.out + out.err + "".join(FUZZ_LOG)
    finally:
        logging.getLogger().handlers[:] = []
    assert secret_content not in text
    assert TOKEN not in text and "not-the-token-XYZ" not in text
    assert "password=" not in text
