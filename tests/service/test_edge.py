"""The edge under a caller holding the token: what is ambiguous is refused, what is forged or
stale answers as a fresh request would, never a 500."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conversations.store import Store
from devtools.serving import serve
from tests.support.http import call
from tests.support.service import TOKEN, MigratedDatabase, make_settings

AUTH = ("Authorization", f"Bearer {TOKEN}")


def test_a_repeated_user_id_or_authorization_header_is_refused(client: TestClient) -> None:
    """A front end that appends its own X-User-Id instead of replacing the client's would let the
    client choose who it is, if the first copy won: neither copy is guessed at."""
    repeated = client.get("/conversations", headers=[AUTH, ("X-User-Id", "alice"), ("X-User-Id", "bob")])
    assert repeated.status_code == 400 and "X-User-Id header is sent more than once" in repeated.text
    twice = TestClient(client.app).get("/conversations", headers=[AUTH, AUTH])
    assert twice.status_code == 400 and "Authorization header is sent more than once" in twice.text
    assert client.get("/conversations", headers={"X-User-Id": "alice"}).status_code == 200


def test_a_forged_cursor_is_a_400_never_a_500(client: TestClient) -> None:
    for position in (["2026-01-01T00:00:00+00:00", "\ud800"], ["2026-01-01T00:00:00+00:00", "x" * 300]):
        raw = json.dumps(position).encode()  # "\ud800" as its JSON escape: a lone surrogate
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = client.get("/conversations", params={"cursor": cursor})
        assert answer.status_code == 400, answer.text


def test_a_zero_vector_is_no_query_for_the_nearest(client: TestClient) -> None:
    answer = client.post("/search/similar", json={"embedding": [0.0] * 8})
    assert answer.status_code == 422 and "must not be all zeros" in answer.text


def test_an_append_replayed_after_its_conversation_was_deleted_answers_as_a_fresh_one(client: TestClient) -> None:
    """The stored answer holds the deleted text (kept 24 h): a replay must not give it back."""
    client.post("/conversations", json={"conversation_id": "gone"})
    key = {"Idempotency-Key": "k-1"}
    body = {"role": "user", "content": "deleted words"}
    assert client.post("/conversations/gone/messages", json=body, headers=key).status_code == 201
    assert client.delete("/conversations/gone").status_code == 204
    replay = client.post("/conversations/gone/messages", json=body, headers=key)
    assert replay.status_code == 404 and "deleted words" not in replay.text


def test_a_large_append_replayed_after_delete_and_create_again_is_a_new_append(client: TestClient) -> None:
    """Past 64 KiB the stored answer is a reference (the message's seq): after the conversation
    was deleted and created again, that seq is not there (this was a 500)."""
    key = {"Idempotency-Key": "k-2"}
    client.post("/conversations", json={"conversation_id": "again"})
    client.post("/conversations/again/messages", json={"role": "user", "content": "first"})
    big = {"role": "user", "content": "y" * (70 * 1024)}
    first = client.post("/conversations/again/messages", json=big, headers=key)
    assert first.status_code == 201 and first.json()["seq"] == 2
    client.delete("/conversations/again")
    client.post("/conversations", json={"conversation_id": "again"})
    replay = client.post("/conversations/again/messages", json=big, headers=key)
    assert replay.status_code == 201 and replay.json()["seq"] == 1
    assert "Idempotency-Replayed" not in replay.headers
    again = client.post("/conversations/again/messages", json=big, headers=key)
    assert again.headers.get("Idempotency-Replayed") == "true" and again.json()["seq"] == 1


def test_a_create_replayed_after_delete_creates_it_again(client: TestClient) -> None:
    key = {"Idempotency-Key": "k-3"}
    body = {"conversation_id": "twice", "messages": [{"role": "user", "content": "hello"}]}
    assert client.post("/conversations", json=body, headers=key).status_code == 201
    assert client.post("/conversations", json=body, headers=key).headers.get("Idempotency-Replayed") == "true"
    client.delete("/conversations/twice")
    fresh = client.post("/conversations", json=body, headers=key)
    assert fresh.status_code == 201 and "Idempotency-Replayed" not in fresh.headers
    assert client.get("/conversations/twice").status_code == 200


def test_data_answers_are_never_cached_or_sniffed(client: TestClient) -> None:
    client.post("/conversations", json={"conversation_id": "private"})
    for answer in (
        client.get("/conversations"),
        client.get("/conversations/private"),
        client.get("/conversations/nope"),
        TestClient(client.app).get("/conversations"),  # the 401 too
    ):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/health/live").headers.get("cache-control") != "no-store"


def test_a_search_snippet_is_safe_to_render_as_html(client: TestClient) -> None:
    """Stored markup must not reach a client that renders snippets as HTML, and nothing in the
    content becomes a match mark: the only tags are the <b> around the matches."""
    content = 'needle x<y & "q" \ue000fake\ue001 <img src=x onerror=alert(1)// and 2>1'
    client.post("/conversations", json={"conversation_id": "xss", "messages": [{"role": "user", "content": content}]})
    (hit,) = client.get("/search", params={"q": "needle"}).json()["items"]
    snippet = hit["snippet"]
    assert snippet.startswith("<b>needle</b>") and snippet.count("<b>") == snippet.count("</b>") == 1
    text = snippet.replace("<b>", "").replace("</b>", "")
    assert not {"<", ">", '"', "\ue000", "\ue001"} & set(text), snippet
    assert "&lt;" in text and "&amp;" in text and "&quot;" in text


def test_a_json_body_naming_a_key_twice_is_refused(client: TestClient) -> None:
    """json keeps the last copy: '"role": "user", ..., "role": "system"' was stored as system."""
    client.post("/conversations", json={"conversation_id": "dup"})
    raw = '{"role": "user", "content": "hi", "role": "system"}'
    answer = client.post("/conversations/dup/messages", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "names the key 'role' more than once" in answer.text
    nested = '{"role": "user", "content": "hi", "metadata": {"a": 1, "a": 2}}'
    answer = client.post("/conversations/dup/messages", content=nested, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "'a'" in answer.text
    assert client.get("/conversations/dup").json()["messages"] == []
    fine = client.post("/conversations/dup/messages", json={"role": "user", "content": "hi", "metadata": {"a": 1}})
    assert fine.status_code == 201


# --- one user's searches cannot starve everyone; a saturated task says so ------------------------


def test_one_users_searches_are_bounded_and_others_still_search(
    clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 concurrent searches of one user once held every store thread: another user's read took
    5 s, then a 503 that blamed the database."""
    release = threading.Event()
    real = Store.search

    def slow_for_alice(self: Store, query: str, **kwargs: Any) -> Any:
        if kwargs.get("user_id") == "alice":
            release.wait(10)
        return real(self, query, **kwargs)

    monkeypatch.setattr(Store, "search", slow_for_alice)
    with serve(make_settings(clean_db.app, store_threads=4, searches_per_user=2)) as url:
        alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(call, "GET", f"{url}/search?q=word", None, alice) for _ in range(2)]
            time.sleep(0.5)  # both are in the store now, waiting
            status, body, headers = call("GET", f"{url}/search?q=word", None, alice)
            assert status == 429 and body["error"] == "too_many_searches" and headers["Retry-After"] == "1"
            similar = call("POST", f"{url}/search/similar", {"embedding": [1.0] * 8}, alice)
            assert similar[0] == 429, "similar counts against the same bound"
            assert call("GET", f"{url}/search?q=word", None, bob)[0] == 200
            assert call("GET", f"{url}/conversations", None, bob)[0] == 200
            release.set()
            assert [f.result()[0] for f in running] == [200, 200]
        assert call("GET", f"{url}/search?q=word", None, alice)[0] == 200, "the slots are given back"


