"""The systems compared, each in its own database on the same PostgreSQL, and the data set.

- ``Ours``: this project's store (service/conversations/store.py), as the service uses it.
- ``LangChain``: langchain-postgres's PostgresChatMessageHistory, as shipped (pinned).
- ``JsonColumn``: the earlier stores' design: one row per conversation whose ``messages``
  JSON column is read, changed and rewritten on every save.
- ``Floor``: a durable single-row INSERT and a ``SELECT 1`` through the same driver.

All data is loaded with COPY from a fixed seed.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from conversations.migrate import ensure_app_role, migrate
from conversations.models import NewMessage
from conversations.store import Store

WORDS = (
    "postgres vector index query latency replica backup tenant token schema migration cluster "
    "service deploy rotate secret network subnet balancer target health alarm metric dashboard"
).split()
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- data


@dataclass
class Shape:
    """How many conversations of each length, plus the special ones."""

    lengths: dict[int, int]  # messages per conversation -> how many conversations
    heavy_user_conversations: int
    big_messages: dict[int, int]  # size in bytes -> how many
    embeddings: int
    dimension: int = 384

    @property
    def conversations(self) -> int:
        return sum(self.lengths.values())

    @property
    def messages(self) -> int:
        return sum(n * c for n, c in self.lengths.items())


FULL = Shape(
    lengths={5000: 4, 1000: 200, 100: 7000, 10: 2796},
    heavy_user_conversations=2000,
    big_messages={1_500_000: 5, 10_000_000: 2},
    embeddings=100_000,
)
QUICK = Shape(
    lengths={5000: 1, 1000: 10, 100: 100, 10: 2100},
    heavy_user_conversations=2000,
    big_messages={1_500_000: 1, 10_000_000: 1},
    embeddings=5_000,
)


@dataclass
class Conversation:
    conversation_id: str
    user_id: str | None
    title: str
    updated_at: datetime
    messages: list[tuple[str, str, datetime]] = field(default_factory=list)  # role, content, created_at


RARE_TERMS = 50_000
# The oldest conversations (the longest ones come first) also say "legacy": a common term that no
# recent message holds, the hard case for a search that ranks the most recent matches.
LEGACY_CONVERSATIONS = 204


def text(rng: random.Random, size: int) -> str:
    """Common words, plus one rare term (``k<n>``) per message, like names and ids in real chats."""
    words = [f"k{rng.randrange(RARE_TERMS)}"]
    length = len(words[0]) + 1
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def dataset(shape: Shape, seed: int = 20261122) -> Iterator[Conversation]:
    """Conversations, longest first; the shortest ones belong to the heavy user."""
    rng = random.Random(seed)
    big = [size for size, count in shape.big_messages.items() for _ in range(count)]
    index = 0
    heavy_left = shape.heavy_user_conversations
    for length, count in sorted(shape.lengths.items(), reverse=True):
        for _ in range(count):
            user = "heavy-user" if length == 10 and heavy_left > 0 else f"user-{index % 500}"
            if user == "heavy-user":
                heavy_left -= 1
            start = EPOCH + timedelta(minutes=index)
            conv = Conversation(
                str(uuid.UUID(int=rng.getrandbits(128))),
                user,
                f"Conversation {index}",
                start + timedelta(seconds=length),
            )
            for m in range(length):
                role = "user" if m % 2 == 0 else "assistant"
                size = rng.randint(150, 250) if role == "user" else rng.randint(1200, 1800)
                if role == "assistant" and big and length == 100 and m == 51:
                    size = big.pop()
                content = text(rng, size)
                if index < LEGACY_CONVERSATIONS:
                    content = content[: max(size - 7, 1)] + " legacy"
                conv.messages.append((role, content, start + timedelta(seconds=m)))
            index += 1
            yield conv


# ---------------------------------------------------------------- systems


class Ours:
    name = "ours"

    def __init__(self, admin: str, app: str, dimension: int) -> None:
        self.admin, self.app_conninfo, self.dimension = admin, app, dimension
        self.pool: ConnectionPool | None = None
        self.store: Store | None = None

    def setup(self, role: str, password: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            migrate(conn, embedding_dimension=self.dimension)
            ensure_app_role(conn, role, password)
            # A bulk load builds indexes once at the end, as a restore would.
            conn.execute("DROP INDEX IF EXISTS messages_embedding_hnsw_idx, messages_search_idx")

    def load(self, conversations: list[Conversation], embeddings: int, seed: int = 7) -> int:
        rng = random.Random(seed)
        loaded = 0
        with psycopg.connect(self.admin) as conn:
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY conversations (conversation_id, user_id, title, created_at, updated_at, message_count)"
                    " FROM STDIN"
                ) as copy,
            ):
                for c in conversations:
                    copy.write_row(
                        (
                            c.conversation_id,
                            c.user_id,
                            c.title,
                            c.messages[0][2] if c.messages else c.updated_at,
                            c.updated_at,
                            len(c.messages),
                        )
                    )
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY messages (conversation_id, seq, role, content, embedding, created_at) FROM STDIN"
                ) as copy,
            ):
                for c in conversations:
                    for seq, (role, content, created) in enumerate(c.messages, start=1):
                        vector = None
                        if loaded < embeddings:
                            vector = "[" + ",".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(self.dimension)) + "]"
                        copy.write_row((c.conversation_id, seq, role, content, vector, created))
                        loaded += 1
        return loaded

    def finish_load(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("CREATE INDEX messages_search_idx ON messages USING gin (search)")
            conn.execute(
                "CREATE INDEX messages_embedding_hnsw_idx ON messages USING hnsw (embedding vector_cosine_ops)"
            )
            conn.execute("VACUUM ANALYZE")

    def open(self, size: int = 8) -> None:
        self.pool = ConnectionPool(self.app_conninfo, min_size=size, max_size=size, open=True)
        self.store = Store(self.pool, embedding_dimension=self.dimension, timeout=30)

    def close(self) -> None:
        if self.pool:
            self.pool.close()

    # operations
    def append(self, cid: str, role: str, content: str) -> None:
        assert self.store
        self.store.append_messages(cid, [NewMessage(role, content)])

    def create(self, cid: str, content: str) -> None:
        assert self.store
        self.store.create_conversation(conversation_id=cid, messages=[NewMessage("user", content)])

    def last(self, cid: str, n: int) -> list[tuple[str, str]]:
        assert self.store
        return [(m.role, m.content) for m in self.store.get_conversation(cid, messages_limit=n).messages]

    def full(self, cid: str) -> list[tuple[str, str]]:
        """The whole transcript as a client reads it: the conversation's first page, then
        the messages route from its cursor (a page is bounded by rows and bytes)."""
        assert self.store
        conversation = self.store.get_conversation(cid)
        out = [(m.role, m.content) for m in conversation.messages]
        cursor = conversation.messages_after_cursor
        while cursor is not None:
            page = self.store.list_messages(cid, after=int(cursor), limit=1000)
            out += [(m.role, m.content) for m in page.items]
            cursor = page.next_cursor
        return out

    def delete(self, cid: str) -> None:
        assert self.store
        self.store.delete_conversation(cid)


class _OneConnection:
    """A peer that works on one plain psycopg connection, as its users would."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.conn: psycopg.Connection | None = None

    def open(self) -> None:
        self.conn = psycopg.connect(self.conninfo)

    def close(self) -> None:
        if self.conn:
            self.conn.close()


