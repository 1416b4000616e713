//! Writing the transitioner's verdicts in a few set-based statements per batch (not a handful
//! per unit): this is on the path of every unit, so its statement count is its cost.

use std::collections::HashMap;

use serde_json::json;
use sparecycles_protocol::Millis;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{id_list, insert_tasks, trust, uuid_col};
use crate::scheduler::trust::TrustPolicy;
use crate::scheduler::validate::Decision;
use crate::store::{StoreResult, UnitVerdict, valid_effects};

/// Adds `n` to a per-job counter column, one statement per job.
async fn bump_jobs(
    conn: &mut SqliteConnection,
    column: &str,
    per_job: HashMap<Uuid, i64>,
    now: Millis,
) -> StoreResult<()> {
    let sql = format!("UPDATE jobs SET {column} = {column} + ?1, updated_at = ?2 WHERE id = ?3");
    for (job, n) in per_job {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(n)
            .bind(now)
            .bind(job.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn apply(
    conn: &mut SqliteConnection,
    verdicts: &[UnitVerdict],
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<()> {
    let mut clear = Vec::new();
    let mut new_tasks: Vec<(String, String, i64, usize)> = Vec::new();
    let mut decided = Vec::new();
    let mut failed = Vec::new();
    for v in verdicts {
        match &v.decision {
            Decision::Pending { new_tasks: n } => {
                clear.push(json!({"id": v.unit_id, "c": v.changes}));
                if *n > 0 {
                    new_tasks.push((
                        v.job_id.to_string(),
                        v.unit_id.to_string(),
                        v.seq as i64,
                        *n as usize,
                    ));
                }
            }
            Decision::Valid { canonical, .. } => {
                decided
                    .push(json!({"id": v.unit_id, "canonical": canonical, "solo": v.solo as i64}));
            }
            Decision::Failed { reason } => failed.push((v, reason)),
        }
    }

    // Pending: clear the mark unless a result arrived after the snapshot; add replicas.
    if !clear.is_empty() {
        sqlx::query(
            "UPDATE units SET dirty = 0 FROM json_each(?1) AS j \
             WHERE units.id = j.value ->> 'id' AND units.dirty = j.value ->> 'c'",
        )
        .bind(serde_json::Value::Array(clear).to_string())
        .execute(&mut *conn)
        .await?;
    }
    if !new_tasks.is_empty() {
        let mut per_job: HashMap<String, Vec<(&str, i64, usize)>> = HashMap::new();
        for (job, unit, seq, n) in &new_tasks {
            per_job
                .entry(job.clone())
                .or_default()
                .push((unit, *seq, *n));
        }
        let mut created = HashMap::new();
        for (job, units) in &per_job {
            let rows = units
                .iter()
                .flat_map(|(unit, seq, n)| std::iter::repeat_n((*unit, *seq), *n));
            insert_tasks(conn, job, rows, now).await?;
            let n: usize = units.iter().map(|u| u.2).sum();
            created.insert(job.parse().unwrap_or_default(), n as i64);
        }
        bump_jobs(conn, "tasks_created", created, now).await?;
    }

    // Valid: decide the units still open, in one statement; only those count.
    let mut deltas = HashMap::new();
    if !decided.is_empty() {
        let rows = sqlx::query(
            "UPDATE units SET state = 'done', canonical_task = j.value ->> 'canonical', dirty = 0, \
             solo = j.value ->> 'solo' FROM json_each(?1) AS j \
             WHERE units.id = j.value ->> 'id' AND units.state = 'open' RETURNING units.id",
        )
        .bind(serde_json::Value::Array(decided).to_string())
        .fetch_all(&mut *conn)
        .await?;
        let done: std::collections::HashSet<Uuid> = rows
            .iter()
            .map(|r| uuid_col(r, "id"))
            .collect::<Result<_, _>>()?;
        let effects = valid_effects(verdicts, |unit| done.contains(&unit));
        bump_jobs(conn, "units_done", effects.units_done, now).await?;
        sqlx::query(
            "UPDATE tasks SET state = 'aborted' WHERE state = 'unsent' \
             AND unit_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(id_list(&effects.units))
        .execute(&mut *conn)
        .await?;
        for (ids, verdict) in [
            (effects.valid_tasks, "valid"),
            (effects.invalid_tasks, "invalid"),
        ] {
            if ids.is_empty() {
                continue;
            }
            sqlx::query(
                "UPDATE tasks SET validation = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
            )
            .bind(verdict)
            .bind(id_list(&ids))
            .execute(&mut *conn)
            .await?;
        }
        deltas = effects.workers;
    }

    // Failed: rare; the job fails with the first unit's reason.
    for (v, reason) in failed {
        let changed = sqlx::query(
            "UPDATE units SET state = 'failed', dirty = 0 WHERE id = ?1 AND state = 'open'",
        )
        .bind(v.unit_id.to_string())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed == 0 {
            continue;
        }
        let job = v.job_id.to_string();
        sqlx::query(
            "UPDATE jobs SET units_failed = units_failed + 1, updated_at = ?1, \
             state = CASE WHEN state IN ('completed', 'failed', 'canceled') THEN state ELSE 'failed' END, \
             error = COALESCE(error, ?2), finished_at = COALESCE(finished_at, ?1) WHERE id = ?3",
        )
        .bind(now)
        .bind(format!("unit {} failed: {reason}", v.seq))
        .bind(&job)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE tasks SET state = 'aborted' WHERE job_id = ?1 AND state = 'unsent'")
            .bind(&job)
            .execute(&mut *conn)
            .await?;
    }

    for liar in trust::apply(conn, deltas, policy, now).await? {
        trust::undo_solo(conn, liar, now).await?;
    }
    Ok(())
}
