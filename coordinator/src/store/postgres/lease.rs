//! Leasing on PostgreSQL: claims unsent tasks with `FOR UPDATE SKIP LOCKED`, so coordinators
//! leasing at the same moment take different rows and never hand out one task twice; creates
//! units as the frontier advances (under the job row's lock) and replicates adaptive units.

use sparecycles_protocol::Millis;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::jobs::{insert_tasks, materialize};
use super::{ids, parse_uuid, uuid_col};
use crate::store::{LeaseAsk, LeasedTask, StoreResult};

/// Key space of the per-owner transaction lock (the two-int form of advisory locks, apart
/// from the transitioner's single-bigint key).
const OWNER_LOCK_CLASS: i32 = 0x5C01;

/// Leases up to `max` unsent tasks of one job to `worker`: one replica per unit (the lowest
/// unsent id; a unit whose lowest replica another coordinator is claiming is skipped), never a
/// unit the worker, or with `owner` set another worker of that owner, already has a task of.
async fn lease_from_job(
    conn: &mut PgConnection,
    job: &str,
    worker: &str,
    owner: Option<&str>,
    max: u32,
    now: Millis,
    deadline: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let rows = sqlx::query(
        "WITH picked AS ( \
           SELECT t.id FROM tasks t WHERE t.job_id = $4 AND t.state = 'unsent' \
             AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.unit_id = t.unit_id AND (o.worker_id = $1 \
               OR ($6::text IS NOT NULL AND o.worker_id IN (SELECT id FROM workers WHERE owner = $6)))) \
             AND t.id = (SELECT MIN(x.id) FROM tasks x WHERE x.unit_id = t.unit_id AND x.state = 'unsent') \
           ORDER BY t.unit_seq LIMIT $5 FOR UPDATE OF t SKIP LOCKED) \
         UPDATE tasks SET state = 'leased', worker_id = $1, leased_at = $2, deadline = $3, \
           lease_count = lease_count + 1 \
         FROM picked WHERE tasks.id = picked.id AND tasks.state = 'unsent' \
         RETURNING tasks.id, tasks.job_id, tasks.unit_id, tasks.unit_seq, tasks.deadline",
    )
    .bind(worker)
    .bind(now)
    .bind(deadline)
    .bind(job)
    .bind(max as i64)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    leased_in_order(&rows)
}

/// Gives `worker` back its own timed-out tasks of `job` whose replacements nobody took within a
/// unit's timeout (deadline before `stale_before`), as the SQLite store's lease does: a worker
/// never gets a second task of a unit, so without this a unit whose live workers all had a task
/// of it waited forever. The same task goes out again, with a new deadline.
async fn revive(
    conn: &mut PgConnection,
    job: &str,
    worker: &str,
    max: u32,
    now: Millis,
    deadline: Millis,
    stale_before: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let rows = sqlx::query(
        "WITH picked AS ( \
           SELECT t.id FROM tasks t WHERE t.worker_id = $1 AND t.state = 'timed_out' \
             AND t.job_id = $4 AND t.deadline < $6 \
             AND EXISTS (SELECT 1 FROM units u WHERE u.id = t.unit_id AND u.state = 'open') \
             AND EXISTS (SELECT 1 FROM tasks r WHERE r.unit_id = t.unit_id AND r.state = 'unsent') \
           ORDER BY t.unit_seq LIMIT $5 FOR UPDATE OF t SKIP LOCKED) \
         UPDATE tasks SET state = 'leased', leased_at = $2, deadline = $3, \
           lease_count = lease_count + 1 \
         FROM picked WHERE tasks.id = picked.id AND tasks.state = 'timed_out' \
         RETURNING tasks.id, tasks.job_id, tasks.unit_id, tasks.unit_seq, tasks.deadline",
    )
    .bind(worker)
    .bind(now)
    .bind(deadline)
    .bind(job)
    .bind(max as i64)
    .bind(stale_before)
    .fetch_all(&mut *conn)
    .await?;
    leased_in_order(&rows)
}

/// The rows a lease statement returned, as leased tasks in unit order.
fn leased_in_order(rows: &[sqlx::postgres::PgRow]) -> StoreResult<Vec<LeasedTask>> {
    let mut leased = rows
        .iter()
        .map(leased_row)
        .collect::<StoreResult<Vec<_>>>()?;
    leased.sort_by_key(|t| t.unit_seq);
    Ok(leased)
}

