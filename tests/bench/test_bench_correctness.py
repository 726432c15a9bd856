"""The benchmark's own correctness check, in `make test` (no timings): every system, loaded
with COPY from the same seed, returns the same transcript for sampled conversations, and the
operations the benchmark times do what they claim."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest

from bench.systems import Conversation, Floor, JsonColumn, LangChain, Ours, Shape, dataset
from devtools.postgres import PostgresServer, scalar

Systems = tuple[list[Conversation], Ours, LangChain, JsonColumn, Floor]
TINY = Shape(
    lengths={100: 3, 10: 20}, heavy_user_conversations=10, big_messages={1_500_000: 1}, embeddings=50, dimension=16
)


@pytest.fixture(scope="module")
def systems(pg: PostgresServer) -> Iterator[Systems]:
    names = {n: pg.create_database(f"bench_{n}") for n in ("ours", "langchain", "jsoncol", "floor")}
    role, password = f"bench_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    ours = Ours(pg.conninfo(names["ours"]), pg.conninfo(names["ours"], role, password), TINY.dimension)
    ours.setup(role, password)
    langchain, jsoncol, floor = (
        LangChain(pg.conninfo(names["langchain"])),
        JsonColumn(pg.conninfo(names["jsoncol"])),
        Floor(pg.conninfo(names["floor"])),
    )
    for other in (langchain, jsoncol, floor):
        other.setup()
    data = list(dataset(TINY))
    assert ours.load(data, TINY.embeddings) == TINY.messages
    langchain.load(data)
    jsoncol.load(data)
    ours.finish_load()
    for each in (ours, langchain, jsoncol, floor):
        each.open()
    yield data, ours, langchain, jsoncol, floor
    for system in (ours, langchain, jsoncol, floor):
        system.close()
    for name in names.values():
        pg.drop_database(name)
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_every_system_returns_the_same_transcript(systems: Systems) -> None:
    data, ours, langchain, jsoncol, _ = systems
    for conversation in (data[0], data[1], data[-1]):  # the long ones (one holds a 1.5 MB message) and a short one
        expected = [(role, text) for role, text, _ in conversation.messages]
        for system in (ours, langchain, jsoncol):
            assert system.full(conversation.conversation_id) == expected, system.name
            assert system.last(conversation.conversation_id, 5) == expected[-5:], system.name


def test_timed_operations_do_what_they_claim(systems: Systems) -> None:
    from conversations.store import NotFound

    data, ours, langchain, jsoncol, floor = systems
    cid, victim = data[5].conversation_id, data[6].conversation_id
    for system in (ours, langchain, jsoncol):
        before = system.full(cid)
        system.append(cid, "user", f"appended by {system.name}")
        assert system.full(cid) == [*before, ("user", f"appended by {system.name}")], system.name
        new_id = str(uuid.uuid4())
        system.create(new_id, "first words")
        assert system.full(new_id) == [("user", "first words")], system.name
        system.delete(victim)
    with pytest.raises(NotFound):
        ours.full(victim)
    assert langchain.full(victim) == []
    assert jsoncol.conn is not None and floor.conn is not None
    assert scalar(jsoncol.conn.execute("SELECT count(*) FROM conversations WHERE conversation_id = %s", (victim,))) == 0
    floor.insert("x")
    floor.select1()
    assert scalar(floor.conn.execute("SELECT count(*) FROM floor")) == 1
