"""Every route's success and error paths, through the HTTP API as the app role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.service import EMBEDDING_DIMENSION, MigratedDatabase


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/conversations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def append(client: TestClient, cid: str, role: str = "user", content: str = "hello", **extra: Any) -> dict[str, Any]:
    response = client.post(f"/conversations/{cid}/messages", json={"role": role, "content": content, **extra})
    assert response.status_code == 201, response.text
    appended: dict[str, Any] = response.json()
    return appended


# ------------------------------------------------------------------ health


def test_live_answers_without_auth(anon_client: TestClient) -> None:
    response = anon_client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_health_tells_anyone_the_status_and_the_token_holder_the_details(
    anon_client: TestClient, client: TestClient
) -> None:
    create(client, title="one")
    assert anon_client.get("/health").json() == {"status": "healthy"}
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["database"]["backend"] == "postgresql"
    assert body["database"]["server_version"].split(".")[0].isdigit()
    assert body["pgvector_version"]
    assert body["schema_version"] == body["expected_schema_version"] >= 3
    # The planner's estimate, not a count: null until the table was first analysed.
    assert body["approximate_conversations"] is None or body["approximate_conversations"] >= 0


# ------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/conversations"),
        ("post", "/conversations"),
        ("get", "/conversations/x"),
        ("patch", "/conversations/x"),
        ("delete", "/conversations/x"),
        ("post", "/conversations/x/messages"),
        ("get", "/conversations/x/messages"),
        ("get", "/search?q=a"),
        ("post", "/search/similar"),
    ],
)
def test_every_data_route_needs_the_token(anon_client: TestClient, method: str, path: str) -> None:
    response = getattr(anon_client, method)(path)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic abc", "Bearer", "test-token-" + "x" * 20])
def test_wrong_token_or_scheme_is_401(anon_client: TestClient, header: Any) -> None:
    response = anon_client.get("/conversations", headers={"Authorization": header})
    assert response.status_code == 401


# ------------------------------------------------------------------ create / read


def test_create_with_generated_id_and_initial_messages(client: TestClient) -> None:
    body = create(
        client,
        settings={"model": "m"},
        metadata={"k": 1},
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is RDS?"}],
    )
    assert len(body["conversation_id"]) == 36
    assert body["title"] == "What is RDS?"
    assert body["message_count"] == 2
    assert [m["seq"] for m in body["messages"]] == [1, 2]
    assert body["settings"] == {"model": "m"} and body["metadata"] == {"k": 1}


def test_create_with_caller_id_and_conflict(client: TestClient) -> None:
    create(client, conversation_id="conv-1", title="t")
    response = client.post("/conversations", json={"conversation_id": "conv-1"})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


def test_get_returns_messages_in_order_and_the_last_n(client: TestClient) -> None:
    cid = create(client)["conversation_id"]
    for i in range(5):
        append(client, cid, content=f"m{i}")
    full = client.get(f"/conversations/{cid}").json()
    assert [m["content"] for m in full["messages"]] == [f"m{i}" for i in range(5)]
    last = client.get(f"/conversations/{cid}", params={"messages_limit": 2}).json()
    assert [m["content"] for m in last["messages"]] == ["m3", "m4"]
    assert last["message_count"] == 5


def test_missing_conversation_is_404_on_every_route(client: TestClient) -> None:
    for response in (
        client.get("/conversations/nope"),
        client.patch("/conversations/nope", json={"title": "x"}),
        client.delete("/conversations/nope"),
        client.post("/conversations/nope/messages", json={"role": "user", "content": "x"}),
        client.get("/conversations/nope/messages"),
    ):
        assert response.status_code == 404, response.request.method
        assert response.json()["error"] == "not_found"


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# ------------------------------------------------------------------ list


def test_list_is_recent_first_with_a_working_cursor(client: TestClient) -> None:
    ids = [create(client, conversation_id=f"c{i}", title=f"t{i}")["conversation_id"] for i in range(5)]
    append(client, "c1", content="bump")  # c1 becomes the most recent
    first = client.get("/conversations", params={"limit": 2}).json()
    assert [c["conversation_id"] for c in first["items"]] == ["c1", "c4"]
    assert set(first["items"][0]) == {
        "conversation_id",
        "user_id",
        "title",
        "created_at",
        "updated_at",
        "message_count",
    }
    second = client.get("/conversations", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get("/conversations", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    seen = [c["conversation_id"] for page in (first, second, third) for c in page["items"]]
    assert seen == ["c1", "c4", "c3", "c2", "c0"]
    assert sorted(seen) == sorted(ids)
    assert third["next_cursor"] is None


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}])
def test_list_limit_is_validated(client: TestClient, params: dict[str, Any]) -> None:
    response = client.get("/conversations", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WyJub3QtYS1kYXRlIiwiYyJd", "%%%"])
def test_bad_cursor_is_400(client: TestClient, cursor: str) -> None:
    response = client.get("/conversations", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


# ------------------------------------------------------------------ update / delete


def test_patch_replaces_given_fields_only(client: TestClient) -> None:
    cid = create(client, title="old", settings={"a": 1}, metadata={"m": 1})["conversation_id"]
    body = client.patch(f"/conversations/{cid}", json={"title": "new", "metadata": {"m": 2}}).json()
    assert body["title"] == "new" and body["settings"] == {"a": 1} and body["metadata"] == {"m": 2}
    assert client.get(f"/conversations/{cid}").json()["title"] == "new"


def test_delete_removes_conversation_and_messages(client: TestClient) -> None:
    cid = create(client, messages=[{"role": "user", "content": "bye"}])["conversation_id"]
    assert client.delete(f"/conversations/{cid}").status_code == 204
    assert client.get(f"/conversations/{cid}").status_code == 404
    assert client.get("/search", params={"q": "bye"}).json()["items"] == []


# ------------------------------------------------------------------ messages


def test_append_sets_title_from_first_user_message_only(client: TestClient) -> None:
    cid = create(client)["conversation_id"]
    append(client, cid, role="system", content="You are helpful.")
    assert client.get(f"/conversations/{cid}").json()["title"] is None
    append(
        client,
        cid,
        content="\n  How do I   rotate secrets in Secrets Manager without downtime? " + "x" * 100 + "\nmore",
    )
    append(client, cid, content="second question")
    title = client.get(f"/conversations/{cid}").json()["title"]
    # Its first non-blank line, spaces collapsed, cut to 80 characters.
    assert title.startswith("How do I rotate secrets in Secrets Manager") and title.endswith("…")
    assert len(title) == 80 and "more" not in title


def test_a_title_is_the_first_line_of_the_first_user_message_not_all_its_lines(client: TestClient) -> None:
    cid = create(client, messages=[{"role": "user", "content": "Deploy question\nStack trace:\n  at foo()"}])[
        "conversation_id"
    ]
    assert client.get(f"/conversations/{cid}").json()["title"] == "Deploy question"


def test_append_returns_the_stored_message(client: TestClient) -> None:
    cid = create(client, title="t")["conversation_id"]
    message = append(client, cid, role="assistant", content="answer", metadata={"citations": [{"doc": "a.pdf"}]})
    assert message["seq"] == 1 and message["role"] == "assistant" and message["has_embedding"] is False
    assert message["metadata"] == {"citations": [{"doc": "a.pdf"}]}


def test_message_pages_oldest_first(client: TestClient) -> None:
    cid = create(client)["conversation_id"]
    for i in range(7):
        append(client, cid, content=f"m{i}")
    seen, after = [], 0
    while True:
        page = client.get(f"/conversations/{cid}/messages", params={"after": after, "limit": 3}).json()
        seen += [m["content"] for m in page["items"]]
        if page["next_cursor"] is None:
            break
        after = page["next_cursor"]
    assert seen == [f"m{i}" for i in range(7)]


def test_bad_message_cursor_is_rejected(client: TestClient) -> None:
    cid = create(client)["conversation_id"]
    assert client.get(f"/conversations/{cid}/messages", params={"after": "abc"}).status_code == 422
    assert client.get(f"/conversations/{cid}/messages", params={"after": -1}).status_code == 422


def test_ten_megabyte_message_round_trips_byte_for_byte(client: TestClient) -> None:
    content = ("0123456789abcdef" * 65536) * 10  # 10 MiB
    content = content[:-4] + "é€😀"
    cid = create(client, title="big")["conversation_id"]
    append(client, cid, role="assistant", content=content)
    got = client.get(f"/conversations/{cid}").json()["messages"][0]["content"]
    assert got.encode("utf-8") == content.encode("utf-8")


def test_unicode_everywhere(client: TestClient) -> None:
    cid = create(client, conversation_id="会話-😀-ß", title="Привет 👋", metadata={"ключ": "значение"})[
        "conversation_id"
    ]
    append(client, cid, content="مرحبا بالعالم — ½ — \u200d — 🇫🇷")
    body = client.get(f"/conversations/{cid}").json()
    assert body["title"] == "Привет 👋"
    assert body["metadata"] == {"ключ": "значение"}
    assert body["messages"][0]["content"] == "مرحبا بالعالم — ½ — \u200d — 🇫🇷"


# ------------------------------------------------------------------ invalid input


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"role": "wizard", "content": "x"}, 422, "validation_error"),
        ({"role": "user"}, 422, "validation_error"),
        ({"role": "user", "content": 5}, 422, "validation_error"),
        ({"role": "user", "content": "nul\x00inside"}, 422, "validation_error"),
        ({"role": "user", "content": "x", "metadata": {"k": "nul\x00"}}, 422, "validation_error"),
        ({"role": "user", "content": "x", "metadata": [1]}, 422, "validation_error"),
        ({"role": "user", "content": "x", "unexpected": 1}, 422, "validation_error"),
        ({"role": "user", "content": "x", "embedding": [1.0]}, 422, "validation_error"),
    ],
)
def test_invalid_message_bodies(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    cid = create(client)["conversation_id"]
    response = client.post(f"/conversations/{cid}/messages", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert "nul\x00" not in response.text  # inputs are never echoed back


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/conversations", content=b'{"title": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


def test_invalid_utf8_is_400(client: TestClient) -> None:
    response = client.post(
        "/conversations", content=b'{"title": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("cid", ["a/b", " padded", "x" * 256, "tab\there"])
def test_invalid_conversation_ids_are_422(client: TestClient, cid: Any) -> None:
    response = client.post("/conversations", json={"conversation_id": cid})
    assert response.status_code == 422


def test_deeply_nested_metadata_is_422(client: TestClient) -> None:
    nested: dict[str, Any] = {}
    node = nested
    for _ in range(50):
        node["n"] = {}
        node = node["n"]
    response = client.post("/conversations", json={"metadata": nested})
    assert response.status_code == 422


def test_body_over_the_limit_is_413(clean_db: MigratedDatabase) -> None:
    from fastapi.testclient import TestClient

    from conversations.api import create_app
    from tests.support.service import TOKEN, make_settings

    app = create_app(make_settings(clean_db.app, max_body_bytes=4096))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as small:
        response = small.post("/conversations", json={"title": "x" * 5000})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"

        # A chunked body with no Content-Length is counted as it arrives.
        def chunks() -> Iterator[bytes]:
            yield b'{"title": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        response = small.post("/conversations", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert small.post("/conversations", json={"title": "fits"}).status_code == 201


# ------------------------------------------------------------------ search


def test_full_text_search_finds_messages_and_links_conversations(client: TestClient) -> None:
    a = create(client, title="a", messages=[{"role": "user", "content": "How do I tune autovacuum on RDS?"}])
    create(client, title="b", messages=[{"role": "user", "content": "Unrelated question about lunch"}])
    items = client.get("/search", params={"q": "autovacuum"}).json()["items"]
    assert [i["conversation_id"] for i in items] == [a["conversation_id"]]
    assert "autovacuum" in items[0]["snippet"]
    assert items[0]["seq"] == 1


def test_search_in_a_message_over_one_megabyte(client: TestClient) -> None:
    big = "needle " + ("lorem ipsum dolor " * 120_000)  # ~2 MB
    cid = create(client, title="big")["conversation_id"]
    append(client, cid, role="assistant", content=big)
    items = client.get("/search", params={"q": "needle"}).json()["items"]
    assert [i["conversation_id"] for i in items] == [cid]


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "x" * 1001}, {"q": "a", "limit": 0}])
def test_search_input_is_validated(client: TestClient, params: Any) -> None:
    assert client.get("/search", params=params).status_code == 422


def test_similarity_search_orders_by_cosine_distance(client: TestClient) -> None:
    def vec(*head: float) -> list[float]:
        return list(head) + [0.0] * (EMBEDDING_DIMENSION - len(head))

    cid = create(client, title="v")["conversation_id"]
    append(client, cid, content="x-axis", embedding=vec(1.0, 0.0))
    append(client, cid, content="y-axis", embedding=vec(0.0, 1.0))
    append(client, cid, content="diagonal", embedding=vec(1.0, 1.0))
    append(client, cid, content="no embedding")
    items = client.post("/search/similar", json={"embedding": vec(1.0, 0.1), "limit": 3}).json()["items"]
    assert [i["content"] for i in items] == ["x-axis", "diagonal", "y-axis"]
    assert items[0]["distance"] < items[1]["distance"] < items[2]["distance"]
    wrong = client.post("/search/similar", json={"embedding": [1.0, 2.0]})
    assert wrong.status_code == 422
    assert "dimensions" in wrong.json()["message"]


# ------------------------------------------------------------------ user scoping


def test_users_see_only_their_own_conversations(client: TestClient) -> None:
    alice = {"X-User-Id": "alice"}
    bob = {"X-User-Id": "bob"}
    mine = client.post(
        "/conversations",
        json={"title": "alice's", "messages": [{"role": "user", "content": "secret plan zebra"}]},
        headers=alice,
    ).json()
    client.post("/conversations", json={"title": "bob's"}, headers=bob)
    cid = mine["conversation_id"]
    assert mine["user_id"] == "alice"
    assert [c["title"] for c in client.get("/conversations", headers=alice).json()["items"]] == ["alice's"]
    assert [c["title"] for c in client.get("/conversations", headers=bob).json()["items"]] == ["bob's"]
    for response in (
        client.get(f"/conversations/{cid}", headers=bob),
        client.patch(f"/conversations/{cid}", json={"title": "pwned"}, headers=bob),
        client.post(f"/conversations/{cid}/messages", json={"role": "user", "content": "x"}, headers=bob),
        client.get(f"/conversations/{cid}/messages", headers=bob),
        client.delete(f"/conversations/{cid}", headers=bob),
    ):
        assert response.status_code == 404
    assert client.get("/search", params={"q": "zebra"}, headers=bob).json()["items"] == []
    assert len(client.get("/search", params={"q": "zebra"}, headers=alice).json()["items"]) == 1
    # Without the header the caller is the operator: it sees everything.
    assert len(client.get("/conversations").json()["items"]) == 2
    assert client.get(f"/conversations/{cid}", headers=alice).json()["title"] == "alice's"


# ------------------------------------------------------------------ database unavailable


def test_database_unavailable_is_503_with_retry_after(clean_db: MigratedDatabase) -> None:
    from fastapi.testclient import TestClient

    from conversations.api import create_app
    from tests.support.service import TOKEN, make_settings

    # A pool with no connection up front, pointed at a port nothing listens on.
    dead = " ".join(p if not p.startswith("port=") else "port=9" for p in clean_db.app.split())
    app = create_app(make_settings(dead, pool_min_size=0, pool_timeout=1.0))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as down:
        response = down.post("/conversations", json={"title": "lost?"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"] == "database_unavailable"
        health = down.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert down.get("/health/live").status_code == 200


# ------------------------------------------------------------------ docs and logs


def test_openapi_and_docs_are_served(anon_client: TestClient) -> None:
    spec = anon_client.get("/openapi.json").json()
    assert "/conversations/{conversation_id}/messages" in spec["paths"]
    assert anon_client.get("/docs").status_code == 200


def test_openapi_documents_what_the_token_middleware_reads_on_every_guarded_path(anon_client: TestClient) -> None:
    """The token and X-User-Id are read by TokenMiddleware, not by route parameters: the
    document still shows both, on exactly the paths the middleware guards."""
    spec = anon_client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "API_TOKEN; checked before the body is read",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            if path.startswith("/health"):
                assert "security" not in operation and "X-User-Id" not in headers, (method, path)
            else:
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert "X-User-Id" in headers, (method, path)
    posts = [
        spec["paths"]["/conversations"]["post"],
        spec["paths"]["/conversations/{conversation_id}/messages"]["post"],
    ]
    for operation in posts:
        (key,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)


def test_a_bad_x_user_id_or_idempotency_key_is_a_400(client: TestClient) -> None:
    for bad in ("", "a\x07b", "x" * 256):
        response = client.get("/conversations", headers={"X-User-Id": bad})
        assert response.status_code == 400, bad
        assert response.json() == {"error": "bad_request", "message": "X-User-Id must be 1-255 printable characters"}
        refused = client.post("/conversations", json={}, headers={"Idempotency-Key": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["message"] == "Idempotency-Key must be 1-255 printable characters"


def test_logs_are_json_lines_without_content_or_token(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from conversations import logs

    logs.configure("INFO")
    try:
        cid = create(client, title="t")["conversation_id"]
        append(client, cid, content="TOP-SECRET-CONTENT")
        client.get("/search", params={"q": "TOP-SECRET-CONTENT"})
        out = capsys.readouterr().out
    finally:
        logging.getLogger().handlers[:] = []
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    requests = [line for line in lines if line["message"] == "request"]
    assert len(requests) >= 3 and all(r["request_id"] for r in requests)
    assert "TOP-SECRET-CONTENT" not in out
    assert "test-token" not in out


def test_request_id_is_returned(client: TestClient) -> None:
    response = client.get("/conversations", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


def test_messages_page_backwards_from_the_newest(client: TestClient) -> None:
    cid = create(client)["conversation_id"]
    for i in range(7):
        append(client, cid, content=f"m{i}")
    page = client.get(f"/conversations/{cid}/messages", params={"before": 8, "limit": 3}).json()
    assert [m["content"] for m in page["items"]] == ["m4", "m5", "m6"] and page["next_cursor"] == "5"
    page = client.get(f"/conversations/{cid}/messages", params={"before": 5, "limit": 3}).json()
    assert [m["content"] for m in page["items"]] == ["m1", "m2", "m3"] and page["next_cursor"] == "2"
    page = client.get(f"/conversations/{cid}/messages", params={"before": 2, "limit": 3}).json()
    assert [m["content"] for m in page["items"]] == ["m0"] and page["next_cursor"] is None
    both = client.get(f"/conversations/{cid}/messages", params={"before": 2, "after": 1})
    assert both.status_code == 400


def test_web_page_and_assets_are_served_with_a_strict_policy(anon_client: TestClient) -> None:
    page = anon_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    for asset in ("/static/app.js", "/static/app.css"):
        assert anon_client.get(asset).status_code == 200
    assert "innerHTML" not in anon_client.get("/static/app.js").text
