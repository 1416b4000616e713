//! What workers send after a lease: heartbeats, releases and results. Every write is
//! conditional on the task still being the caller's and in the state it expects.

use sparecycles_protocol::Millis;
use sqlx::Row;
use uuid::Uuid;

use super::{PostgresStore, ids, job_state, mark_changed, opt_uuid_col, trust, uuid_col};
use crate::store::{Outcome, Recorded, ReportTarget, StoreResult, Suspects};

impl PostgresStore {
    pub(super) async fn heartbeat_tasks(
        &self,
        worker: Uuid,
        tasks: &[Uuid],
        now: Millis,
    ) -> StoreResult<Vec<Uuid>> {
        sqlx::query("UPDATE workers SET last_seen = GREATEST(last_seen, $1) WHERE id = $2")
            .bind(now)
            .bind(worker.to_string())
            .execute(&self.pool)
            .await?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT t.id FROM tasks t JOIN units u ON u.id = t.unit_id JOIN jobs j ON j.id = t.job_id \
             WHERE t.id = ANY($1) AND t.worker_id = $2 \
               AND t.state IN ('leased', 'timed_out') AND u.state = 'open' \
               AND j.state IN ('queued', 'running', 'paused')",
        )
        .bind(ids(tasks))
        .bind(worker.to_string())
        .fetch_all(&self.pool)
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

    pub(super) async fn release_once(
        &self,
        worker: Uuid,
        tasks: &[Uuid],
        now: Millis,
    ) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE workers SET last_seen = GREATEST(last_seen, $1) WHERE id = $2")
            .bind(now)
            .bind(worker.to_string())
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'unsent', worker_id = NULL, leased_at = NULL, deadline = NULL \
             WHERE id = ANY($1) AND worker_id = $2 AND state = 'leased' RETURNING id",
        )
        .bind(ids(tasks))
        .bind(worker.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }

    pub(super) async fn targets(&self, tasks: &[Uuid]) -> StoreResult<Vec<ReportTarget>> {
        let rows = sqlx::query(
            "SELECT t.id, t.job_id, t.unit_seq, t.worker_id, t.state, u.state AS unit_state, \
             j.state AS job_state FROM tasks t JOIN units u ON u.id = t.unit_id \
             JOIN jobs j ON j.id = t.job_id WHERE t.id = ANY($1)",
        )
        .bind(ids(tasks))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let unit_state: String = r.try_get("unit_state")?;
                let js: String = r.try_get("job_state")?;
                Ok(ReportTarget {
                    task_id: uuid_col(r, "id")?,
                    job_id: uuid_col(r, "job_id")?,
                    unit_seq: r.try_get::<i64, _>("unit_seq")? as u64,
                    worker_id: opt_uuid_col(r, "worker_id")?,
                    task_state: r.try_get("state")?,
                    unit_open: unit_state == "open",
                    job_state: job_state(&js)?,
                })
            })
            .collect()
    }

    pub(super) async fn record_once(
        &self,
        worker: Uuid,
        results: &[(Uuid, Outcome)],
        now: Millis,
    ) -> StoreResult<Recorded> {
        let worker_s = worker.to_string();
        let mut tx = self.pool.begin().await?;
        // The worker's row first, as a lease and a batch of verdicts take it (`Rows`).
        sqlx::query("UPDATE workers SET last_seen = GREATEST(last_seen, $1) WHERE id = $2")
            .bind(now)
            .bind(&worker_s)
            .execute(&mut *tx)
            .await?;
        let mut recorded = Vec::with_capacity(results.len());
        let mut errors = 0i64;
        let mut units = Vec::with_capacity(results.len());
        for (task, outcome) in results {
            let (state, output, error) = outcome.columns();
            let unit: Option<String> = sqlx::query_scalar(
                "UPDATE tasks SET state = $1, output = $2, error = $3, reported_at = $4 \
                 WHERE id = $5 AND worker_id = $6 AND state IN ('leased', 'timed_out') \
                 AND EXISTS (SELECT 1 FROM units u WHERE u.id = tasks.unit_id AND u.state = 'open') \
                 RETURNING unit_id",
            )
            .bind(state)
            .bind(output)
            .bind(error)
            .bind(now)
            .bind(task.to_string())
            .bind(&worker_s)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(unit) = unit {
                units.push(unit);
                errors += !outcome.is_success() as i64;
                recorded.push(*task);
            }
        }
        // All at once and in id order, after the tasks: see `mark_changed`.
        mark_changed(&mut tx, &units, false).await?;
        if errors > 0 {
            trust::penalize(&mut tx, &worker_s, errors, "errors").await?;
        }
        tx.commit().await?;
        Ok(Recorded {
            pending: !recorded.is_empty(),
            tasks: recorded,
            ..Recorded::default()
        })
    }

    pub(super) async fn spare_once(&self, who: Suspects) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        // Spared tasks stay leased: the first valid result, the original's or the spare's, counts.
        let (seen_before, worker) = match who {
            Suspects::SilentSince(seen_before) => (seen_before, None),
            Suspects::Worker(worker) => (Millis::MIN, Some(worker.to_string())),
        };
        let units: Vec<String> = sqlx::query_scalar(
            "UPDATE tasks SET spared = TRUE WHERE state = 'leased' AND NOT spared AND worker_id IN \
             (SELECT id FROM workers WHERE last_seen < $1 OR id = $2) RETURNING unit_id",
        )
        .bind(seen_before)
        .bind(worker)
        .fetch_all(&mut *tx)
        .await?;
        if units.is_empty() {
            return Ok(0);
        }
        mark_changed(&mut tx, &units, true).await?;
        tx.commit().await?;
        Ok(units.len() as u64)
    }
}