/// A task row (`id, job_id, unit_id, unit_seq, deadline`) as a leased task.
pub(super) fn leased_row(r: &sqlx::postgres::PgRow) -> StoreResult<LeasedTask> {
    Ok(LeasedTask {
        task_id: uuid_col(r, "id")?,
        job_id: uuid_col(r, "job_id")?,
        unit_id: uuid_col(r, "unit_id")?,
        unit_seq: r.try_get::<i64, _>("unit_seq")? as u64,
        deadline: r.try_get("deadline")?,
    })
}

/// Adaptive replication at lease time: units leased by an untrusted worker, or picked for a
/// spot check, get their other replicas now so other workers can compute them in parallel.
///
/// Returns the tasks it had to give back: a unit locked by a batch of verdicts or a report is
/// skipped rather than waited for (this lease holds its worker's row, which a batch of
/// verdicts may be waiting for), and its task is not leased now, as the unit could otherwise
/// rest on one untrusted result.
async fn replicate(
    conn: &mut PgConnection,
    job: &str,
    leased: &[LeasedTask],
    ask: &LeaseAsk<'_>,
    target: u32,
    now: Millis,
) -> StoreResult<Vec<Uuid>> {
    let shared: Vec<Uuid> = leased
        .iter()
        .filter(|_| !ask.trusted || rand::random::<f64>() < ask.spot_check)
        .map(|t| t.unit_id)
        .collect();
    if shared.is_empty() || target <= 1 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "WITH locked AS (SELECT id, replicated FROM units WHERE id = ANY($1) \
           ORDER BY id FOR UPDATE SKIP LOCKED), \
         marked AS (UPDATE units SET replicated = TRUE FROM locked \
           WHERE units.id = locked.id AND NOT locked.replicated RETURNING units.id, units.seq) \
         SELECT locked.id, marked.seq FROM locked LEFT JOIN marked ON marked.id = locked.id",
    )
    .bind(ids(&shared))
    .fetch_all(&mut *conn)
    .await?;
    let mut locked = std::collections::HashSet::with_capacity(rows.len());
    let mut units: Vec<(String, i64)> = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        locked.insert(parse_uuid(&id, "id")?);
        if let Some(seq) = r.try_get::<Option<i64>, _>("seq")? {
            units.push((id, seq));
        }
    }
    let skipped: Vec<Uuid> = leased
        .iter()
        .filter(|t| shared.contains(&t.unit_id) && !locked.contains(&t.unit_id))
        .map(|t| t.task_id)
        .collect();
    if !skipped.is_empty() {
        sqlx::query(
            "UPDATE tasks SET state = 'unsent', worker_id = NULL, leased_at = NULL, deadline = NULL, \
             lease_count = lease_count - 1 WHERE id = ANY($1)",
        )
        .bind(ids(&skipped))
        .execute(&mut *conn)
        .await?;
    }
    if units.is_empty() {
        return Ok(skipped);
    }
    let extra = target as usize - 1;
    insert_tasks(
        conn,
        job,
        units
            .iter()
            .flat_map(|(id, seq)| std::iter::repeat_n((id.as_str(), *seq), extra)),
        now,
    )
    .await?;
    sqlx::query("UPDATE jobs SET tasks_created = tasks_created + $1 WHERE id = $2")
        .bind((units.len() * extra) as i64)
        .bind(job)
        .execute(&mut *conn)
        .await?;
    Ok(skipped)
}

/// A job whose lease reached the end of its created units: `grow` creates the next ones.
#[derive(Debug)]
pub(super) struct Frontier {
    job_id: Uuid,
    /// `units_created` as the lease read it.
    seen: u64,
    unit_count: u64,
    target: u32,
    adaptive: bool,
    /// Tasks the lease still wanted.
    want: u64,
}

