//! The dispatcher: feeds buffered tasks to the compute thread one at a time and turns each
//! outcome into a result, stored in the outbox before it is handed to the report loop.

use std::sync::Arc;
use std::time::Duration;

use sparecycles_apps::ComputeError;
use sparecycles_protocol::work::MAX_ERROR_BYTES;
use sparecycles_protocol::{TaskResult, now_millis};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::Shared;
use super::compute::{ComputeThread, Job, Outcome, Saver};
use crate::outbox::Outbox;

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

/// Runs until stopped. On stop it cancels the running unit and waits briefly for it, so that a
/// unit finishing at that very moment is still stored and reported.
pub(crate) async fn dispatch_loop(
    shared: Arc<Shared>,
    compute: ComputeThread,
    mut outcomes: UnboundedReceiver<Outcome>,
    outbox: Outbox,
    results: UnboundedSender<TaskResult>,
) -> Result<(), DispatchError> {
    let stop = &shared.stop;
    loop {
        let (task, ctx) = loop {
            if stop.is_stopped() {
                return Ok(());
            }
            if let Some(next) = shared.tasks.start_next(now_millis()) {
                break next;
            }
            tokio::select! {
                _ = shared.tasks.work.notified() => {}
                _ = stop.wait() => return Ok(()),
            }
        };
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
            .current()
            .map(|c| c.wind_down)
            .unwrap_or_default();
        let module = match sparecycles_wasm::module_hash(&task.app) {
            None => None,
            Some(sha256) => {
                let (_, client) = shared.session.client();
                match shared.modules.get(&client, sha256).await {
                    Ok(module) => Some(module),
                    Err(msg) => {
                        // Never computed: the module is refused, unavailable or not the one
                        // the job names. The task error tells the coordinator why.
                        let outcome = Outcome {
                            task_id,
                            app: task.app.clone(),
                            result: Err(ComputeError::Failed(msg)),
                            elapsed: Duration::ZERO,
                        };
                        settle(&shared, &outbox, &results, outcome).await;
                        continue;
                    }
                }
            }
        };
        let job = Job {
            task,
            ctx: ctx.clone(),
            checkpoint: checkpoint.map(|s| s.checkpoint),
            saver: Some(Saver {
                store: shared.checkpoints.clone(),
                interval: shared.config.policy.checkpoint_interval,
                wind_down,
            }),
            module,
        };
        if compute.jobs.send(job).is_err() {
            shared.tasks.finish(task_id);
            return Err(DispatchError::ComputeThreadGone);
        }
        let outcome = tokio::select! {
            outcome = outcomes.recv() => outcome,
            _ = stop.wait() => {
                // The runner asked the unit to checkpoint and stop; give it a moment, then cancel.
                let outcome = match tokio::time::timeout(CANCEL_GRACE, outcomes.recv()).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        ctx.cancel();
                        tokio::time::timeout(CANCEL_GRACE, outcomes.recv()).await.ok().flatten()
                    }
                };
                if outcome.is_none() {
                    tracing::warn!(task = %task_id, "unit did not stop in time; abandoning it");
                    shared.set_unfinished(task_id);
                    shared.tasks.finish(task_id);
                    return Ok(());
                }
                outcome
            }
        };
        let Some(outcome) = outcome else {
            shared.tasks.finish(task_id);
            return Err(DispatchError::ComputeThreadGone);
        };
        settle(&shared, &outbox, &results, outcome).await;
    }
}

/// Stores and hands on the result of a finished unit, and forgets the unit.
async fn settle(
    shared: &Shared,
    outbox: &Outbox,
    results: &UnboundedSender<TaskResult>,
    outcome: Outcome,
) {
    let task_id = outcome.task_id;
    let canceled = matches!(outcome.result, Err(ComputeError::Canceled));
    let durable = outcome.elapsed >= SYNC_RESULTS_AFTER;
    shared.tasks.record_duration(outcome.elapsed);
    if let Some(result) = into_result(outcome) {
        store(outbox, &result, durable).await;
        // The report loop only ends after the dispatcher, so the send fails only in shutdown.
        let _ = results.send(result);
    }
    if canceled && shared.stop.is_stopped() {
        // Stopped by shutdown: its checkpoint (if any) is resumed by the next run.
        shared.set_unfinished(task_id);
    } else if let Err(e) = shared.checkpoints.remove(task_id) {
        tracing::warn!(task = %task_id, error = %e, "cannot remove a checkpoint");
    }
    shared.tasks.finish(task_id);
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

/// Writes the result to the outbox off the async threads. If the disk fails the result is still
/// sent from memory, but it would not survive a restart: say so loudly.
async fn store(outbox: &Outbox, result: &TaskResult, durable: bool) {
    let (outbox, copy) = (outbox.clone(), result.clone());
    let written = tokio::task::spawn_blocking(move || outbox.write_with(&copy, durable)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(task = %result.task_id, error = %e, "could not store result in the outbox");
        }
        Err(e) => {
            tracing::error!(task = %result.task_id, error = %e, "outbox write task failed");
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
