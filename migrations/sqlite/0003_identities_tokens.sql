-- One identity per provider per user.
CREATE UNIQUE INDEX identities_user_provider ON identities (user_id, provider);

-- Single-use secrets (OAuth states and one-time codes, later email and refresh tokens), stored
-- only as hashes; a row is spent by deleting it.
CREATE TABLE tokens (
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    data       TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, hash)
) STRICT;
CREATE INDEX tokens_expires ON tokens (expires_at);
CREATE INDEX tokens_user ON tokens (user_id);