/// Creates a job's next units (at least `batch_units`) in the caller's transaction, under the
/// job row's lock, unless another lease already did; true when there are new units to lease.
///
/// Not inside a lease's transaction: one that held leased tasks while waiting for the job row
/// deadlocked with another that held the row and, following an updated task to its newest
/// version, waited for the first (PostgreSQL's log, W1 with 1,000 workers).
pub(super) async fn grow(
    conn: &mut PgConnection,
    f: &Frontier,
    batch_units: u64,
    now: Millis,
) -> StoreResult<bool> {
    let created: i64 =
        sqlx::query_scalar("SELECT units_created FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(f.job_id.to_string())
            .fetch_one(&mut *conn)
            .await?;
    let created = created as u64;
    if created != f.seen {
        return Ok(created > f.seen);
    }
    let n = batch_units.max(f.want).min(f.unit_count - created);
    materialize(conn, f.job_id, created, n, f.target, f.adaptive, now).await?;
    Ok(n > 0)
}

/// The whole lease, inside the caller's transaction; also the jobs it found short of created
/// units, for `grow`.
pub(super) async fn lease(
    conn: &mut PgConnection,
    ask: &LeaseAsk<'_>,
    now: Millis,
) -> StoreResult<(Vec<LeasedTask>, Vec<Frontier>)> {
    let worker = ask.worker.to_string();
    // Locks the worker's row until commit: one lease per worker at a time, whichever
    // coordinators its requests reach, so its quota and replica separation hold. Checked
    // again here: a ban decided after the request was authenticated must not be followed by a
    // lease nobody will compute.
    let Some(row) = sqlx::query(
        "UPDATE workers SET last_seen = $1 WHERE id = $2 AND NOT banned RETURNING quota, \
         (SELECT COUNT(*) FROM tasks WHERE worker_id = $2 AND state = 'leased') AS in_flight, \
         EXISTS (SELECT 1 FROM tasks WHERE worker_id = $2 AND state = 'timed_out') AS late",
    )
    .bind(now)
    .bind(&worker)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let room = row.try_get::<i64, _>("quota")? - row.try_get::<i64, _>("in_flight")?;
    // Whether the worker has timed-out tasks that `revive` may give back.
    let late: bool = row.try_get("late")?;
    let max = ask.max.min(room.max(0) as u32);
    if max == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if let Some(owner) = ask.owner {
        // Two workers of one owner leasing at once on two coordinators must not both take a
        // replica of one unit.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(OWNER_LOCK_CLASS)
            .bind(owner)
            .execute(&mut *conn)
            .await?;
    }
    // Module jobs (app `wasm:<sha256>`) go to workers that name the module, or `wasm:*`
    // (sparecycles_wasm::ANY_MODULE) for any module.
    let jobs = sqlx::query(
        "SELECT id, unit_timeout_ms, unit_count, units_created, target_results, adaptive, \
         distinct_owners FROM jobs \
         WHERE state IN ('queued', 'running') \
         AND (app = ANY($1) OR (app LIKE 'wasm:%' AND 'wasm:*' = ANY($1))) \
         ORDER BY priority DESC, last_lease_at ASC, created_at ASC LIMIT 64",
    )
    .bind(ask.apps)
    .fetch_all(&mut *conn)
    .await?;
    let mut leased = Vec::new();
    let mut touched = Vec::new();
    let mut frontier = Vec::new();
    for job in &jobs {
        let want = max.saturating_sub(leased.len() as u32);
        if want == 0 {
            break;
        }
        let id: String = job.try_get("id")?;
        let deadline = now + job.try_get::<i64, _>("unit_timeout_ms")?;
        let adaptive: bool = job.try_get("adaptive")?;
        let target = job.try_get::<i64, _>("target_results")? as u32;
        let owner = ask
            .owner
            .filter(|_| job.try_get::<bool, _>("distinct_owners").unwrap_or(false));
        let mut got = lease_from_job(conn, &id, &worker, owner, want, now, deadline).await?;
        let unit_count = job.try_get::<i64, _>("unit_count")? as u64;
        let seen = job.try_get::<i64, _>("units_created")? as u64;
        if (got.len() as u32) < want && seen < unit_count {
            // The frontier reached the end of the created units: the caller grows the job
            // after this transaction.
            frontier.push(Frontier {
                job_id: uuid_col(job, "id")?,
                seen,
                unit_count,
                target,
                adaptive,
                want: (want - got.len() as u32) as u64,
            });
        }
        if adaptive && !got.is_empty() {
            let skipped = replicate(conn, &id, &got, ask, target, now).await?;
            got.retain(|t| !skipped.contains(&t.task_id));
        }
        if late && (got.len() as u32) < want {
            let left = want - got.len() as u32;
            let stale_before = now - job.try_get::<i64, _>("unit_timeout_ms")?;
            got.extend(revive(conn, &id, &worker, left, now, deadline, stale_before).await?);
        }
        if got.is_empty() {
            continue;
        }
        touched.push(id);
        leased.extend(got);
    }
    if !touched.is_empty() {
        // A job's first lease starts it (waiting for its row if need be); the round-robin
        // mark is a hint, skipped while another transaction holds the row, so leases never
        // queue behind each other or the transitioner on a busy job's row.
        sqlx::query(
            "UPDATE jobs SET state = 'running', updated_at = $1 WHERE id = ANY($2) AND state = 'queued'",
        )
        .bind(now)
        .bind(&touched)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE jobs SET last_lease_at = $1, updated_at = $1 WHERE id IN \
             (SELECT id FROM jobs WHERE id = ANY($2) FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(&touched)
        .execute(&mut *conn)
        .await?;
    }
    Ok((leased, frontier))
}
