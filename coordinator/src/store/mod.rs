//! Persistence: the [`Store`] trait the scheduler and API use, and its SQLite (embedded default)
//! and PostgreSQL (several coordinators on one database) implementations.
//!
//! SQL stays in this module. The trait speaks in domain operations (lease, report, decide), so
//! each backend can use its best statement for each (SQLite's single writer, PostgreSQL's
//! `FOR UPDATE SKIP LOCKED`).

mod postgres;
mod sqlite;
mod submitters;

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use sparecycles_protocol::{JobState, Millis, Redundancy};
use uuid::Uuid;

use crate::scheduler::validate::{Decision, TaskSnapshot};

pub use postgres::{LEADER_LOCK_KEY, PostgresStore};
pub use sqlite::SqliteStore;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// From the SQLite store's own writer connection (see `sqlite::group`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub name: String,
    pub app: String,
    pub params: Value,
    pub state: JobState,
    pub priority: i32,
    pub redundancy: Redundancy,
    pub unit_timeout_ms: i64,
    pub unit_count: u64,
    pub units_created: u64,
    pub units_done: u64,
    pub units_failed: u64,
    pub tasks_created: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
    /// The submitter that owns it; `None`: submitted with the admin token.
    pub owner: Option<Uuid>,
}

/// A job about to be created.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub name: String,
    pub app: String,
    pub params: Value,
    pub priority: i32,
    pub redundancy: Redundancy,
    pub unit_timeout_ms: i64,
    pub unit_count: u64,
    /// Units to create at once (the rest follow lazily as they are leased).
    pub initial_units: u64,
    /// The submitter that owns it; `None`: the admin.
    pub owner: Option<Uuid>,
}

/// A submitter token, as stored (only the hash of its secret).
#[derive(Debug, Clone)]
pub struct SubmitterRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// An enrolled worker, as stored.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub id: Uuid,
    pub name: String,
    pub owner: Option<String>,
    pub os: String,
    pub arch: String,
    pub cores: u32,
    pub apps: Vec<String>,
    pub created_at: Millis,
    pub last_seen: Millis,
    pub in_flight: u64,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub credit: f64,
    /// Recent credit as a decaying sum, as of `rac_time`.
    pub rac: f64,
    pub rac_time: Millis,
    pub streak: u64,
    pub quota: u32,
    pub banned: bool,
}

/// A worker about to be enrolled.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: Uuid,
    pub token_hash: String,
    pub name: String,
    pub owner: Option<String>,
    pub os: String,
    pub arch: String,
    pub cores: u32,
    pub apps: Vec<String>,
    pub quota: u32,
}

/// What a worker asks for in a lease, with what the scheduler knows about it.
#[derive(Debug, Clone)]
pub struct LeaseAsk<'a> {
    pub worker: Uuid,
    pub owner: Option<&'a str>,
    /// Apps both the worker and the coordinator have.
    pub apps: &'a [String],
    pub max: u32,
    /// Its units may go out alone (adaptive replication)…
    pub trusted: bool,
    /// …except this fraction, still replicated as a spot check.
    pub spot_check: f64,
    /// Units to create at once when the frontier reaches the end of the created ones.
    pub batch_units: u64,
}

/// A task just leased to a worker.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub unit_id: Uuid,
    pub unit_seq: u64,
    pub deadline: Millis,
}

/// What the report handler needs to judge one reported result.
#[derive(Debug, Clone)]
pub struct ReportTarget {
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub unit_seq: u64,
    pub worker_id: Option<Uuid>,
    pub task_state: String,
    pub unit_open: bool,
    pub job_state: JobState,
}

/// A checked result ready to be recorded.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success(Value),
    /// A success that decides its unit alone (its job's quorum is 1, the app's comparison
    /// accepts the output), worth `credit`. The store may decide the unit as it records the
    /// result, when nothing else about the unit awaits the transitioner, or leave it to the
    /// transitioner like any success; the verdict is the same.
    Decisive {
        output: Value,
        credit: f64,
    },
    Error(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Error(_))
    }

    /// The task row's `state`, `output` and `error` columns for this result.
    pub(crate) fn columns(&self) -> (&'static str, Option<String>, Option<&str>) {
        match self {
            Outcome::Success(v) | Outcome::Decisive { output: v, .. } => {
                ("success", Some(v.to_string()), None)
            }
            Outcome::Error(e) => ("error", None, Some(e.as_str())),
        }
    }
}

/// What recording a report's results did.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// The tasks whose results were recorded.
    pub tasks: Vec<Uuid>,
    /// Units decided on the spot by decisive results, per job.
    pub decided: HashMap<Uuid, u64>,
    /// Results found valid on the spot (one per decided unit, unless a report carried two
    /// results of one unit).
    pub valid: u64,
    /// Some recorded results were left to the transitioner.
    pub pending: bool,
    /// A decided unit was its job's last: the job awaits assembly.
    pub job_done: bool,
}

