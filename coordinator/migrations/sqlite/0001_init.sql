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
    adaptive          INTEGER NOT NULL DEFAULT 1, -- trusted workers may compute units alone
    distinct_owners   INTEGER NOT NULL DEFAULT 0, -- never two tasks of a unit to one owner
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
    replicated     INTEGER NOT NULL DEFAULT 1, -- 0: adaptive, one task so far
    solo           INTEGER NOT NULL DEFAULT 0, -- 1: accepted on one trusted worker's word
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
    spared      INTEGER NOT NULL DEFAULT 0,  -- a spare task was created for it (worker suspected)
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
CREATE INDEX tasks_leased_by_worker ON tasks (worker_id) WHERE state = 'leased';
CREATE INDEX units_solo ON units (canonical_task) WHERE solo = 1;

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
    rac         REAL NOT NULL DEFAULT 0,     -- recent credit: a sum decaying with a 7-day half-life
    rac_time    INTEGER NOT NULL DEFAULT 0,  -- when rac was last brought up to date
    streak      INTEGER NOT NULL DEFAULT 0,  -- consecutive valid results (trust)
    quota       INTEGER NOT NULL DEFAULT 8,  -- most tasks in flight; shrinks on errors
    banned      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workers_by_owner ON workers (owner);

CREATE TABLE job_results (
    job_id       TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);
