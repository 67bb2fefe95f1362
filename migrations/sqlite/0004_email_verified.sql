-- When the user proved the address (a verification link, a reset link, or a provider that
-- vouches for it); NULL while unproven.
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
