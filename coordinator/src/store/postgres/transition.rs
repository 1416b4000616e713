//! The transitioner's writes on PostgreSQL: timeouts, reading units marked for decision, and
//! applying verdicts. Only the leading coordinator runs them (see `lead.rs`), but each stays
//! safe beside concurrent reports: a verdict clears a unit's change mark only if no result
//! arrived since it was read, and decides a unit only while it is still open.

use std::collections::{BTreeMap, HashMap, HashSet};

use sparecycles_protocol::Millis;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::jobs::insert_tasks;
use super::{
    PostgresStore, Rows, ids, job_state, lock, mark_changed, opt_uuid_col, trust, uuid_col,
};
use crate::scheduler::trust::TrustPolicy;
use crate::scheduler::validate::{Decision, TaskSnapshot, TaskState};
use crate::store::{DirtyUnit, StoreError, StoreResult, UnitVerdict, valid_effects};

impl PostgresStore {
    pub(super) async fn expire_once(&self, now: Millis) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        // The overdue tasks' workers first, as a report takes its worker before its tasks
        // (`Rows`): a report arriving as its task times out then waits, and never holds the
        // task while this waits for the worker.
        let workers: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT worker_id FROM tasks WHERE state = 'leased' AND deadline < $1 \
             AND worker_id IS NOT NULL",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if workers.is_empty() {
            return Ok(0);
        }
        lock(&mut tx, Rows::Workers, &workers).await?;
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'timed_out' WHERE state = 'leased' AND deadline < $1 \
             RETURNING unit_id, worker_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut units = Vec::with_capacity(rows.len());
        let mut per_worker: BTreeMap<String, i64> = BTreeMap::new();
        for r in &rows {
            units.push(uuid_col(r, "unit_id")?);
            if let Some(w) = r.try_get::<Option<String>, _>("worker_id")? {
                *per_worker.entry(w).or_default() += 1;
            }
        }
        mark_changed(&mut tx, &ids(&units), false).await?;
        for (w, n) in per_worker {
            trust::penalize(&mut tx, &w, n, "timeouts").await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    pub(super) async fn read_dirty_units(&self, limit: u32) -> StoreResult<Vec<DirtyUnit>> {
        let units = sqlx::query(
            "SELECT u.id, u.job_id, u.seq, u.state, u.dirty, u.replicated, j.state AS job_state FROM units u \
             JOIN jobs j ON j.id = u.job_id WHERE u.dirty > 0 LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<DirtyUnit> = Vec::with_capacity(units.len());
        let mut index = HashMap::new();
        for r in &units {
            let state: String = r.try_get("state")?;
            let js: String = r.try_get("job_state")?;
            let unit_id = uuid_col(r, "id")?;
            index.insert(unit_id, out.len());
            out.push(DirtyUnit {
                unit_id,
                job_id: uuid_col(r, "job_id")?,
                seq: r.try_get::<i64, _>("seq")? as u64,
                open: state == "open" && !job_state(&js)?.is_final(),
                changes: r.try_get("dirty")?,
                replicated: r.try_get("replicated")?,
                tasks: Vec::new(),
            });
        }
        let tasks = sqlx::query(
            "SELECT id, unit_id, worker_id, state, output, error, spared FROM tasks \
             WHERE unit_id = ANY($1) \
             ORDER BY reported_at IS NULL, reported_at, id",
        )
        .bind(ids(index.keys()))
        .fetch_all(&self.pool)
        .await?;
        for r in &tasks {
            let unit = uuid_col(r, "unit_id")?;
            let state: String = r.try_get("state")?;
            let output: Option<String> = r.try_get("output")?;
            let snapshot = TaskSnapshot {
                id: uuid_col(r, "id")?,
                worker_id: opt_uuid_col(r, "worker_id")?,
                state: TaskState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("task state {state}")))?,
                output: output
                    .map(|o| serde_json::from_str(&o))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("output: {e}")))?,
                error: r.try_get("error")?,
                suspect: r.try_get("spared")?,
            };
            if let Some(&i) = index.get(&unit) {
                out[i].tasks.push(snapshot);
            }
        }
        Ok(out)
    }

    pub(super) async fn apply_once(
        &self,
        verdicts: &[UnitVerdict],
        policy: &TrustPolicy,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The workers it may credit, then every unit of the batch, each in id order: see
        // `Rows`.
        lock(
            &mut tx,
            Rows::Workers,
            &ids(valid_effects(verdicts, |_| true).workers.keys()),
        )
        .await?;
        lock(
            &mut tx,
            Rows::Units,
            &ids(verdicts.iter().map(|v| &v.unit_id)),
        )
        .await?;
        let mut deltas = HashMap::new();
        let mut jobs: BTreeMap<String, JobDelta> = BTreeMap::new();
        // Set-based, as on SQLite: a statement per kind of change for the whole batch, not a
        // few per unit (a round trip each: 2.3 ms a unit, which bound PostgreSQL's W1 to ~400
        // units/s).
        let (mut clear_ids, mut clear_changes) = (Vec::new(), Vec::new());
        let (mut done_ids, mut done_canonical, mut done_solo) =
            (Vec::new(), Vec::new(), Vec::new());
        for v in verdicts {
            let unit = v.unit_id.to_string();
            let job = v.job_id.to_string();
            match &v.decision {
                Decision::Pending { new_tasks } => {
                    clear_ids.push(unit.clone());
                    clear_changes.push(v.changes);
                    if *new_tasks > 0 {
                        insert_tasks(
                            &mut tx,
                            &job,
                            std::iter::repeat_n((unit.as_str(), v.seq as i64), *new_tasks as usize),
                            now,
                        )
                        .await?;
                        jobs.entry(job).or_default().tasks_created += *new_tasks as i64;
                    }
                }
                Decision::Valid { canonical, .. } => {
                    done_ids.push(unit);
                    done_canonical.push(canonical.to_string());
                    done_solo.push(v.solo);
                }
                Decision::Failed { reason } => {
                    let failed = sqlx::query(
                        "UPDATE units SET state = 'failed', dirty = 0 WHERE id = $1 AND state = 'open'",
                    )
                    .bind(&unit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if failed == 0 {
                        continue;
                    }
                    let d = jobs.entry(job).or_default();
                    d.units_failed += 1;
                    d.error
                        .get_or_insert_with(|| format!("unit {} failed: {reason}", v.seq));
                }
            }
        }
        if !clear_ids.is_empty() {
            // A result that arrived after the snapshot keeps the unit marked.
            sqlx::query(
                "UPDATE units SET dirty = 0 FROM unnest($1::text[], $2::bigint[]) AS c(id, changes) \
                 WHERE units.id = c.id AND units.dirty = c.changes",
            )
            .bind(&clear_ids)
            .bind(&clear_changes)
            .execute(&mut *tx)
            .await?;
        }
        if !done_ids.is_empty() {
            // Only units still open are decided now, and only those count.
            let decided: HashSet<Uuid> = sqlx::query(
                "UPDATE units SET state = 'done', canonical_task = d.canonical, dirty = 0, \
                 solo = d.solo FROM unnest($1::text[], $2::text[], $3::bool[]) AS d(id, canonical, solo) \
                 WHERE units.id = d.id AND units.state = 'open' RETURNING units.id",
            )
            .bind(&done_ids)
            .bind(&done_canonical)
            .bind(&done_solo)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| uuid_col(r, "id"))
            .collect::<StoreResult<_>>()?;
            let effects = valid_effects(verdicts, |unit| decided.contains(&unit));
            for (job, n) in &effects.units_done {
                jobs.entry(job.to_string()).or_default().units_done += n;
            }
            sqlx::query(
                "UPDATE tasks SET state = 'aborted' WHERE unit_id = ANY($1) AND state = 'unsent'",
            )
            .bind(ids(&effects.units))
            .execute(&mut *tx)
            .await?;
            for (task_ids, verdict) in [
                (&effects.valid_tasks, "valid"),
                (&effects.invalid_tasks, "invalid"),
            ] {
                if task_ids.is_empty() {
                    continue;
                }
                sqlx::query("UPDATE tasks SET validation = $1 WHERE id = ANY($2)")
                    .bind(verdict)
                    .bind(ids(task_ids))
                    .execute(&mut *tx)
                    .await?;
            }
            deltas = effects.workers;
        }
        // Workers, then jobs (each in id order): leases lock their worker, then the jobs they
        // lease from, so taking them in the same order never deadlocks with a lease.
        for liar in trust::apply(&mut tx, deltas, policy, now).await? {
            trust::undo_solo(&mut tx, liar, now).await?;
        }
        let mut complete = false;
        for (job, d) in jobs {
            complete |= update_job(&mut tx, &job, &d, now).await?;
        }
        tx.commit().await?;
        Ok(complete)
    }
}

