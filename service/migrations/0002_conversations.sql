-- One row per conversation. Column names are part of the operator contract:
--   SELECT conversation_id, title, updated_at FROM conversations ORDER BY updated_at DESC;
CREATE TABLE conversations (
    conversation_id text PRIMARY KEY
        CONSTRAINT conversation_id_length CHECK (char_length(conversation_id) BETWEEN 1 AND 255),
    user_id         text,
    title           text,
    settings        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Maintained by the store in the same statement that appends a message; it also
    -- hands out the per-conversation sequence number, so appends to one conversation
    -- serialise on this row and never collide.
    message_count   integer     NOT NULL DEFAULT 0 CHECK (message_count >= 0)
);

-- Hot path: the most recently updated conversations, keyset-paginated on
-- (updated_at, conversation_id), for everyone and per user.
CREATE INDEX conversations_recent_idx
    ON conversations (updated_at DESC, conversation_id DESC);
CREATE INDEX conversations_user_recent_idx
    ON conversations (user_id, updated_at DESC, conversation_id DESC);
