"""Bounds: nothing a caller sends can make the service buffer, read or answer without limit.

Each test names the bound it holds; the README's reliability table lists the same figures."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from conversations.api import create_app
from conversations.models import NewMessage
from conversations.settings import MIB, Settings
from conversations.store import Store
from conversations.store import messages as messages_module
from conversations.store import search as search_module
from tests.support.service import EMBEDDING_DIMENSION, TOKEN, MigratedDatabase, make_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(clean_db: MigratedDatabase) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(clean_db.app)), headers=AUTH) as client:
        yield client


def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/conversations", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- before the token


class _Exchange:
    """One request driven at the ASGI level: what the app read and what it answered."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        self.body = body
        self.reads = 0
        self.release = asyncio.Event()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.response = b""

    async def receive(self) -> MutableMapping[str, Any]:
        self.reads += 1
        await self.release.wait()
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            self.response += message.get("body", b"")


def test_without_the_token_not_one_byte_of_the_body_is_read(clean_db: MigratedDatabase) -> None:
    app = create_app(make_settings(clean_db.app))
    body = b'{"role": "user", "content": "' + b"x" * MIB + b'"}'
    exchange = _Exchange(
        "POST",
        "/conversations/any/messages",
        {"content-type": "application/json", "content-length": str(len(body))},
        body,
    )
    exchange.release.set()

    asyncio.run(app(exchange.scope, exchange.receive, exchange.send))

    assert exchange.status == 401 and json.loads(exchange.response)["error"] == "unauthorized"
    assert exchange.reads == 0, "the body was read before the token was checked"


def _held(app: Any, exchanges: Sequence[_Exchange]) -> tuple[list[asyncio.Task[None]], Any]:
    tasks = [asyncio.ensure_future(app(e.scope, e.receive, e.send)) for e in exchanges]
    return tasks, asyncio.sleep(0.05)


class _Upload(_Exchange):
    """A POST whose body arrives as scripted: (seconds to wait, bytes) chunks, then nothing more
    (the caller goes quiet) unless ``finish`` ends it."""

    def __init__(self, headers: dict[str, str], chunks: list[tuple[float, bytes]], *, finish: bool = False) -> None:
        super().__init__("POST", "/conversations", headers)
        self.chunks = list(chunks)
        self.finish = finish

    async def receive(self) -> MutableMapping[str, Any]:
        self.reads += 1
        if self.chunks:
            delay, data = self.chunks.pop(0)
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": data, "more_body": bool(self.chunks) or not self.finish}
        await self.release.wait()
        return {"type": "http.disconnect"}


def _upload_headers(size: int) -> dict[str, str]:
    return {**{k.lower(): v for k, v in AUTH.items()}, "content-type": "application/json", "content-length": str(size)}


def test_requests_over_the_concurrency_bound_answer_503_at_once(
    clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(clean_db.app, max_concurrent_requests=2))
    release = threading.Event()
    real = Store.list_conversations

    def held(self: Store, **kwargs: Any) -> Any:
        release.wait(10)
        return real(self, **kwargs)

    monkeypatch.setattr(Store, "list_conversations", held)
    auth = {k.lower(): v for k, v in AUTH.items()}

    async def scenario() -> _Exchange:
        async with app.router.lifespan_context(app):
            # Given two requests in flight (in the store)
            busy = [_Exchange("GET", "/conversations", auth) for _ in range(2)]
            tasks, settle = _held(app, busy)
            await settle
            # When a third arrives
            third = _Exchange("GET", "/conversations", auth)
            await asyncio.wait_for(app(third.scope, third.receive, third.send), timeout=1)
            release.set()
            await asyncio.gather(*tasks)
            assert [e.status for e in busy] == [200, 200]
            return third

    third = asyncio.run(scenario())
    # Then it is turned away at once, and told when to come back
    assert third.status == 503
    assert json.loads(third.response)["error"] == "overloaded"
    assert third.headers["retry-after"] == "1"


