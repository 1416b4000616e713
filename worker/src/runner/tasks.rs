//! The leased tasks this worker holds: the units being computed (up to one per core) and the
//! buffer waiting behind them.
//!
//! Shared by the lease loop (fills the buffer), the dispatcher and the compute lanes (take the
//! next task), and the heartbeat loop (reads progress, applies aborts). One short-held mutex
//! guards it all, so a task is always either buffered or current, never lost between the two.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use sparecycles_apps::ComputeCtx;
use sparecycles_protocol::{Millis, TaskAssignment, TaskProgress};
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Default)]
pub(crate) struct Tasks {
    inner: Mutex<Inner>,
    /// Signaled when tasks were added to the buffer (wakes the dispatcher).
    pub(crate) work: Notify,
    /// Signaled when the lease loop should look again: a unit ended with the tasks held at or
    /// below its watermark, or tasks were dropped (wakes the lease loop).
    pub(crate) space: Notify,
    /// Signaled when computing resumes (wakes a lease loop waiting out a pause).
    resumed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<TaskAssignment>,
    /// The units being computed, oldest first.
    current: Vec<Current>,
    /// Most units computed at once (see `compute`); 0 means 1.
    slots: usize,
    /// Whether computing is paused now; applies to the current unit and the next ones.
    paused: bool,
    /// Moving average of how long a unit took, in seconds (`None` before the first).
    unit_secs: Option<f64>,
    /// How many tasks the coordinator lets this worker hold (`None` until it says).
    quota: Option<usize>,
    /// Tasks to hold beyond the one computing, whatever the units' size (see [`Tasks::wanted`]).
    prefetch: usize,
}

/// Enough buffered work to cover this long: short units are leased many at a time, so the
/// cores never wait on a lease round trip and the coordinator sees few calls.
const BUFFER_TIME_SECS: f64 = 0.5;
/// Most tasks held at once, whatever the units' size.
const MAX_HELD: usize = 200;
/// Buffered tasks per slot below which results go out at once: a run of short units is
/// ending, and the coordinator should take in its results while the last ones compute.
const RUNNING_OUT: usize = 3;

/// The unit being computed.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) task: TaskAssignment,
    pub(crate) ctx: ComputeCtx,
    /// Set at shutdown: save a checkpoint at the next chance, then stop.
    pub(crate) wind_down: std::sync::Arc<AtomicBool>,
    /// Progress the unit was resumed from, when it was.
    pub(crate) resumed_from: Option<f64>,
}

impl Inner {
    /// See [`Tasks::wanted`].
    fn wanted(&self) -> usize {
        let held = self.queue.len() + self.current.len();
        let by_time = self.unit_secs.map_or(0, |secs| {
            (BUFFER_TIME_SECS / secs.max(1e-6)).ceil() as usize
        });
        let mut target = 1 + self.prefetch.max(by_time).min(MAX_HELD - 1);
        if let Some(quota) = self.quota {
            // Asking past the quota only gets a few tasks per call as results free room.
            target = target.min(quota.max(1));
        }
        let low = if target > 4 { target / 2 } else { target - 1 };
        if held > low { 0 } else { target - held }
    }

    fn holds(&self, id: Uuid) -> bool {
        self.current.iter().any(|c| c.task.task_id == id)
            || self.queue.iter().any(|t| t.task_id == id)
    }

    /// Drops buffered tasks that can no longer be reported in time; whether it dropped any.
    fn drop_expired(&mut self, now: Millis) -> bool {
        let before = self.queue.len();
        self.queue.retain(|t| {
            let alive = t.deadline > now;
            if !alive {
                tracing::warn!(task = %t.task_id, app = %t.app, "skipping buffered task: deadline passed");
            }
            alive
        });
        self.queue.len() < before
    }
}

