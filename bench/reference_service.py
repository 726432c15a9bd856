#!/usr/bin/env python3
"""A minimal reference service for the HTTP benchmark (bench/http_wrk.py): the three routes of
the benchmark's mix on the service's own schema, written the straightforward way (Starlette,
psycopg's async pool, orjson), with none of the service's guarantees (no request log, no
admission, no outage handling, no bounded pages, no scoping, no idempotency). What ours costs
per request over this is the price of those guarantees plus whatever overhead ours still has.

    DATABASE_URL=... API_TOKEN=... PORT=... python bench/reference_service.py
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOKEN = os.environ["API_TOKEN"]
POOL = AsyncConnectionPool(
    os.environ["DATABASE_URL"], min_size=10, max_size=10, kwargs={"autocommit": True}, open=False
)
MESSAGE = "id, conversation_id, seq, role, content, metadata, created_at"
SUMMARY = "conversation_id, user_id, title, created_at, updated_at, message_count"


def answer(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def authorized(request: Request) -> bool:
    return hmac.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {TOKEN}".encode())


async def get_conversation(request: Request) -> Response:
    if not authorized(request):
        return answer({"error": "unauthorized"}, 401)
    cid = request.path_params["cid"]
    limit = int(request.query_params.get("messages_limit", "100"))
    async with POOL.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {SUMMARY}, settings, metadata FROM conversations WHERE conversation_id = %s", (cid,))
        head = await cur.fetchone()
        if head is None:
            return answer({"error": "not_found"}, 404)
        await cur.execute(
            f"SELECT {MESSAGE} FROM messages WHERE conversation_id = %s ORDER BY seq DESC LIMIT %s", (cid, limit)
        )
        messages = await cur.fetchall()
    messages.reverse()
    return answer({**head, "messages": messages})


async def append_message(request: Request) -> Response:
    if not authorized(request):
        return answer({"error": "unauthorized"}, 401)
    cid = request.path_params["cid"]
    body = orjson.loads(await request.body())
    role, content = body.get("role"), body.get("content")
    if role not in ("user", "assistant", "system", "tool") or not isinstance(content, str):
        return answer({"error": "validation_error"}, 422)
    async with POOL.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE conversations SET message_count = message_count + 1, updated_at = now()"
            " WHERE conversation_id = %s RETURNING message_count",
            (cid,),
        )
        row = await cur.fetchone()
        if row is None:
            return answer({"error": "not_found"}, 404)
        await cur.execute(
            "INSERT INTO messages (conversation_id, seq, role, content, metadata) VALUES (%s, %s, %s, %s, %s)"
            f" RETURNING {MESSAGE}",
            (cid, row["message_count"], role, content, Jsonb(body.get("metadata") or {})),
        )
        message = await cur.fetchone()
    return answer(message, 201)


async def list_conversations(request: Request) -> Response:
    if not authorized(request):
        return answer({"error": "unauthorized"}, 401)
    limit = int(request.query_params.get("limit", "20"))
    async with POOL.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {SUMMARY} FROM conversations ORDER BY updated_at DESC, conversation_id DESC LIMIT %s", (limit,)
        )
        items = await cur.fetchall()
    return answer({"items": items, "next_cursor": None})


async def live(request: Request) -> Response:
    return answer({"status": "alive"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await POOL.open(wait=True)
    try:
        yield
    finally:
        await POOL.close()


app = Starlette(
    routes=[
        Route("/health/live", live),
        Route("/conversations", list_conversations),
        Route("/conversations/{cid}", get_conversation),
        Route("/conversations/{cid}/messages", append_message, methods=["POST"]),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_config=None, access_log=False)
