//! The group commit's statements besides leasing (see `group`): a new job and its first units,
//! a report's results, overdue leases. They run on the writer's thread, inside its transaction.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sparecycles_protocol::Millis;
use uuid::Uuid;

use super::group::JobEnd;
use super::{id_list, parse_uuid, trust};
use crate::scheduler::trust::TrustPolicy;
use crate::store::{NewJob, Outcome, Recorded, StoreResult, TrustDelta};

/// Records a report's results, inside the caller's transaction. A decisive result decides its
/// unit here when the unit has no change waiting for the transitioner (`dirty = 0`): the same
/// verdict the transitioner would reach, without the mark, the transitioner's read of the unit
/// and a pass per report (issue 8: 13 % of the coordinator's CPU per W2 job).
pub(super) fn record_results(
    conn: &Connection,
    worker: Uuid,
    results: &[(Uuid, Outcome)],
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<Recorded> {
    let worker_s = worker.to_string();
    // One statement for the whole report: a JSON array of results joined to their tasks.
    let mut credit_of = HashMap::new();
    let batch: Vec<Value> = results
        .iter()
        .map(|(task, outcome)| match outcome {
            Outcome::Success(v) => {
                serde_json::json!({"id": task, "state": "success", "output": v.to_string()})
            }
            Outcome::Decisive { output, credit } => {
                credit_of.insert(*task, *credit);
                serde_json::json!({"id": task, "state": "success", "output": output.to_string(),
                    "decisive": 1})
            }
            Outcome::Error(e) => serde_json::json!({"id": task, "state": "error", "error": e}),
        })
        .collect();
    // A decisive result's task is valid if its unit has nothing pending; the unit is then
    // decided below, in this transaction, so the two always go together.
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET state = r.value ->> 'state', output = r.value ->> 'output', \
         error = r.value ->> 'error', reported_at = ?1, \
         validation = CASE WHEN r.value ->> 'decisive' = 1 \
           AND (SELECT dirty FROM units u WHERE u.id = tasks.unit_id) = 0 \
           THEN 'valid' ELSE validation END \
         FROM json_each(?2) AS r \
         WHERE tasks.id = r.value ->> 'id' AND tasks.worker_id = ?3 \
         AND tasks.state IN ('leased', 'timed_out') \
         AND EXISTS (SELECT 1 FROM units u WHERE u.id = tasks.unit_id AND u.state = 'open') \
         RETURNING tasks.id, tasks.unit_id, tasks.state = 'error', tasks.validation = 'valid'",
    )?;
    let rows = stmt.query_map(
        params![now, Value::Array(batch).to_string(), worker_s],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
            ))
        },
    )?;
    let mut out = Recorded {
        tasks: Vec::with_capacity(results.len()),
        ..Recorded::default()
    };
    let mut marked = Vec::new();
    let mut decisive = Vec::new();
    let mut errors = 0i64;
    for row in rows {
        let (task, unit, error, valid) = row?;
        let task_id = parse_uuid(&task, "id")?;
        out.tasks.push(task_id);
        errors += error as i64;
        if valid {
            decisive.push((task_id, unit));
        } else {
            marked.push(parse_uuid(&unit, "unit_id")?);
        }
    }
    if !marked.is_empty() {
        out.pending = true;
        conn.prepare_cached(
            "UPDATE units SET dirty = dirty + 1 WHERE id IN (SELECT value FROM json_each(?1))",
        )?
        .execute([id_list(&marked)])?;
    }
    conn.prepare_cached("UPDATE workers SET last_seen = ?1 WHERE id = ?2")?
        .execute(params![now, worker_s])?;
    if errors > 0 {
        trust::penalize(conn, &worker_s, errors, "errors")?;
    }
    if !decisive.is_empty() {
        decide_on_report(conn, worker, decisive, &credit_of, policy, now, &mut out)?;
    }
    Ok(out)
}

