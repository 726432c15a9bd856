"""The store directly: concurrency, pagination under writes, and the search index."""

from __future__ import annotations

import threading

import psycopg

from conversations.models import ConversationCursor, NewMessage
from conversations.store import Store
from tests.support.service import MigratedDatabase


def test_concurrent_appends_get_distinct_gapless_sequence_numbers(store: Store) -> None:
    store.create_conversation(conversation_id="busy")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                store.append_messages("busy", [NewMessage("user", f"w{n}-{i}")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    conversation = store.get_conversation("busy")
    assert conversation.message_count == 150
    assert [m.seq for m in conversation.messages] == list(range(1, 151))
    # Each writer's own messages keep their order.
    for n in range(6):
        mine = [m.content for m in conversation.messages if m.content.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}" for i in range(25)]


def test_pagination_under_concurrent_inserts_sees_every_existing_conversation_once(store: Store) -> None:
    existing = {f"old-{i:03d}" for i in range(60)}
    for cid in sorted(existing):
        store.create_conversation(conversation_id=cid)
    stop = threading.Event()
    created: list[str] = []

    def inserter() -> None:
        i = 0
        while not stop.is_set():
            store.create_conversation(conversation_id=f"new-{i:04d}")
            created.append(f"new-{i:04d}")
            i += 1

    thread = threading.Thread(target=inserter)
    thread.start()
    try:
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_conversations(limit=7, cursor=cursor)
            seen += [c.conversation_id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = ConversationCursor.decode(page.next_cursor)
    finally:
        stop.set()
        thread.join(30)
    assert created, "the inserter never ran concurrently"
    assert len(seen) == len(set(seen)), "a conversation appeared twice"
    assert existing <= set(seen), "a conversation that existed before paging began was skipped"


def test_user_listing_uses_the_per_user_index(store: Store, clean_db: MigratedDatabase) -> None:
    for i in range(3):
        store.create_conversation(conversation_id=f"u{i}", user_id="carol")
    with psycopg.connect(clean_db.admin, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT conversation_id FROM conversations c WHERE c.user_id = 'carol'"
                " ORDER BY c.updated_at DESC, c.conversation_id DESC LIMIT 20"
            )
        )
    assert "conversations_user_recent_idx" in plan


def test_search_query_uses_the_full_text_index(clean_db: MigratedDatabase) -> None:
    with psycopg.connect(clean_db.admin, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT m.id FROM messages m WHERE m.search @@ websearch_to_tsquery('simple', 'x')"
            )
        )
    assert "messages_search_idx" in plan


def test_store_keeps_explicit_timestamps_for_imports(store: Store) -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    store.create_conversation(conversation_id="old", messages=[NewMessage("user", "hi", created_at=when)])
    assert store.get_conversation("old").messages[0].created_at == when


def test_similarity_search_in_a_small_scope_returns_every_hit_that_exists(
    store: Store, clean_db: MigratedDatabase
) -> None:
    """An approximate index over every embedding, filtered afterwards, returns fewer hits than the
    scope holds when the scope's embeddings are far from the query; pgvector 0.8's iterative index
    scans keep scanning until the limit is met."""
    # Given 10,000 embedded messages of other users, near the query, and a user with 300
    # conversations whose 6 embedded messages point away from it
    with psycopg.connect(clean_db.admin, autocommit=True) as admin:
        # The seeding is set-up, not what is tested: the database's 15 s statement timeout (which
        # the HNSW index's upkeep once passed on a busy machine) does not apply to it.
        admin.execute("SET statement_timeout = 0")
        admin.execute(
            "INSERT INTO conversations (conversation_id, user_id) SELECT 'other-' || g, 'other-' || (g % 50)"
            " FROM generate_series(1, 250) g"
        )
        admin.execute(
            "INSERT INTO messages (conversation_id, seq, role, content, embedding)"
            " SELECT 'other-' || (1 + (g - 1) / 40), 1 + (g - 1) % 40, 'user', 'x',"
            "   (SELECT array_agg(random())::vector FROM generate_series(1, 8) WHERE g > 0)"
            " FROM generate_series(1, 10000) g"
        )
        admin.execute(
            "INSERT INTO conversations (conversation_id, user_id)"
            " SELECT 'mine-' || g, 'me' FROM generate_series(1, 300) g"
        )
        admin.execute(
            "INSERT INTO messages (conversation_id, seq, role, content, embedding)"
            " SELECT 'mine-' || (1 + g % 300), g, 'user', 'y', CASE WHEN g <= 6 THEN '[1,0,0,0,0,0,0,0]'::vector END"
            " FROM generate_series(1, 9000) g"
        )
        admin.execute("ANALYZE conversations")
        admin.execute("ANALYZE messages")
    query = [0.0] + [1.0] * 7
    # When the user searches their own messages, repeatedly (psycopg prepares a statement from
    # its sixth run, and PostgreSQL may then switch to a generic plan: every plan must hold up)
    for _ in range(12):
        by_user = store.similar(query, user_id="me", limit=6)
        by_conversation = store.similar(query, conversation_id="mine-2", limit=5)
        # Then every embedded message in the scope comes back, nearest first
        assert len(by_user) == 6 and all(h.conversation_id.startswith("mine-") for h in by_user)
        assert [h.conversation_id for h in by_conversation] == ["mine-2"]
        distances = [h.distance for h in by_user]
        assert distances == sorted(distances)