def test_bodies_still_arriving_hold_no_slot(clean_db: MigratedDatabase) -> None:
    """64 requests with unfinished bodies once turned every data request into a 503 while
    /health/live stayed 200: a slot is taken only once the body has arrived."""
    app = create_app(make_settings(clean_db.app, max_concurrent_requests=2))

    async def scenario() -> _Exchange:
        async with app.router.lifespan_context(app):
            slow = [_Upload(_upload_headers(1000), [(0, b'{"ti')]) for _ in range(5)]
            tasks, settle = _held(app, slow)
            await settle
            read = _Exchange("GET", "/conversations", {k.lower(): v for k, v in AUTH.items()})
            await asyncio.wait_for(app(read.scope, read.receive, read.send), timeout=5)
            for upload in slow:
                upload.release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return read

    assert asyncio.run(scenario()).status == 200


def test_body_bytes_count_as_they_arrive_not_as_declared(clean_db: MigratedDatabase) -> None:
    """Two uploads declaring 16 MiB and sending a byte now and then once reserved the whole
    in-flight budget: every other write was a 503. Now only bytes received count."""
    settings = make_settings(clean_db.app, max_body_bytes=2 * MIB, max_body_bytes_in_flight=3 * MIB)
    app = create_app(settings)
    chunk = b" " * (2 * MIB - 2)

    async def scenario() -> tuple[_Upload, _Upload, _Upload]:
        async with app.router.lifespan_context(app):
            declared = [_Upload(_upload_headers(2 * MIB), []) for _ in range(2)]  # declared, nothing sent
            sending = _Upload(_upload_headers(2 * MIB), [(0, chunk)])  # 2 MiB arrived, the rest never does
            tasks, settle = _held(app, [*declared, sending])
            await settle
            assert [u.status for u in [*declared, sending]] == [None] * 3, "each is admitted, reading"
            small = _Upload(_upload_headers(2), [(0, b"{}")], finish=True)  # fits beside the 2 MiB
            await asyncio.wait_for(app(small.scope, small.receive, small.send), timeout=5)
            over = _Upload(_upload_headers(2 * MIB), [(0, chunk)])  # 2 + 2 MiB > 3 MiB arrived
            await asyncio.wait_for(app(over.scope, over.receive, over.send), timeout=5)
            for upload in [*declared, sending]:
                upload.release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return small, over, sending

    small, over, _ = asyncio.run(scenario())
    assert small.status == 201
    assert over.status == 503 and json.loads(over.response)["error"] == "overloaded"


@pytest.mark.parametrize(
    "chunks",
    [[(0.0, b"{")] + [(0.05, b" ")] * 100, []],
    ids=["a-byte-at-a-time", "silent"],
)
def test_a_body_slower_than_the_least_rate_is_a_408_and_the_connection_closes(
    clean_db: MigratedDatabase, chunks: list[tuple[float, bytes]]
) -> None:
    settings = make_settings(clean_db.app, body_grace_s=0.3, min_body_bytes_per_s=1000)
    app = create_app(settings)

    async def scenario() -> tuple[_Upload, float]:
        async with app.router.lifespan_context(app):
            upload = _Upload(_upload_headers(16 * 1000), chunks)
            began = time.monotonic()
            await asyncio.wait_for(app(upload.scope, upload.receive, upload.send), timeout=5)
            return upload, time.monotonic() - began

    upload, took = asyncio.run(scenario())
    assert upload.status == 408 and json.loads(upload.response)["error"] == "request_timeout"
    assert upload.headers["connection"] == "close"
    assert took < 1.5, f"held for {took:.1f} s"


def test_a_body_longer_than_its_declared_length_is_refused(api: TestClient) -> None:
    response = api.post(
        "/conversations",
        content=b'{"title": "' + b"x" * 5000 + b'"}',
        headers={"Content-Type": "application/json", "Content-Length": "12"},
    )
    assert 400 <= response.status_code < 500


def test_in_flight_bound_cannot_be_set_below_one_body() -> None:
    with pytest.raises(ValueError, match="MAX_BODY_BYTES_IN_FLIGHT"):
        Settings.from_env({"MAX_BODY_BYTES": str(8 * MIB), "MAX_BODY_BYTES_IN_FLIGHT": str(4 * MIB)})


