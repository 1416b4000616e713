//! Read-only queries behind the dashboard: a job's unit map and validation figures, fleet totals.
//! PostgreSQL version: plain reads, they take no row locks.

use sparecycles_protocol::Millis;
use sparecycles_protocol::dashboard::{FleetView, TaskStats, UnitMap};
use sqlx::Row;

use super::PostgresStore;
use crate::store::{JobRow, StoreResult};

impl PostgresStore {
    pub(super) async fn dashboard_unit_map(
        &self,
        job: &JobRow,
        per_cell: u64,
    ) -> StoreResult<UnitMap> {
        let per_cell = per_cell.max(1);
        let cells = job.unit_count.div_ceil(per_cell) as usize;
        let mut map = UnitMap {
            job_id: job.id,
            unit_count: job.unit_count,
            units_per_cell: per_cell,
            done: vec![0; cells],
            failed: vec![0; cells],
            running: vec![0; cells],
            created: vec![0; cells],
            tasks: TaskStats::default(),
        };
        let id = job.id.to_string();
        let rows = sqlx::query(
            "SELECT seq / $2 AS cell, COUNT(*) FILTER (WHERE state = 'done') AS done, \
             COUNT(*) FILTER (WHERE state = 'failed') AS failed, \
             COUNT(*) AS created FROM units WHERE job_id = $1 GROUP BY cell",
        )
        .bind(&id)
        .bind(per_cell as i64)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let cell = r.try_get::<i64, _>("cell")? as usize;
            if cell < cells {
                map.done[cell] = r.try_get::<i64, _>("done")? as u32;
                map.failed[cell] = r.try_get::<i64, _>("failed")? as u32;
                map.created[cell] = r.try_get::<i64, _>("created")? as u32;
            }
        }
        let rows = sqlx::query(
            "SELECT unit_seq / $2 AS cell, COUNT(DISTINCT unit_id) AS running FROM tasks \
             WHERE job_id = $1 AND state = 'leased' GROUP BY cell",
        )
        .bind(&id)
        .bind(per_cell as i64)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let cell = r.try_get::<i64, _>("cell")? as usize;
            if cell < cells {
                map.running[cell] = r.try_get::<i64, _>("running")? as u32;
            }
        }
        let rows = sqlx::query(
            "SELECT state, validation, COUNT(*) AS n FROM tasks WHERE job_id = $1 \
             GROUP BY state, validation",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?;
        let t = &mut map.tasks;
        for r in rows {
            let state: String = r.try_get("state")?;
            let validation: String = r.try_get("validation")?;
            let n = r.try_get::<i64, _>("n")? as u64;
            t.total += n;
            match (state.as_str(), validation.as_str()) {
                ("unsent", _) => t.unsent += n,
                ("leased", _) => t.in_flight += n,
                ("success", "valid") => t.valid += n,
                ("success", "invalid") => t.invalid += n,
                ("success", _) => t.pending += n,
                ("error", _) => t.errors += n,
                ("timed_out", _) => t.timed_out += n,
                _ => {}
            }
        }
        let inconclusive: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT t.unit_id FROM tasks t JOIN units u ON u.id = t.unit_id \
             WHERE t.job_id = $1 AND t.state = 'success' AND t.validation = 'pending' \
             AND u.state = 'open' GROUP BY t.unit_id HAVING COUNT(*) >= $2) AS decidable",
        )
        .bind(&id)
        .bind(i64::from(job.redundancy.min_quorum.max(1)))
        .fetch_one(&self.pool)
        .await?;
        t.inconclusive_units = inconclusive as u64;
        Ok(map)
    }

    pub(super) async fn dashboard_fleet(&self, online_since: Millis) -> StoreResult<FleetView> {
        let w = sqlx::query(
            "SELECT COUNT(*) AS total, \
             COUNT(*) FILTER (WHERE last_seen >= $1) AS online, \
             COALESCE(SUM(cores) FILTER (WHERE last_seen >= $1), 0)::BIGINT AS cores \
             FROM workers",
        )
        .bind(online_since)
        .fetch_one(&self.pool)
        .await?;
        let in_flight: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state = 'leased'")
                .fetch_one(&self.pool)
                .await?;
        let unsent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state = 'unsent'")
            .fetch_one(&self.pool)
            .await?;
        // Units not created yet still wait for workers: count their first tasks too.
        let j = sqlx::query(
            "SELECT COALESCE(SUM(units_done), 0)::BIGINT AS done, \
             COALESCE(SUM(CASE WHEN state IN ('queued', 'running') \
                 THEN (unit_count - units_created) * target_results ELSE 0 END), 0)::BIGINT AS lazy \
             FROM jobs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(FleetView {
            workers_online: w.try_get::<i64, _>("online")? as u64,
            workers_total: w.try_get::<i64, _>("total")? as u64,
            cores_online: w.try_get::<i64, _>("cores")? as u64,
            online_window_secs: 0,
            tasks_in_flight: in_flight as u64,
            tasks_unsent: (unsent + j.try_get::<i64, _>("lazy")?) as u64,
            units_done_total: j.try_get::<i64, _>("done")? as u64,
        })
    }
}