def test_a_task_whose_connections_are_all_busy_says_busy_not_database_unavailable(
    clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = Store.list_conversations

    def held(self: Store, **kwargs: Any) -> Any:
        if kwargs.get("user_id") == "holder":
            with self._conn():  # holds the pool's only connection
                release.wait(10)
        return real(self, **kwargs)

    monkeypatch.setattr(Store, "list_conversations", held)
    settings = make_settings(clean_db.app, pool_min_size=1, pool_max_size=1, store_threads=1, pool_timeout=0.5)
    with serve(settings) as url:
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(call, "GET", f"{url}/conversations", None, {"X-User-Id": "holder"})
            time.sleep(0.3)
            status, body, headers = call("GET", f"{url}/conversations", None, {"X-User-Id": "someone"})
            assert status == 503 and body["error"] == "busy" and headers["Retry-After"] == "1", body
            release.set()
            assert holding.result()[0] == 200


def test_health_asks_the_database_at_most_once_a_second_however_many_poll(
    clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 anonymous connections polling /health (no token, outside admission) made an
    authenticated read go from 2 ms to 720 ms: each poll was a database round trip."""
    asked = []
    real = Store.health

    def counted(self: Store) -> Any:
        asked.append(time.monotonic())
        time.sleep(0.05)
        return real(self)

    monkeypatch.setattr(Store, "health", counted)
    with serve(make_settings(clean_db.app)) as url:
        anonymous = {"Authorization": ""}
        with ThreadPoolExecutor(16) as pool:
            began = time.monotonic()
            answers = list(pool.map(lambda _: call("GET", f"{url}/health", None, anonymous), range(200)))
            took = time.monotonic() - began
        assert {a[0] for a in answers} == {200} and {json.dumps(a[1]) for a in answers} == {'{"status": "healthy"}'}
        assert len(asked) <= int(took) + 2, f"{len(asked)} database round trips in {took:.1f} s"
        detailed = call("GET", f"{url}/health")[1]
        assert detailed["pgvector_version"] and detailed["schema_version"]


# --- a body is bounded in values before it is parsed ------------------------------------------------


def test_a_body_of_millions_of_numbers_is_refused_before_it_is_parsed(client: TestClient) -> None:
    """16 MiB of numbers in an embedding took a process from 66 to 518 MiB and blocked it 2.8 s."""
    client.post("/conversations", json={"conversation_id": "huge"})
    body = b'{"role": "user", "content": "x", "embedding": [' + b"0.5," * 2_000_000 + b"0.5]}"
    began = time.monotonic()
    answer = client.post("/conversations/huge/messages", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "this route takes at most 50000" in answer.text, answer.text[:200]
    assert time.monotonic() - began < 1.0


def test_a_metadata_object_of_a_million_keys_is_refused_before_it_is_parsed(client: TestClient) -> None:
    """~1.2M keys once blocked the process for 5-10 s."""
    client.post("/conversations", json={"conversation_id": "keys"})
    keys = b",".join(b'"k%d": 1' % i for i in range(1_000_000))
    body = b'{"role": "user", "content": "x", "metadata": {' + keys + b"}}"
    began = time.monotonic()
    answer = client.post("/conversations/keys/messages", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text[:200]
    assert time.monotonic() - began < 1.0


def test_commas_and_colons_inside_text_are_no_values(client: TestClient) -> None:
    """A large message of prose has far more commas than the bound: only those outside strings count."""
    client.post("/conversations", json={"conversation_id": "prose"})
    content = 'lorem, ipsum: "dolor", sit amet\\n ' * 200_000  # 7 MB of text, 1.2M commas and colons
    answer = client.post("/conversations/prose/messages", json={"role": "user", "content": content})
    assert answer.status_code == 201, answer.text[:200]
    stored = client.get("/conversations/prose/messages").json()["items"][0]["content"]
    assert stored == content


def test_a_conversation_with_hundreds_of_embedded_messages_still_fits(client: TestClient) -> None:
    messages = [{"role": "user", "content": f"m{n}", "embedding": [0.25] * 8} for n in range(1000)]
    answer = client.post("/conversations", json={"conversation_id": "many", "messages": messages})
    assert answer.status_code == 201 and len(answer.json()["messages"]) == 1000


def test_the_favicon_needs_no_token(anon_client: TestClient) -> None:
    answer = anon_client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    assert anon_client.get("/static/favicon.svg").status_code == 200


def test_deleting_a_conversation_deletes_the_answers_stored_for_its_replays(
    client: TestClient, clean_db: MigratedDatabase
) -> None:
    """Stored answers of idempotent POSTs held a deleted conversation's text for a day."""
    import psycopg

    alice = {"X-User-Id": "alice"}
    body = {"conversation_id": "secret", "messages": [{"role": "user", "content": "words to forget"}]}
    client.post("/conversations", json=body, headers={**alice, "Idempotency-Key": "forget-c"})
    client.post(
        "/conversations/secret/messages",
        json={"role": "user", "content": "more to forget"},
        headers={**alice, "Idempotency-Key": "forget-a"},
    )
    big = {"role": "user", "content": "forget " * 12_000}  # past 64 KiB: stored as a reference
    client.post(
        "/conversations/secret/messages", json=big, headers={"Idempotency-Key": "forget-b"}
    )  # no user: scope ''
    client.post("/conversations", json={"conversation_id": "other"}, headers={**alice, "Idempotency-Key": "forget-o"})

    def stored() -> list[str]:
        with psycopg.connect(clean_db.admin) as conn:
            rows = conn.execute("SELECT key FROM idempotency_keys WHERE key LIKE 'forget-%' ORDER BY key")
            return [r[0].removeprefix("forget-") for r in rows.fetchall()]

    assert stored() == ["a", "b", "c", "o"]
    assert client.delete("/conversations/secret", headers=alice).status_code == 204
    assert stored() == ["o"], "only the other conversation's answer is kept"
