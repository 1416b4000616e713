//! Jobs, workers and results: creation, reads, state changes, and the bulk creation of units
//! and tasks that creation and leasing share.

use std::collections::HashMap;

use serde_json::Value;
use sparecycles_protocol::{JobState, Millis};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{
    INSERT_CHUNK, JOB_COLUMNS, PostgresStore, job_from_row, opt_uuid_col, worker_from_row,
};
use crate::store::{JobRow, NewJob, NewWorker, StoreError, StoreResult, WorkerRow};

/// Creates the next `n` units of a job with `target` unsent tasks each; adaptive jobs start
/// each unit with one task and replicate it when an untrusted worker leases it. The caller
/// holds the job row's lock, so two coordinators never create the same sequence numbers.
pub(super) async fn materialize(
    conn: &mut PgConnection,
    job_id: Uuid,
    from_seq: u64,
    n: u64,
    target: u32,
    adaptive: bool,
    now: Millis,
) -> StoreResult<()> {
    let target = if adaptive { 1 } else { target };
    if n == 0 {
        return Ok(());
    }
    let job = job_id.to_string();
    let units: Vec<(String, i64)> = (from_seq..from_seq + n)
        .map(|seq| (Uuid::now_v7().to_string(), seq as i64))
        .collect();
    for chunk in units.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("INSERT INTO units (id, job_id, seq, state, replicated) ");
        qb.push_values(chunk, |mut b, (id, seq)| {
            b.push_bind(id.clone())
                .push_bind(job.clone())
                .push_bind(*seq)
                .push("'open'")
                .push_bind(!adaptive);
        });
        qb.build().execute(&mut *conn).await?;
    }
    insert_tasks(
        conn,
        &job,
        units
            .iter()
            .flat_map(|(id, seq)| std::iter::repeat_n((id.as_str(), *seq), target as usize)),
        now,
    )
    .await?;
    sqlx::query(
        "UPDATE jobs SET units_created = units_created + $1, tasks_created = tasks_created + $2, \
         updated_at = $3 WHERE id = $4",
    )
    .bind(n as i64)
    .bind((n * target as u64) as i64)
    .bind(now)
    .bind(&job)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_tasks<'a>(
    conn: &mut PgConnection,
    job: &str,
    units: impl Iterator<Item = (&'a str, i64)>,
    now: Millis,
) -> StoreResult<()> {
    let rows: Vec<(String, &str, i64)> = units
        .map(|(unit, seq)| (Uuid::now_v7().to_string(), unit, seq))
        .collect();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO tasks (id, job_id, unit_id, unit_seq, state, created_at) ",
        );
        qb.push_values(chunk, |mut b, (id, unit, seq)| {
            b.push_bind(id.clone())
                .push_bind(job.to_owned())
                .push_bind(unit.to_string())
                .push_bind(*seq)
                .push("'unsent'")
                .push_bind(now);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

async fn job_in(conn: &mut PgConnection, id: Uuid) -> StoreResult<Option<JobRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(job_from_row).transpose()
}

impl PostgresStore {
    pub(super) async fn create_job_once(&self, job: &NewJob, now: Millis) -> StoreResult<JobRow> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, name, app, params, state, priority, min_quorum, target_results, \
             max_error_results, max_total_results, unit_timeout_ms, unit_count, created_at, \
             updated_at, adaptive, distinct_owners, owner) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15)",
        )
        .bind(job.id.to_string())
        .bind(&job.name)
        .bind(&job.app)
        .bind(job.params.to_string())
        .bind(job.priority as i64)
        .bind(job.redundancy.min_quorum as i64)
        .bind(job.redundancy.target_results as i64)
        .bind(job.redundancy.max_error_results as i64)
        .bind(job.redundancy.max_total_results as i64)
        .bind(job.unit_timeout_ms)
        .bind(job.unit_count as i64)
        .bind(now)
        .bind(job.redundancy.adaptive)
        .bind(job.redundancy.distinct_owners)
        .bind(job.owner.map(|o| o.to_string()))
        .execute(&mut *tx)
        .await?;
        materialize(
            &mut tx,
            job.id,
            0,
            job.initial_units.min(job.unit_count),
            job.redundancy.target_results,
            job.redundancy.adaptive,
            now,
        )
        .await?;
        let row = job_in(&mut tx, job.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {} vanished", job.id)))?;
        tx.commit().await?;
        Ok(row)
    }

    pub(super) async fn job_by_id(&self, id: Uuid) -> StoreResult<Option<JobRow>> {
        let mut conn = self.pool.acquire().await?;
        job_in(&mut conn, id).await
    }

    pub(super) async fn list_jobs(&self, limit: u32) -> StoreResult<Vec<JobRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1"
        )))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(super) async fn count_units_in_progress(
        &self,
        job_ids: &[Uuid],
    ) -> StoreResult<std::collections::HashMap<Uuid, u64>> {
        if job_ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<String> = job_ids.iter().map(Uuid::to_string).collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT job_id, COUNT(DISTINCT unit_id) FROM tasks WHERE state = 'leased' \
             AND job_id = ANY($1) GROUP BY job_id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, n)| {
                let id = Uuid::parse_str(&id)
                    .map_err(|e| crate::store::StoreError::Corrupt(format!("job_id: {e}")))?;
                Ok((id, n as u64))
            })
            .collect()
    }

    pub(super) async fn set_job_state_once(
        &self,
        id: Uuid,
        from: &[JobState],
        to: JobState,
        now: Millis,
    ) -> StoreResult<Option<JobRow>> {
        let from: Vec<String> = from.iter().map(|s| s.as_str().to_owned()).collect();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE jobs SET state = $1, updated_at = $2, \
             finished_at = CASE WHEN $1 IN ('completed', 'failed', 'canceled') THEN $2 ELSE finished_at END \
             WHERE id = $3 AND state = ANY($4)",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id.to_string())
        .bind(&from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 && to == JobState::Canceled {
            sqlx::query(
                "UPDATE tasks SET state = 'aborted' WHERE job_id = $1 AND state = 'unsent'",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let row = job_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub(super) async fn enroll_worker(&self, w: &NewWorker, now: Millis) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workers (id, token_hash, name, owner, os, arch, cores, apps, created_at, \
             last_seen, rac_time, quota) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn worker_by_hash(&self, hash: &str) -> StoreResult<Option<WorkerRow>> {
        let row = sqlx::query("SELECT * FROM workers WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(worker_from_row).transpose()
    }

    pub(super) async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        let mut workers: Vec<WorkerRow> =
            rows.iter().map(worker_from_row).collect::<Result<_, _>>()?;
        let counts = sqlx::query(
            "SELECT worker_id, COUNT(*) AS n FROM tasks WHERE state = 'leased' GROUP BY worker_id",
        )
        .fetch_all(&self.pool)
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

    pub(super) async fn unban_worker(&self, worker: Uuid) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE workers SET banned = FALSE, invalid = 0, streak = 0, quota = GREATEST(quota, 2) \
             WHERE id = $1",
        )
        .bind(worker.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub(super) async fn assemblable_jobs(&self) -> StoreResult<Vec<JobRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running', 'paused') \
             AND units_done = unit_count"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(super) async fn read_canonical_outputs(
        &self,
        job_id: Uuid,
        from_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Value)>> {
        let rows = sqlx::query(
            "SELECT u.seq, t.output FROM units u JOIN tasks t ON t.id = u.canonical_task \
             WHERE u.job_id = $1 AND u.seq >= $2 ORDER BY u.seq LIMIT $3",
        )
        .bind(job_id.to_string())
        .bind(from_seq as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let seq = r.try_get::<i64, _>("seq")? as u64;
                let out: Option<String> = r.try_get("output")?;
                let out =
                    out.ok_or_else(|| StoreError::Corrupt(format!("unit {seq}: no output")))?;
                let v = serde_json::from_str(&out)
                    .map_err(|e| StoreError::Corrupt(format!("unit {seq}: {e}")))?;
                Ok((seq, v))
            })
            .collect()
    }

    pub(super) async fn complete_once(
        &self,
        job_id: Uuid,
        content_type: &str,
        body: &[u8],
        now: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO job_results (job_id, content_type, body, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (job_id) DO UPDATE SET \
             content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = EXCLUDED.created_at",
        )
        .bind(job_id.to_string())
        .bind(content_type)
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'completed', finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND state IN ('queued', 'running', 'paused')",
        )
        .bind(now)
        .bind(job_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn fail(&self, job_id: Uuid, reason: &str, now: Millis) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'failed', error = $1, finished_at = $2, updated_at = $2 \
             WHERE id = $3 AND state IN ('queued', 'running', 'paused')",
        )
        .bind(reason)
        .bind(now)
        .bind(job_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn result_of(&self, job_id: Uuid) -> StoreResult<Option<(String, Vec<u8>)>> {
        let row = sqlx::query("SELECT content_type, body FROM job_results WHERE job_id = $1")
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("content_type")?, r.try_get("body")?)))
            .transpose()
    }
}