/// A unit the transitioner must decide, with all its tasks.
#[derive(Debug, Clone)]
pub struct DirtyUnit {
    pub unit_id: Uuid,
    pub job_id: Uuid,
    pub seq: u64,
    pub open: bool,
    /// False while an adaptive unit has a single task: one trusted result then suffices.
    pub replicated: bool,
    /// The unit's change counter when read; the verdict clears it only if nothing changed since.
    pub changes: i64,
    pub tasks: Vec<TaskSnapshot>,
}

/// The transitioner's verdict on one unit, to be written back.
#[derive(Debug, Clone)]
pub struct UnitVerdict {
    pub unit_id: Uuid,
    pub job_id: Uuid,
    pub seq: u64,
    /// [`DirtyUnit::changes`] as read.
    pub changes: i64,
    pub decision: Decision,
    /// Credit each valid result earns (the app's declared work for the unit).
    pub credit: f64,
    /// The unit is decided on one trusted worker's result alone.
    pub solo: bool,
    /// Task id -> worker id of the unit's tasks, for reputation updates.
    pub task_workers: Vec<(Uuid, Uuid)>,
}

/// What one transitioner batch changes about one worker's reputation.
#[derive(Debug, Default, Clone)]
pub(crate) struct TrustDelta {
    pub valid: i64,
    pub invalid: i64,
    pub credit: f64,
}

/// What the units a batch really decided valid change, for both stores to write.
#[derive(Debug, Default)]
pub(crate) struct ValidEffects {
    /// Units decided, per job.
    pub units_done: HashMap<Uuid, i64>,
    /// The decided units (their unsent replicas are aborted).
    pub units: Vec<Uuid>,
    pub valid_tasks: Vec<Uuid>,
    pub invalid_tasks: Vec<Uuid>,
    /// Reputation changes, per worker.
    pub workers: HashMap<Uuid, TrustDelta>,
}

/// Collects the effects of the valid verdicts whose unit `decided` says this batch decided
/// (a unit already decided meanwhile counts for nothing).
pub(crate) fn valid_effects(
    verdicts: &[UnitVerdict],
    decided: impl Fn(Uuid) -> bool,
) -> ValidEffects {
    let mut out = ValidEffects::default();
    for v in verdicts {
        let Decision::Valid { valid, invalid, .. } = &v.decision else {
            continue;
        };
        if !decided(v.unit_id) {
            continue;
        }
        *out.units_done.entry(v.job_id).or_default() += 1;
        out.units.push(v.unit_id);
        let worker_of = |task: &Uuid| {
            v.task_workers
                .iter()
                .find(|(t, _)| t == task)
                .map(|(_, w)| *w)
        };
        for w in valid.iter().filter_map(worker_of) {
            let d = out.workers.entry(w).or_default();
            d.valid += 1;
            d.credit += v.credit;
        }
        for w in invalid.iter().filter_map(worker_of) {
            out.workers.entry(w).or_default().invalid += 1;
        }
        out.valid_tasks.extend(valid.iter().copied());
        out.invalid_tasks.extend(invalid.iter().copied());
    }
    out
}

/// Whose leased tasks get spares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspects {
    /// Workers not seen since this time (silent: maybe gone).
    SilentSince(Millis),
    /// One worker whose connection dropped (its process most likely died).
    Worker(Uuid),
}