/// What one batch of verdicts changes about one job.
#[derive(Debug, Default)]
struct JobDelta {
    tasks_created: i64,
    units_done: i64,
    units_failed: i64,
    /// The first failed unit's reason.
    error: Option<String>,
}

async fn update_job(
    conn: &mut PgConnection,
    job: &str,
    d: &JobDelta,
    now: Millis,
) -> StoreResult<bool> {
    let decided = d.units_done + d.units_failed > 0;
    let complete: Option<bool> = sqlx::query_scalar(
        "UPDATE jobs SET tasks_created = tasks_created + $1, units_done = units_done + $2, \
         units_failed = units_failed + $3, updated_at = CASE WHEN $4 THEN $5 ELSE updated_at END \
         WHERE id = $6 RETURNING units_done = unit_count",
    )
    .bind(d.tasks_created)
    .bind(d.units_done)
    .bind(d.units_failed)
    .bind(decided)
    .bind(now)
    .bind(job)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(msg) = &d.error {
        sqlx::query(
            "UPDATE jobs SET state = CASE WHEN state IN ('completed', 'failed', 'canceled') \
             THEN state ELSE 'failed' END, error = COALESCE(error, $2), \
             finished_at = COALESCE(finished_at, $1) WHERE id = $3",
        )
        .bind(now)
        .bind(msg)
        .bind(job)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE tasks SET state = 'aborted' WHERE job_id = $1 AND state = 'unsent'")
            .bind(job)
            .execute(&mut *conn)
            .await?;
    }
    Ok(d.units_done > 0 && complete == Some(true))
}
