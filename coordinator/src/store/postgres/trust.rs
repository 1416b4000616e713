//! Reputation writes: streaks, quotas, credit and recent credit, bans, and undoing what a
//! detected liar's word alone decided (PostgreSQL; the same rules as the SQLite store).

use std::collections::HashMap;

use sparecycles_protocol::Millis;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{Rows, ids, lock, mark_changed, uuid_col};
use crate::scheduler::trust::{TrustPolicy, decay, quota_after_valid};
use crate::store::{StoreResult, TrustDelta as Delta};

/// Applies valid/invalid counts, credit, streak and quota changes; bans workers whose invalid
/// rate passed the threshold. Returns the workers with a new invalid result (liars to undo).
pub(super) async fn apply(
    conn: &mut PgConnection,
    deltas: HashMap<Uuid, Delta>,
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    let mut caught = Vec::new();
    // In id order, and read under the row's lock: a report on another coordinator may be
    // changing the same worker.
    let mut deltas: Vec<(Uuid, Delta)> = deltas.into_iter().collect();
    deltas.sort_by_key(|(w, _)| *w);
    for (worker, d) in deltas {
        let id = worker.to_string();
        let Some(row) = sqlx::query(
            "SELECT valid, invalid, streak, quota, cores, rac, rac_time, banned FROM workers \
             WHERE id = $1 FOR UPDATE",
        )
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            continue;
        };
        let valid = row.try_get::<i64, _>("valid")? + d.valid;
        let invalid = row.try_get::<i64, _>("invalid")? + d.invalid;
        let cores = row.try_get::<i64, _>("cores")? as u32;
        let mut quota = row.try_get::<i64, _>("quota")? as u32;
        let mut streak = row.try_get::<i64, _>("streak")?;
        if d.invalid > 0 {
            streak = 0;
            quota = (quota >> d.invalid.min(31)).max(1);
            caught.push(worker);
        } else {
            streak += d.valid;
            quota = quota_after_valid(quota, d.valid as u64, cores);
        }
        let rac = decay(row.try_get("rac")?, row.try_get("rac_time")?, now) + d.credit;
        let banned =
            row.try_get::<bool, _>("banned")? || policy.should_ban(valid as u64, invalid as u64);
        sqlx::query(
            "UPDATE workers SET valid = $1, invalid = $2, streak = $3, quota = $4, \
             credit = credit + $5, rac = $6, rac_time = $7, banned = $8 WHERE id = $9",
        )
        .bind(valid)
        .bind(invalid)
        .bind(streak)
        .bind(quota as i64)
        .bind(d.credit)
        .bind(rac)
        .bind(now)
        .bind(banned)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
        if banned {
            set_aside(conn, worker).await?;
        }
    }
    Ok(caught)
}

/// A failure (error or timeout) resets the streak and halves the quota.
pub(super) async fn penalize(
    conn: &mut PgConnection,
    worker: &str,
    failures: i64,
    column: &str,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE workers SET {column} = {column} + $1, streak = 0, \
         quota = GREATEST(1, quota >> LEAST($1, 31)::int) WHERE id = $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(failures)
        .bind(worker)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A banned worker's unvalidated results and unfinished leases are not trusted: they are set
/// aside and their units marked so replacements go out.
async fn set_aside(conn: &mut PgConnection, worker: Uuid) -> StoreResult<()> {
    let units: Vec<String> = sqlx::query_scalar(
        "UPDATE tasks SET state = 'aborted' WHERE worker_id = $1 \
         AND (state = 'leased' OR (state = 'success' AND validation = 'pending')) RETURNING unit_id",
    )
    .bind(worker.to_string())
    .fetch_all(&mut *conn)
    .await?;
    mark_changed(conn, &units, true).await?;
    tracing::warn!(worker = %worker, set_aside = units.len(), "worker banned");
    Ok(())
}

/// Units that `worker` decided alone are decided again from fresh results, and jobs already
/// assembled from them are reopened: no canonical result rests on a detected liar's word.
pub(super) async fn undo_solo(
    conn: &mut PgConnection,
    worker: Uuid,
    now: Millis,
) -> StoreResult<u64> {
    let rows = sqlx::query(
        "SELECT u.id, u.job_id, u.canonical_task FROM units u JOIN tasks t ON t.id = u.canonical_task \
         WHERE u.solo AND u.state = 'done' AND t.worker_id = $1",
    )
    .bind(worker.to_string())
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut per_job: HashMap<String, i64> = HashMap::new();
    let mut units = Vec::with_capacity(rows.len());
    let mut tasks = Vec::with_capacity(rows.len());
    for r in &rows {
        units.push(uuid_col(r, "id")?);
        tasks.push(uuid_col(r, "canonical_task")?);
        *per_job.entry(r.try_get("job_id")?).or_default() += 1;
    }
    sqlx::query(
        "UPDATE tasks SET validation = 'invalid', state = 'aborted' \
         WHERE id = ANY($1)",
    )
    .bind(ids(&tasks))
    .execute(&mut *conn)
    .await?;
    let units = ids(&units);
    lock(conn, Rows::Units, &units).await?;
    sqlx::query(
        "UPDATE units SET state = 'open', canonical_task = NULL, solo = FALSE, replicated = TRUE, \
         dirty = dirty + 1 WHERE id = ANY($1)",
    )
    .bind(&units)
    .execute(&mut *conn)
    .await?;
    for (job, n) in per_job {
        sqlx::query(
            "UPDATE jobs SET units_done = units_done - $1, updated_at = $2, finished_at = NULL, \
             state = CASE state WHEN 'completed' THEN 'running' ELSE state END \
             WHERE id = $3 AND state IN ('queued', 'running', 'paused', 'completed')",
        )
        .bind(n)
        .bind(now)
        .bind(&job)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM job_results WHERE job_id = $1")
            .bind(&job)
            .execute(&mut *conn)
            .await?;
    }
    tracing::warn!(worker = %worker, units = rows.len(), "units decided by a detected liar reopened");
    Ok(rows.len() as u64)
}
