-- One row per message: appending never rewrites earlier messages.
CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id text        NOT NULL
        REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    seq             integer     NOT NULL CHECK (seq >= 1),
    role            text        NOT NULL
        CONSTRAINT messages_role_check CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         text        NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    embedding       vector({{embedding_dimension}}),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Also the index for reading a conversation's messages in order, the last N,
    -- and keyset pagination on seq.
    CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq)
);

-- Full-text search. A tsvector is capped at 1 MB, so to_tsvector() over a
-- multi-megabyte message would fail the INSERT. We index the first 100,000
-- characters of each message (at most ~400 KB of UTF-8, whose tsvector stays well
-- under the cap); text past that prefix is stored and returned but not searchable.
-- The 'simple' configuration does no stemming, so it treats every language alike.
-- The store's search query repeats this exact expression so the planner uses the index.
CREATE INDEX messages_content_fts_idx
    ON messages USING gin (to_tsvector('simple'::regconfig, left(content, 100000)));

-- Nearest-neighbour search over embeddings (cosine distance, the <=> operator).
CREATE INDEX messages_embedding_hnsw_idx
    ON messages USING hnsw (embedding vector_cosine_ops);
