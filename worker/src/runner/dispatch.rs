//! The dispatcher: starts buffered units on the compute thread whenever it is idle (fetching a
//! module first when the unit needs one), and stops it at shutdown. The compute thread settles
//! each unit itself (see [`settle`]) and goes on to the next built-in unit on its own.

use std::sync::Arc;
use std::time::Duration;

use sparecycles_apps::{ComputeCtx, ComputeError};
use sparecycles_protocol::work::MAX_ERROR_BYTES;
use sparecycles_protocol::{TaskAssignment, TaskResult, now_millis};
use sparecycles_wasm::WasmApp;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::Shared;
use super::compute::{ComputeThread, Job, Outcome, Saver, Settled};

/// How long a canceled unit may take to notice, at shutdown, before it is abandoned.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Results of units that took at least this long are fsynced before they are reported; shorter
/// ones are cheaper to recompute after a power cut than to sync every time.
const SYNC_RESULTS_AFTER: Duration = Duration::from_millis(200);

/// Why the dispatcher stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("the compute thread stopped unexpectedly")]
    ComputeThreadGone,
}

/// Runs until stopped. On stop it lets the running unit checkpoint and stop, cancelling it if
/// it takes long, so that a unit finishing at that very moment is still stored and reported.
pub(crate) async fn dispatch_loop(
    shared: Arc<Shared>,
    compute: ComputeThread,
    mut settled: UnboundedReceiver<Settled>,
    results: UnboundedSender<TaskResult>,
) -> Result<(), DispatchError> {
    let stop = &shared.stop;
    // Whether the compute thread has a unit (it may go on to the next by itself).
    let mut busy = false;
    loop {
        if !busy
            && !stop.is_stopped()
            && let Some((task, ctx)) = shared.tasks.start_next(now_millis())
        {
            busy = start(&shared, &compute, &results, task, ctx).await?;
            if !busy {
                continue;
            }
        }
        if busy {
            tokio::select! {
                done = settled.recv() => match done {
                    Some(Settled) => busy = false,
                    None => return Err(DispatchError::ComputeThreadGone),
                },
                _ = stop.wait() => {
                    wind_down(&shared, &mut settled).await;
                    return Ok(());
                }
            }
        } else {
            tokio::select! {
                _ = shared.tasks.work.notified() => {}
                _ = stop.wait() => return Ok(()),
            }
        }
    }
}

/// Hands a started task to the compute thread; `false` when it was settled at once instead
/// (its module is refused or unavailable).
async fn start(
    shared: &Arc<Shared>,
    compute: &ComputeThread,
    results: &UnboundedSender<TaskResult>,
    task: TaskAssignment,
    ctx: ComputeCtx,
) -> Result<bool, DispatchError> {
    let task_id = task.task_id;
    let module = match sparecycles_wasm::module_hash(&task.app) {
        None => None,
        Some(sha256) => {
            let (_, client) = shared.session.client();
            match shared.modules.get(&client, sha256).await {
                Ok(module) => Some(module),
                Err(msg) => {
                    // Never computed: the module is refused, unavailable or not the one the
                    // job names. The task error tells the coordinator why.
                    let outcome = Outcome {
                        task_id,
                        app: task.app.clone(),
                        result: Err(ComputeError::Failed(msg)),
                        elapsed: Duration::ZERO,
                    };
                    let (shared, results) = (shared.clone(), results.clone());
                    let _ = tokio::task::spawn_blocking(move || settle(&shared, &results, outcome))
                        .await;
                    return Ok(false);
                }
            }
        }
    };
    let job = prepare(shared, task, ctx, module);
    if compute.jobs.send(job).is_err() {
        shared.tasks.finish(task_id);
        return Err(DispatchError::ComputeThreadGone);
    }
    Ok(true)
}

/// Shutdown: the runner asked the running units to checkpoint and stop (and the lanes start no
/// more); give them a moment, then cancel them, and abandon those that do not even notice that.
async fn wind_down(shared: &Shared, settled: &mut UnboundedReceiver<Settled>) {
    // Whether the lanes ended in time; a compute thread gone ends nothing.
    let mut ended = async || {
        tokio::time::timeout(CANCEL_GRACE, settled.recv())
            .await
            .ok()
            .flatten()
            .is_some()
    };
    if ended().await {
        return;
    }
    for c in shared.tasks.current() {
        c.ctx.cancel();
    }
    if ended().await {
        return;
    }
    for c in shared.tasks.current() {
        let task_id = c.task.task_id;
        tracing::warn!(task = %task_id, "unit did not stop in time; abandoning it");
        shared.set_unfinished(task_id);
        shared.tasks.finish(task_id);
    }
}