impl Tasks {
    /// An empty holding that keeps `prefetch` tasks beyond the one computing.
    pub(crate) fn new(prefetch: usize) -> Self {
        let tasks = Tasks::default();
        tasks.lock().prefetch = prefetch;
        tasks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more tasks to lease: none while more than the low watermark are held, else
    /// enough to hold the target again. The target is `1 + prefetch` tasks, or more when units
    /// are short (see [`BUFFER_TIME_SECS`]); the watermark keeps short units from costing one
    /// lease call each.
    pub(crate) fn wanted(&self, now: Millis) -> usize {
        let mut inner = self.lock();
        inner.drop_expired(now);
        inner.wanted()
    }

    /// Signals the lease loop when it has something to ask for, and only then: each signal
    /// wakes the async runtime on a core the units compute on, and a signal per unit started
    /// and ended cost short units more than their results' reports (issue 8, W2).
    fn signal_if_wanted(&self, inner: &Inner) {
        if inner.wanted() > 0 {
            self.space.notify_one();
        }
    }

    /// Notes the coordinator's quota for this worker, for sizing the buffer.
    pub(crate) fn set_quota(&self, quota: Option<u32>) {
        if let Some(quota) = quota {
            self.lock().quota = Some(quota as usize);
        }
    }

    /// Whether no task is buffered or being computed.
    pub(crate) fn is_idle(&self) -> bool {
        let inner = self.lock();
        inner.queue.is_empty() && inner.current.is_empty()
    }

    /// Notes how long a unit took, for sizing the buffer.
    pub(crate) fn record_duration(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let mut inner = self.lock();
        inner.unit_secs = Some(match inner.unit_secs {
            Some(avg) => 0.8 * avg + 0.2 * secs,
            None => secs,
        });
    }

    /// Buffers newly leased tasks (ignoring any already held) and wakes the dispatcher.
    pub(crate) fn add(&self, tasks: Vec<TaskAssignment>) {
        let mut inner = self.lock();
        for task in tasks {
            if !inner.holds(task.task_id) {
                inner.queue.push_back(task);
            }
        }
        drop(inner);
        self.work.notify_one();
    }

    /// Buffers tasks resumed from checkpoints ahead of the others.
    pub(crate) fn add_front(&self, tasks: Vec<TaskAssignment>) {
        let mut inner = self.lock();
        for task in tasks.into_iter().rev() {
            if !inner.holds(task.task_id) {
                inner.queue.push_front(task);
            }
        }
        drop(inner);
        self.work.notify_one();
    }

    /// Takes the next live task and makes it current, with a fresh context to compute it in
    /// (paused if computing is paused). `None` when the buffer is empty or every slot is taken.
    pub(crate) fn start_next(&self, now: Millis) -> Option<(TaskAssignment, ComputeCtx)> {
        self.start_next_if(now, |_| true)
    }

    /// Like [`Tasks::start_next`], but only when the next task passes `ok`.
    pub(crate) fn start_next_if(
        &self,
        now: Millis,
        ok: impl FnOnce(&TaskAssignment) -> bool,
    ) -> Option<(TaskAssignment, ComputeCtx)> {
        let mut inner = self.lock();
        if inner.current.len() >= inner.slots.max(1) {
            return None;
        }
        if inner.drop_expired(now) {
            // Fewer are held now.
            self.signal_if_wanted(&inner);
        }
        if !ok(inner.queue.front()?) {
            return None;
        }
        let task = inner.queue.pop_front()?;
        let ctx = ComputeCtx::new();
        ctx.set_paused(inner.paused);
        inner.current.push(Current {
            task: task.clone(),
            ctx: ctx.clone(),
            wind_down: Default::default(),
            resumed_from: None,
        });
        // No wake-up of the lease loop: a buffered task became current, the count held is the
        // same.
        Some((task, ctx))
    }

    /// Whether the buffer is down to its last few tasks ([`RUNNING_OUT`] per slot).
    pub(crate) fn running_out(&self) -> bool {
        let inner = self.lock();
        inner.queue.len() <= RUNNING_OUT * inner.slots.max(1)
    }

    /// Lets up to `slots` units be computed at once.
    pub(crate) fn set_slots(&self, slots: usize) {
        self.lock().slots = slots;
    }

    /// The units being computed, oldest first.
    pub(crate) fn current(&self) -> Vec<Current> {
        self.lock().current.clone()
    }

    /// The current unit of `task_id`, if it is current.
    pub(crate) fn current_of(&self, task_id: Uuid) -> Option<Current> {
        let inner = self.lock();
        inner
            .current
            .iter()
            .find(|c| c.task.task_id == task_id)
            .cloned()
    }

    /// Notes that the current unit `task_id` resumed from a checkpoint at `progress`.
    pub(crate) fn set_resumed(&self, task_id: Uuid, progress: f64) {
        let mut inner = self.lock();
        if let Some(c) = inner.current.iter_mut().find(|c| c.task.task_id == task_id) {
            c.resumed_from = Some(progress);
        }
    }

    /// Pauses or resumes computing, within the apps' next check.
    pub(crate) fn set_paused(&self, paused: bool) {
        let mut inner = self.lock();
        inner.paused = paused;
        for c in &inner.current {
            c.ctx.set_paused(paused);
        }
        drop(inner);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Returns once computing is not paused (at once if it is not).
    pub(crate) async fn unpaused(&self) {
        loop {
            // Registered before looking, so a resume between the two is not missed.
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.is_paused() {
                return;
            }
            resumed.await;
        }
    }

    /// Buffered tasks (not the current ones).
    pub(crate) fn buffered(&self) -> Vec<TaskAssignment> {
        self.lock().queue.iter().cloned().collect()
    }

    /// A current task is done (finished, failed or canceled).
    pub(crate) fn finish(&self, task_id: Uuid) {
        let mut inner = self.lock();
        inner.current.retain(|c| c.task.task_id != task_id);
        self.signal_if_wanted(&inner);
    }

    /// Progress of every held task: the current ones' fractions, 0 for buffered ones.
    pub(crate) fn progress(&self) -> Vec<TaskProgress> {
        let inner = self.lock();
        let current = inner.current.iter().map(|c| TaskProgress {
            task_id: c.task.task_id,
            progress: c.ctx.fraction(),
        });
        let buffered = inner.queue.iter().map(|t| TaskProgress {
            task_id: t.task_id,
            progress: 0.0,
        });
        current.chain(buffered).collect()
    }

    /// Stops the given tasks: cancels the current ones listed, drops listed buffered ones.
    /// Returns how many held tasks were affected.
    pub(crate) fn abort(&self, ids: &[Uuid]) -> usize {
        let mut inner = self.lock();
        let mut hit = 0;
        for c in inner
            .current
            .iter()
            .filter(|c| ids.contains(&c.task.task_id))
        {
            c.ctx.cancel();
            hit += 1;
        }
        let before = inner.queue.len();
        inner.queue.retain(|t| !ids.contains(&t.task_id));
        hit += before - inner.queue.len();
        drop(inner);
        if hit > 0 {
            self.space.notify_one();
        }
        hit
    }

    /// Drops every buffered task and cancels the current ones (new identity).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.queue.clear();
        for c in &inner.current {
            c.ctx.cancel();
        }
        drop(inner);
        self.space.notify_one();
    }

    /// Shutdown: empties the buffer (returning what was in it) and asks the current units to
    /// save a checkpoint and stop; a paused unit cannot reach its next checkpoint, so it stops
    /// at once and keeps its last one.
    pub(crate) fn wind_down(&self) -> Vec<TaskAssignment> {
        let mut inner = self.lock();
        let buffered = inner.queue.drain(..).collect();
        for c in &inner.current {
            if inner.paused {
                c.ctx.cancel();
            } else {
                c.wind_down.store(true, Ordering::Relaxed);
            }
        }
        drop(inner);
        self.space.notify_one();
        buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(deadline: Millis) -> TaskAssignment {
        TaskAssignment {
            task_id: Uuid::now_v7(),
            job_id: Uuid::nil(),
            unit_id: Uuid::now_v7(),
            unit_seq: 0,
            app: "prime-count".into(),
            params: json!({}),
            unit: json!({}),
            deadline,
        }
    }

    #[test]
    fn buffer_fills_to_target_and_runs_in_order() {
        let tasks = Tasks::new(2);
        // Prefetch 2: hold 3, lease again when 2 or fewer are held.
        assert_eq!(tasks.wanted(0), 3);
        let (a, b) = (task(100), task(100));
        tasks.add(vec![a.clone(), b.clone(), a.clone()]);
        assert_eq!(tasks.wanted(0), 1);
        let (first, ctx) = tasks.start_next(0).unwrap();
        assert_eq!(first.task_id, a.task_id);
        assert!(tasks.start_next(0).is_none(), "one unit at a time");
        assert_eq!(tasks.wanted(0), 1);
        ctx.set_total(4);
        ctx.advance(1);
        let progress = tasks.progress();
        assert_eq!(progress.len(), 2);
        assert_eq!(progress[0].progress, 0.25);
        assert_eq!(progress[1].task_id, b.task_id);
        tasks.finish(a.task_id);
        assert_eq!(tasks.start_next(0).unwrap().0.task_id, b.task_id);
    }

    /// Whether the lease loop was signaled since it last looked.
    async fn lease_loop_woken(tasks: &Tasks) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, tasks.space.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_lease_loop_wakes_only_at_its_watermark() {
        let tasks = Tasks::new(3);
        tasks.set_slots(2);
        tasks.record_duration(std::time::Duration::from_secs(30));
        // Prefetch 3: hold 4, lease again when 3 or fewer are held.
        assert_eq!(tasks.wanted(0), 4);
        let held: Vec<_> = (0..4).map(|_| task(100)).collect();
        tasks.add(held.clone());
        assert_eq!(tasks.wanted(0), 0);
        lease_loop_woken(&tasks).await;
        // Units starting and ending above the watermark leave it asleep.
        tasks.start_next(0).unwrap();
        tasks.start_next(0).unwrap();
        assert!(
            !lease_loop_woken(&tasks).await,
            "a task started: as many held"
        );
        tasks.add(vec![task(100)]);
        tasks.finish(held[0].task_id);
        assert!(
            !lease_loop_woken(&tasks).await,
            "4 held, above the watermark"
        );
        tasks.finish(held[1].task_id);
        assert!(lease_loop_woken(&tasks).await, "3 held: time to lease");
        assert_eq!(tasks.wanted(0), 1);
    }

    #[tokio::test]
    async fn dropping_expired_tasks_wakes_the_lease_loop() {
        let tasks = Tasks::new(2);
        tasks.add(vec![task(10), task(10), task(1000)]);
        assert_eq!(tasks.wanted(0), 0);
        lease_loop_woken(&tasks).await;
        tasks.start_next(50).unwrap();
        assert!(lease_loop_woken(&tasks).await, "two expired tasks dropped");
    }

    #[test]
    fn each_slot_computes_a_unit_of_its_own() {
        let tasks = Tasks::default();
        tasks.set_slots(2);
        let (a, b, c) = (task(100), task(100), task(100));
        tasks.add(vec![a.clone(), b.clone(), c.clone()]);
        let (_, ctx_a) = tasks.start_next(0).unwrap();
        let (_, ctx_b) = tasks.start_next(0).unwrap();
        assert!(tasks.start_next(0).is_none(), "one unit per slot");
        let running: Vec<Uuid> = tasks.current().iter().map(|c| c.task.task_id).collect();
        assert_eq!(running, vec![a.task_id, b.task_id]);
        assert_eq!(
            tasks.progress().len(),
            3,
            "both current units and the buffered one"
        );
        // A pause, an abort and a shutdown reach every current unit, each its own.
        tasks.set_paused(true);
        assert!(ctx_a.is_paused() && ctx_b.is_paused());
        tasks.set_paused(false);
        assert_eq!(tasks.abort(&[b.task_id]), 1);
        assert!(ctx_b.is_canceled() && !ctx_a.is_canceled());
        tasks.finish(b.task_id);
        assert_eq!(tasks.start_next(0).unwrap().0.task_id, c.task_id);
        assert_eq!(tasks.wind_down(), Vec::new());
        assert!(
            tasks
                .current()
                .iter()
                .all(|c| c.wind_down.load(Ordering::Relaxed)),
            "every current unit is asked to checkpoint and stop"
        );
        assert!(tasks.current_of(a.task_id).is_some() && tasks.current_of(b.task_id).is_none());
    }

    #[test]
    fn expired_tasks_are_skipped() {
        let tasks = Tasks::new(1);
        let (old, fresh) = (task(10), task(1000));
        tasks.add(vec![old, fresh.clone()]);
        assert_eq!(tasks.wanted(50), 1);
        assert_eq!(tasks.start_next(50).unwrap().0.task_id, fresh.task_id);
    }

    #[test]
    fn abort_cancels_current_and_drops_buffered() {
        let tasks = Tasks::default();
        let (a, b, c) = (task(100), task(100), task(100));
        tasks.add(vec![a.clone(), b.clone(), c.clone()]);
        let (_, ctx) = tasks.start_next(0).unwrap();
        assert_eq!(tasks.abort(&[a.task_id, c.task_id, Uuid::nil()]), 2);
        assert!(ctx.is_canceled());
        let ids: Vec<Uuid> = tasks.progress().iter().map(|p| p.task_id).collect();
        assert_eq!(ids, vec![a.task_id, b.task_id]);
        tasks.clear();
        tasks.finish(a.task_id);
        assert!(tasks.progress().is_empty());
    }

    #[test]
    fn long_units_keep_the_configured_prefetch() {
        let tasks = Tasks::new(2);
        tasks.record_duration(std::time::Duration::from_secs(30));
        assert_eq!(tasks.wanted(0), 3);
        tasks.add(vec![task(100)]);
        assert_eq!(tasks.wanted(0), 2);
        tasks.add(vec![task(100), task(100)]);
        assert_eq!(tasks.wanted(0), 0);
    }

    #[test]
    fn short_units_are_leased_many_at_a_time_below_a_watermark() {
        let tasks = Tasks::new(2);
        tasks.record_duration(std::time::Duration::from_millis(2));
        // 0.5 s of 2 ms units is 250 tasks, capped at MAX_HELD.
        assert_eq!(tasks.wanted(0), MAX_HELD);
        let held: Vec<_> = (0..150).map(|_| task(100)).collect();
        tasks.add(held.clone());
        // Above the watermark (half the target): a finished unit costs no lease call.
        assert_eq!(tasks.wanted(0), 0);
        let gone: Vec<Uuid> = held[..60].iter().map(|t| t.task_id).collect();
        tasks.abort(&gone);
        assert_eq!(tasks.wanted(0), MAX_HELD - 90);
    }

    #[test]
    fn the_quota_caps_the_buffer() {
        let tasks = Tasks::new(2);
        tasks.record_duration(std::time::Duration::from_millis(2));
        tasks.set_quota(Some(8));
        assert_eq!(tasks.wanted(0), 8);
        tasks.add((0..5).map(|_| task(100)).collect());
        assert_eq!(tasks.wanted(0), 0, "above half the quota");
        tasks.set_quota(None);
        assert_eq!(
            tasks.wanted(0),
            0,
            "an answer without a quota keeps the last one"
        );
        assert!(!tasks.is_idle());
        tasks.clear();
        assert!(tasks.is_idle());
    }

    #[test]
    fn the_buffer_runs_out_at_a_few_tasks_per_slot() {
        let tasks = Tasks::default();
        tasks.set_slots(2);
        assert!(tasks.running_out(), "nothing buffered");
        tasks.add((0..2 * RUNNING_OUT + 3).map(|_| task(100)).collect());
        assert!(!tasks.running_out());
        let started: Vec<_> = (0..3).map(|_| tasks.start_next(0)).collect();
        assert!(started[..2].iter().all(Option::is_some));
        assert!(started[2].is_none(), "two slots");
        assert!(
            !tasks.running_out(),
            "{} still buffered",
            2 * RUNNING_OUT + 1
        );
        tasks.finish(started[0].as_ref().unwrap().0.task_id);
        assert!(tasks.start_next(0).is_some());
        assert!(tasks.running_out(), "{} buffered", 2 * RUNNING_OUT);
    }

    #[tokio::test]
    async fn a_resume_wakes_the_waiter_at_once() {
        let tasks = std::sync::Arc::new(Tasks::default());
        tasks.set_paused(true);
        let waiter = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.unpaused().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while paused");
        tasks.set_paused(false);
        tokio::time::timeout(std::time::Duration::from_millis(50), waiter)
            .await
            .expect("woken by the resume, not by a polling tick")
            .unwrap();
        // Not paused: returns at once.
        tasks.unpaused().await;
    }
}
