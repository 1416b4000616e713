//! The report loop: delivers outbox results in batches as soon as they appear, and deletes each
//! one from the outbox once the coordinator has accepted or refused it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sparecycles_protocol::work::MAX_REPORT_RESULTS;
use sparecycles_protocol::{RefusedResult, ReportRequest, TaskResult};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use uuid::Uuid;

use super::Shared;
use super::lease::retry_after;
use crate::backoff::Backoff;
use crate::client::ClientError;
use crate::outbox::Outbox;

/// Most bytes of results in one report (beyond a single result, which is always sent alone).
pub const MAX_REPORT_BYTES: usize = 4 << 20;
/// How long the final flush at shutdown may take.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// While the worker is busy, results wait up to this long to go out together: short units
/// would otherwise cost a report call each, which on a small machine is CPU the units lack.
const REPORT_DELAY: Duration = Duration::from_millis(500);
/// ...or until this many are waiting.
const REPORT_BATCH: usize = MAX_REPORT_RESULTS / 4;
/// ...or, when the buffer of tasks runs out, until this many are waiting: the results of a run
/// of short units go out while its last units compute, and those last few at its end.
const RUNNING_OUT_BATCH: usize = 16;

/// How the lease loop asks for waiting results to go out now: they count against the worker's
/// quota until reported, so a lease right after them gets more tasks.
#[derive(Debug, Default)]
pub(crate) struct ReportGate {
    /// Results waiting (not yet acknowledged).
    pending: AtomicUsize,
    /// Report attempts made so far.
    attempts: AtomicU64,
    flush: Notify,
    attempted: Notify,
}

impl ReportGate {
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Asks the report loop to send what it holds now, and waits (at most `limit`) until a
    /// report attempt has ended.
    pub(crate) async fn flush(&self, limit: Duration) {
        let seen = self.attempts.load(Ordering::Acquire);
        let attempted = self.attempted.notified();
        tokio::pin!(attempted);
        attempted.as_mut().enable();
        self.flush.notify_one();
        let ended = async {
            while self.attempts.load(Ordering::Acquire) == seen {
                attempted.as_mut().await;
                attempted.set(self.attempted.notified());
                attempted.as_mut().enable();
            }
        };
        let _ = tokio::time::timeout(limit, ended).await;
    }

    fn attempt_ended(&self, pending: usize) {
        self.pending.store(pending, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Release);
        self.attempted.notify_waiters();
    }
}

/// Longest a result waits on the compute threads before going to the report loop.
pub(crate) const HOLD: Duration = Duration::from_millis(50);

/// Results the compute threads keep back for a moment (already in the outbox): handing each one
/// to the report loop would wake the async runtime once per unit, taking a core from the unit
/// running beside it. The report loop takes them when woken: when [`HOLD`] has passed, after a
/// unit as long as [`HOLD`] (the next may take hours), when the buffer of tasks runs out, when a
/// run of units ends, or when computing pauses (a paused unit may block its thread for hours).
#[derive(Debug, Default)]
pub(crate) struct HeldResults {
    held: std::sync::Mutex<(Vec<TaskResult>, Option<std::time::Instant>)>,
    release: Notify,
}

impl HeldResults {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<TaskResult>, Option<std::time::Instant>)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `result` (of a unit that `took` this long) back; returns whether the held results
    /// should go now: the oldest has waited [`HOLD`], or the unit took as long, so the next
    /// one may too (hours), and the result its deadline with it.
    pub(crate) fn push(&self, result: TaskResult, took: Duration) -> bool {
        let mut held = self.lock();
        held.0.push(result);
        took >= HOLD || held.1.get_or_insert_with(std::time::Instant::now).elapsed() >= HOLD
    }

    fn take(&self) -> Vec<TaskResult> {
        let mut held = self.lock();
        held.1 = None;
        std::mem::take(&mut held.0)
    }

    /// Wakes the report loop to take the held results.
    pub(crate) fn release(&self) {
        self.release.notify_one();
    }
}

