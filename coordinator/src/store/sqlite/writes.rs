//! The group commit's statements besides leasing (see `group`): a new job and its first units,
//! a report's results, overdue leases. They run on the writer's thread, inside its transaction.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use sparecycles_protocol::Millis;
use uuid::Uuid;

use super::group::JobEnd;
use super::{parse_uuid, trust};
use crate::scheduler::trust::TrustPolicy;
use crate::scheduler::validate::Decision;
use crate::store::{LeasedTask, NewJob, Outcome, Recorded, StoreResult, UnitVerdict};

/// Records a report's results, inside the caller's transaction. A decisive result decides its
/// unit here when the unit has no change waiting for the transitioner (`dirty = 0`), with the
/// transitioner's own verdict code: no mark, no read of the unit back and no pass per report
/// (issue 8: 7-13 % of the coordinator's CPU per W2 job).
pub(super) fn record_results(
    conn: &Connection,
    worker: Uuid,
    results: &[(Uuid, Outcome)],
    policy: &TrustPolicy,
    now: Millis,
) -> StoreResult<Recorded> {
    let worker_s = worker.to_string();
    // One prepared statement per result (a single-row write: no JSON for SQLite to parse and no
    // statement journal, which a report's results as one JSON array cost, issue 8). The last
    // column, looked up only for decisive results (?7): 0 when the unit has a change waiting
    // for the transitioner, else 1, or 2 for an adaptive unit never replicated (decided on one
    // worker's word: solo). A result that decides its unit (?7, no change waiting) is marked
    // valid in the same write: the verdict below then need not write the row a second time.
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET state = ?1, output = ?2, error = ?3, reported_at = ?4, \
         validation = CASE WHEN ?7 AND (SELECT u.dirty = 0 FROM units u \
          WHERE u.id = tasks.unit_id) THEN 'valid' ELSE validation END \
         WHERE id = ?5 AND worker_id = ?6 AND state IN ('leased', 'timed_out') \
         AND EXISTS (SELECT 1 FROM units u WHERE u.id = tasks.unit_id AND u.state = 'open') \
         RETURNING unit_id, job_id, unit_seq, \
         CASE WHEN ?7 THEN (SELECT CASE WHEN u.dirty = 0 THEN 2 - u.replicated ELSE 0 END \
          FROM units u WHERE u.id = tasks.unit_id) ELSE 0 END",
    )?;
    let mut out = Recorded {
        tasks: Vec::with_capacity(results.len()),
        ..Recorded::default()
    };
    let mut marked = Vec::new();
    let mut verdicts: Vec<UnitVerdict> = Vec::new();
    let mut verdict_of: HashMap<Uuid, usize> = HashMap::new();
    let mut errors = 0i64;
    for (task, outcome) in results {
        let (state, output, error) = outcome.columns();
        let credit = match outcome {
            Outcome::Decisive { credit, .. } => Some(*credit),
            _ => None,
        };
        let row = stmt
            .query_row(
                params![
                    state,
                    output,
                    error,
                    now,
                    task.to_string(),
                    worker_s,
                    credit.is_some()
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((unit, job, seq, decidable)) = row else {
            continue;
        };
        let (task, unit) = (*task, parse_uuid(&unit, "unit_id")?);
        out.tasks.push(task);
        errors += !outcome.is_success() as i64;
        let Some(credit) = credit.filter(|_| decidable > 0) else {
            marked.push(unit);
            continue;
        };
        if let Some(&i) = verdict_of.get(&unit) {
            // Two results of one unit in one report: both valid, as a verdict finds them (and
            // one verdict per unit, so the unit counts once).
            let v = &mut verdicts[i];
            if let Decision::Valid { valid, .. } = &mut v.decision {
                valid.push(task);
            }
            v.task_workers.push((task, worker));
            continue;
        }
        verdict_of.insert(unit, verdicts.len());
        verdicts.push(UnitVerdict {
            unit_id: unit,
            job_id: parse_uuid(&job, "job_id")?,
            seq: seq as u64,
            changes: 0,
            decision: Decision::Valid {
                canonical: task,
                valid: vec![task],
                invalid: Vec::new(),
            },
            credit,
            solo: decidable == 2,
            task_workers: vec![(task, worker)],
        });
    }
    if !marked.is_empty() {
        out.pending = true;
        mark_dirty(conn, marked.iter().map(Uuid::to_string))?;
    }
    conn.prepare_cached("UPDATE workers SET last_seen = ?1 WHERE id = ?2")?
        .execute(params![now, worker_s])?;
    if errors > 0 {
        trust::penalize(conn, &worker_s, errors, "errors")?;
    }
    if !verdicts.is_empty() {
        // Every unit here is open (the statement above only recorded results of open units),
        // so every verdict decides its unit.
        for v in &verdicts {
            *out.decided.entry(v.job_id).or_default() += 1;
            out.valid += v.task_workers.len() as u64;
        }
        out.job_done =
            super::verdicts::apply(conn, &verdicts, policy, now, super::verdicts::Marked::Yes)?;
    }
    Ok(out)
}

/// Creates the next `n` units of a job with `target` unsent tasks each; adaptive jobs start
/// each unit with one task and replicate it when an untrusted worker leases it. One prepared
/// insert per row: on the writer's own thread a step costs a few microseconds, with no
/// hand-off per statement. With `lease`, the first units' single tasks are written already
/// leased (see [`Direct`]) and returned.
pub(super) fn materialize(
    conn: &Connection,
    batch: Batch<'_>,
    now: Millis,
    lease: Option<Direct<'_>>,
) -> StoreResult<Vec<LeasedTask>> {
    let Batch {
        job,
        from_seq,
        n,
        target,
        adaptive,
    } = batch;
    let target = if adaptive { 1 } else { target };
    if n == 0 {
        return Ok(Vec::new());
    }
    let units: Vec<(Uuid, String, i64)> = (from_seq..from_seq + n)
        .map(|seq| {
            let id = Uuid::now_v7();
            (id, id.to_string(), seq as i64)
        })
        .collect();
    let mut insert = conn.prepare_cached(
        "INSERT INTO units (id, job_id, seq, state, replicated) VALUES (?1, ?2, ?3, 'open', ?4)",
    )?;
    for (_, id, seq) in &units {
        insert.execute(params![id, job, seq, !adaptive])?;
    }
    // Only a unit of one task can have it leased at birth: it is the task the lease would take.
    let direct = lease
        .filter(|_| target == 1)
        .map_or(0, |l| (l.count as usize).min(units.len()));
    let mut leased = Vec::with_capacity(direct);
    if let Some(l) = lease.filter(|_| direct > 0) {
        let job_id = parse_uuid(job, "job_id")?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO tasks (id, job_id, unit_id, unit_seq, state, worker_id, created_at, \
             leased_at, deadline) VALUES (?1, ?2, ?3, ?4, 'leased', ?5, ?6, ?6, ?7)",
        )?;
        for (unit_id, unit, seq) in &units[..direct] {
            let task_id = Uuid::now_v7();
            insert.execute(params![
                task_id.to_string(),
                job,
                unit,
                seq,
                l.worker,
                now,
                l.deadline
            ])?;
            leased.push(LeasedTask {
                task_id,
                job_id,
                unit_id: *unit_id,
                unit_seq: *seq as u64,
                deadline: l.deadline,
            });
        }
    }
    insert_tasks(
        conn,
        job,
        units[direct..]
            .iter()
            .flat_map(|(_, id, seq)| std::iter::repeat_n((id.as_str(), *seq), target as usize)),
        now,
    )?;
    conn.prepare_cached(
        "UPDATE jobs SET units_created = units_created + ?1, tasks_created = tasks_created + ?2, \
         updated_at = ?3 WHERE id = ?4",
    )?
    .execute(params![n as i64, (n * target as u64) as i64, now, job])?;
    Ok(leased)
}

