//! Reputation writes: streaks, quotas, credit and recent credit, bans, and undoing what a
//! detected liar's word alone decided.

use std::collections::HashMap;

use sparecycles_protocol::Millis;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{id_list, uuid_col};
use crate::scheduler::trust::{TrustPolicy, decay, quota_after_valid};
use crate::store::{StoreResult, TrustDelta as Delta};

/// Applies valid/invalid counts, credit, streak and quota changes; bans workers whose invalid
/// rate passed the threshold. Returns the workers with a new invalid result (liars to undo).
/// Two statements for all the batch's workers (a pass may judge a thousand workers' results).
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    deltas: HashMap<Uuid, Delta>,
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT id, valid, invalid, streak, quota, cores, rac, rac_time, banned FROM workers \
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(id_list(deltas.keys()))
    .fetch_all(&mut *conn)
    .await?;
    let mut caught = Vec::new();
    let mut banned_now = Vec::new();
    let mut updates = Vec::with_capacity(rows.len());
    for row in &rows {
        let worker = uuid_col(row, "id")?;
        let Some(d) = deltas.get(&worker) else {
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
        let was_banned = row.try_get::<i64, _>("banned")? != 0;
        let banned = was_banned || policy.should_ban(valid as u64, invalid as u64);
        if banned {
            // Set aside every time (as before): results may have arrived since the ban.
            banned_now.push(worker);
        }
        updates.push(serde_json::json!({
            "id": worker.to_string(), "valid": valid, "invalid": invalid, "streak": streak,
            "quota": quota, "credit": d.credit, "rac": rac, "banned": banned as i64,
        }));
    }
    sqlx::query(
        "UPDATE workers SET valid = u.value ->> 'valid', invalid = u.value ->> 'invalid', \
         streak = u.value ->> 'streak', quota = u.value ->> 'quota', \
         credit = credit + (u.value ->> 'credit'), rac = u.value ->> 'rac', rac_time = ?1, \
         banned = u.value ->> 'banned' FROM json_each(?2) AS u WHERE workers.id = u.value ->> 'id'",
    )
    .bind(now)
    .bind(serde_json::Value::Array(updates).to_string())
    .execute(&mut *conn)
    .await?;
    for worker in banned_now {
        set_aside(conn, worker).await?;
    }
    Ok(caught)
}

/// A failure (error or timeout) resets the streak and halves the quota.
pub(super) async fn penalize(
    conn: &mut SqliteConnection,
    worker: &str,
    failures: i64,
    column: &str,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE workers SET {column} = {column} + ?1, streak = 0, \
         quota = MAX(1, quota >> MIN(?1, 31)) WHERE id = ?2"
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
async fn set_aside(conn: &mut SqliteConnection, worker: Uuid) -> StoreResult<()> {
    let units: Vec<String> = sqlx::query_scalar(
        "UPDATE tasks SET state = 'aborted' WHERE worker_id = ?1 \
         AND (state = 'leased' OR (state = 'success' AND validation = 'pending')) RETURNING unit_id",
    )
    .bind(worker.to_string())
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("UPDATE units SET dirty = dirty + 1 WHERE state = 'open' AND id IN (SELECT value FROM json_each(?1))")
        .bind(serde_json::to_string(&units).unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    tracing::warn!(worker = %worker, set_aside = units.len(), "worker banned");
    Ok(())
}

/// Units that `worker` decided alone are decided again from fresh results, and jobs already
/// assembled from them are reopened: no canonical result rests on a detected liar's word.
pub(super) async fn undo_solo(
    conn: &mut SqliteConnection,
    worker: Uuid,
    now: Millis,
) -> StoreResult<u64> {
    let rows = sqlx::query(
        "SELECT u.id, u.job_id, u.canonical_task FROM units u JOIN tasks t ON t.id = u.canonical_task \
         WHERE u.solo = 1 AND u.state = 'done' AND t.worker_id = ?1",
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
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(id_list(&tasks))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE units SET state = 'open', canonical_task = NULL, solo = 0, replicated = 1, \
         dirty = dirty + 1 WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(id_list(&units))
    .execute(&mut *conn)
    .await?;
    for (job, n) in per_job {
        sqlx::query(
            "UPDATE jobs SET units_done = units_done - ?1, updated_at = ?2, finished_at = NULL, \
             state = CASE state WHEN 'completed' THEN 'running' ELSE state END \
             WHERE id = ?3 AND state IN ('queued', 'running', 'paused', 'completed')",
        )
        .bind(n)
        .bind(now)
        .bind(&job)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM job_results WHERE job_id = ?1")
            .bind(&job)
            .execute(&mut *conn)
            .await?;
    }
    tracing::warn!(worker = %worker, units = rows.len(), "units decided by a detected liar reopened");
    Ok(rows.len() as u64)
}
