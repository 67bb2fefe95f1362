-- Multi-factor sign-in: a user's TOTP authenticator (sealed like API keys) and recovery codes.
-- `secret_*` is the confirmed secret (MFA is on exactly when it is set), `pending_*` one enrolled
-- but not confirmed yet; `last_step` is the last TOTP time step accepted (no replay).
CREATE TABLE mfa (
    user_id            TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_key_id      TEXT,
    secret_nonce       BLOB,
    secret_ciphertext  BLOB,
    pending_key_id     TEXT,
    pending_nonce      BLOB,
    pending_ciphertext BLOB,
    last_step          INTEGER
) STRICT;

-- Unused recovery codes, as HMAC-SHA-256 of the normalised code keyed with a server secret.
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
) STRICT;