/// The next units of a job to create, with its redundancy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batch<'a> {
    pub job: &'a str,
    pub from_seq: u64,
    pub n: u64,
    /// Tasks per unit (adaptive jobs start with one whatever it says).
    pub target: u32,
    pub adaptive: bool,
}

/// New units' tasks leased as they are written: a lease that reached the end of the created
/// units takes the first new ones, and writing them unsent to update them at once cost each an
/// extra row write and two index changes (issue 8, W2: most of a job's units come this way).
#[derive(Debug, Clone, Copy)]
pub(super) struct Direct<'a> {
    pub worker: &'a str,
    /// How many of the new units' tasks (the first ones) to lease.
    pub count: u32,
    pub deadline: Millis,
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
    let batch = Batch {
        job: &id,
        from_seq: 0,
        n: job.initial_units.min(job.unit_count),
        target: job.redundancy.target_results,
        adaptive: job.redundancy.adaptive,
    };
    materialize(conn, batch, now, None)?;
    Ok(())
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
            "UPDATE OR FAIL tasks SET state = 'timed_out' WHERE state = 'leased' AND deadline < ?1 \
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
    mark_dirty(conn, rows.iter().map(|(u, _)| u.as_str()))?;
    for (w, n) in per_worker {
        trust::penalize(conn, w, n, "timeouts")?;
    }
    Ok(rows.len() as u64)
}

/// Tells the transitioner the units changed: one mark per unit, however many of its tasks did.
fn mark_dirty<S: AsRef<str> + Ord>(
    conn: &Connection,
    units: impl IntoIterator<Item = S>,
) -> StoreResult<()> {
    let units: std::collections::BTreeSet<S> = units.into_iter().collect();
    let mut stmt = conn.prepare_cached("UPDATE units SET dirty = dirty + 1 WHERE id = ?1")?;
    for unit in &units {
        stmt.execute([unit.as_ref()])?;
    }
    Ok(())
}
