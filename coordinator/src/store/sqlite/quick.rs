//! Reads on the hot path of every call (a worker's token, a report's tasks, the tasks a lease
//! call says the worker holds) run inline on the calling thread with connections of their own.
//! Each takes tens of microseconds; through sqlx it was a hand-off to a pool thread and back,
//! whose thread wake-ups cost more than the read
//! (issue 8, W1 profile: the reader threads switched 60,000 times in a 50,000-unit run).
//! So does a job's row (every job page, and the transitioner's look for jobs to assemble).
//! The transitioner's read of changed units, the assembler's read of canonical outputs, a
//! job's result and its units in progress run here too, on the blocking pool: through sqlx
//! each of their rows was a hand-off of its own. The dashboard's reads stay on the pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};
use uuid::Uuid;

use std::collections::HashMap;

use super::lease::leased_at;
use super::{JOB_COLUMNS, id_list, job_from_row, job_state, parse_opt_uuid, parse_uuid};
use crate::scheduler::validate::{TaskSnapshot, TaskState};
use crate::store::{
    DirtyUnit, JobRow, LeasedTask, ReportTarget, StoreError, StoreResult, WorkerRow,
};

/// Idle connections kept for reuse; more are opened while more callers read at once.
const KEEP: usize = 4;

pub(super) struct QuickReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for QuickReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickReads")
            .field("path", &self.path)
            .finish()
    }
}

const WORKER_COLUMNS: &str = "id, name, owner, os, arch, cores, apps, created_at, last_seen, \
    valid, invalid, errors, timeouts, credit, rac, rac_time, streak, quota, banned";

fn worker_at(r: &Row) -> StoreResult<WorkerRow> {
    let apps: String = r.get(6)?;
    let u = |i: usize| -> StoreResult<u64> { Ok(r.get::<_, i64>(i)? as u64) };
    Ok(WorkerRow {
        id: parse_uuid(&r.get::<_, String>(0)?, "id")?,
        name: r.get(1)?,
        owner: r.get(2)?,
        os: r.get(3)?,
        arch: r.get(4)?,
        cores: r.get::<_, i64>(5)? as u32,
        apps: serde_json::from_str(&apps)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("apps: {e}")))?,
        created_at: r.get(7)?,
        last_seen: r.get(8)?,
        in_flight: 0,
        valid: u(9)?,
        invalid: u(10)?,
        errors: u(11)?,
        timeouts: u(12)?,
        credit: r.get(13)?,
        rac: r.get(14)?,
        rac_time: r.get(15)?,
        streak: u(16)?,
        quota: r.get::<_, i64>(17)? as u32,
        banned: r.get(18)?,
    })
}