/// Everything the coordinator persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a job and its first units and tasks, all or nothing.
    async fn create_job(&self, job: NewJob, now: Millis) -> StoreResult<JobRow>;
    async fn job(&self, id: Uuid) -> StoreResult<Option<JobRow>>;
    /// Newest first.
    async fn jobs(&self, limit: u32) -> StoreResult<Vec<JobRow>>;
    /// Jobs of one submitter, newest first.
    async fn jobs_owned_by(&self, owner: Uuid, limit: u32) -> StoreResult<Vec<JobRow>>;
    /// Units of each of these jobs with a task out on a worker (jobs with none are left out),
    /// in one query for a whole job list.
    async fn units_in_progress(
        &self,
        job_ids: &[Uuid],
    ) -> StoreResult<std::collections::HashMap<Uuid, u64>>;
    /// A job's units counted in cells of `per_cell` units, and its validation figures.
    async fn unit_map(
        &self,
        job: &JobRow,
        per_cell: u64,
    ) -> StoreResult<sparecycles_protocol::dashboard::UnitMap>;
    /// Fleet totals; workers seen since `online_since` count as online.
    async fn fleet(
        &self,
        online_since: Millis,
    ) -> StoreResult<sparecycles_protocol::dashboard::FleetView>;
    /// Moves a job to `to` if it is in one of `from`; returns the job after the attempt, or
    /// `None` if it does not exist.
    async fn set_job_state(
        &self,
        id: Uuid,
        from: &[JobState],
        to: JobState,
        now: Millis,
    ) -> StoreResult<Option<JobRow>>;

    async fn enroll(&self, worker: NewWorker, now: Millis) -> StoreResult<()>;
    async fn worker_by_token_hash(&self, hash: &str) -> StoreResult<Option<WorkerRow>>;
    async fn workers(&self) -> StoreResult<Vec<WorkerRow>>;

    /// Stores a new submitter token by its hash.
    async fn create_submitter(
        &self,
        id: Uuid,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<SubmitterRow>;
    /// Every submitter token, revoked ones included, oldest first.
    async fn submitters(&self) -> StoreResult<Vec<SubmitterRow>>;
    /// The submitter whose token hashes to `hash`, unless revoked.
    async fn submitter_by_token_hash(&self, hash: &str) -> StoreResult<Option<SubmitterRow>>;
    /// Revokes a submitter token (idempotent); `None` if there is no such submitter.
    async fn revoke_submitter(&self, id: Uuid, now: Millis) -> StoreResult<Option<SubmitterRow>>;

    /// Leases up to `ask.max` unsent tasks of runnable jobs (and within the worker's quota),
    /// highest priority first and round-robin between jobs of equal priority, never two tasks
    /// of one unit to the same worker (or owner, when the job asks); creates more units of a job
    /// when its unsent tasks run out; replicates adaptive units leased by untrusted workers.
    /// Atomic.
    async fn lease(&self, ask: LeaseAsk<'_>, now: Millis) -> StoreResult<Vec<LeasedTask>>;
    /// Tasks still leased to `worker` (leased at or before `leased_before`, before their
    /// deadline, unit open, job runnable), for resending those the worker says it lost.
    async fn leased_to(
        &self,
        worker: Uuid,
        leased_before: Millis,
        now: Millis,
    ) -> StoreResult<Vec<LeasedTask>>;
    /// Of `tasks`, those the worker should stop computing.
    async fn heartbeat(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>>;
    /// Hands back tasks still leased to `worker`: they become unsent, with no worker, to be
    /// leased again at once. Returns those released.
    async fn release(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>>;
    /// The tasks named in a report, with what is needed to accept or refuse each.
    async fn report_targets(&self, tasks: &[Uuid]) -> StoreResult<Vec<ReportTarget>>;
    /// Records results of tasks leased to `worker` (still leased or timed out, unit undecided)
    /// and marks their units for the transitioner, or decides a unit on the spot for a
    /// [`Outcome::Decisive`] result (with the task's validation, the job's count and the
    /// worker's reputation, as a verdict would) when no other change of the unit awaits the
    /// transitioner. Atomic.
    async fn record_results(
        &self,
        worker: Uuid,
        results: Vec<(Uuid, Outcome)>,
        policy: &crate::scheduler::trust::TrustPolicy,
        now: Millis,
    ) -> StoreResult<Recorded>;

    /// Marks the leased tasks of the `who` workers as suspect, so their units get a spare
    /// task; returns how many.
    async fn spare_suspects(&self, who: Suspects) -> StoreResult<u64>;
    /// Lifts a ban and resets the worker's invalid count and streak; false if no such worker.
    async fn unban(&self, worker: Uuid) -> StoreResult<bool>;
    /// Times out leased tasks past their deadline; returns how many.
    async fn expire_tasks(&self, now: Millis) -> StoreResult<u64>;
    /// Up to `limit` units marked for the transitioner, with their tasks.
    async fn dirty_units(&self, limit: u32) -> StoreResult<Vec<DirtyUnit>>;
    /// Writes verdicts: task validation, new tasks, unit and job counters; worker reputation
    /// (streaks, quotas, credit, bans), undoing units a caught liar decided alone; fails jobs
    /// whose unit failed. Atomic. True when the batch decided the last unit of a job, which
    /// `jobs_to_assemble` then lists.
    async fn apply_verdicts(
        &self,
        verdicts: Vec<UnitVerdict>,
        policy: &crate::scheduler::trust::TrustPolicy,
        now: Millis,
    ) -> StoreResult<bool>;
    /// Jobs whose every unit has a canonical result but are not yet assembled.
    async fn jobs_to_assemble(&self) -> StoreResult<Vec<JobRow>>;
    /// Canonical outputs of units `from_seq..` (at most `limit`), in unit order.
    async fn canonical_outputs(
        &self,
        job_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Value)>>;
    /// Stores the assembled result and completes the job (if still running).
    async fn complete_job(
        &self,
        job_id: Uuid,
        content_type: &str,
        body: &[u8],
        now: Millis,
    ) -> StoreResult<()>;
    /// Fails a job with a reason (for example when assembly fails).
    async fn fail_job(&self, job_id: Uuid, reason: &str, now: Millis) -> StoreResult<()>;
    /// The assembled result: media type and bytes.
    async fn job_result(&self, job_id: Uuid) -> StoreResult<Option<(String, Vec<u8>)>>;

    /// Stores a module under its SHA-256 unless it is already there; true when it was new.
    async fn put_module(&self, sha256: &str, bytes: &[u8], now: Millis) -> StoreResult<bool>;
    /// The bytes stored under `sha256`.
    async fn module(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Whether this process may run the transitioner now. Coordinators sharing a database
    /// elect one (PostgreSQL: an advisory lock, released when its holder dies); a store
    /// used by one process always leads.
    async fn try_lead(&self) -> StoreResult<bool> {
        Ok(true)
    }
}