class LangChain(_OneConnection):
    name = "langchain-postgres"
    table = "chat_history"

    def setup(self) -> None:
        from langchain_postgres import PostgresChatMessageHistory

        with psycopg.connect(self.conninfo) as conn:
            PostgresChatMessageHistory.create_tables(conn, self.table)

    def load(self, conversations: list[Conversation]) -> None:
        with (
            psycopg.connect(self.conninfo) as conn,
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY {} (session_id, message, created_at) FROM STDIN").format(sql.Identifier(self.table))
            ) as copy,
        ):
            for c in conversations:
                for role, content, created in c.messages:
                    copy.write_row((c.conversation_id, json.dumps(_lc_message(role, content)), created))
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

    def history(self, cid: str) -> Any:
        from langchain_postgres import PostgresChatMessageHistory

        return PostgresChatMessageHistory(self.table, cid, sync_connection=self.conn)

    def append(self, cid: str, role: str, content: str) -> None:
        from langchain_core.messages import AIMessage, HumanMessage

        self.history(cid).add_messages([HumanMessage(content) if role == "user" else AIMessage(content)])

    def create(self, cid: str, content: str) -> None:
        self.append(cid, "user", content)

    def full(self, cid: str) -> list[tuple[str, str]]:
        return [("user" if m.type == "human" else "assistant", m.content) for m in self.history(cid).get_messages()]

    def last(self, cid: str, n: int) -> list[tuple[str, str]]:
        # The history API reads the whole conversation; callers slice it.
        return self.full(cid)[-n:]

    def delete(self, cid: str) -> None:
        self.history(cid).clear()


