//! Leasing: hands unsent tasks to a worker in one transaction, creates units as the frontier
//! advances, and replicates adaptive units that an untrusted worker (or a spot check) leases.

use rusqlite::{Connection, OptionalExtension, params};
use sparecycles_protocol::Millis;
use uuid::Uuid;

use super::writes::{Batch, Direct, insert_tasks, materialize};
use super::{id_list, parse_uuid};
use crate::store::{LeaseAsk, LeasedTask, StoreResult};

/// Which unsent tasks of a job a lease may take.
#[derive(Clone, Copy)]
enum Pick<'a> {
    /// Every unit of the job has exactly one task (as many tasks as units: no replica,
    /// replacement or spare was ever made), the common case of quorum 1: the first unsent
    /// tasks in order, with no other task of their units to look at (the per-row subquery and
    /// grouping below were a third of the lease statement's time in W1).
    Singles,
    /// At most one replica per unit (the subquery sees the table as it was before the
    /// statement, so it picks one replica per unit itself: the group by `unit_seq` walks
    /// `tasks_unsent` in order, with no lookup of the unit's other tasks per row), never a unit
    /// the worker, or with `owner` set another worker of that owner, already has a task of.
    Replicas { owner: Option<&'a str> },
}

/// Leases up to `max` unsent tasks of one job to `worker`, as `pick` allows.
fn take_tasks(
    conn: &Connection,
    job: &str,
    worker: &str,
    pick: Pick<'_>,
    max: u32,
    now: Millis,
    deadline: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    match pick {
        Pick::Singles => {
            let mut stmt = conn.prepare_cached(
                "UPDATE OR FAIL tasks \
                 SET state = 'leased', worker_id = ?1, leased_at = ?2, deadline = ?3 \
                 WHERE rowid IN (SELECT rowid FROM tasks WHERE job_id = ?4 AND state = 'unsent' \
                   ORDER BY unit_seq LIMIT ?5) \
                 RETURNING id, job_id, unit_id, unit_seq, deadline",
            )?;
            leased_rows(stmt.query(params![worker, now, deadline, job, max as i64])?)
        }
        Pick::Replicas { owner } => {
            let mut stmt = conn.prepare_cached(
                "UPDATE OR FAIL tasks \
                 SET state = 'leased', worker_id = ?1, leased_at = ?2, deadline = ?3 \
                 WHERE rowid IN (SELECT MIN(t.rowid) FROM tasks t WHERE t.job_id = ?4 \
                   AND t.state = 'unsent' \
                   AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.unit_id = t.unit_id \
                     AND (o.worker_id = ?1 \
                       OR (?6 IS NOT NULL AND o.worker_id IN (SELECT id FROM workers WHERE owner = ?6)))) \
                   GROUP BY t.unit_seq ORDER BY t.unit_seq LIMIT ?5) \
                 RETURNING id, job_id, unit_id, unit_seq, deadline",
            )?;
            leased_rows(stmt.query(params![worker, now, deadline, job, max as i64, owner])?)
        }
    }
}

/// Gives `worker` back its own timed-out tasks of `job` whose replacements nobody took within a
/// unit's timeout (deadline before `stale_before`). A worker never gets a second task of a unit,
/// so a unit whose live workers all had a task of it waited forever: at quorum 2 with two
/// workers, one that missed a deadline (starved of CPU, asleep) could never take the
/// replacement, and the other already had its result in. The same task goes out again, with a
/// new deadline: still one task of the unit per worker, and its late result counts once.
fn revive(
    conn: &Connection,
    job: &str,
    worker: &str,
    max: u32,
    now: Millis,
    deadline: Millis,
    stale_before: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE OR FAIL tasks SET state = 'leased', leased_at = ?2, deadline = ?3 \
         WHERE rowid IN (SELECT t.rowid FROM tasks t WHERE t.worker_id = ?1 \
           AND t.state = 'timed_out' AND t.job_id = ?4 AND t.deadline < ?6 \
           AND EXISTS (SELECT 1 FROM units u WHERE u.id = t.unit_id AND u.state = 'open') \
           AND EXISTS (SELECT 1 FROM tasks r WHERE r.unit_id = t.unit_id AND r.state = 'unsent') \
           ORDER BY t.unit_seq LIMIT ?5) \
         RETURNING id, job_id, unit_id, unit_seq, deadline",
    )?;
    leased_rows(stmt.query(params![
        worker,
        now,
        deadline,
        job,
        max as i64,
        stale_before
    ])?)
}

