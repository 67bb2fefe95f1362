-- How the user proved who they are for this session (the access tokens' `amr`, RFC 8176): method
-- names joined by spaces, kept across refreshes. Sessions started before read as empty.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '';