/// Results not yet acknowledged, in task id order, with what it takes to send them.
struct Reporter {
    shared: Arc<Shared>,
    outbox: Outbox,
    pending: BTreeMap<Uuid, TaskResult>,
    backoff: Backoff,
    /// Most results per call; halved while the coordinator refuses whole batches, to isolate a
    /// result it cannot take.
    limit: usize,
}

/// What one report call came to.
enum Attempt {
    /// Progress was made (or credentials renewed): go on at once.
    Done,
    /// Try again after this long.
    Retry(Duration),
    /// Shutdown came first.
    Stopped,
}

/// Runs until the dispatcher closes `incoming` (shutdown), then tries once to flush.
pub(crate) async fn report_loop(
    shared: Arc<Shared>,
    outbox: Outbox,
    initial: Vec<TaskResult>,
    mut incoming: UnboundedReceiver<TaskResult>,
) {
    let mut reporter = Reporter {
        shared,
        outbox,
        pending: initial.into_iter().map(|r| (r.task_id, r)).collect(),
        backoff: Backoff::default(),
        limit: MAX_REPORT_RESULTS,
    };
    let shared = reporter.shared.clone();
    let gate = &shared.reports;
    gate.pending
        .store(reporter.pending.len(), Ordering::Relaxed);
    let mut retry_at = Instant::now();
    // When the oldest waiting result arrived, and whether the lease loop asked for a flush.
    let mut waiting_since = Instant::now();
    let mut flush_asked = false;
    loop {
        let ready = !reporter.pending.is_empty() && !reporter.shared.stop.is_stopped();
        let now_due = flush_asked
            || reporter.pending.len() >= REPORT_BATCH
            || reporter.shared.tasks.is_idle()
            || (reporter.pending.len() >= RUNNING_OUT_BATCH && reporter.shared.tasks.running_out());
        let due = if now_due {
            retry_at
        } else {
            retry_at.max(waiting_since + REPORT_DELAY)
        };
        tokio::select! {
            biased;
            result = incoming.recv() => match result {
                Some(result) => reporter.take_in([result], &mut waiting_since),
                None => break,
            },
            _ = shared.held.release.notified() => {
                reporter.take_in(shared.held.take(), &mut waiting_since);
            }
            _ = gate.flush.notified() => flush_asked = true,
            _ = tokio::time::sleep_until(due), if ready => {
                match reporter.attempt().await {
                    Attempt::Done | Attempt::Stopped => {}
                    Attempt::Retry(delay) => retry_at = Instant::now() + delay,
                }
                flush_asked = false;
                waiting_since = Instant::now();
                gate.attempt_ended(reporter.pending.len());
            }
        }
    }
    // Held since the last wake-up (the compute threads' last run ended as shutdown began).
    reporter.take_in(shared.held.take(), &mut waiting_since);
    if !reporter.pending.is_empty() {
        let count = reporter.pending.len();
        match tokio::time::timeout(FLUSH_TIMEOUT, reporter.flush()).await {
            Ok(true) => tracing::info!(count, "flushed the outbox"),
            _ => tracing::info!(
                remaining = reporter.pending.len(),
                "results left in the outbox for the next run"
            ),
        }
    }
}

impl Reporter {
    /// Adds results to send; `waiting_since` restarts when they are the first waiting.
    fn take_in(
        &mut self,
        results: impl IntoIterator<Item = TaskResult>,
        waiting_since: &mut Instant,
    ) {
        for result in results {
            if self.pending.is_empty() {
                *waiting_since = Instant::now();
            }
            self.pending.insert(result.task_id, result);
        }
        self.shared
            .reports
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
    }