def _lc_message(role: str, content: str) -> dict[str, Any]:
    kind = "human" if role == "user" else "ai"
    return {
        "type": kind,
        "data": {
            "content": content,
            "additional_kwargs": {},
            "response_metadata": {},
            "type": kind,
            "name": None,
            "id": None,
        },
    }


class JsonColumn(_OneConnection):
    """The earlier stores: conversations(conversation_id, title, created_at, updated_at,
    messages JSON, settings JSON); every save reads, changes and rewrites ``messages``."""

    name = "json-column"

    def setup(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE conversations (conversation_id varchar(255) PRIMARY KEY, title varchar(500) NOT NULL,"
                " created_at timestamp NOT NULL, updated_at timestamp NOT NULL, messages json NOT NULL,"
                " settings json)"
            )
            conn.execute("CREATE INDEX idx_conversations_updated_at ON conversations (updated_at DESC)")

    def load(self, conversations: list[Conversation]) -> None:
        with (
            psycopg.connect(self.conninfo) as conn,
            conn.cursor() as cur,
            cur.copy(
                "COPY conversations (conversation_id, title, created_at, updated_at, messages) FROM STDIN"
            ) as copy,
        ):
            for c in conversations:
                body = [{"role": r, "content": t, "timestamp": d.isoformat()} for r, t, d in c.messages]
                copy.write_row((c.conversation_id, c.title, c.updated_at, c.updated_at, json.dumps(body)))
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

    def append(self, cid: str, role: str, content: str) -> None:
        assert self.conn
        with self.conn.transaction():
            row = self.conn.execute(
                "SELECT messages FROM conversations WHERE conversation_id = %s FOR UPDATE", (cid,)
            ).fetchone()
            assert row is not None, cid
            messages = row[0]
            messages.append({"role": role, "content": content, "timestamp": datetime.now(UTC).isoformat()})
            self.conn.execute(
                "UPDATE conversations SET messages = %s, updated_at = now() WHERE conversation_id = %s",
                (json.dumps(messages), cid),
            )

    def create(self, cid: str, content: str) -> None:
        assert self.conn
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO conversations (conversation_id, title, created_at, updated_at, messages)"
                " VALUES (%s, %s, now(), now(), %s)",
                (cid, content[:80], json.dumps([{"role": "user", "content": content}])),
            )

    def full(self, cid: str) -> list[tuple[str, str]]:
        assert self.conn
        with self.conn.transaction():
            row = self.conn.execute("SELECT messages FROM conversations WHERE conversation_id = %s", (cid,)).fetchone()
        assert row is not None, cid
        return [(m["role"], m["content"]) for m in row[0]]

    def last(self, cid: str, n: int) -> list[tuple[str, str]]:
        return self.full(cid)[-n:]

    def delete(self, cid: str) -> None:
        assert self.conn
        with self.conn.transaction():
            self.conn.execute("DELETE FROM conversations WHERE conversation_id = %s", (cid,))


class Floor:
    """What any durable write and any round trip costs through psycopg on this server."""

    name = "floor"

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.conn: psycopg.Connection | None = None

    def setup(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE floor (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text)")

    def open(self) -> None:
        self.conn = psycopg.connect(self.conninfo, autocommit=True)

    def close(self) -> None:
        if self.conn:
            self.conn.close()

    def insert(self, payload: str) -> None:
        assert self.conn
        self.conn.execute("INSERT INTO floor (payload) VALUES (%s)", (payload,))

    def select1(self) -> None:
        assert self.conn
        self.conn.execute("SELECT 1").fetchone()
