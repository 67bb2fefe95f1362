-- Passkeys (WebAuthn credentials). `credential` is the relying-party library's record of the
-- credential at registration (public key, algorithm, flags, transports) as JSON; `counter` and
-- `backup_state` are the live values, moved by each sign-in.
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   BLOB NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    credential      TEXT NOT NULL,
    counter         INTEGER NOT NULL,
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    transports      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER
) STRICT;
CREATE INDEX passkeys_user ON passkeys (user_id, created_at);

-- Each user's WebAuthn user handle: 16 random bytes, set once, when they first register one.
ALTER TABLE users ADD COLUMN webauthn_handle BLOB;