/// The rows a lease statement returned, as leased tasks.
fn leased_rows(mut rows: rusqlite::Rows<'_>) -> StoreResult<Vec<LeasedTask>> {
    let mut leased = Vec::new();
    while let Some(r) = rows.next()? {
        leased.push(leased_at(r)?);
    }
    Ok(leased)
}

/// A task row (`id, job_id, unit_id, unit_seq, deadline`) as a leased task.
pub(super) fn leased_at(r: &rusqlite::Row) -> StoreResult<LeasedTask> {
    Ok(LeasedTask {
        task_id: parse_uuid(&r.get::<_, String>(0)?, "id")?,
        job_id: parse_uuid(&r.get::<_, String>(1)?, "job_id")?,
        unit_id: parse_uuid(&r.get::<_, String>(2)?, "unit_id")?,
        unit_seq: r.get::<_, i64>(3)? as u64,
        deadline: r.get(4)?,
    })
}

/// What the lease needs of a job that has work.
struct LeasableJob {
    id: String,
    unit_timeout_ms: i64,
    unit_count: i64,
    units_created: i64,
    tasks_created: i64,
    target_results: i64,
    adaptive: bool,
    distinct_owners: bool,
}

/// Adaptive replication at lease time: units leased by an untrusted worker, or picked for a
/// spot check, get their other replicas now so other workers can compute them in parallel.
fn replicate(
    conn: &Connection,
    job: &str,
    leased: &[LeasedTask],
    ask: &LeaseAsk<'_>,
    target: u32,
    now: Millis,
) -> StoreResult<()> {
    let shared: Vec<Uuid> = leased
        .iter()
        .filter(|_| !ask.trusted || rand::random::<f64>() < ask.spot_check)
        .map(|t| t.unit_id)
        .collect();
    if shared.is_empty() || target <= 1 {
        return Ok(());
    }
    let units: Vec<(String, i64)> = conn
        .prepare_cached(
            "UPDATE OR FAIL units SET replicated = 1 WHERE replicated = 0 \
             AND id IN (SELECT value FROM json_each(?1)) RETURNING id, seq",
        )?
        .query_map([id_list(&shared)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if units.is_empty() {
        return Ok(());
    }
    let extra = target as usize - 1;
    insert_tasks(
        conn,
        job,
        units
            .iter()
            .flat_map(|(id, seq)| std::iter::repeat_n((id.as_str(), *seq), extra)),
        now,
    )?;
    conn.prepare_cached("UPDATE jobs SET tasks_created = tasks_created + ?1 WHERE id = ?2")?
        .execute(params![(units.len() * extra) as i64, job])?;
    Ok(())
}

/// The whole lease, inside the caller's transaction.
pub(super) fn lease(
    conn: &Connection,
    ask: &LeaseAsk<'_>,
    now: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let worker = ask.worker.to_string();
    // Checked again here, inside the writer's transaction: a ban decided after the request was
    // authenticated must not be followed by a lease nobody will compute.
    // `late`: whether the worker has timed-out tasks that `revive` may give back.
    let Some((quota, in_flight, late)) = conn
        .prepare_cached(
            "UPDATE workers SET last_seen = ?1 WHERE id = ?2 AND banned = 0 RETURNING quota, \
             (SELECT COUNT(*) FROM tasks WHERE worker_id = ?2 AND state = 'leased'), \
             EXISTS (SELECT 1 FROM tasks WHERE worker_id = ?2 AND state = 'timed_out')",
        )?
        .query_row(params![now, worker], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let room = quota - in_flight;
    let max = ask.max.min(room.max(0) as u32);
    if max == 0 {
        return Ok(Vec::new());
    }
    let apps_json = serde_json::to_string(ask.apps).unwrap_or_else(|_| "[]".into());
    // Module jobs (app `wasm:<sha256>`) go to workers that name the module, or `wasm:*`
    // (sparecycles_wasm::ANY_MODULE) for any module.
    let jobs: Vec<LeasableJob> = conn
        .prepare_cached(
            "SELECT id, unit_timeout_ms, unit_count, units_created, target_results, adaptive, \
             distinct_owners, tasks_created FROM jobs \
             WHERE state IN ('queued', 'running') AND (app IN (SELECT value FROM json_each(?1)) \
             OR (app LIKE 'wasm:%' AND 'wasm:*' IN (SELECT value FROM json_each(?1)))) \
             ORDER BY priority DESC, last_lease_at ASC, created_at ASC LIMIT 64",
        )?
        .query_map([&apps_json], |r| {
            Ok(LeasableJob {
                id: r.get(0)?,
                unit_timeout_ms: r.get(1)?,
                unit_count: r.get(2)?,
                units_created: r.get(3)?,
                target_results: r.get(4)?,
                adaptive: r.get(5)?,
                distinct_owners: r.get(6)?,
                tasks_created: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut leased = Vec::new();
    for job in &jobs {
        let want = max.saturating_sub(leased.len() as u32);
        if want == 0 {
            break;
        }
        let id = &job.id;
        let deadline = now + job.unit_timeout_ms;
        let adaptive = job.adaptive;
        let target = job.target_results as u32;
        // Units get one task each when created unless the job replicates them all from the
        // start, so such a job with as many tasks as units has one task per unit, and keeps
        // it through a batch created here.
        let pick = if job.tasks_created == job.units_created && (adaptive || target <= 1) {
            Pick::Singles
        } else {
            Pick::Replicas {
                owner: ask.owner.filter(|_| job.distinct_owners),
            }
        };
        let take = |max: u32| take_tasks(conn, id, &worker, pick, max, now, deadline);
        let mut got = take(want)?;
        let unit_count = job.unit_count as u64;
        let created = job.units_created as u64;
        if (got.len() as u32) < want && created < unit_count {
            // The frontier reached the end of the created units: create the next batch. A job
            // of one task per unit has no unsent task left before it, so the first new units'
            // tasks are the ones this lease takes: written leased (see `Direct`).
            let n = ask.batch_units.max(want as u64).min(unit_count - created);
            let direct = matches!(pick, Pick::Singles).then_some(Direct {
                worker: &worker,
                count: want - got.len() as u32,
                deadline,
            });
            let batch = Batch {
                job: id,
                from_seq: created,
                n,
                target,
                adaptive,
            };
            got.extend(materialize(conn, batch, now, direct)?);
            if (got.len() as u32) < want {
                got.extend(take(want - got.len() as u32)?);
            }
        }
        if adaptive {
            replicate(conn, id, &got, ask, target, now)?;
        }
        if late && (got.len() as u32) < want && matches!(pick, Pick::Replicas { .. }) {
            // Replacements exist only in jobs leased replica by replica.
            let left = want - got.len() as u32;
            let stale_before = now - job.unit_timeout_ms;
            got.extend(revive(
                conn,
                id,
                &worker,
                left,
                now,
                deadline,
                stale_before,
            )?);
        }
        if got.is_empty() {
            continue;
        }
        conn.prepare_cached(
            "UPDATE jobs SET last_lease_at = ?1, updated_at = ?1, \
             state = CASE state WHEN 'queued' THEN 'running' ELSE state END WHERE id = ?2",
        )?
        .execute(params![now, id])?;
        leased.extend(got);
    }
    Ok(leased)
}