    /// Sends until everything is acknowledged; gives up at the first failure.
    async fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            let before = self.pending.len();
            let (_, client) = self.shared.session.client();
            let batch = self.batch();
            match client.report(&ReportRequest { results: batch }).await {
                Ok(answer) => {
                    self.acknowledge(&answer.accepted, &answer.refused).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "final report failed");
                    return false;
                }
            }
            if self.pending.len() == before {
                return false;
            }
        }
        true
    }

    /// One report call with the next batch.
    async fn attempt(&mut self) -> Attempt {
        let stop = self.shared.stop.clone();
        let batch = self.batch();
        let sent = batch.len();
        let first = batch[0].task_id;
        let (generation, client) = self.shared.session.client();
        let request = ReportRequest { results: batch };
        let answer = tokio::select! {
            answer = client.report(&request) => answer,
            _ = stop.wait() => return Attempt::Stopped,
        };
        match answer {
            Ok(answer) => {
                self.limit = MAX_REPORT_RESULTS;
                let before = self.pending.len();
                self.acknowledge(&answer.accepted, &answer.refused).await;
                if self.pending.len() < before {
                    self.backoff.reset();
                    Attempt::Done
                } else {
                    // An answer that acknowledges nothing we sent: do not spin on it.
                    tracing::warn!(sent, "report answer acknowledged none of the results");
                    Attempt::Retry(self.backoff.next_delay())
                }
            }
            Err(ClientError::Unauthorized) => {
                if self.shared.reauthenticate(generation).await {
                    Attempt::Done
                } else {
                    Attempt::Stopped
                }
            }
            Err(ClientError::Refused(problem)) if sent > 1 => {
                self.limit = (sent / 2).max(1);
                tracing::warn!(%problem, sent, retry_with = self.limit, "report refused; sending smaller batches");
                Attempt::Done
            }
            Err(ClientError::Refused(problem)) if matches!(problem.status, 400 | 413 | 422) => {
                // This one result is what the coordinator cannot take: keeping it would block
                // every other result behind it forever.
                tracing::error!(task = %first, %problem, "dropping a result the coordinator cannot accept");
                self.forget(vec![first]).await;
                Attempt::Done
            }
            Err(e) => {
                let delay = self.backoff.next_delay_after(retry_after(&e));
                tracing::warn!(error = %e, pending = self.pending.len(), retry_in = ?delay, "report failed; backing off");
                Attempt::Retry(delay)
            }
        }
    }

    /// The oldest pending results, at most `limit` of them and about [`MAX_REPORT_BYTES`].
    fn batch(&self) -> Vec<TaskResult> {
        let mut bytes = 0;
        let mut batch = Vec::new();
        for result in self.pending.values().take(self.limit) {
            let size = serde_json::to_vec(result).map_or(0, |v| v.len());
            if !batch.is_empty() && bytes + size > MAX_REPORT_BYTES {
                break;
            }
            bytes += size;
            batch.push(result.clone());
        }
        batch
    }

    /// Both accepted and refused results are final: forget them.
    async fn acknowledge(&mut self, accepted: &[Uuid], refused: &[RefusedResult]) {
        for r in refused {
            tracing::warn!(task = %r.task_id, reason = %r.reason, "result refused by the coordinator");
        }
        if !accepted.is_empty() {
            tracing::debug!(count = accepted.len(), "results accepted");
        }
        let done = accepted
            .iter()
            .copied()
            .chain(refused.iter().map(|r| r.task_id))
            .collect();
        self.forget(done).await;
    }

    async fn forget(&mut self, ids: Vec<Uuid>) {
        ids.iter().for_each(|id| {
            self.pending.remove(id);
        });
        let outbox = self.outbox.clone();
        match tokio::task::spawn_blocking(move || outbox.remove(&ids)).await {
            Ok(Ok(())) => {}
            // The results were acknowledged; a leftover file is re-sent next run and refused.
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove results from the outbox"),
            Err(e) => tracing::warn!(error = %e, "outbox removal task failed"),
        }
    }
}
