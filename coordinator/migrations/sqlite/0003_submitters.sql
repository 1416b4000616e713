-- Submitter tokens (issue 6): who may submit and manage their own jobs. Only hashes are kept.

CREATE TABLE submitters (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER            -- set once revoked; the token then authenticates nothing
);

-- The submitter that owns a job; NULL: submitted with the admin token.
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_by_owner ON jobs (owner, created_at DESC);
