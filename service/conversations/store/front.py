"""``Store``: the one front the service, the scripts and the tests call, composed of the rooms."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..migrate import LEDGER_TABLE
from .idempotency import Idempotent
from .search import Search
from .transfer import Transfer


class Store(Idempotent, Search, Transfer):
    """All of the service's SQL. No HTTP here: callers get rows or a StoreError."""

    def health(self) -> dict[str, Any]:
        with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT current_setting('server_version') AS server_version,"
                " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version,"
                f" (SELECT coalesce(max(version), 0) FROM {LEDGER_TABLE}) AS schema_version,"
                # The planner's estimate, not count(*): a probe must stay cheap at any size.
                " (SELECT nullif(reltuples, -1)::bigint FROM pg_class"
                "   WHERE oid = 'conversations'::regclass) AS approximate_conversations"
            ).fetchone()
        assert row is not None
        return row
