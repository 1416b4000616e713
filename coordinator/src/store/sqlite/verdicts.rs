//! Writing the transitioner's verdicts (and a report's decisive results): on the path of every
//! unit. Each write is a prepared statement run once per unit, task, worker or job on the
//! writer's own thread, where a step costs a microsecond or two; the set-based statements fed
//! JSON arrays that they replaced spent more than that per row parsing JSON and keeping
//! statement journals (issue 8, W1).

use std::collections::HashMap;

use rusqlite::{Connection, params};
use sparecycles_protocol::Millis;
use uuid::Uuid;

use super::trust;
use super::writes::insert_tasks;
use crate::scheduler::trust::TrustPolicy;
use crate::scheduler::validate::Decision;
use crate::store::{StoreResult, UnitVerdict, valid_effects};

/// Adds `n` to a per-job counter column, one statement per job; true when a job it bumped
/// has every unit done.
fn bump_jobs(
    conn: &Connection,
    column: &str,
    per_job: HashMap<Uuid, i64>,
    now: Millis,
) -> StoreResult<bool> {
    let sql = format!(
        "UPDATE jobs SET {column} = {column} + ?1, updated_at = ?2 WHERE id = ?3 \
         RETURNING units_done = unit_count"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut complete = false;
    for (job, n) in per_job {
        for row in stmt.query_map(params![n, now, job.to_string()], |r| r.get::<_, bool>(0))? {
            complete |= row?;
        }
    }
    Ok(complete)
}

/// Whether the valid tasks of the verdicts were already marked valid: a report's decisive
/// results are, by the write that recorded them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marked {
    Yes,
    No,
}

pub(super) fn apply(
    conn: &Connection,
    verdicts: &[UnitVerdict],
    policy: &TrustPolicy,
    now: Millis,
    marked: Marked,
) -> StoreResult<bool> {
    let mut clear: Vec<(String, i64)> = Vec::new();
    let mut new_tasks: Vec<(String, String, i64, usize)> = Vec::new();
    let mut decided = Vec::new();
    let mut failed = Vec::new();
    for v in verdicts {
        match &v.decision {
            Decision::Pending { new_tasks: n } => {
                clear.push((v.unit_id.to_string(), v.changes));
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
                decided.push((v.unit_id, canonical.to_string(), v.solo));
            }
            Decision::Failed { reason } => failed.push((v, reason)),
        }
    }

    // Pending: clear the mark unless a result arrived after the snapshot; add replicas.
    if !clear.is_empty() {
        let mut stmt =
            conn.prepare_cached("UPDATE units SET dirty = 0 WHERE id = ?1 AND dirty = ?2")?;
        for (unit, changes) in &clear {
            stmt.execute(params![unit, changes])?;
        }
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
            insert_tasks(conn, job, rows, now)?;
            let n: usize = units.iter().map(|u| u.2).sum();
            created.insert(job.parse().unwrap_or_default(), n as i64);
        }
        bump_jobs(conn, "tasks_created", created, now)?;
    }

    // Valid: decide the units still open, in one statement; only those count.
    let mut deltas = HashMap::new();
    let mut complete = false;
    if !decided.is_empty() {
        let mut done = std::collections::HashSet::new();
        let mut stmt = conn.prepare_cached(
            "UPDATE units SET state = 'done', canonical_task = ?1, dirty = 0, solo = ?2 \
             WHERE id = ?3 AND state = 'open'",
        )?;
        for (unit, canonical, solo) in &decided {
            if stmt.execute(params![canonical, solo, unit.to_string()])? > 0 {
                done.insert(*unit);
            }
        }
        let effects = valid_effects(verdicts, |unit| done.contains(&unit));
        complete = bump_jobs(conn, "units_done", effects.units_done, now)?;
        let mut stmt = conn.prepare_cached(
            "UPDATE OR FAIL tasks SET state = 'aborted' WHERE unit_id = ?1 AND state = 'unsent'",
        )?;
        for unit in &effects.units {
            stmt.execute([unit.to_string()])?;
        }
        let valid = match marked {
            Marked::Yes => Vec::new(),
            Marked::No => effects.valid_tasks,
        };
        let mut stmt = conn.prepare_cached("UPDATE tasks SET validation = ?1 WHERE id = ?2")?;
        for (ids, verdict) in [(valid, "valid"), (effects.invalid_tasks, "invalid")] {
            for id in &ids {
                stmt.execute(params![verdict, id.to_string()])?;
            }
        }
        deltas = effects.workers;
    }

    // Failed: rare; the job fails with the first unit's reason.
    for (v, reason) in failed {
        let changed = conn
            .prepare_cached(
                "UPDATE units SET state = 'failed', dirty = 0 WHERE id = ?1 AND state = 'open'",
            )?
            .execute([v.unit_id.to_string()])?;
        if changed == 0 {
            continue;
        }
        let job = v.job_id.to_string();
        conn.prepare_cached(
            "UPDATE jobs SET units_failed = units_failed + 1, updated_at = ?1, \
             state = CASE WHEN state IN ('completed', 'failed', 'canceled') THEN state ELSE 'failed' END, \
             error = COALESCE(error, ?2), finished_at = COALESCE(finished_at, ?1) WHERE id = ?3",
        )?
        .execute(params![now, format!("unit {} failed: {reason}", v.seq), job])?;
        conn.prepare_cached(
            "UPDATE tasks SET state = 'aborted' WHERE job_id = ?1 AND state = 'unsent'",
        )?
        .execute([&job])?;
    }

    for liar in trust::apply(conn, deltas, policy, now)? {
        trust::undo_solo(conn, liar, now)?;
    }
    Ok(complete)
}