/// The job for a task just made current: its checkpoint (if one fits), and how to save more.
pub(crate) fn prepare(
    shared: &Shared,
    task: TaskAssignment,
    ctx: ComputeCtx,
    module: Option<Arc<WasmApp>>,
) -> Job {
    let task_id = task.task_id;
    let checkpoint = shared.checkpoints.load(task_id).filter(|s| s.task == task);
    match &checkpoint {
        Some(saved) => {
            tracing::info!(task = %task_id, app = %task.app, unit_seq = task.unit_seq,
                progress = saved.progress, checkpoint = %saved.checkpoint,
                "resuming unit from checkpoint");
            shared.tasks.set_resumed(task_id, saved.progress);
        }
        None => {
            tracing::debug!(task = %task_id, app = %task.app, unit_seq = task.unit_seq, "computing unit");
        }
    }
    let wind_down = shared
        .tasks
        .current_of(task_id)
        .map(|c| c.wind_down)
        .unwrap_or_default();
    Job {
        task,
        ctx,
        checkpoint: checkpoint.map(|s| s.checkpoint),
        saver: Some(Saver {
            store: shared.checkpoints.clone(),
            interval: shared.config.policy.checkpoint_interval,
            wind_down,
        }),
        module,
    }
}

/// Stores the result of a finished unit in the outbox, forgets the unit, and hands the result
/// to the report loop. Blocking file writes: runs off the async runtime.
pub(crate) fn settle(shared: &Shared, results: &UnboundedSender<TaskResult>, outcome: Outcome) {
    if let Some(result) = store(shared, outcome) {
        // The report loop only ends after the dispatcher, so the send fails only in shutdown.
        let _ = results.send(result);
    }
}

/// [`settle`] up to the hand-off: the result (if any) is in the outbox and the unit is no
/// longer held, so the report loop sees an idle worker once the result reaches it.
pub(crate) fn store(shared: &Shared, outcome: Outcome) -> Option<TaskResult> {
    let task_id = outcome.task_id;
    let canceled = matches!(outcome.result, Err(ComputeError::Canceled));
    let durable = outcome.elapsed >= SYNC_RESULTS_AFTER;
    shared.tasks.record_duration(outcome.elapsed);
    let result = into_result(outcome);
    if let Some(result) = &result
        && let Err(e) = shared.outbox.write_with(result, durable)
    {
        // The result is still sent from memory, but would not survive a restart: say so loudly.
        tracing::error!(task = %result.task_id, error = %e, "could not store result in the outbox");
    }
    if canceled && shared.stop.is_stopped() {
        // Stopped by shutdown: its checkpoint (if any) is resumed by the next run.
        shared.set_unfinished(task_id);
    } else if let Err(e) = shared.checkpoints.remove(task_id) {
        tracing::warn!(task = %task_id, error = %e, "cannot remove a checkpoint");
    }
    // Finished before the result is handed on, so the report loop sees an idle worker when this
    // was the last unit (and reports at once). The outbox holds it meanwhile.
    shared.tasks.finish(task_id);
    result
}

/// The result to report, or `None` for a canceled unit (nothing to say about it).
fn into_result(outcome: Outcome) -> Option<TaskResult> {
    let Outcome {
        task_id,
        app,
        result,
        elapsed,
    } = outcome;
    match result {
        Ok(output) => {
            tracing::debug!(task = %task_id, %app, ?elapsed, "unit computed");
            Some(TaskResult::success(task_id, output))
        }
        Err(ComputeError::Failed(msg)) => {
            tracing::debug!(task = %task_id, %app, ?elapsed, error = %msg, "unit failed");
            Some(TaskResult::failure(task_id, clip_error(msg)))
        }
        Err(ComputeError::Canceled) => {
            tracing::debug!(task = %task_id, %app, ?elapsed, "unit canceled");
            None
        }
    }
}

/// Error messages longer than the coordinator accepts are cut (at a character boundary).
fn clip_error(mut msg: String) -> String {
    if msg.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn long_errors_are_clipped_on_a_char_boundary() {
        let msg = "é".repeat(MAX_ERROR_BYTES);
        let clipped = clip_error(msg);
        assert!(clipped.len() <= MAX_ERROR_BYTES);
        assert!(clipped.len() >= MAX_ERROR_BYTES - 1);
        assert_eq!(clip_error("short".into()), "short");
    }

    #[test]
    fn canceled_units_are_not_reported() {
        let outcome = |result| Outcome {
            task_id: Uuid::nil(),
            app: "x".into(),
            result,
            elapsed: Duration::ZERO,
        };
        assert_eq!(into_result(outcome(Err(ComputeError::Canceled))), None);
        assert_eq!(
            into_result(outcome(Err(ComputeError::Failed("bad".into())))),
            Some(TaskResult::failure(Uuid::nil(), "bad"))
        );
    }
}
