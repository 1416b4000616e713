//! The compute thread: the only place CPU work happens, off the async runtime.
//!
//! One dedicated OS thread owns a rayon pool of the allowed size and computes one unit at a time
//! inside it; units arrive over a channel and outcomes go back over another, so heartbeats and
//! HTTP keep flowing while every core is busy.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rayon::ThreadPool;
use serde_json::Value;
use sparecycles_apps::{ComputeCtx, ComputeError};
use sparecycles_protocol::TaskAssignment;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

/// A unit to compute, with the context the worker uses to cancel it and read its progress.
pub(crate) struct Job {
    pub(crate) task: TaskAssignment,
    pub(crate) ctx: ComputeCtx,
}

/// What came of a job.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) task_id: Uuid,
    pub(crate) app: String,
    pub(crate) result: Result<Value, ComputeError>,
    pub(crate) elapsed: Duration,
}

/// Handle on the compute thread; dropping it ends the thread after its current unit. The thread
/// is never joined: a unit that ignores cancellation must not hold up shutdown.
pub(crate) struct ComputeThread {
    pub(crate) jobs: mpsc::Sender<Job>,
}

/// Builds the pool (so a failure surfaces now, not in a thread) and starts the thread.
pub(crate) fn spawn(
    cores: usize,
    outcomes: UnboundedSender<Outcome>,
) -> std::io::Result<ComputeThread> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(1))
        .thread_name(|i| format!("compute-{i}"))
        .build()
        .map_err(std::io::Error::other)?;
    let (jobs, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("compute".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let outcome = compute(&pool, job);
                if outcomes.send(outcome).is_err() {
                    break;
                }
            }
        })?;
    Ok(ComputeThread { jobs })
}

/// Computes one unit; an unknown app or a panicking app becomes a failed result.
pub(crate) fn compute(pool: &ThreadPool, job: Job) -> Outcome {
    let Job { task, ctx } = job;
    let started = Instant::now();
    let result = match sparecycles_apps::find(&task.app) {
        None => Err(ComputeError::Failed(format!(
            "app {} not supported by this worker",
            task.app
        ))),
        Some(app) => {
            let run = || pool.install(|| app.compute(&task.params, &task.unit, &ctx));
            catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(ComputeError::Failed(format!(
                    "app {} panicked: {msg}",
                    task.app
                )))
            })
        }
    };
    Outcome {
        task_id: task.task_id,
        app: task.app,
        result,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_app_fails_cleanly() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let task = TaskAssignment {
            task_id: Uuid::now_v7(),
            job_id: Uuid::nil(),
            unit_id: Uuid::nil(),
            unit_seq: 0,
            app: "no-such-app".into(),
            params: json!({}),
            unit: json!({}),
            deadline: i64::MAX,
        };
        let outcome = compute(
            &pool,
            Job {
                task,
                ctx: ComputeCtx::new(),
            },
        );
        assert_eq!(
            outcome.result,
            Err(ComputeError::Failed(
                "app no-such-app not supported by this worker".into()
            ))
        );
    }
}