def test_health_stays_cheap_whatever_the_tables_hold(clean_db: MigratedDatabase) -> None:
    """/health needs no token: it must not scan a table (count(*) did, on every probe). Here
    the conversations table is locked by a migration-like transaction: a scan would wait."""
    with (
        TestClient(create_app(make_settings(clean_db.app, statement_timeout_ms=1000))) as client,
        psycopg.connect(clean_db.admin) as locker,
    ):
        locker.execute("LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE")
        response = client.get("/health")
        locker.rollback()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "healthy"


def test_standalone_on_the_embedded_database_it_listens_on_loopback_only() -> None:
    assert Settings.from_env({}).host == "127.0.0.1"
    assert Settings.from_env({"HOST": "0.0.0.0"}).host == "0.0.0.0"
    configured = {"DATABASE_URL": "postgresql://u:p@db/x", "API_TOKEN": "t" * 32}
    assert Settings.from_env(configured).host == "0.0.0.0"


# ---------------------------------------------------------------- responses


def _bulk_messages(db: MigratedDatabase, cid: str, contents: list[str]) -> None:
    with psycopg.connect(db.admin) as conn:
        with conn.cursor().copy("COPY messages (conversation_id, seq, role, content) FROM STDIN") as copy:
            for seq, content in enumerate(contents, start=1):
                copy.write_row((cid, seq, "user", content))
        conn.execute("UPDATE conversations SET message_count = %s WHERE conversation_id = %s", (len(contents), cid))


def test_a_conversation_read_is_bounded_by_rows_with_a_cursor_to_the_rest(
    api: TestClient, clean_db: MigratedDatabase
) -> None:
    cid = _create(api, conversation_id="long")["conversation_id"]
    _bulk_messages(clean_db, cid, [f"m{i}" for i in range(1, 1201)])

    whole = api.get(f"/conversations/{cid}").json()
    assert len(whole["messages"]) == messages_module.MAX_PAGE_MESSAGES == 1000
    assert whole["messages_after_cursor"] == "1000" and whole["messages_before_cursor"] is None
    rest = api.get(f"/conversations/{cid}/messages", params={"after": whole["messages_after_cursor"], "limit": 1000})
    assert [m["content"] for m in rest.json()["items"]] == [f"m{i}" for i in range(1001, 1201)]

    last = api.get(f"/conversations/{cid}", params={"messages_limit": 50}).json()
    assert [m["seq"] for m in last["messages"]] == list(range(1151, 1201))
    assert last["messages_before_cursor"] == "1151" and last["messages_after_cursor"] is None
    assert api.get(f"/conversations/{cid}", params={"messages_limit": 1001}).status_code == 422


