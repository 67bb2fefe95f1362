-- Refresh tokens: the hash of the session's live refresh token, and for the reuse grace period
-- the hash it replaced, when, and its successor sealed with the vault's key ring.
ALTER TABLE sessions ADD COLUMN refresh_hash TEXT;
ALTER TABLE sessions ADD COLUMN previous_hash TEXT;
ALTER TABLE sessions ADD COLUMN rotated_at INTEGER;
ALTER TABLE sessions ADD COLUMN successor_key_id TEXT;
ALTER TABLE sessions ADD COLUMN successor_nonce BLOB;
ALTER TABLE sessions ADD COLUMN successor_ciphertext BLOB;
CREATE UNIQUE INDEX sessions_refresh_hash ON sessions (refresh_hash);
CREATE INDEX sessions_previous_hash ON sessions (previous_hash);