impl QuickReads {
    pub fn new(path: &Path) -> Self {
        QuickReads {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        super::plan_once(&conn)?;
        Ok(conn)
    }

    /// Closes the idle connections (at the store's close; a read after it opens a new one).
    pub fn close(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Runs `f` with an idle connection, or a new one if none is idle.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEEP {
            idle.push(conn);
        }
        out
    }

    /// One job: the view of every job page, and the transitioner's after each assembly.
    pub fn job(&self, id: Uuid) -> StoreResult<Option<JobRow>> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
            stmt.query_and_then([id.to_string()], |r| job_from_row(r))?
                .next()
                .transpose()
        })
    }

    /// Unfinished jobs whose every unit is done: one or two, right after the verdict that
    /// decided their last unit.
    pub fn jobs_to_assemble(&self) -> StoreResult<Vec<JobRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running', 'paused') \
                 AND units_done = unit_count"
            ))?;
            stmt.query_and_then([], |r| job_from_row(r))?.collect()
        })
    }

    /// Units with a leased task, per job of `job_ids` (a JSON list).
    pub fn units_in_progress(&self, job_ids: &str) -> StoreResult<HashMap<Uuid, u64>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT job_id, COUNT(DISTINCT unit_id) FROM tasks WHERE state = 'leased' \
                 AND job_id IN (SELECT value FROM json_each(?1)) GROUP BY job_id",
            )?;
            stmt.query_and_then([job_ids], |r| {
                let job = parse_uuid(&r.get::<_, String>(0)?, "job_id")?;
                Ok((job, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
    }

    /// A finished job's result: its content type and body.
    pub fn job_result(&self, job_id: Uuid) -> StoreResult<Option<(String, Vec<u8>)>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT content_type, body FROM job_results WHERE job_id = ?1")?;
            let mut rows = stmt.query([job_id.to_string()])?;
            rows.next()?.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose()
        })
    }

    pub fn worker_by_token_hash(&self, hash: &str) -> StoreResult<Option<WorkerRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {WORKER_COLUMNS} FROM workers WHERE token_hash = ?1"
            ))?;
            let mut rows = stmt.query([hash])?;
            rows.next()?.map(worker_at).transpose()
        })
    }

    /// Every worker, oldest first (without `in_flight`).
    pub fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {WORKER_COLUMNS} FROM workers ORDER BY created_at"
            ))?;
            stmt.query_and_then([], worker_at)?.collect()
        })
    }

    /// Tasks leased to `worker` before `leased_before` and still worth computing (the lease
    /// call's "resend lost results", on every lease that names what the worker holds).
    pub fn leased_to(
        &self,
        worker: Uuid,
        leased_before: i64,
        now: i64,
    ) -> StoreResult<Vec<LeasedTask>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.id, t.job_id, t.unit_id, t.unit_seq, t.deadline FROM tasks t \
                 JOIN units u ON u.id = t.unit_id JOIN jobs j ON j.id = t.job_id \
                 WHERE t.worker_id = ?1 AND t.state = 'leased' AND t.leased_at <= ?2 \
                   AND t.deadline > ?3 AND u.state = 'open' AND j.state IN ('queued', 'running') \
                 ORDER BY t.id",
            )?;
            stmt.query_and_then(
                rusqlite::params![worker.to_string(), leased_before, now],
                leased_at,
            )?
            .collect()
        })
    }

    pub fn report_targets(&self, tasks: &[Uuid]) -> StoreResult<Vec<ReportTarget>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.id, t.job_id, t.unit_seq, t.worker_id, t.state, u.state = 'open', \
                 j.state FROM tasks t JOIN units u ON u.id = t.unit_id \
                 JOIN jobs j ON j.id = t.job_id WHERE t.id IN (SELECT value FROM json_each(?1))",
            )?;
            let mut rows = stmt.query([id_list(tasks)])?;
            let mut out = Vec::with_capacity(tasks.len());
            while let Some(r) = rows.next()? {
                let worker: Option<String> = r.get(3)?;
                out.push(ReportTarget {
                    task_id: parse_uuid(&r.get::<_, String>(0)?, "id")?,
                    job_id: parse_uuid(&r.get::<_, String>(1)?, "job_id")?,
                    unit_seq: r.get::<_, i64>(2)? as u64,
                    worker_id: parse_opt_uuid(worker, "worker_id")?,
                    task_state: r.get(4)?,
                    unit_open: r.get(5)?,
                    job_state: job_state(&r.get::<_, String>(6)?)?,
                });
            }
            Ok(out)
        })
    }

    /// Units whose tasks changed since their last verdict, with all their tasks.
    pub fn dirty_units(&self, limit: u32) -> StoreResult<Vec<DirtyUnit>> {
        self.with(|conn| {
            // One read transaction: the units and their tasks from the same snapshot.
            let tx = conn.unchecked_transaction()?;
            let mut out: Vec<DirtyUnit> = Vec::new();
            let mut index = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT u.id, u.job_id, u.seq, u.state = 'open', u.dirty, u.replicated, \
                     j.state FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.dirty > 0 \
                     LIMIT ?1",
                )?;
                let mut rows = stmt.query([limit as i64])?;
                while let Some(r) = rows.next()? {
                    let unit_id = parse_uuid(&r.get::<_, String>(0)?, "id")?;
                    let open: bool = r.get(3)?;
                    index.insert(unit_id, out.len());
                    out.push(DirtyUnit {
                        unit_id,
                        job_id: parse_uuid(&r.get::<_, String>(1)?, "job_id")?,
                        seq: r.get::<_, i64>(2)? as u64,
                        open: open && !job_state(&r.get::<_, String>(6)?)?.is_final(),
                        changes: r.get(4)?,
                        replicated: r.get(5)?,
                        tasks: Vec::new(),
                    });
                }
            }
            if out.is_empty() {
                return Ok(out);
            }
            let mut stmt = tx.prepare_cached(
                "SELECT id, unit_id, worker_id, state, output, error, spared FROM tasks \
                 WHERE unit_id IN (SELECT value FROM json_each(?1)) \
                 ORDER BY reported_at IS NULL, reported_at, id",
            )?;
            let mut rows = stmt.query([id_list(index.keys())])?;
            while let Some(r) = rows.next()? {
                let unit = parse_uuid(&r.get::<_, String>(1)?, "unit_id")?;
                let state: String = r.get(3)?;
                let worker: Option<String> = r.get(2)?;
                let output: Option<String> = r.get(4)?;
                let snapshot = TaskSnapshot {
                    id: parse_uuid(&r.get::<_, String>(0)?, "id")?,
                    worker_id: parse_opt_uuid(worker, "worker_id")?,
                    state: TaskState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("task state {state}")))?,
                    output: output
                        .map(|o| serde_json::from_str(&o))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("output: {e}")))?,
                    error: r.get(5)?,
                    suspect: r.get(6)?,
                };
                if let Some(&i) = index.get(&unit) {
                    out[i].tasks.push(snapshot);
                }
            }
            Ok(out)
        })
    }

    /// Up to `limit` canonical outputs of a job's units from `from_seq` on, in order.
    pub fn canonical_outputs(
        &self,
        job_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, serde_json::Value)>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.seq, t.output FROM units u JOIN tasks t ON t.id = u.canonical_task \
                 WHERE u.job_id = ?1 AND u.seq >= ?2 ORDER BY u.seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(rusqlite::params![
                job_id.to_string(),
                from_seq as i64,
                limit as i64
            ])?;
            let mut out = Vec::with_capacity(limit as usize);
            while let Some(r) = rows.next()? {
                let seq = r.get::<_, i64>(0)? as u64;
                let output: Option<String> = r.get(1)?;
                let output =
                    output.ok_or_else(|| StoreError::Corrupt(format!("unit {seq}: no output")))?;
                let value = serde_json::from_str(&output)
                    .map_err(|e| StoreError::Corrupt(format!("unit {seq}: {e}")))?;
                out.push((seq, value));
            }
            Ok(out)
        })
    }
}
