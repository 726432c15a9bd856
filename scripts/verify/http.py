"""The HTTP checks: liveness, health and schema version, the token's refusal, and a write, read
and delete round trip (skipped with --read-only)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from .checks import CheckFailed, Target

ONE_MIB = 1024 * 1024


class Http:
    def __init__(self, base: str, token: str | None, timeout: float = 15.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise CheckFailed(
                f"{method} {path}: cannot connect ({reason})",
                "is the service running, and is the URL right? A load balancer without a certificate admits only "
                "allowedCidrs (make deploy: the deploying machine's address); deploy again with ALLOWED_CIDRS=...",
            ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"raw": raw[:200].decode("utf-8", "replace")}


def http_checks(
    target: Target, *, read_only: bool, schema_version: int | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    http = Http(target.url, target.token)

    def live() -> str:
        status, _ = http.call("GET", "/health/live", auth=False)
        if status != 200:
            raise CheckFailed(f"HTTP {status}", "the process is not answering; read the service log group")
        return "200 alive"

    def health() -> str:
        # With the token the answer has the details (versions, schema); without it, only status.
        status, body = http.call("GET", "/health", auth=http.token is not None)
        body = body or {}
        if status != 200 or body.get("status") != "healthy":
            raise CheckFailed(
                f"HTTP {status}: {body.get('reason') or body}",
                "the service cannot use its database: check RDS status, security groups, the app secret",
            )
        if http.token is None:
            return "healthy (its versions and schema are shown with the token: pass --token)"
        if not body.get("pgvector_version"):
            raise CheckFailed("pgvector is not installed", "the schema custom resource creates it: check its log group")
        if schema_version is not None and body.get("schema_version") != schema_version:
            raise CheckFailed(
                f"schema version {body.get('schema_version')}, expected {schema_version}",
                "the schema custom resource did not apply every migration",
            )
        return (
            f"{body['database'].get('backend')} {body['database'].get('server_version')}, "
            f"pgvector {body['pgvector_version']}, schema {body['schema_version']}, "
            f"about {body.get('approximate_conversations') or 0} conversations"
        )

    def auth_required() -> str:
        status, _ = http.call("GET", "/conversations?limit=1", auth=False)
        if status != 401:
            raise CheckFailed(f"an unauthenticated request got HTTP {status}", "API_TOKEN is not enforced")
        status, body = http.call("GET", "/conversations?limit=1")
        if status != 200:
            raise CheckFailed(
                f"the API token was refused (HTTP {status}: {(body or {}).get('error')})",
                "pass --token, set API_TOKEN, or check the ApiTokenSecretArn secret",
            )
        return "401 without the token, 200 with it"

    yield "http: /health/live", live
    yield "http: /health", health
    yield "http: token required", auth_required
    if not read_only:
        yield "http: write round trip", lambda: round_trip(http)


def round_trip(http: Http) -> str:
    """Create, append (one of 1 MiB), read back byte for byte, list, search, delete, 404."""
    cid = f"verify-{secrets.token_hex(6)}"
    marker = f"verifymarker{secrets.token_hex(4)}"
    big = ("0123456789abcdef" * (ONE_MIB // 16))[:-2] + "é"  # 1 MiB of UTF-8, non-ASCII at the end
    sent = [("user", f"deployment check {marker}"), ("assistant", big)]
    created = False
    try:
        status, body = http.call("POST", "/conversations", {"conversation_id": cid, "title": "deployment check"})
        _expect(status, 201, "create", body)
        created = True
        for role, content in sent:
            status, body = http.call("POST", f"/conversations/{cid}/messages", {"role": role, "content": content})
            _expect(status, 201, f"append {role}", body)
        status, body = http.call("GET", f"/conversations/{cid}")
        _expect(status, 200, "read", body)
        got = [(m["role"], m["content"]) for m in body["messages"]]
        if got != sent:
            raise CheckFailed("messages read back differ from those written", "data is being altered or lost")
        status, body = http.call("GET", "/conversations?limit=100")
        _expect(status, 200, "list", body)
        if cid not in [c["conversation_id"] for c in body["items"]]:
            raise CheckFailed("the new conversation is not in the recent list")
        status, body = http.call("GET", f"/search?q={marker}")
        _expect(status, 200, "search", body)
        if cid not in [hit["conversation_id"] for hit in body["items"]]:
            raise CheckFailed("full-text search did not find the new message")
        status, body = http.call("DELETE", f"/conversations/{cid}")
        _expect(status, 204, "delete", body)
        created = False
        status, body = http.call("GET", f"/conversations/{cid}")
        _expect(status, 404, "read after delete", body)
        return "create, append (incl. 1 MiB), read back exact, list, search, delete, 404"
    finally:
        if created:
            http.call("DELETE", f"/conversations/{cid}")


def _expect(status: int, wanted: int, step: str, body: Any) -> None:
    if status != wanted:
        error = (body or {}).get("error") if isinstance(body, dict) else None
        hint = {
            401: "the API token was refused",
            503: "the database is unavailable",
            413: "the body limit is below 1 MiB",
        }.get(status, "read the service log group")
        raise CheckFailed(f"{step}: HTTP {status} ({error}), expected {wanted}", hint)
