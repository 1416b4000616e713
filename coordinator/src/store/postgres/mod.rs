//! The PostgreSQL store: several coordinators share one database. Every write runs in a
//! READ COMMITTED transaction whose updates are conditional on the state they expect (a row
//! changed by another coordinator in between simply no longer matches); leasing claims rows
//! with `FOR UPDATE SKIP LOCKED`; a transaction PostgreSQL aborts for a deadlock is retried.

use std::borrow::Cow;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sparecycles_protocol::{JobState, Millis, Redundancy};
use sqlx::PgConnection;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Row, SqlStr};
use uuid::Uuid;

mod dashboard;
mod jobs;
mod lead;
mod lease;
mod results;
mod submitters;
mod transition;
mod trust;

pub use lead::LEADER_LOCK_KEY;

use super::{
    DirtyUnit, JobRow, LeaseAsk, LeasedTask, NewJob, NewWorker, Outcome, Recorded, ReportTarget,
    Store, StoreError, StoreResult, Suspects, UnitVerdict, WorkerRow,
};
use crate::scheduler::trust::TrustPolicy;

pub(super) const JOB_COLUMNS: &str = "id, name, app, params, state, priority, min_quorum, \
    target_results, max_error_results, max_total_results, adaptive, distinct_owners, \
    unit_timeout_ms, unit_count, units_created, units_done, units_failed, tasks_created, \
    created_at, updated_at, finished_at, error, owner";

/// Rows per multi-row INSERT: PostgreSQL allows 65,535 bound parameters per statement.
pub(super) const INSERT_CHUNK: usize = 8000;

/// Times a transaction aborted by a deadlock or serialization failure is tried.
const ATTEMPTS: u32 = 5;

/// PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    opts: PgConnectOptions,
    /// The session holding the transitioner's advisory lock, while this process leads.
    leader: tokio::sync::Mutex<Option<lead::LeaderSession>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../../migrations/postgres/0001_init.sql")),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("modules"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/postgres/0002_modules.sql"
            )),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("submitters"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/postgres/0003_submitters.sql"
            )),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("tasks_timed_out"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/postgres/0004_tasks_timed_out.sql"
            )),
            false,
        ),
    ])
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host/db`) and runs the migrations (the migrator
    /// takes an advisory lock, so coordinators starting together do not race).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?.application_name("sparecycles-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await?;
        migrator().run(&pool).await?;
        Ok(PostgresStore {
            pool,
            opts,
            leader: tokio::sync::Mutex::new(None),
        })
    }

    /// Closes the pool and gives up leadership.
    pub async fn close(&self) {
        if let Some(session) = self.leader.lock().await.take() {
            session.release().await;
        }
        self.pool.close().await;
    }

    /// One lease transaction: the tasks, and the jobs that ran out of created units.
    async fn lease_once(
        &self,
        ask: &LeaseAsk<'_>,
        now: Millis,
    ) -> StoreResult<(Vec<LeasedTask>, Vec<lease::Frontier>)> {
        retry("lease", || async {
            let mut tx = self.pool.begin().await?;
            let leased = lease::lease(&mut tx, ask, now).await?;
            tx.commit().await?;
            Ok(leased)
        })
        .await
    }
}

/// Whether PostgreSQL aborted the transaction in a way that a second try can get through.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
        }
        _ => false,
    }
}

/// Runs `attempt` (which opens and commits its own transaction) again when it was aborted by a
/// deadlock between coordinators.
pub(super) async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < ATTEMPTS && retryable(&e) => {
                tracing::debug!(what, tries, error = %e, "transaction aborted; retrying");
                metrics::counter!(crate::metrics::DB_RETRIES, "what" => what.to_string())
                    .increment(1);
                tokio::time::sleep(Duration::from_millis(5 * tries as u64)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

pub(super) fn parse_uuid(s: &str, col: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

pub(super) fn uuid_col(row: &PgRow, col: &str) -> StoreResult<Uuid> {
    let s: String = row.try_get(col)?;
    parse_uuid(&s, col)
}

pub(super) fn opt_uuid_col(row: &PgRow, col: &str) -> StoreResult<Option<Uuid>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| parse_uuid(&s, col)).transpose()
}

/// Marks `units` changed for the transitioner (only those still open when `open_only`).
///
/// Rows are locked in id order, as `lock` does: transactions that each change several
/// units then wait on each other at most in one direction and never deadlock (a deadlock
/// costs PostgreSQL's `deadlock_timeout`, 1 s, before one side is aborted and retried).
pub(super) async fn mark_changed(
    conn: &mut PgConnection,
    units: &[String],
    open_only: bool,
) -> StoreResult<()> {
    if units.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE units SET dirty = dirty + 1 WHERE id IN (SELECT id FROM units \
         WHERE id = ANY($1) AND (NOT $2 OR state = 'open') ORDER BY id FOR UPDATE)",
    )
    .bind(units)
    .bind(open_only)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rows a transaction locks in id order, table by table, before changing them: workers
/// first, then units (a lease and a report lock their worker first; a batch of verdicts every
/// worker it may credit, then its units).
#[derive(Clone, Copy)]
pub(super) enum Rows {
    Workers,
    Units,
}

/// Locks `ids` of `rows` in id order, before a transaction changes them in statements of its
/// own.
pub(super) async fn lock(conn: &mut PgConnection, rows: Rows, ids: &[String]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = match rows {
        Rows::Workers => "SELECT id FROM workers WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        Rows::Units => "SELECT id FROM units WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    };
    sqlx::query(sql).bind(ids).execute(&mut *conn).await?;
    Ok(())
}

/// Ids as a TEXT[] parameter, for `= ANY($n)`.
pub(super) fn ids<'a>(ids: impl IntoIterator<Item = &'a Uuid>) -> Vec<String> {
    ids.into_iter().map(Uuid::to_string).collect()
}

pub(super) fn job_state(s: &str) -> StoreResult<JobState> {
    JobState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("job state {s}")))
}

pub(super) fn job_from_row(row: &PgRow) -> StoreResult<JobRow> {
    let state: String = row.try_get("state")?;
    let params: String = row.try_get("params")?;
    let u = |c: &str| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(c)? as u64) };
    let q = |c: &str| -> StoreResult<u32> { Ok(row.try_get::<i64, _>(c)? as u32) };
    Ok(JobRow {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        app: row.try_get("app")?,
        params: serde_json::from_str::<Value>(&params)
            .map_err(|e| StoreError::Corrupt(format!("params: {e}")))?,
        state: job_state(&state)?,
        priority: row.try_get::<i64, _>("priority")? as i32,
        redundancy: Redundancy {
            min_quorum: q("min_quorum")?,
            target_results: q("target_results")?,
            max_error_results: q("max_error_results")?,
            max_total_results: q("max_total_results")?,
            adaptive: row.try_get("adaptive")?,
            distinct_owners: row.try_get("distinct_owners")?,
        },
        unit_timeout_ms: row.try_get("unit_timeout_ms")?,
        unit_count: u("unit_count")?,
        units_created: u("units_created")?,
        units_done: u("units_done")?,
        units_failed: u("units_failed")?,
        tasks_created: u("tasks_created")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        owner: opt_uuid_col(row, "owner")?,
    })
}

pub(super) fn worker_from_row(row: &PgRow) -> StoreResult<WorkerRow> {
    let apps: String = row.try_get("apps")?;
    let u = |c: &str| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(c)? as u64) };
    Ok(WorkerRow {
        id: uuid_col(row, "id")?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        os: row.try_get("os")?,
        arch: row.try_get("arch")?,
        cores: row.try_get::<i64, _>("cores")? as u32,
        apps: serde_json::from_str(&apps).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        last_seen: row.try_get("last_seen")?,
        in_flight: 0,
        valid: u("valid")?,
        invalid: u("invalid")?,
        errors: u("errors")?,
        timeouts: u("timeouts")?,
        credit: row.try_get("credit")?,
        rac: row.try_get("rac")?,
        rac_time: row.try_get("rac_time")?,
        streak: u("streak")?,
        quota: row.try_get::<i64, _>("quota")? as u32,
        banned: row.try_get("banned")?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_job(&self, job: NewJob, now: Millis) -> StoreResult<JobRow> {
        retry("create_job", || self.create_job_once(&job, now)).await
    }

    async fn job(&self, id: Uuid) -> StoreResult<Option<JobRow>> {
        self.job_by_id(id).await
    }

    async fn jobs(&self, limit: u32) -> StoreResult<Vec<JobRow>> {
        self.list_jobs(limit).await
    }

    async fn units_in_progress(
        &self,
        job_ids: &[Uuid],
    ) -> StoreResult<std::collections::HashMap<Uuid, u64>> {
        self.count_units_in_progress(job_ids).await
    }

    async fn jobs_owned_by(&self, owner: Uuid, limit: u32) -> StoreResult<Vec<JobRow>> {
        self.jobs_of(owner, limit).await
    }

    async fn create_submitter(
        &self,
        id: Uuid,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<super::SubmitterRow> {
        self.insert_submitter(id, name, token_hash, now).await
    }

    async fn submitters(&self) -> StoreResult<Vec<super::SubmitterRow>> {
        self.list_submitters().await
    }

    async fn submitter_by_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<super::SubmitterRow>> {
        self.submitter_by_hash(hash).await
    }

    async fn revoke_submitter(
        &self,
        id: Uuid,
        now: Millis,
    ) -> StoreResult<Option<super::SubmitterRow>> {
        self.revoke(id, now).await
    }

    async fn unit_map(
        &self,
        job: &JobRow,
        per_cell: u64,
    ) -> StoreResult<sparecycles_protocol::dashboard::UnitMap> {
        self.dashboard_unit_map(job, per_cell).await
    }

    async fn fleet(
        &self,
        online_since: Millis,
    ) -> StoreResult<sparecycles_protocol::dashboard::FleetView> {
        self.dashboard_fleet(online_since).await
    }

    async fn set_job_state(
        &self,
        id: Uuid,
        from: &[JobState],
        to: JobState,
        now: Millis,
    ) -> StoreResult<Option<JobRow>> {
        retry("set_job_state", || {
            self.set_job_state_once(id, from, to, now)
        })
        .await
    }

    async fn enroll(&self, worker: NewWorker, now: Millis) -> StoreResult<()> {
        self.enroll_worker(&worker, now).await
    }

    async fn worker_by_token_hash(&self, hash: &str) -> StoreResult<Option<WorkerRow>> {
        self.worker_by_hash(hash).await
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.list_workers().await
    }

    async fn lease(&self, ask: LeaseAsk<'_>, now: Millis) -> StoreResult<Vec<LeasedTask>> {
        let (mut leased, frontier) = self.lease_once(&ask, now).await?;
        if frontier.is_empty() || leased.len() as u32 >= ask.max {
            return Ok(leased);
        }
        // Jobs whose created units ran out grow in transactions of their own (see
        // `lease::grow`), then the lease takes the rest from them.
        let mut grown = false;
        for f in &frontier {
            grown |= retry("grow", || async {
                let mut tx = self.pool.begin().await?;
                let grown = lease::grow(&mut tx, f, ask.batch_units, now).await?;
                tx.commit().await?;
                Ok(grown)
            })
            .await?;
        }
        if grown {
            let rest = LeaseAsk {
                max: ask.max - leased.len() as u32,
                ..ask
            };
            match self.lease_once(&rest, now).await {
                Ok((more, _)) => leased.extend(more),
                // The first part is committed: the worker gets it, and asks again.
                Err(e) if !leased.is_empty() => {
                    tracing::warn!(error = %e, "leasing from grown jobs failed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(leased)
    }

    async fn leased_to(
        &self,
        worker: Uuid,
        leased_before: Millis,
        now: Millis,
    ) -> StoreResult<Vec<LeasedTask>> {
        let rows = sqlx::query(
            "SELECT t.id, t.job_id, t.unit_id, t.unit_seq, t.deadline FROM tasks t \
             JOIN units u ON u.id = t.unit_id JOIN jobs j ON j.id = t.job_id \
             WHERE t.worker_id = $1 AND t.state = 'leased' AND t.leased_at <= $2 \
               AND t.deadline > $3 AND u.state = 'open' AND j.state IN ('queued', 'running') \
             ORDER BY t.id",
        )
        .bind(worker.to_string())
        .bind(leased_before)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease::leased_row).collect()
    }

    async fn heartbeat(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>> {
        self.heartbeat_tasks(worker, tasks, now).await
    }

    async fn release(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>> {
        retry("release", || self.release_once(worker, tasks, now)).await
    }

    async fn report_targets(&self, tasks: &[Uuid]) -> StoreResult<Vec<ReportTarget>> {
        self.targets(tasks).await
    }

    async fn record_results(
        &self,
        worker: Uuid,
        results: Vec<(Uuid, Outcome)>,
        _policy: &TrustPolicy,
        now: Millis,
    ) -> StoreResult<Recorded> {
        // Every unit goes to the transitioner (the leader's, with several coordinators): the
        // decision on the spot is the SQLite store's, for its single writer's sake.
        retry("record_results", || self.record_once(worker, &results, now)).await
    }

    async fn spare_suspects(&self, who: Suspects) -> StoreResult<u64> {
        retry("spare_suspects", || self.spare_once(who)).await
    }

    async fn unban(&self, worker: Uuid) -> StoreResult<bool> {
        self.unban_worker(worker).await
    }

    async fn expire_tasks(&self, now: Millis) -> StoreResult<u64> {
        retry("expire_tasks", || self.expire_once(now)).await
    }

    async fn dirty_units(&self, limit: u32) -> StoreResult<Vec<DirtyUnit>> {
        self.read_dirty_units(limit).await
    }

    async fn apply_verdicts(
        &self,
        verdicts: Vec<UnitVerdict>,
        policy: &TrustPolicy,
        now: Millis,
    ) -> StoreResult<bool> {
        retry("apply_verdicts", || self.apply_once(&verdicts, policy, now)).await
    }

    async fn jobs_to_assemble(&self) -> StoreResult<Vec<JobRow>> {
        self.assemblable_jobs().await
    }

    async fn canonical_outputs(
        &self,
        job_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Value)>> {
        self.read_canonical_outputs(job_id, from_seq, limit).await
    }

    async fn complete_job(
        &self,
        job_id: Uuid,
        content_type: &str,
        body: &[u8],
        now: Millis,
    ) -> StoreResult<()> {
        retry("complete_job", || {
            self.complete_once(job_id, content_type, body, now)
        })
        .await
    }

    async fn fail_job(&self, job_id: Uuid, reason: &str, now: Millis) -> StoreResult<()> {
        self.fail(job_id, reason, now).await
    }

    async fn job_result(&self, job_id: Uuid) -> StoreResult<Option<(String, Vec<u8>)>> {
        self.result_of(job_id).await
    }

    async fn put_module(&self, sha256: &str, bytes: &[u8], now: Millis) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO modules (sha256, bytes, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn module(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM modules WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("bytes")?)).transpose()
    }

    async fn try_lead(&self) -> StoreResult<bool> {
        self.try_lead_once().await
    }
}
