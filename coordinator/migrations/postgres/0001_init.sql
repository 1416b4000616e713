-- SpareCycles schema (PostgreSQL). The same tables as the SQLite schema: times are BIGINT
-- milliseconds since the epoch, ids are UUID text, JSON is TEXT; flags are BOOLEAN.

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    app               TEXT NOT NULL,
    params            TEXT NOT NULL,
    state             TEXT NOT NULL,
    priority          BIGINT NOT NULL,
    min_quorum        BIGINT NOT NULL,
    target_results    BIGINT NOT NULL,
    max_error_results BIGINT NOT NULL,
    max_total_results BIGINT NOT NULL,
    adaptive          BOOLEAN NOT NULL DEFAULT TRUE,  -- trusted workers may compute units alone
    distinct_owners   BOOLEAN NOT NULL DEFAULT FALSE, -- never two tasks of a unit to one owner
    unit_timeout_ms   BIGINT NOT NULL,
    unit_count        BIGINT NOT NULL,
    units_created     BIGINT NOT NULL DEFAULT 0,
    units_done        BIGINT NOT NULL DEFAULT 0,
    units_failed      BIGINT NOT NULL DEFAULT 0,
    tasks_created     BIGINT NOT NULL DEFAULT 0,
    last_lease_at     BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT,
    error             TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, priority DESC, last_lease_at);
CREATE INDEX jobs_by_created ON jobs (created_at DESC);

-- Units are created lazily, in batches, as the lease frontier advances.
CREATE TABLE units (
    id             TEXT PRIMARY KEY NOT NULL,
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    seq            BIGINT NOT NULL,
    state          TEXT NOT NULL,                  -- open | done | failed
    canonical_task TEXT,
    replicated     BOOLEAN NOT NULL DEFAULT TRUE,  -- false: adaptive, one task so far
    solo           BOOLEAN NOT NULL DEFAULT FALSE, -- accepted on one trusted worker's word
    dirty          BIGINT NOT NULL DEFAULT 0,      -- changes since the transitioner last looked
    UNIQUE (job_id, seq)
);
CREATE INDEX units_dirty ON units (dirty) WHERE dirty > 0;
CREATE INDEX units_solo ON units (canonical_task) WHERE solo;

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY NOT NULL,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    unit_id     TEXT NOT NULL REFERENCES units (id),
    unit_seq    BIGINT NOT NULL,
    state       TEXT NOT NULL,                   -- unsent | leased | success | error | timed_out | aborted
    validation  TEXT NOT NULL DEFAULT 'pending', -- pending | valid | invalid
    worker_id   TEXT,
    spared      BOOLEAN NOT NULL DEFAULT FALSE,  -- a spare task was created for it (worker suspected)
    lease_count BIGINT NOT NULL DEFAULT 0,       -- times leased (audit: only a release re-leases)
    created_at  BIGINT NOT NULL,
    leased_at   BIGINT,
    deadline    BIGINT,
    reported_at BIGINT,
    output      TEXT,
    error       TEXT
);
CREATE INDEX tasks_unsent ON tasks (job_id, unit_seq) WHERE state = 'unsent';
CREATE INDEX tasks_by_unit ON tasks (unit_id, worker_id);
CREATE INDEX tasks_leased_deadline ON tasks (deadline) WHERE state = 'leased';
CREATE INDEX tasks_leased_by_job ON tasks (job_id) WHERE state = 'leased';
CREATE INDEX tasks_leased_by_worker ON tasks (worker_id) WHERE state = 'leased';

CREATE TABLE workers (
    id          TEXT PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    owner       TEXT,
    os          TEXT NOT NULL,
    arch        TEXT NOT NULL,
    cores       BIGINT NOT NULL,
    apps        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    valid       BIGINT NOT NULL DEFAULT 0,
    invalid     BIGINT NOT NULL DEFAULT 0,
    errors      BIGINT NOT NULL DEFAULT 0,
    timeouts    BIGINT NOT NULL DEFAULT 0,
    credit      DOUBLE PRECISION NOT NULL DEFAULT 0,
    rac         DOUBLE PRECISION NOT NULL DEFAULT 0, -- recent credit, decaying with a 7-day half-life
    rac_time    BIGINT NOT NULL DEFAULT 0,           -- when rac was last brought up to date
    streak      BIGINT NOT NULL DEFAULT 0,           -- consecutive valid results (trust)
    quota       BIGINT NOT NULL DEFAULT 8,           -- most tasks in flight; shrinks on errors
    banned      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX workers_by_owner ON workers (owner);

CREATE TABLE job_results (
    job_id       TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    content_type TEXT NOT NULL,
    body         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
