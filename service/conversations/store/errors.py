"""What the store refuses: each a StoreError, which the API maps to its status and error code."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store refuses; the API maps each subclass to its own status and error code."""


class NotFound(StoreError):
    """No such conversation (or not the caller's)."""


class Conflict(StoreError):
    """The conversation id is taken."""


class InvalidInput(StoreError):
    """Input the database would reject (an embedding of the wrong dimension, say)."""


class InvalidSearch(StoreError):
    """A search query that cannot be answered usefully (only excluded words)."""


class SearchTimeout(StoreError):
    """A search that ran past its own statement timeout: the query is too broad, the database
    is not down."""


class IdempotencyKeyReused(StoreError):
    """An Idempotency-Key seen before with a different request."""
