-- Full-text search reads a stored tsvector instead of parsing each message again.
--
-- Before this, the index was on the expression to_tsvector('simple', left(content, 100000)):
-- a term found in most messages made the bitmap heap scan lossy, and every candidate row was
-- parsed again to recheck it (about 40 s at a million messages). A stored column is parsed
-- once, on INSERT; rechecks and ranking read it as it is.
--
-- The same expression as before: the first 100,000 characters of a message are searchable
-- (a tsvector is capped at 1 MB). STORED is explicit: PostgreSQL 18's default for a generated
-- column is VIRTUAL, which cannot be indexed.
--
-- Adding the column rewrites the messages table under an exclusive lock: on a large table
-- the deploy that applies this migration blocks writes and reads of messages while it runs
-- (about a minute per million messages of chat-sized text).
ALTER TABLE messages
    ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, left(content, 100000))) STORED;

CREATE INDEX messages_search_idx ON messages USING gin (search);

DROP INDEX messages_content_fts_idx;
