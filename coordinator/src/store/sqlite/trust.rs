//! Reputation writes: streaks, quotas, credit and recent credit, bans, and undoing what a
//! detected liar's word alone decided.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use sparecycles_protocol::Millis;
use uuid::Uuid;

use super::{id_list, parse_uuid};
use crate::scheduler::trust::{TrustPolicy, decay, quota_after_valid};
use crate::store::{StoreResult, TrustDelta as Delta};

/// Applies valid/invalid counts, credit, streak and quota changes; bans workers whose invalid
/// rate passed the threshold. Returns the workers with a new invalid result (liars to undo).
/// One read for all the batch's workers, then a prepared single-row update per worker.
pub(super) fn apply(
    conn: &Connection,
    deltas: HashMap<Uuid, Delta>,
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Standing> = conn
        .prepare_cached(
            "SELECT id, valid, invalid, streak, quota, cores, rac, rac_time, banned FROM workers \
             WHERE id IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([id_list(deltas.keys())], |r| {
            Ok(Standing {
                id: r.get(0)?,
                valid: r.get(1)?,
                invalid: r.get(2)?,
                streak: r.get(3)?,
                quota: r.get(4)?,
                cores: r.get(5)?,
                rac: r.get(6)?,
                rac_time: r.get(7)?,
                banned: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut caught = Vec::new();
    let mut banned_now = Vec::new();
    let mut update = conn.prepare_cached(
        "UPDATE workers SET valid = ?1, invalid = ?2, streak = ?3, quota = ?4, \
         credit = credit + ?5, rac = ?6, rac_time = ?7, banned = ?8 WHERE id = ?9",
    )?;
    for row in &rows {
        let worker = parse_uuid(&row.id, "id")?;
        let Some(d) = deltas.get(&worker) else {
            continue;
        };
        let valid = row.valid + d.valid;
        let invalid = row.invalid + d.invalid;
        let cores = row.cores as u32;
        let mut quota = row.quota as u32;
        let mut streak = row.streak;
        if d.invalid > 0 {
            streak = 0;
            quota = (quota >> d.invalid.min(31)).max(1);
            caught.push(worker);
        } else {
            streak += d.valid;
            quota = quota_after_valid(quota, d.valid as u64, cores);
        }
        let rac = decay(row.rac, row.rac_time, now) + d.credit;
        let banned = row.banned || policy.should_ban(valid as u64, invalid as u64);
        if banned {
            // Set aside every time (as before): results may have arrived since the ban.
            banned_now.push(worker);
        }
        update.execute(params![
            valid, invalid, streak, quota, d.credit, rac, now, banned, row.id
        ])?;
    }
    for worker in banned_now {
        set_aside(conn, worker)?;
    }
    Ok(caught)
}

/// A worker's standing before a pass's changes.
struct Standing {
    id: String,
    valid: i64,
    invalid: i64,
    streak: i64,
    quota: i64,
    cores: i64,
    rac: f64,
    rac_time: Millis,
    banned: bool,
}

/// A failure (error or timeout) resets the streak and halves the quota.
pub(super) fn penalize(
    conn: &Connection,
    worker: &str,
    failures: i64,
    column: &str,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE workers SET {column} = {column} + ?1, streak = 0, \
         quota = MAX(1, quota >> MIN(?1, 31)) WHERE id = ?2"
    );
    conn.prepare_cached(&sql)?
        .execute(params![failures, worker])?;
    Ok(())
}

/// A banned worker's unvalidated results and unfinished leases are not trusted: they are set
/// aside and their units marked so replacements go out.
fn set_aside(conn: &Connection, worker: Uuid) -> StoreResult<()> {
    let units: Vec<String> = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'aborted' WHERE worker_id = ?1 \
             AND (state = 'leased' OR (state = 'success' AND validation = 'pending')) \
             RETURNING unit_id",
        )?
        .query_map([worker.to_string()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    conn.prepare_cached(
        "UPDATE units SET dirty = dirty + 1 WHERE state = 'open' \
         AND id IN (SELECT value FROM json_each(?1))",
    )?
    .execute([serde_json::to_string(&units).unwrap_or_default()])?;
    tracing::warn!(worker = %worker, set_aside = units.len(), "worker banned");
    Ok(())
}

/// Units that `worker` decided alone are decided again from fresh results, and jobs already
/// assembled from them are reopened: no canonical result rests on a detected liar's word.
pub(super) fn undo_solo(conn: &Connection, worker: Uuid, now: Millis) -> StoreResult<u64> {
    let rows: Vec<(String, String, String)> = conn
        .prepare_cached(
            "SELECT u.id, u.job_id, u.canonical_task FROM units u \
             JOIN tasks t ON t.id = u.canonical_task \
             WHERE u.solo = 1 AND u.state = 'done' AND t.worker_id = ?1",
        )?
        .query_map([worker.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut per_job: HashMap<&str, i64> = HashMap::new();
    let mut units = Vec::with_capacity(rows.len());
    let mut tasks = Vec::with_capacity(rows.len());
    for (unit, job, task) in &rows {
        units.push(parse_uuid(unit, "id")?);
        tasks.push(parse_uuid(task, "canonical_task")?);
        *per_job.entry(job).or_default() += 1;
    }
    conn.prepare_cached(
        "UPDATE tasks SET validation = 'invalid', state = 'aborted' \
         WHERE id IN (SELECT value FROM json_each(?1))",
    )?
    .execute([id_list(&tasks)])?;
    conn.prepare_cached(
        "UPDATE units SET state = 'open', canonical_task = NULL, solo = 0, replicated = 1, \
         dirty = dirty + 1 WHERE id IN (SELECT value FROM json_each(?1))",
    )?
    .execute([id_list(&units)])?;
    for (job, n) in per_job {
        conn.prepare_cached(
            "UPDATE jobs SET units_done = units_done - ?1, updated_at = ?2, finished_at = NULL, \
             state = CASE state WHEN 'completed' THEN 'running' ELSE state END \
             WHERE id = ?3 AND state IN ('queued', 'running', 'paused', 'completed')",
        )?
        .execute(params![n, now, job])?;
        conn.prepare_cached("DELETE FROM job_results WHERE job_id = ?1")?
            .execute([job])?;
    }
    tracing::warn!(worker = %worker, units = rows.len(), "units decided by a detected liar reopened");
    Ok(rows.len() as u64)
}
