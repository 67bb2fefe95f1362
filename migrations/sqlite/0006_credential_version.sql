-- Moves on every change of a user's credentials (password set, changed or reset; sign-in methods
-- removed by the first proof of the address). A session row is inserted only while the version
-- is the one its sign-in checked, so a sign-in in flight during a change starts no session.
ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;
-- Rate-limit events are named, so that a reservation that turned out not to count is released.
ALTER TABLE rate_events ADD COLUMN id TEXT;
