"""Reading by meaning: full-text search with bounded work whatever the term, and similarity
over the embeddings (pgvector's HNSW with iterative scans for a scoped result)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import class_row

from ..models import SearchHit, SimilarHit
from .errors import InvalidSearch, SearchTimeout
from .messages import Messages
from .statements import OWNED, vector_literal

# A similarity hit carries the first this many characters of its message.
SIMILAR_CONTENT_CHARS = 20_000
# How many of the most recent matching messages a search ranks.
SEARCH_CANDIDATES = 500
# How many of the newest messages a search walks before it turns to the index.
SEARCH_WINDOW = 20_000
# How long the older matches may take to be put in recency order before the search ranks the
# first ones the index finds instead.
SEARCH_ORDERED_BUDGET_MS = 50
# A caller with at most this many messages has its own messages searched directly.
SCOPE_FIRST_MESSAGES = 100_000
# Snippets are cut from the first this many characters of a hit.
SNIPPET_SOURCE_CHARS = 100_000
# ts_headline marks matches with these (private-use characters, removed from the text first);
# the snippet is then HTML-escaped and they become <b> and </b>: safe to render as HTML, and the
# content's own "<b>" is text, never a mark.
_START, _STOP = "\ue000", "\ue001"


def safe_snippet(marked: str) -> str:
    """A snippet from ts_headline with _START/_STOP marks, as escaped HTML with <b> marks."""
    return html.escape(marked, quote=True).replace(_START, "<b>").replace(_STOP, "</b>")


# How many index tuples an iterative similarity scan may visit to fill a scoped result
# (pgvector's default is 20,000): the bound on a similarity search's work.
SIMILAR_MAX_SCAN_TUPLES = 100_000


class Search(Messages):
    def search(self, query: str, *, user_id: str | None = None, limit: int = 20) -> list[SearchHit]:
        """Full-text search: the best-ranked matches among the most recent
        ``SEARCH_CANDIDATES`` matching messages the caller can see.

        The work is bounded whatever the term: a term in nearly every message is found among
        the newest ``SEARCH_WINDOW`` messages (a walk of the primary key that stops there);
        a rarer one is looked up in the GIN index for the older messages; a caller with a
        user id and at most ``SCOPE_FIRST_MESSAGES`` messages has just those read. Ranking
        reads the stored tsvector; only the returned hits are parsed again, for their
        snippets. The search runs under its own statement timeout: past it, SearchTimeout."""

        def read(conn: psycopg.Connection) -> list[SearchHit]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(self.search_timeout_ms),))
                parsed = conn.execute(
                    "SELECT numnode(q), querytree(q) FROM websearch_to_tsquery('simple'::regconfig, %s) AS q",
                    (query,),
                ).fetchone()
                assert parsed is not None
                if parsed[0] == 0:  # nothing searchable: only punctuation, say
                    return []
                if parsed[1] == "T":  # no term that must be present: '-word' alone
                    raise InvalidSearch(
                        "a search needs at least one word to find; '-word' alone would match almost everything"
                    )
                ids = self._search_candidates(conn, query, user_id)
                if not ids:
                    return []
                with conn.cursor(row_factory=class_row(SearchHit)) as cur:
                    hits = cur.execute(
                        "WITH q AS (SELECT websearch_to_tsquery('simple'::regconfig, %(q)s) AS q),"
                        " ranked AS ("
                        "  SELECT m.id, ts_rank(m.search, q.q)::float8 AS rank FROM q, messages m"
                        "  WHERE m.id = ANY(%(ids)s) ORDER BY rank DESC, m.id DESC LIMIT %(limit)s)"
                        " SELECT m.conversation_id, c.title, m.id AS message_id, m.seq, m.role, m.created_at,"
                        "  ts_headline('simple'::regconfig,"
                        f"   translate(left(m.content, {SNIPPET_SOURCE_CHARS}), %(marks)s, ''), q.q,"
                        "   %(options)s) AS snippet, ranked.rank"
                        " FROM q, ranked JOIN messages m ON m.id = ranked.id"
                        " JOIN conversations c ON c.conversation_id = m.conversation_id"
                        " ORDER BY ranked.rank DESC, m.id DESC",
                        {
                            "q": query,
                            "ids": ids,
                            "limit": limit,
                            "marks": _START + _STOP,
                            "options": f"MaxFragments=1, MaxWords=24, MinWords=8, StartSel={_START}, StopSel={_STOP}",
                        },
                    ).fetchall()
                for hit in hits:
                    hit.snippet = safe_snippet(hit.snippet)
                return hits

        try:
            return self._read(read)
        except psycopg.errors.QueryCanceled:
            raise SearchTimeout(
                f"the search took longer than {self.search_timeout_ms} ms and was stopped; use more specific words"
            ) from None

    def _search_candidates(self, conn: psycopg.Connection, query: str, user_id: str | None) -> list[int]:
        params: dict[str, Any] = {"q": query, "user_id": user_id, "n": SEARCH_CANDIDATES, "window": SEARCH_WINDOW}
        term = "m.search @@ websearch_to_tsquery('simple'::regconfig, %(q)s)"
        if user_id is not None:
            row = conn.execute(
                "SELECT coalesce(sum(message_count), 0) FROM conversations WHERE user_id = %s", (user_id,)
            ).fetchone()
            if row is not None and row[0] <= SCOPE_FIRST_MESSAGES:
                # The caller's own messages, conversation by conversation: at most
                # SCOPE_FIRST_MESSAGES rows read, however common the term is elsewhere.
                # OFFSET 0 keeps the subquery from being flattened into a walk of all messages.
                rows = conn.execute(
                    "SELECT hit.id FROM conversations c CROSS JOIN LATERAL ("
                    f"  SELECT m.id FROM messages m WHERE m.conversation_id = c.conversation_id AND {term}"
                    "   OFFSET 0) hit"
                    " WHERE c.user_id = %(user_id)s ORDER BY hit.id + 0 DESC LIMIT %(n)s",
                    params,
                    prepare=False,
                ).fetchall()
                return [r[0] for r in rows]
        # Newest first within the window: stops after SEARCH_WINDOW rows whatever the term.
        owned = "" if user_id is None else f" JOIN conversations c ON c.conversation_id = m.conversation_id AND {OWNED}"
        row = conn.execute(
            "WITH w AS MATERIALIZED ("
            f"  SELECT m.id, m.conversation_id, {term} AS matched FROM messages m"
            "   ORDER BY m.id DESC LIMIT %(window)s)"
            " SELECT (SELECT min(id) FROM w), array("
            f"  SELECT m.id FROM w m{owned} WHERE m.matched ORDER BY m.id DESC LIMIT %(n)s)",
            params,
            prepare=False,
        ).fetchone()
        assert row is not None
        boundary, ids = row[0], list(row[1])
        if boundary is None or len(ids) >= SEARCH_CANDIDATES:
            return ids
        params.update(n=SEARCH_CANDIDATES - len(ids), boundary=boundary)
        # Older messages through the GIN index, newest first ("+ 0" keeps the planner off walking
        # the primary key, which for a term absent from recent messages reads the whole table).
        # Ordering needs every older match's row: for a term in hundreds of thousands of old
        # messages that alone passes the budget. Then the first matches the index finds in
        # storage order are ranked instead (the oldest, for an append-only table): still
        # matches, found in milliseconds.
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(SEARCH_ORDERED_BUDGET_MS),))
                older = conn.execute(
                    f"SELECT m.id FROM messages m{owned}"
                    f" WHERE {term} AND m.id < %(boundary)s ORDER BY m.id + 0 DESC LIMIT %(n)s",
                    params,
                    # Never a prepared, generic plan: without the term the planner cannot tell a
                    # rare word (an index lookup) from a common one.
                    prepare=False,
                ).fetchall()
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(self.search_timeout_ms),))
        except psycopg.errors.QueryCanceled:
            # Through the index's bitmap only: matching pages in storage order, stopping at the
            # limit. (A sequential scan could start mid-table, where a synchronized scan left
            # off, and read most of it before its first match.)
            conn.execute(
                "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_indexscan', 'off', true)"
            )
            older = conn.execute(
                f"SELECT m.id FROM messages m{owned} WHERE {term} AND m.id < %(boundary)s LIMIT %(n)s",
                params,
                prepare=False,
            ).fetchall()
            conn.execute("SELECT set_config('enable_seqscan', 'on', true), set_config('enable_indexscan', 'on', true)")
        return ids + [r[0] for r in older]

    def similar(
        self,
        embedding: Sequence[float],
        *,
        user_id: str | None = None,
        limit: int = 10,
        conversation_id: str | None = None,
    ) -> list[SimilarHit]:
        self._check_embedding(embedding)

        def read(conn: psycopg.Connection) -> list[SimilarHit]:
            with conn.transaction():
                # HNSW returns at most ef_search candidates; ask for at least as many as wanted.
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(40, limit * 2)),))
                # A scope (a user, a conversation) filters the index's candidates afterwards: with a
                # plain scan, a scope far from the query gets fewer hits than it holds, even none.
                # pgvector 0.8's iterative scan keeps fetching candidates until the limit is met (or
                # hnsw.max_scan_tuples are visited); relaxed order is re-sorted below.
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                conn.execute("SELECT set_config('hnsw.max_scan_tuples', %s, true)", (str(SIMILAR_MAX_SCAN_TUPLES),))
                with conn.cursor(row_factory=class_row(SimilarHit)) as cur:
                    return cur.execute(
                        "WITH hits AS MATERIALIZED ("
                        "  SELECT m.conversation_id, m.id AS message_id, m.seq, m.role, m.created_at,"
                        "    (m.embedding <=> %(v)s::vector)::float8 AS distance"
                        "  FROM messages m JOIN conversations c ON c.conversation_id = m.conversation_id"
                        f"  WHERE m.embedding IS NOT NULL AND {OWNED}"
                        "    AND (%(cid)s::text IS NULL OR m.conversation_id = %(cid)s)"
                        "  ORDER BY m.embedding <=> %(v)s::vector LIMIT %(limit)s)"
                        # Only the hits' text is read, and at most SIMILAR_CONTENT_CHARS of each.
                        " SELECT hits.conversation_id, hits.message_id, hits.seq, hits.role, hits.created_at,"
                        "  hits.distance, left(m.content, %(chars)s) AS content,"
                        "  char_length(left(m.content, %(chars)s + 1)) > %(chars)s AS content_truncated"
                        " FROM hits JOIN messages m ON m.id = hits.message_id ORDER BY hits.distance, hits.message_id",
                        {
                            "v": vector_literal(embedding),
                            "user_id": user_id,
                            "cid": conversation_id,
                            "limit": limit,
                            "chars": SIMILAR_CONTENT_CHARS,
                        },
                    ).fetchall()

        return self._read(read)
