//! The transitioner: times out tasks, decides units whose tasks changed, assembles finished
//! jobs. Woken after reports and otherwise runs every `transition_interval`; with several
//! coordinators on one database only the elected leader runs passes.

use std::future::Future;

use sparecycles_protocol::now_millis;
use uuid::Uuid;

use crate::scheduler::assemble::assemble_job;
use crate::scheduler::validate::{Decision, decide};
use crate::state::AppState;
use crate::store::UnitVerdict;

/// Units decided per store round trip.
const UNITS_PER_PASS: u32 = 1000;

/// Runs passes until `shutdown` resolves.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let interval = state.settings().transition_interval;
    // When deadlines and silent workers were last looked at: reports wake the transitioner
    // far more often than those need checking, and each check is a write transaction.
    let mut checked: Option<tokio::time::Instant> = None;
    loop {
        // Coordinators sharing a database run the passes one at a time: the one holding the
        // store's leadership does, the others stand by and take over if it dies.
        match state.store().try_lead().await {
            Ok(true) => {
                let due = checked.is_none_or(|at| at.elapsed() >= interval);
                if due {
                    checked = Some(tokio::time::Instant::now());
                }
                if let Err(e) = pass(&state, due).await {
                    tracing::error!(error = format!("{e:#}"), "transitioner pass failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot tell whether to lead the transitioner"),
        }
        // On every coordinator, leading or not: their reports' counts wait here too.
        state.hub().flush_due();
        tokio::select! {
            _ = &mut shutdown => return,
            _ = state.transitioner_woken() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: expire and spare (when `check_deadlines`), decide, assemble.
pub async fn pass(state: &AppState, check_deadlines: bool) -> anyhow::Result<()> {
    let store = state.store();
    // A report decided a job's last unit: its submitter is waiting, so it is assembled before
    // the deadline checks and the marked units, which wait for nobody (issue 8: 0.1-0.5 ms of
    // a job's end). Taken before the read: a job a report completes after this wakes another
    // pass. A failure here does not hold up the rest of the pass; the periodic pass tries again.
    if state.take_job_done()
        && let Err(e) = assemble_ready(state).await
    {
        tracing::error!(error = format!("{e:#}"), "assembly failed");
    }
    let mut new_work = false;
    // The periodic pass also looks, for jobs left ready by an earlier process or a failed
    // assembly.
    let mut complete = check_deadlines;
    if check_deadlines {
        let expired = store.expire_tasks(now_millis()).await?;
        new_work |= expired > 0;
        if expired > 0 {
            metrics::counter!(crate::metrics::TASKS_TIMED_OUT).increment(expired);
            tracing::info!(expired, "tasks timed out; replacements will be created");
        }
        let silent_since = now_millis() - state.settings().suspect_after.as_millis() as i64;
        let suspected = store
            .spare_suspects(crate::store::Suspects::SilentSince(silent_since))
            .await?;
        new_work |= suspected > 0;
        if suspected > 0 {
            metrics::counter!(crate::metrics::TASKS_SPARED, "reason" => "silent")
                .increment(suspected);
            tracing::info!(suspected, "tasks of silent workers get spare tasks");
        }
    }
    loop {
        let units = store.dirty_units(UNITS_PER_PASS).await?;
        // Fewer than asked for: these are all (a report after the read wakes another pass).
        let last = units.len() < UNITS_PER_PASS as usize;
        if units.is_empty() {
            break;
        }
        let mut verdicts = Vec::with_capacity(units.len());
        for unit in units {
            let info = state.runnable_job(unit.job_id).await?;
            let decision = match &info {
                Some(info) if unit.open => {
                    // An adaptive unit that was never replicated was leased to a trusted worker:
                    // its result stands alone.
                    let mut policy = info.redundancy;
                    if !unit.replicated {
                        policy.min_quorum = 1;
                        policy.target_results = 1;
                    }
                    decide(&policy, &unit.tasks, |a, b| {
                        info.app.compare(&info.params, a, b)
                    })
                }
                // Decided units, units of finished jobs, and of a job just failed because it
                // can no longer be run: only clear the mark.
                _ => Decision::Pending { new_tasks: 0 },
            };
            verdicts.push(UnitVerdict {
                unit_id: unit.unit_id,
                job_id: unit.job_id,
                seq: unit.seq,
                changes: unit.changes,
                credit: info.as_ref().map_or(0.0, |i| i.plan.unit_work(unit.seq)),
                solo: !unit.replicated,
                task_workers: unit
                    .tasks
                    .iter()
                    .filter_map(|t| t.worker_id.map(|w| (t.id, w)))
                    .collect(),
                decision,
            });
        }
        // New tasks may let any waiting lease through; validated results raise their
        // workers' quotas, which only those workers' leases can use.
        new_work |= verdicts
            .iter()
            .any(|v| matches!(v.decision, Decision::Pending { new_tasks } if new_tasks > 0));
        let validated: Vec<Uuid> = verdicts
            .iter()
            .filter(|v| matches!(v.decision, Decision::Valid { .. }))
            .flat_map(|v| v.task_workers.iter().map(|&(_, worker)| worker))
            .collect();
        let decided = crate::events::Decided::of(&verdicts);
        complete |= store
            .apply_verdicts(verdicts, &state.settings().trust, now_millis())
            .await?;
        decided.publish(state);
        state.room_available(validated);
        if last {
            break;
        }
    }
    if new_work {
        state.work_available();
    }
    // Not on every pass: most follow a single report, and the query is a store round trip.
    if complete {
        assemble_ready(state).await?;
    }
    Ok(())
}

/// Assembles every job whose units are all decided.
async fn assemble_ready(state: &AppState) -> anyhow::Result<()> {
    let store = state.store();
    for job in store.jobs_to_assemble().await? {
        assemble_job(state, &job).await?;
        if let Some(row) = store.job(job.id).await? {
            state.emit(sparecycles_protocol::dashboard::Event::JobChanged {
                job_id: row.id,
                state: row.state,
            });
        }
    }
    Ok(())
}
