//! Leasing: hands unsent tasks to a worker in one transaction, creates units as the frontier
//! advances, and replicates adaptive units that an untrusted worker (or a spot check) leases.

use sparecycles_protocol::Millis;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{id_list, insert_tasks, materialize, uuid_col};
use crate::store::{LeaseAsk, LeasedTask, StoreResult};

/// Leases up to `max` unsent tasks of one job to `worker`, at most one per unit (the subquery
/// sees the table as it was before this statement, so it picks one replica per unit itself: the
/// group by `unit_seq` walks `tasks_unsent` in order, with no lookup of the unit's other tasks
/// per row), never a unit the worker, or with `owner` set another worker of that owner, already
/// has a task of.
async fn lease_from_job(
    conn: &mut SqliteConnection,
    job: &str,
    worker: &str,
    owner: Option<&str>,
    max: u32,
    now: Millis,
    deadline: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let rows = sqlx::query(
        "UPDATE tasks SET state = 'leased', worker_id = ?1, leased_at = ?2, deadline = ?3 \
         WHERE rowid IN (SELECT MIN(t.rowid) FROM tasks t WHERE t.job_id = ?4 AND t.state = 'unsent' \
           AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.unit_id = t.unit_id AND (o.worker_id = ?1 \
             OR (?6 IS NOT NULL AND o.worker_id IN (SELECT id FROM workers WHERE owner = ?6)))) \
           GROUP BY t.unit_seq ORDER BY t.unit_seq LIMIT ?5) \
         RETURNING id, job_id, unit_id, unit_seq, deadline",
    )
    .bind(worker)
    .bind(now)
    .bind(deadline)
    .bind(job)
    .bind(max as i64)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(leased_row).collect()
}

/// A task row (`id, job_id, unit_id, unit_seq, deadline`) as a leased task.
pub(super) fn leased_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<LeasedTask> {
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
async fn replicate(
    conn: &mut SqliteConnection,
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
    let units = sqlx::query(
        "UPDATE units SET replicated = 1 WHERE replicated = 0 \
         AND id IN (SELECT value FROM json_each(?1)) RETURNING id, seq",
    )
    .bind(id_list(&shared))
    .fetch_all(&mut *conn)
    .await?;
    if units.is_empty() {
        return Ok(());
    }
    let units: Vec<(String, i64)> = units
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("seq")?)))
        .collect::<StoreResult<_>>()?;
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
    sqlx::query("UPDATE jobs SET tasks_created = tasks_created + ?1 WHERE id = ?2")
        .bind((units.len() * extra) as i64)
        .bind(job)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The whole lease, inside the caller's transaction.
pub(super) async fn lease(
    conn: &mut SqliteConnection,
    ask: &LeaseAsk<'_>,
    now: Millis,
) -> StoreResult<Vec<LeasedTask>> {
    let worker = ask.worker.to_string();
    // Checked again here, inside the writer's transaction: a ban decided after the request was
    // authenticated must not be followed by a lease nobody will compute.
    let Some(row) = sqlx::query(
        "UPDATE workers SET last_seen = ?1 WHERE id = ?2 AND banned = 0 RETURNING quota, \
         (SELECT COUNT(*) FROM tasks WHERE worker_id = ?2 AND state = 'leased') AS in_flight",
    )
    .bind(now)
    .bind(&worker)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Vec::new());
    };
    let room = row.try_get::<i64, _>("quota")? - row.try_get::<i64, _>("in_flight")?;
    let max = ask.max.min(room.max(0) as u32);
    if max == 0 {
        return Ok(Vec::new());
    }
    let apps_json = serde_json::to_string(ask.apps).unwrap_or_else(|_| "[]".into());
    // Module jobs (app `wasm:<sha256>`) go to workers that name the module, or `wasm:*`
    // (sparecycles_wasm::ANY_MODULE) for any module.
    let jobs = sqlx::query(
        "SELECT id, unit_timeout_ms, unit_count, units_created, target_results, adaptive, \
         distinct_owners FROM jobs \
         WHERE state IN ('queued', 'running') AND (app IN (SELECT value FROM json_each(?1)) \
         OR (app LIKE 'wasm:%' AND 'wasm:*' IN (SELECT value FROM json_each(?1)))) \
         ORDER BY priority DESC, last_lease_at ASC, created_at ASC LIMIT 64",
    )
    .bind(&apps_json)
    .fetch_all(&mut *conn)
    .await?;
    let mut leased = Vec::new();
    for job in &jobs {
        let want = max.saturating_sub(leased.len() as u32);
        if want == 0 {
            break;
        }
        let id: String = job.try_get("id")?;
        let deadline = now + job.try_get::<i64, _>("unit_timeout_ms")?;
        let adaptive = job.try_get::<i64, _>("adaptive")? != 0;
        let target = job.try_get::<i64, _>("target_results")? as u32;
        let owner = ask
            .owner
            .filter(|_| job.try_get::<i64, _>("distinct_owners").unwrap_or(0) != 0);
        let mut got = lease_from_job(conn, &id, &worker, owner, want, now, deadline).await?;
        let unit_count = job.try_get::<i64, _>("unit_count")? as u64;
        let created = job.try_get::<i64, _>("units_created")? as u64;
        if (got.len() as u32) < want && created < unit_count {
            // The frontier reached the end of the created units: create the next batch.
            let n = ask.batch_units.max(want as u64).min(unit_count - created);
            materialize(
                conn,
                uuid_col(job, "id")?,
                created,
                n,
                target,
                adaptive,
                now,
            )
            .await?;
            let more = want - got.len() as u32;
            got.extend(lease_from_job(conn, &id, &worker, owner, more, now, deadline).await?);
        }
        if got.is_empty() {
            continue;
        }
        if adaptive {
            replicate(conn, &id, &got, ask, target, now).await?;
        }
        sqlx::query(
            "UPDATE jobs SET last_lease_at = ?1, updated_at = ?1, \
             state = CASE state WHEN 'queued' THEN 'running' ELSE state END WHERE id = ?2",
        )
        .bind(now)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
        leased.extend(got);
    }
    Ok(leased)
}
