//! The compute thread: the only place CPU work happens, off the async runtime.
//!
//! One dedicated OS thread owns a rayon pool of the allowed size and computes units inside it.
//! The dispatcher hands it a unit over a channel; the pool then runs one lane per thread, each
//! computing a buffered built-in unit, settling it (outbox, report queue) and going straight on
//! to the next. Short units side by side keep every thread busy: one unit at a time split across
//! the threads left them waiting for each other at the end of every unit. A unit alone still
//! uses every thread: an idle lane's thread steals the pieces of the units still running. Short
//! units also leave the cores idle neither for a round trip through the async runtime nor for a
//! wake-up of another thread each (measured in BENCHMARKS.md, W2).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rayon::ThreadPool;
use serde_json::Value;
use sparecycles_apps::{App, ComputeCtx, ComputeError};
use sparecycles_protocol::{TaskAssignment, now_millis};
use sparecycles_wasm::WasmApp;
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

use super::Shared;
use super::dispatch::{prepare, store};
use crate::checkpoint::{Checkpoints, Saved};

/// A unit to compute, with the context the worker uses to cancel it and read its progress.
pub(crate) struct Job {
    pub(crate) task: TaskAssignment,
    pub(crate) ctx: ComputeCtx,
    /// Where the unit resumes from.
    pub(crate) checkpoint: Option<Value>,
    pub(crate) saver: Option<Saver>,
    /// The module of a module app, fetched and checked; `None` for built-in apps.
    pub(crate) module: Option<Arc<WasmApp>>,
}

/// How a unit's checkpoints are kept.
pub(crate) struct Saver {
    pub(crate) store: Checkpoints,
    /// Least time between two checkpoints.
    pub(crate) interval: Duration,
    /// When set, save at the next chance whatever the interval, then stop the unit.
    pub(crate) wind_down: Arc<AtomicBool>,
}

/// What came of a job.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) task_id: Uuid,
    pub(crate) app: String,
    pub(crate) result: Result<Value, ComputeError>,
    pub(crate) elapsed: Duration,
}

/// Tells the dispatcher the compute thread is idle again: every lane ended.
#[derive(Debug)]
pub(crate) struct Settled;

/// Handle on the compute thread; dropping it ends the thread after its current units. The
/// thread is never joined: a unit that ignores cancellation must not hold up shutdown.
pub(crate) struct ComputeThread {
    pub(crate) jobs: mpsc::Sender<Job>,
}

/// Builds the pool (so a failure surfaces now, not in a thread) and starts the thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    settled: UnboundedSender<Settled>,
) -> std::io::Result<ComputeThread> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(shared.config.cores.max(1))
        .thread_name(|i| format!("compute-{i}"))
        .start_handler(|_| {
            crate::priority::lower_current_thread();
        })
        .build()
        .map_err(std::io::Error::other)?;
    let lanes = pool.current_num_threads();
    shared.tasks.set_slots(lanes);
    let (jobs, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("compute".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                // The units run inside the pool: the thread that ends one settles it and starts
                // the next, so the pool never waits for this thread to wake, and the dispatcher
                // hears only when the last lane ended.
                pool.install(|| {
                    rayon::scope(|s| {
                        for _ in 1..lanes {
                            s.spawn(|_| {
                                if let Some(job) = next_builtin(&shared) {
                                    lane(&pool, &shared, job);
                                }
                            });
                        }
                        lane(&pool, &shared, job);
                    })
                });
                shared.held.release();
                if settled.send(Settled).is_err() {
                    return;
                }
            }
        })?;
    Ok(ComputeThread { jobs })
}

/// Computes `job`, then buffered built-in units one after another until none is left (or
/// shutdown began).
fn lane(pool: &ThreadPool, shared: &Shared, mut job: Job) {
    loop {
        let outcome = compute(pool, job);
        let took = outcome.elapsed;
        // Results go out early once the buffer runs out: the coordinator takes them in while
        // the last units of a run compute, not after them.
        if store(shared, outcome)
            .is_some_and(|r| shared.held.push(r, took) || shared.tasks.running_out())
        {
            shared.held.release();
        }
        match next_builtin(shared) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// The next buffered unit, when it needs nothing from the network (a built-in app): the
/// thread starts it without waiting for the dispatcher. Never after shutdown began.
fn next_builtin(shared: &Shared) -> Option<Job> {
    if shared.stop.is_stopped() {
        return None;
    }
    let (task, ctx) = shared.tasks.start_next_if(now_millis(), |task| {
        sparecycles_wasm::module_hash(&task.app).is_none()
    })?;
    Some(prepare(shared, task, ctx, None))
}

/// Computes one unit; an unknown app or a panicking app becomes a failed result.
pub(crate) fn compute(pool: &ThreadPool, job: Job) -> Outcome {
    let Job {
        task,
        ctx,
        checkpoint,
        saver,
        module,
    } = job;
    let started = Instant::now();
    let last_save = Mutex::new(Instant::now());
    let save = |state: &Value| {
        let Some(saver) = &saver else { return };
        let winding = saver.wind_down.load(Ordering::Relaxed);
        let mut last = last_save.lock().unwrap_or_else(|e| e.into_inner());
        if winding || last.elapsed() >= saver.interval {
            let saved = Saved {
                task: task.clone(),
                checkpoint: state.clone(),
                progress: ctx.fraction(),
                saved_at: now_millis(),
            };
            match saver.store.save(&saved) {
                Ok(()) => {
                    tracing::debug!(task = %task.task_id, progress = saved.progress, "checkpoint saved")
                }
                Err(e) => {
                    tracing::warn!(task = %task.task_id, error = %e, "cannot save a checkpoint")
                }
            }
            *last = Instant::now();
        }
        if winding {
            ctx.cancel();
        }
    };
    let app: Option<&dyn App> = match &module {
        Some(module) => Some(module.as_ref()),
        None => sparecycles_apps::find(&task.app),
    };
    let result = match app {
        None => Err(ComputeError::Failed(format!(
            "app {} not supported by this worker",
            task.app
        ))),
        Some(app) => {
            let run = || {
                pool.install(|| {
                    app.compute_resumable(
                        &task.params,
                        &task.unit,
                        &ctx,
                        checkpoint.as_ref(),
                        &save,
                    )
                })
            };
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
                checkpoint: None,
                saver: None,
                module: None,
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
