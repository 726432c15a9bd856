"""POSTs applied at most once per Idempotency-Key: the caller's response body is stored in
the write's own transaction, and a repeat gets it back instead of writing again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from ..models import Conversation, Message, NewMessage
from .conversations import Conversations
from .errors import IdempotencyKeyReused
from .statements import REPLAY_REF


@dataclass(frozen=True)
class Idempotency:
    """A POST's Idempotency-Key: whose it is (``scope``), the key, a fingerprint of the
    request it came with (the same key with another request is refused), and the status the
    caller answers the request with, recorded beside the body it renders."""

    scope: str
    key: str
    fingerprint: str
    status: int


IDEMPOTENCY_TTL = "24 hours"
# A stored response larger than this is kept as a reference to what was written.
MAX_STORED_RESPONSE_BYTES = 64 * 1024


class Idempotent(Conversations):
    def create_conversation_once(
        self,
        idempotency: Idempotency,
        render: Callable[[Conversation], bytes],
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        title: str | None = None,
        settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> tuple[bytes, bool]:
        """create_conversation at most once per Idempotency-Key (see ``_once``): the response
        body ``render`` makes of the new conversation, and whether it is a replay."""
        new_id, new_title = self._new_conversation(conversation_id, title, messages)

        def write(conn: psycopg.Connection) -> tuple[bytes, dict[str, Any]]:
            created = self._create(conn, user_id, settings, metadata, messages, new_id, new_title)
            return render(created), {"conversation_id": created.conversation_id, "messages": len(created.messages)}

        def expand(ref: dict[str, Any]) -> bytes:
            # The conversation as it is now, with the messages that request created.
            created = self.get_conversation(ref["conversation_id"], user_id=user_id)
            created.messages = [m for m in created.messages if m.seq <= ref["messages"]]
            last = created.messages[-1].seq if created.messages else 0
            created.messages_after_cursor = str(last) if last < ref["messages"] else None
            return render(created)

        return self._once(idempotency, write, expand, conversation_id=None)

    def append_message_once(
        self,
        idempotency: Idempotency,
        render: Callable[[Message], bytes],
        conversation_id: str,
        message: NewMessage,
        *,
        user_id: str | None = None,
    ) -> tuple[bytes, bool]:
        """Append one message at most once per Idempotency-Key (see ``_once``): the response
        body ``render`` makes of it, and whether it is a replay."""
        self._check_new_messages([message])

        def write(conn: psycopg.Connection) -> tuple[bytes, dict[str, Any]]:
            (appended,) = self._append(conn, conversation_id, user_id, [message])
            return render(appended), {"seq": appended.seq, "conversation_id": conversation_id}

        def expand(ref: dict[str, Any]) -> bytes:
            page = self.list_messages(conversation_id, user_id=user_id, after=ref["seq"] - 1, limit=1)
            return render(page.items[0])

        return self._once(idempotency, write, expand, conversation_id=conversation_id)

    def _once(
        self,
        idempotency: Idempotency,
        write: Callable[[psycopg.Connection], tuple[bytes, dict[str, Any]]],
        expand: Callable[[dict[str, Any]], bytes],
        *,
        conversation_id: str | None,
    ) -> tuple[bytes, bool]:
        """Run ``write`` at most once per (scope, key) within IDEMPOTENCY_TTL: the response body
        it returns is stored in the same transaction, and a repeat gets that body back (second
        value True) instead of writing again. A body larger than MAX_STORED_RESPONSE_BYTES is
        stored as ``{REPLAY_REF: reference}`` (the reference ``write`` returns with it), which
        ``expand`` turns back into a body on a replay. Reusing a key for a different request
        is an error; a key past its expiry starts afresh, and so does one whose conversation
        (``conversation_id``, else the one the stored answer names) was deleted since, or
        deleted and created again: the request then answers what it would as a new one (an
        append to a deleted conversation: 404), never the deleted text or a missing message."""
        for _ in range(2):
            found = self._once_attempt(idempotency, write, expand, conversation_id)
            if found is not None:
                return found
        raise AssertionError("a stale Idempotency-Key was removed, yet found again")  # pragma: no cover

    def _once_attempt(
        self,
        idempotency: Idempotency,
        write: Callable[[psycopg.Connection], tuple[bytes, dict[str, Any]]],
        expand: Callable[[dict[str, Any]], bytes],
        conversation_id: str | None,
    ) -> tuple[bytes, bool] | None:
        with self._conn() as conn:
            with conn.transaction():
                # A key older than the TTL is taken over as if new (the row lock serialises a
                # concurrent repeat, which then finds the new request's answer).
                fresh = conn.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES (%(scope)s, %(key)s, %(fp)s)"
                    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
                    "  status = NULL, response = NULL, created_at = now()"
                    f" WHERE idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_TTL}'"
                    " RETURNING 1",
                    {"scope": idempotency.scope, "key": idempotency.key, "fp": idempotency.fingerprint},
                ).fetchone()
                if fresh is not None:
                    body, ref = write(conn)
                    stored = body if len(body) <= MAX_STORED_RESPONSE_BYTES else orjson.dumps({REPLAY_REF: ref})
                    conn.execute(
                        "UPDATE idempotency_keys SET status = %s, response = %s::jsonb WHERE scope = %s AND key = %s",
                        (idempotency.status, stored.decode(), idempotency.scope, idempotency.key),
                    )
                    return body, False
                # The first request committed (a concurrent one waited on the key's lock).
                # The conversation the stored answer names: a body's, or a reference's (as
                # delete_conversation finds the answers to remove).
                row = conn.execute(
                    "SELECT fingerprint, response::text, response -> %(ref)s, created_at,"
                    " coalesce(response ->> 'conversation_id', response -> %(ref)s ->> 'conversation_id')"
                    " FROM idempotency_keys WHERE scope = %(scope)s AND key = %(key)s",
                    {"ref": REPLAY_REF, "scope": idempotency.scope, "key": idempotency.key},
                ).fetchone()
                assert row is not None
                fingerprint, replay, ref, keyed_at, named = row
                if fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
                about = conversation_id or named
                current = conn.execute(
                    "SELECT created_at <= %s FROM conversations WHERE conversation_id = %s", (keyed_at, about)
                ).fetchone()
                if current is None or not current[0]:
                    # Deleted (or deleted and created again) since: the stored answer is stale.
                    conn.execute(
                        "DELETE FROM idempotency_keys WHERE scope = %s AND key = %s",
                        (idempotency.scope, idempotency.key),
                    )
                    return None
        return (expand(ref) if ref is not None else replay.encode()), True

    def remove_expired_idempotency_keys(self, batch: int = 1000) -> int:
        """Delete keys past IDEMPOTENCY_TTL, ``batch`` rows per transaction (short locks);
        run outside the request path (the API's housekeeping thread). Returns how many."""
        removed = 0
        while True:
            with self._conn() as conn:
                n = conn.execute(
                    "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
                    f"  SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '{IDEMPOTENCY_TTL}'"
                    "  LIMIT %s))",
                    (batch,),
                ).rowcount
            removed += n
            if n < batch:
                return removed
