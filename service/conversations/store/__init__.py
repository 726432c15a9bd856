"""All of the service's SQL, behind one front, ``Store``. No HTTP here: callers get rows or a
StoreError. One room, one job:

- ``connections``: lending a connection from the pool, reads routed to a caught-up replica;
- ``statements``: the SQL pieces the rooms share (columns, ownership, vector literals);
- ``messages``: appending and paging messages, embedding checks;
- ``conversations``: create, read, list, update, delete;
- ``search``: full-text search and similarity;
- ``idempotency``: POSTs applied at most once per Idempotency-Key;
- ``transfer``: import and export of whole conversations;
- ``front``: ``Store``, composed of them.
"""

from __future__ import annotations

from .errors import (
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidSearch,
    NotFound,
    SearchTimeout,
    StoreError,
)
from .front import Store
from .idempotency import Idempotency

__all__ = [
    "Conflict",
    "Idempotency",
    "IdempotencyKeyReused",
    "InvalidInput",
    "InvalidSearch",
    "NotFound",
    "SearchTimeout",
    "Store",
    "StoreError",
]