def test_a_conversation_of_any_size_is_read_page_by_page_within_the_byte_bound(
    api: TestClient, clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation far larger than a page (here 24 MiB against a 4 MiB page): every page
    stays within the bound (or is one message), and following the cursors reads it all."""
    cid = _create(api, conversation_id="heavy")["conversation_id"]
    sizes = [3 * MIB, 3 * MIB, 1, 5 * MIB, 2 * MIB, 1 * MIB, 1 * MIB, 9 * MIB]
    _bulk_messages(clean_db, cid, [chr(ord("a") + i) * size for i, size in enumerate(sizes)])

    first = api.get(f"/conversations/{cid}").json()
    pages = [[len(m["content"]) for m in first["messages"]]]
    cursor = first["messages_after_cursor"]
    while cursor is not None:
        page = api.get(f"/conversations/{cid}/messages", params={"after": cursor, "limit": 1000}).json()
        pages.append([len(m["content"]) for m in page["items"]])
        cursor = page["next_cursor"]

    assert [size for page in pages for size in page] == sizes
    for page in pages:
        assert sum(page) <= messages_module.MAX_PAGE_BYTES or len(page) == 1, pages
    assert pages == [[3 * MIB], [3 * MIB, 1], [5 * MIB], [2 * MIB, 1 * MIB], [1 * MIB], [9 * MIB]]

    backwards: list[int] = []
    cursor = str(len(sizes) + 1)
    while cursor is not None:
        page = api.get(f"/conversations/{cid}/messages", params={"before": cursor, "limit": 1000}).json()
        backwards = [len(m["content"]) for m in page["items"]] + backwards
        cursor = page["next_cursor"]
    assert backwards == sizes


def test_similarity_hits_carry_a_bounded_prefix_of_their_text(api: TestClient) -> None:
    vector = [1.0] + [0.0] * (EMBEDDING_DIMENSION - 1)
    cid = _create(api)["conversation_id"]
    long_text = "y" * (search_module.SIMILAR_CONTENT_CHARS + 5000)
    for content in (long_text, "short"):
        assert (
            api.post(
                f"/conversations/{cid}/messages", json={"role": "user", "content": content, "embedding": vector}
            ).status_code
            == 201
        )
    hits = {h["seq"]: h for h in api.post("/search/similar", json={"embedding": vector}).json()["items"]}
    assert len(hits[1]["content"]) == search_module.SIMILAR_CONTENT_CHARS and hits[1]["content_truncated"] is True
    assert hits[2]["content"] == "short" and hits[2]["content_truncated"] is False


# ---------------------------------------------------------------- search


def test_a_search_that_only_excludes_words_is_refused_with_a_reason(api: TestClient) -> None:
    _create(api, messages=[{"role": "user", "content": "hello world"}])
    response = api.get("/search", params={"q": "-hello"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_search"
    assert api.get("/search", params={"q": "world -hello"}).json()["items"] == []
    assert api.get("/search", params={"q": "!!! ..."}).json()["items"] == []


def test_a_search_past_its_own_timeout_is_a_422_not_an_outage(clean_db: MigratedDatabase) -> None:
    with (
        TestClient(create_app(make_settings(clean_db.app, search_timeout_ms=300)), headers=AUTH) as client,
        psycopg.connect(clean_db.admin) as locker,
    ):
        # Given a search that cannot finish in time (here: the table it reads is locked)
        locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        response = client.get("/search", params={"q": "anything"})
        locker.rollback()
        # Then it is stopped after its own timeout, reported as such, not as the database down
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "search_timeout" and "Retry-After" not in response.headers
        assert client.get("/health").json()["status"] == "healthy"


@pytest.mark.parametrize("user", [None, "alice"])
@pytest.mark.parametrize("scope_first", [True, False])
def test_search_finds_the_most_recent_matches_by_every_path(
    store: Store, clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch, user: str | None, scope_first: bool
) -> None:
    """The newest-window walk, the index for older messages and the caller's-own-messages
    path all return what a plain scan would: the best-ranked of the most recent matches."""
    monkeypatch.setattr(search_module, "SEARCH_WINDOW", 40)
    monkeypatch.setattr(search_module, "SEARCH_CANDIDATES", 15)
    monkeypatch.setattr(search_module, "SCOPE_FIRST_MESSAGES", 10_000 if scope_first else 0)

    for c in range(6):
        owner = "alice" if c % 2 == 0 else "bob"
        messages = []
        for i in range(30):
            words = ["common"] + (["rare"] if (c * 30 + i) % 17 == 0 else []) + (["old"] if c < 2 else [])
            messages.append(NewMessage("user", " ".join([*words, f"w{c}x{i}"])))
        store.create_conversation(conversation_id=f"c{c}", user_id=owner, messages=messages)

    with psycopg.connect(clean_db.admin) as conn:
        for term in ("common", "rare", "old", "rare old"):
            expected = [
                row[0]
                for row in conn.execute(
                    "SELECT m.id FROM messages m JOIN conversations c USING (conversation_id)"
                    " WHERE m.search @@ websearch_to_tsquery('simple', %s)"
                    " AND (%s::text IS NULL OR c.user_id = %s) ORDER BY m.id DESC LIMIT 15",
                    (term, user, user),
                )
            ]
            found = {hit.message_id for hit in store.search(term, user_id=user, limit=100)}
            assert found == set(expected), term


# ---------------------------------------------------------------- inputs that must be a 4xx


SURROGATE = '"\\ud800"'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/conversations/c1/messages", '{"role": "user", "content": ' + SURROGATE + "}"),
        ("/conversations", '{"title": ' + SURROGATE + "}"),
        ("/conversations", '{"conversation_id": ' + SURROGATE + "}"),
        ("/conversations", '{"metadata": {"k": ' + SURROGATE + "}}"),
        ("/conversations", '{"settings": {' + SURROGATE + ": 1}}"),
        ("/conversations/c1/messages", '{"role": "user", "content": "x", "metadata": {"a": [' + SURROGATE + "]}}"),
        ("/search/similar", '{"embedding": [1, 0, 0, 0, 0, 0, 0, 0], "conversation_id": ' + SURROGATE + "}"),
    ],
)
def test_text_that_cannot_be_encoded_is_a_422_in_any_field(api: TestClient, path: str, body: Any) -> None:
    _create(api, conversation_id="c1")
    response = api.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


@pytest.mark.parametrize(
    "bad_id",
    [
        ".",
        "..",
        "a/b",
        "a\\b",
        " lead",
        "trail ",
        "tab\there",
        "bell\x07",
        "zero\u200bwidth",
        "bidi\u202eevil",
        "l\u2028s",
    ],
)
def test_conversation_ids_that_cannot_be_addressed_by_url_are_refused_at_creation(api: TestClient, bad_id: str) -> None:
    response = api.post("/conversations", json={"conversation_id": bad_id})
    assert response.status_code == 422, (bad_id, response.text)
    assert "conversation id" in response.json()["message"]


def test_ids_that_are_fine_in_a_url_are_accepted_and_addressable(api: TestClient) -> None:
    for good in ("émoji-😀", "with space", "a?b#c%d", "日本語", "x" * 255):
        cid = _create(api, conversation_id=good)["conversation_id"]
        from urllib.parse import quote

        assert api.get(f"/conversations/{quote(cid, safe='')}").status_code == 200, good


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "3.5e38"])
def test_an_embedding_with_non_finite_or_out_of_range_values_is_a_422(api: TestClient, value: str) -> None:
    cid = _create(api)["conversation_id"]
    vector = ", ".join(["0.5"] * (EMBEDDING_DIMENSION - 1) + [value])
    for path, body in (
        (f"/conversations/{cid}/messages", f'{{"role": "user", "content": "x", "embedding": [{vector}]}}'),
        ("/search/similar", f'{{"embedding": [{vector}]}}'),
    ):
        response = api.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (value, path, response.text)
    assert math.isfinite(float("3.4e38"))  # the largest float32 is still accepted below


# ---------------------------------------------------------------- small things


def test_the_page_under_static_has_the_same_content_security_policy_as_root(api: TestClient) -> None:
    root = api.get("/")
    static = api.get("/static/index.html")
    assert static.status_code == 200
    assert static.headers["content-security-policy"] == root.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in static.headers["content-security-policy"]


def test_docs_load_nothing_from_a_cdn(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css", "/static/docs/docs.js"):
        assert api.get(asset).status_code == 200, asset


def test_a_term_in_very_many_old_messages_is_ranked_from_the_first_matches_found_within_budget(
    store: Store, clean_db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Putting every older match in recency order costs a row read per match; past its budget
    the search ranks the first matches the index finds instead, and still answers."""
    monkeypatch.setattr(search_module, "SEARCH_WINDOW", 100)
    monkeypatch.setattr(search_module, "SEARCH_CANDIDATES", 50)
    monkeypatch.setattr(search_module, "SEARCH_ORDERED_BUDGET_MS", 1)
    store.create_conversation(conversation_id="old")
    _bulk_messages(clean_db, "old", [f"ancient topic {i}" for i in range(40_000)])
    store.append_messages("old", [NewMessage("user", f"recent chatter {i}") for i in range(200)])
    with psycopg.connect(clean_db.admin) as conn:
        conn.execute("ANALYZE messages")

    hits = store.search("ancient", limit=100)

    assert len(hits) == 50 and all(hit.snippet.count("<b>ancient</b>") == 1 for hit in hits)
    # The first found in storage order: the oldest (ordered, they would be seqs 39,951-40,000).
    assert max(hit.seq for hit in hits) <= 1000
