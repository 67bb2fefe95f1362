-- authvault embedded schema, version 1. Times are milliseconds since the Unix epoch, UTC.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    image         TEXT,
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX users_created_at ON users (created_at DESC);

-- Linked OAuth identities; one identity belongs to at most one user.
CREATE TABLE identities (
    provider            TEXT NOT NULL,
    provider_account_id TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (provider, provider_account_id)
) STRICT;
CREATE INDEX identities_user ON identities (user_id);

-- One row per sign-in; a token whose session row is gone is revoked.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    auth_time    INTEGER NOT NULL,
    user_agent   TEXT,
    ip           TEXT
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Rate-limit events; windows are counted from `at`, rows past `expires_at` are purged.
CREATE TABLE rate_events (
    key        TEXT NOT NULL,
    at         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX rate_events_key_at ON rate_events (key, at);
CREATE INDEX rate_events_expires ON rate_events (expires_at);