/// Decides the units of valid decisive results (task, unit) as
/// `verdicts::apply` decides a valid unit: canonical task, solo when never replicated, the
/// job's count, unsent replicas aborted, the worker's valid count, streak, quota and credit.
fn decide_on_report(
    conn: &Connection,
    worker: Uuid,
    decisive: Vec<(Uuid, String)>,
    credit_of: &HashMap<Uuid, f64>,
    policy: &TrustPolicy,
    now: Millis,
    out: &mut Recorded,
) -> StoreResult<()> {
    let mut units = Vec::with_capacity(decisive.len());
    let mut per_job: HashMap<Uuid, i64> = HashMap::new();
    let decided: Vec<(String, String)> = conn
        .prepare_cached(
            "UPDATE units SET state = 'done', canonical_task = j.value ->> 't', \
             solo = 1 - replicated FROM json_each(?1) AS j \
             WHERE units.id = j.value ->> 'u' AND units.state = 'open' \
             RETURNING units.id, units.job_id",
        )?
        .query_map(
            [Value::from_iter(decisive.iter().map(|(t, u)| json!({"t": t, "u": u}))).to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    if decided.is_empty() {
        return Ok(());
    }
    for (unit, job) in &decided {
        units.push(unit.as_str());
        *per_job.entry(parse_uuid(job, "job_id")?).or_default() += 1;
    }
    // Every valid task's unit was decided just now (two results of one unit in one report:
    // both valid, as the transitioner would judge them); each earns its credit.
    let mut delta = TrustDelta::default();
    for (task, _) in &decisive {
        delta.valid += 1;
        delta.credit += credit_of.get(task).copied().unwrap_or(0.0);
    }
    out.valid = delta.valid as u64;
    for (job, n) in &per_job {
        out.decided.push((*job, *n as u64));
    }
    out.job_done = super::verdicts::bump_jobs(conn, "units_done", per_job, now)?;
    conn.prepare_cached(
        "UPDATE tasks SET state = 'aborted' WHERE state = 'unsent' \
         AND unit_id IN (SELECT value FROM json_each(?1))",
    )?
    .execute([serde_json::to_string(&units).unwrap_or_default()])?;
    trust::apply(conn, HashMap::from([(worker, delta)]), policy, now)?;
    Ok(())
}

/// Creates the next `n` units of a job with `target` unsent tasks each; adaptive jobs start
/// each unit with one task and replicate it when an untrusted worker leases it. One prepared
/// insert per row: on the writer's own thread a step costs a few microseconds, with no
/// hand-off per statement.
pub(super) fn materialize(
    conn: &Connection,
    job: &str,
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
    let units: Vec<(String, i64)> = (from_seq..from_seq + n)
        .map(|seq| (Uuid::now_v7().to_string(), seq as i64))
        .collect();
    let mut insert = conn.prepare_cached(
        "INSERT INTO units (id, job_id, seq, state, replicated) VALUES (?1, ?2, ?3, 'open', ?4)",
    )?;
    for (id, seq) in &units {
        insert.execute(params![id, job, seq, !adaptive])?;
    }
    insert_tasks(
        conn,
        job,
        units
            .iter()
            .flat_map(|(id, seq)| std::iter::repeat_n((id.as_str(), *seq), target as usize)),
        now,
    )?;
    conn.prepare_cached(
        "UPDATE jobs SET units_created = units_created + ?1, tasks_created = tasks_created + ?2, \
         updated_at = ?3 WHERE id = ?4",
    )?
    .execute(params![n as i64, (n * target as u64) as i64, now, job])?;
    Ok(())
}

pub(super) fn insert_tasks<'a>(
    conn: &Connection,
    job: &str,
    units: impl Iterator<Item = (&'a str, i64)>,
    now: Millis,
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO tasks (id, job_id, unit_id, unit_seq, state, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'unsent', ?5)",
    )?;
    for (unit, seq) in units {
        insert.execute(params![Uuid::now_v7().to_string(), job, unit, seq, now])?;
    }
    Ok(())
}

/// Inserts a new job and its first units, inside the caller's transaction.
pub(super) fn insert_job(conn: &Connection, job: &NewJob, now: Millis) -> StoreResult<()> {
    let id = job.id.to_string();
    conn.prepare_cached(
        "INSERT INTO jobs (id, name, app, params, state, priority, min_quorum, target_results, \
         max_error_results, max_total_results, unit_timeout_ms, unit_count, created_at, \
         updated_at, adaptive, distinct_owners, owner) \
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        id,
        job.name,
        job.app,
        job.params.to_string(),
        job.priority as i64,
        job.redundancy.min_quorum as i64,
        job.redundancy.target_results as i64,
        job.redundancy.max_error_results as i64,
        job.redundancy.max_total_results as i64,
        job.unit_timeout_ms,
        job.unit_count as i64,
        now,
        job.redundancy.adaptive,
        job.redundancy.distinct_owners,
        job.owner.map(|o| o.to_string()),
    ])?;
    materialize(
        conn,
        &id,
        0,
        job.initial_units.min(job.unit_count),
        job.redundancy.target_results,
        job.redundancy.adaptive,
        now,
    )
}

/// Stores a job's result and completes it, or fails it, inside the caller's transaction; a job
/// already finished (canceled meanwhile) keeps its state.
pub(super) fn finish_job(
    conn: &Connection,
    job_id: Uuid,
    end: &JobEnd,
    now: Millis,
) -> StoreResult<()> {
    let id = job_id.to_string();
    match end {
        JobEnd::Completed { content_type, body } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO job_results (job_id, content_type, body, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, content_type, body, now])?;
            conn.prepare_cached(
                "UPDATE jobs SET state = 'completed', finished_at = ?1, updated_at = ?1 \
                 WHERE id = ?2 AND state IN ('queued', 'running', 'paused')",
            )?
            .execute(params![now, id])?;
        }
        JobEnd::Failed { reason } => {
            conn.prepare_cached(
                "UPDATE jobs SET state = 'failed', error = ?1, finished_at = ?2, updated_at = ?2 \
                 WHERE id = ?3 AND state IN ('queued', 'running', 'paused')",
            )?
            .execute(params![reason, now, id])?;
        }
    }
    Ok(())
}

/// Times out overdue leases and penalizes their workers, inside the caller's transaction.
pub(super) fn expire(conn: &Connection, now: Millis) -> StoreResult<u64> {
    let rows: Vec<(String, Option<String>)> = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'timed_out' WHERE state = 'leased' AND deadline < ?1 \
             RETURNING unit_id, worker_id",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut per_worker: HashMap<&str, i64> = HashMap::new();
    for (_, worker) in &rows {
        if let Some(w) = worker {
            *per_worker.entry(w).or_default() += 1;
        }
    }
    let units: Vec<&str> = rows.iter().map(|(u, _)| u.as_str()).collect();
    conn.prepare_cached(
        "UPDATE units SET dirty = dirty + 1 WHERE id IN (SELECT value FROM json_each(?1))",
    )?
    .execute([serde_json::to_string(&units).unwrap_or_default()])?;
    for (w, n) in per_worker {
        trust::penalize(conn, w, n, "timeouts")?;
    }
    Ok(rows.len() as u64)
}
