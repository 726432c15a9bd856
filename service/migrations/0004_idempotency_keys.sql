-- Idempotency-Key support for POST: the key, a fingerprint of the request it was first used
-- with, and the response that request got. The row is written in the same transaction as
-- the write it guards, so a retried request either finds the committed response or finds
-- nothing and writes once. Rows older than a day are removed by the store as it goes.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,  -- the caller's X-User-Id, or '' without one
    key          text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint  text        NOT NULL,
    status       integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
