-- SpareCycles schema (SQLite). Times are integer milliseconds since the epoch; ids are UUID text.

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    app               TEXT NOT NULL,
    params            TEXT NOT NULL,
    state             TEXT NOT NULL,
    priority          INTEGER NOT NULL,
    min_quorum        INTEGER NOT NULL,
    target_results    INTEGER NOT NULL,
    max_error_results INTEGER NOT NULL,
    max_total_results INTEGER NOT NULL,
    unit_timeout_ms   INTEGER NOT NULL,
    unit_count        INTEGER NOT NULL,
    units_created     INTEGER NOT NULL DEFAULT 0,
    units_done        INTEGER NOT NULL DEFAULT 0,
    units_failed      INTEGER NOT NULL DEFAULT 0,
    tasks_created     INTEGER NOT NULL DEFAULT 0,
    last_lease_at     INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    error             TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, priority DESC, last_lease_at);
CREATE INDEX jobs_by_created ON jobs (created_at DESC);

-- Units are created lazily, in batches, as the lease frontier advances.
CREATE TABLE units (
    id             TEXT PRIMARY KEY NOT NULL,
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    seq            INTEGER NOT NULL,
    state          TEXT NOT NULL,              -- open | done | failed
    canonical_task TEXT,
    dirty          INTEGER NOT NULL DEFAULT 0, -- changes since the transitioner last looked; 0 = none
    UNIQUE (job_id, seq)
);
CREATE INDEX units_dirty ON units (dirty) WHERE dirty > 0;

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY NOT NULL,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    unit_id     TEXT NOT NULL REFERENCES units (id),
    unit_seq    INTEGER NOT NULL,
    state       TEXT NOT NULL,                  -- unsent | leased | success | error | timed_out | aborted
    validation  TEXT NOT NULL DEFAULT 'pending', -- pending | valid | invalid
    worker_id   TEXT,
    created_at  INTEGER NOT NULL,
    leased_at   INTEGER,
    deadline    INTEGER,
    reported_at INTEGER,
    output      TEXT,
    error       TEXT
);
CREATE INDEX tasks_unsent ON tasks (job_id, unit_seq) WHERE state = 'unsent';
CREATE INDEX tasks_by_unit ON tasks (unit_id, worker_id);
CREATE INDEX tasks_leased_deadline ON tasks (deadline) WHERE state = 'leased';
CREATE INDEX tasks_leased_by_job ON tasks (job_id) WHERE state = 'leased';

CREATE TABLE workers (
    id          TEXT PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    owner       TEXT,
    os          TEXT NOT NULL,
    arch        TEXT NOT NULL,
    cores       INTEGER NOT NULL,
    apps        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    valid       INTEGER NOT NULL DEFAULT 0,
    invalid     INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    timeouts    INTEGER NOT NULL DEFAULT 0,
    credit      REAL NOT NULL DEFAULT 0,
    banned      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE job_results (
    job_id       TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);
