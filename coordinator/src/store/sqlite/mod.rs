//! The SQLite store: one file in the data dir, WAL mode. The writes on the path of every unit
//! or job (leases, reports, verdicts, new jobs, a job's end, expiry) run in group commits on a
//! writer thread of their own, through rusqlite ([`group`]); the hot reads run on connections
//! of their own ([`quick`]). Everything else (migrations, the dashboard, job lists, rare writes
//! such as enrolment or a pause) goes through sqlx pools: one writer connection, whose rare
//! transactions wait for the writer thread's lock, and a few readers. Through sqlx every
//! statement is a hand-off to a connection thread and back; on the hot path those hand-offs,
//! not SQLite, were most of the cost (issue 8, BENCHMARKS.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sparecycles_protocol::{JobState, Millis, Redundancy};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlStr};
use uuid::Uuid;

mod dashboard;
mod group;
mod lease;
mod quick;
mod submitters;
mod trust;
mod verdicts;
mod writes;

use super::{
    DirtyUnit, JobRow, LeaseAsk, LeasedTask, NewJob, NewWorker, Outcome, Recorded, ReportTarget,
    Store, StoreError, StoreResult, Suspects, UnitVerdict, WorkerRow,
};
use crate::scheduler::trust::TrustPolicy;

pub(super) const JOB_COLUMNS: &str = "id, name, app, params, state, priority, min_quorum, target_results, \
    max_error_results, max_total_results, adaptive, distinct_owners, unit_timeout_ms, unit_count, units_created, units_done, \
    units_failed, tasks_created, created_at, updated_at, finished_at, error, owner";

/// SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Rare writes (see the module comment).
    writer: SqlitePool,
    reader: SqlitePool,
    /// The hot writes, run in shared transactions (see [`group`]).
    group: tokio::sync::mpsc::Sender<group::Op>,
    /// The hot path's point reads (see [`quick`]).
    quick: std::sync::Arc<quick::QuickReads>,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../../migrations/sqlite/0001_init.sql")),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("modules"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../../migrations/sqlite/0002_modules.sql")),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("submitters"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/sqlite/0003_submitters.sql"
            )),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("tasks_by_unit"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/sqlite/0004_tasks_by_unit.sql"
            )),
            false,
        ),
        Migration::new(
            5,
            Cow::Borrowed("one_leased_index"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/sqlite/0005_one_leased_index.sql"
            )),
            false,
        ),
        Migration::new(
            6,
            Cow::Borrowed("tasks_timed_out"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../../../migrations/sqlite/0006_tasks_timed_out.sql"
            )),
            false,
        ),
    ])
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/sparecycles.db` and runs the migrations.
    pub async fn open(dir: &Path) -> StoreResult<Self> {
        let path = dir.join("sparecycles.db");
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash; only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("cache_size", "-65536")
            // The checkpointer thread checkpoints (see `group::checkpointer`).
            .pragma("wal_autocheckpoint", "0");
        // One connection for the life of the store: its thread is started here, before the
        // async threads yield to it (`cli::yield_to_the_sqlite_writer`); a replacement would be
        // started by one of them and inherit their lower priority.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(opts.clone())
            .await?;
        migrator().run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        let group = group::spawn(&path)?;
        Ok(SqliteStore {
            writer,
            reader,
            group,
            quick: std::sync::Arc::new(quick::QuickReads::new(&path)),
        })
    }

    /// Closes every connection, the pools' last, which checkpoints the WAL and removes it.
    /// Grouped writes after this fail as on a closed pool.
    pub async fn close(&self) {
        self.reader.close().await;
        let (reply, closed) = tokio::sync::oneshot::channel();
        if self.group.send(group::Op::Close { reply }).await.is_ok() {
            let _ = closed.await;
        }
        self.quick.close();
        self.writer.close().await;
    }
}

impl SqliteStore {
    /// A read of hundreds or thousands of rows, on the blocking pool: one hand-off for all of
    /// them (through sqlx each row was one).
    async fn read_in_bulk<T: Send + 'static>(
        &self,
        read: impl FnOnce(&quick::QuickReads) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let quick = self.quick.clone();
        tokio::task::spawn_blocking(move || read(&quick))
            .await
            .map_err(|e| StoreError::Corrupt(format!("bulk read: {e}")))?
    }

    /// A job's end, as one of the grouped writes.
    async fn finish(&self, job_id: Uuid, end: group::JobEnd, now: Millis) -> StoreResult<()> {
        self.grouped(|reply| group::Op::Finish {
            job_id,
            end,
            now,
            reply,
        })
        .await
    }

    /// Queues the grouped write `op` makes of its reply channel, and waits for its answer.
    async fn grouped<T>(
        &self,
        op: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<T>>) -> group::Op,
    ) -> StoreResult<T> {
        let gone = || StoreError::Db(sqlx::Error::PoolClosed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.group.send(op(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Keeps a prepared statement's plan for every binding. By default SQLite (3.47 on) plans a
/// `LIMIT ?` with the bound number and then plans the statement again whenever that parameter
/// is bound, which is every run: the lease's task pick and the transitioner's read of changed
/// units were parsed and planned anew on every call, ~6 % of the coordinator's CPU in W2 (issue
/// 8, `perf` of the coordinator: `sqlite3Reprepare` under both). Our statements name their
/// partial indexes' conditions as literals, so no plan needs a bound value.
pub(super) fn plan_once(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// A stored id, read back.
pub(super) fn parse_uuid(s: &str, col: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A stored id that may be NULL, read back.
pub(super) fn parse_opt_uuid(s: Option<String>, col: &str) -> StoreResult<Option<Uuid>> {
    s.map(|s| parse_uuid(&s, col)).transpose()
}

pub(super) fn uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    parse_uuid(&row.try_get::<String, _>(col)?, col)
}

pub(super) fn opt_uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Option<Uuid>> {
    parse_opt_uuid(row.try_get(col)?, col)
}

fn job_state(s: &str) -> StoreResult<JobState> {
    JobState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("job state {s}")))
}

/// A row's columns by name, through sqlx or rusqlite: one job mapping for both.
pub(super) trait Columns {
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn text(&self, col: &str) -> StoreResult<String> {
        self.opt_text(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("{col}: NULL")))
    }
}

impl Columns for SqliteRow {
    fn int(&self, col: &str) -> StoreResult<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(col)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, col: &str) -> StoreResult<i64> {
        Ok(self.get(col)?)
    }
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        Ok(self.get(col)?)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.get(col)?)
    }
}

pub(super) fn job_from_row(row: &impl Columns) -> StoreResult<JobRow> {
    let u = |c: &str| -> StoreResult<u64> { Ok(row.int(c)? as u64) };
    let q = |c: &str| -> StoreResult<u32> { Ok(row.int(c)? as u32) };
    let params = row.text("params")?;
    Ok(JobRow {
        id: parse_uuid(&row.text("id")?, "id")?,
        name: row.text("name")?,
        app: row.text("app")?,
        params: serde_json::from_str(&params)
            .map_err(|e| StoreError::Corrupt(format!("params: {e}")))?,
        state: job_state(&row.text("state")?)?,
        priority: row.int("priority")? as i32,
        redundancy: Redundancy {
            min_quorum: q("min_quorum")?,
            target_results: q("target_results")?,
            max_error_results: q("max_error_results")?,
            max_total_results: q("max_total_results")?,
            adaptive: row.int("adaptive")? != 0,
            distinct_owners: row.int("distinct_owners")? != 0,
        },
        unit_timeout_ms: row.int("unit_timeout_ms")?,
        unit_count: u("unit_count")?,
        units_created: u("units_created")?,
        units_done: u("units_done")?,
        units_failed: u("units_failed")?,
        tasks_created: u("tasks_created")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        finished_at: row.opt_int("finished_at")?,
        error: row.opt_text("error")?,
        owner: parse_opt_uuid(row.opt_text("owner")?, "owner")?,
    })
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`: one statement, one bind,
/// whatever the number of ids.
pub(super) fn id_list<'a>(ids: impl IntoIterator<Item = &'a Uuid>) -> String {
    let v: Vec<String> = ids.into_iter().map(Uuid::to_string).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_job(&self, job: NewJob, now: Millis) -> StoreResult<JobRow> {
        let id = job.id;
        self.grouped(|reply| group::Op::CreateJob {
            job: Box::new(job),
            now,
            reply,
        })
        .await?;
        // Committed before the answer came, so a reader's fresh snapshot holds it.
        self.job(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished after its insert")))
    }

    async fn job(&self, id: Uuid) -> StoreResult<Option<JobRow>> {
        self.quick.job(id)
    }

    async fn jobs(&self, limit: u32) -> StoreResult<Vec<JobRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?1"
        )))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
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

    async fn units_in_progress(&self, job_ids: &[Uuid]) -> StoreResult<HashMap<Uuid, u64>> {
        if job_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = id_list(job_ids);
        self.read_in_bulk(move |q| q.units_in_progress(&ids)).await
    }

    async fn set_job_state(
        &self,
        id: Uuid,
        from: &[JobState],
        to: JobState,
        now: Millis,
    ) -> StoreResult<Option<JobRow>> {
        let from_list: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let from_json = serde_json::to_string(&from_list).unwrap_or_default();
        let mut tx = self.writer.begin().await?;
        let changed = sqlx::query(
            "UPDATE jobs SET state = ?1, updated_at = ?2, \
             finished_at = CASE WHEN ?1 IN ('completed', 'failed', 'canceled') THEN ?2 ELSE finished_at END \
             WHERE id = ?3 AND state IN (SELECT value FROM json_each(?4))",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id.to_string())
        .bind(&from_json)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 && to == JobState::Canceled {
            sqlx::query(
                "UPDATE tasks SET state = 'aborted' WHERE job_id = ?1 AND state = 'unsent'",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"
        )))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn enroll(&self, w: NewWorker, now: Millis) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workers (id, token_hash, name, owner, os, arch, cores, apps, created_at, \
             last_seen, rac_time, quota) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, ?10)",
        )
        .bind(w.id.to_string())
        .bind(&w.token_hash)
        .bind(&w.name)
        .bind(&w.owner)
        .bind(&w.os)
        .bind(&w.arch)
        .bind(w.cores as i64)
        .bind(serde_json::to_string(&w.apps).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(w.quota as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn worker_by_token_hash(&self, hash: &str) -> StoreResult<Option<WorkerRow>> {
        self.quick.worker_by_token_hash(hash)
    }

    async fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        let mut workers = self.quick.workers()?;
        let counts = sqlx::query(
            "SELECT worker_id, COUNT(*) AS n FROM tasks WHERE state = 'leased' GROUP BY worker_id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut in_flight = HashMap::new();
        for r in &counts {
            if let Some(id) = opt_uuid_col(r, "worker_id")? {
                in_flight.insert(id, r.try_get::<i64, _>("n")? as u64);
            }
        }
        for w in &mut workers {
            w.in_flight = in_flight.get(&w.id).copied().unwrap_or(0);
        }
        Ok(workers)
    }

    async fn lease(&self, ask: LeaseAsk<'_>, now: Millis) -> StoreResult<Vec<LeasedTask>> {
        self.grouped(|reply| group::Op::Lease {
            ask: group::OwnedAsk::new(&ask),
            now,
            reply,
        })
        .await
    }

    async fn leased_to(
        &self,
        worker: Uuid,
        leased_before: Millis,
        now: Millis,
    ) -> StoreResult<Vec<LeasedTask>> {
        self.quick.leased_to(worker, leased_before, now)
    }

    async fn release(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE workers SET last_seen = ?1 WHERE id = ?2")
            .bind(now)
            .bind(worker.to_string())
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'unsent', worker_id = NULL, leased_at = NULL, deadline = NULL \
             WHERE id IN (SELECT value FROM json_each(?1)) AND worker_id = ?2 AND state = 'leased' \
             RETURNING id",
        )
        .bind(id_list(tasks))
        .bind(worker.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }

    async fn heartbeat(&self, worker: Uuid, tasks: &[Uuid], now: Millis) -> StoreResult<Vec<Uuid>> {
        sqlx::query("UPDATE workers SET last_seen = ?1 WHERE id = ?2")
            .bind(now)
            .bind(worker.to_string())
            .execute(&self.writer)
            .await?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT t.id FROM tasks t JOIN units u ON u.id = t.unit_id JOIN jobs j ON j.id = t.job_id \
             WHERE t.id IN (SELECT value FROM json_each(?1)) AND t.worker_id = ?2 \
               AND t.state IN ('leased', 'timed_out') AND u.state = 'open' \
               AND j.state IN ('queued', 'running', 'paused')",
        )
        .bind(id_list(tasks))
        .bind(worker.to_string())
        .fetch_all(&self.reader)
        .await?;
        let keep: Vec<Uuid> = rows
            .iter()
            .map(|r| uuid_col(r, "id"))
            .collect::<Result<_, _>>()?;
        Ok(tasks
            .iter()
            .filter(|t| !keep.contains(t))
            .copied()
            .collect())
    }

    async fn report_targets(&self, tasks: &[Uuid]) -> StoreResult<Vec<ReportTarget>> {
        self.quick.report_targets(tasks)
    }

    async fn record_results(
        &self,
        worker: Uuid,
        results: Vec<(Uuid, Outcome)>,
        policy: &TrustPolicy,
        now: Millis,
    ) -> StoreResult<Recorded> {
        self.grouped(|reply| group::Op::Record {
            worker,
            results,
            policy: policy.clone(),
            now,
            reply,
        })
        .await
    }

    async fn spare_suspects(&self, who: Suspects) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await?;
        // Spared tasks stay leased: the first valid result, the original's or the spare's, counts.
        let (seen_before, worker) = match who {
            Suspects::SilentSince(seen_before) => (seen_before, None),
            Suspects::Worker(worker) => (Millis::MIN, Some(worker.to_string())),
        };
        let units: Vec<String> = sqlx::query_scalar(
            "UPDATE tasks SET spared = 1 WHERE state = 'leased' AND spared = 0 AND worker_id IN \
             (SELECT id FROM workers WHERE last_seen < ?1 OR id = ?2) RETURNING unit_id",
        )
        .bind(seen_before)
        .bind(worker)
        .fetch_all(&mut *tx)
        .await?;
        if units.is_empty() {
            return Ok(0);
        }
        sqlx::query(
            "UPDATE units SET dirty = dirty + 1 WHERE state = 'open' \
             AND id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&units).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(units.len() as u64)
    }

    async fn unban(&self, worker: Uuid) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE workers SET banned = 0, invalid = 0, streak = 0, quota = MAX(quota, 2) WHERE id = ?1",
        )
        .bind(worker.to_string())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn expire_tasks(&self, now: Millis) -> StoreResult<u64> {
        self.grouped(|reply| group::Op::Expire { now, reply }).await
    }

    async fn dirty_units(&self, limit: u32) -> StoreResult<Vec<DirtyUnit>> {
        self.read_in_bulk(move |q| q.dirty_units(limit)).await
    }

    async fn apply_verdicts(
        &self,
        verdicts: Vec<UnitVerdict>,
        policy: &TrustPolicy,
        now: Millis,
    ) -> StoreResult<bool> {
        self.grouped(|reply| group::Op::Verdicts {
            verdicts,
            policy: policy.clone(),
            now,
            reply,
        })
        .await
    }

    async fn jobs_to_assemble(&self) -> StoreResult<Vec<JobRow>> {
        self.quick.jobs_to_assemble()
    }

    async fn canonical_outputs(
        &self,
        job_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Value)>> {
        self.read_in_bulk(move |q| q.canonical_outputs(job_id, from_seq, limit))
            .await
    }

    async fn complete_job(
        &self,
        job_id: Uuid,
        content_type: &str,
        body: &[u8],
        now: Millis,
    ) -> StoreResult<()> {
        let end = group::JobEnd::Completed {
            content_type: content_type.to_owned(),
            body: body.to_vec(),
        };
        self.finish(job_id, end, now).await
    }

    async fn fail_job(&self, job_id: Uuid, reason: &str, now: Millis) -> StoreResult<()> {
        let end = group::JobEnd::Failed {
            reason: reason.to_owned(),
        };
        self.finish(job_id, end, now).await
    }

    async fn job_result(&self, job_id: Uuid) -> StoreResult<Option<(String, Vec<u8>)>> {
        self.read_in_bulk(move |q| q.job_result(job_id)).await
    }

    async fn put_module(&self, sha256: &str, bytes: &[u8], now: Millis) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO modules (sha256, bytes, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn module(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM modules WHERE sha256 = ?1")
            .bind(sha256)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| Ok(r.try_get("bytes")?)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus};

    /// How often a cached `LIMIT ?` statement is planned again over three runs with new limits.
    fn replans(stable: bool) -> i32 {
        let conn = Connection::open_in_memory().unwrap();
        if stable {
            super::plan_once(&conn).unwrap();
        }
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        let mut stmt = conn
            .prepare_cached("SELECT x FROM t ORDER BY x LIMIT ?1")
            .unwrap();
        for limit in 1..=3 {
            let n = stmt
                .query_map([limit], |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
            assert_eq!(n, limit as usize);
        }
        stmt.get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_bound_limit_keeps_its_plan() {
        // The cost `plan_once` removes: without it, every new binding plans again.
        assert!(replans(false) >= 2);
        assert_eq!(replans(true), 0);
    }
}
