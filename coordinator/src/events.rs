//! Live updates for the dashboard: handlers and background loops [`Hub::emit`] events; a
//! snapshot loop turns them (coalesced) into an overview snapshot, and rebuilds it every few
//! seconds anyway so a coordinator that shares its database with others (behind a load
//! balancer) converges on what the others did. `/api/v1/events` streams both.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sparecycles_protocol::dashboard::{Event, Snapshot, ThroughputPoint};
use sparecycles_protocol::{Millis, now_millis};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::scheduler::validate::Decision;
use crate::state::AppState;
use crate::store::{Recorded, ReportTarget, UnitVerdict};

/// Events buffered per subscriber; a slower one skips ahead (the next snapshot catches it up).
const EVENT_BUFFER: usize = 1024;
/// Soonest rebuild after an event: bounds the snapshot work however busy the fleet is.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Rebuild at least this often, events or not.
const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// A worker seen within this window counts as online.
pub const ONLINE_WINDOW: Duration = Duration::from_secs(90);
/// Jobs in a snapshot, newest first.
const SNAPSHOT_JOBS: u32 = 50;
/// Minutes of throughput history.
const HISTORY_MINUTES: usize = 60;

/// How long counting events (results reported, units decided) of a job gather before they go
/// out as one: a busy job otherwise sends an event per report and per transitioner pass, each a
/// write to every open stream, and a wake-up of every browser and client reading it.
const COALESCE: Duration = Duration::from_millis(100);

/// The event bus and the latest snapshot (serialised once, shared by every stream).
pub struct Hub {
    events: broadcast::Sender<Event>,
    snapshot: watch::Sender<Option<Arc<str>>>,
    closed: watch::Sender<bool>,
    counts: Mutex<Counts>,
}

/// Counting events not sent yet, summed per job, and since when the oldest waits.
#[derive(Default)]
struct Counts {
    since: Option<Instant>,
    reported: HashMap<Uuid, u64>,
    decided: HashMap<Uuid, u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            events: broadcast::channel(EVENT_BUFFER).0,
            snapshot: watch::channel(None).0,
            closed: watch::channel(false).0,
            counts: Mutex::default(),
        }
    }
}

impl Hub {
    /// Publishes an event; nobody listening is fine. Counting events of a job are summed for
    /// up to `COALESCE` (see `flush_due`); any other event sends them first, so a stream never
    /// sees a job's end before its last counts.
    pub fn emit(&self, event: Event) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (job_id, count, table) = match event {
            Event::ResultsReported { job_id, count } => (job_id, count, &mut counts.reported),
            Event::UnitsDecided { job_id, count } => (job_id, count, &mut counts.decided),
            other => {
                self.send_counts(&mut counts);
                let _ = self.events.send(other);
                return;
            }
        };
        *table.entry(job_id).or_default() += count;
        let since = *counts.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= COALESCE {
            self.send_counts(&mut counts);
        }
    }

    /// Sends the summed counting events whose oldest waited `COALESCE`; called by a loop that
    /// runs at least every second, so counts never wait long for the next event.
    pub fn flush_due(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts
            .since
            .is_some_and(|since| since.elapsed() >= COALESCE)
        {
            self.send_counts(&mut counts);
        }
    }

    fn send_counts(&self, counts: &mut Counts) {
        if counts.since.take().is_none() {
            return;
        }
        for (job_id, count) in counts.reported.drain() {
            let _ = self.events.send(Event::ResultsReported { job_id, count });
        }
        for (job_id, count) in counts.decided.drain() {
            let _ = self.events.send(Event::UnitsDecided { job_id, count });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The latest snapshot as JSON (`None` before the first one is built).
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.snapshot.subscribe()
    }

    /// Resolves when the coordinator shuts down: streams end so the server can drain.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

/// Units done per minute, from successive samples of the store's running total.
#[derive(Debug, Default)]
struct Throughput {
    last_total: Option<u64>,
    /// (minute start, units done in that minute)
    minutes: VecDeque<(Millis, u64)>,
}

impl Throughput {
    fn sample(&mut self, now: Millis, total: u64) {
        let minute = now - now.rem_euclid(60_000);
        let delta = match self.last_total {
            Some(last) => total.saturating_sub(last),
            None => 0,
        };
        self.last_total = Some(total);
        match self.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += delta,
            _ => self.minutes.push_back((minute, delta)),
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - HISTORY_MINUTES as i64 * 60_000)
        {
            self.minutes.pop_front();
        }
    }

    fn points(&self, now: Millis) -> Vec<ThroughputPoint> {
        self.minutes
            .iter()
            .map(|&(at, n)| {
                // The current minute is still filling: divide by what has passed of it.
                let secs = ((now - at) as f64 / 1000.0).clamp(10.0, 60.0);
                ThroughputPoint {
                    at,
                    units_per_sec: n as f64 / secs,
                }
            })
            .collect()
    }
}

/// Builds snapshots until `shutdown` resolves.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut events = state.hub().subscribe();
    let mut throughput = Throughput::default();
    loop {
        match build(&state, &mut throughput).await {
            Ok(snapshot) => match serde_json::to_string(&snapshot) {
                Ok(json) => {
                    state.hub().snapshot.send_replace(Some(json.into()));
                }
                Err(e) => tracing::error!(error = %e, "serialising the dashboard snapshot"),
            },
            Err(e) => tracing::warn!(error = format!("{e:#}"), "building the dashboard snapshot"),
        }
        // Wait for a change (or the periodic rebuild), then let more changes gather.
        let woke = tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(MAX_INTERVAL) => false,
            r = events.recv() => !matches!(r, Err(broadcast::error::RecvError::Closed)),
        };
        if woke {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(MIN_INTERVAL) => {}
            }
            events = events.resubscribe();
        }
    }
}

async fn build(state: &AppState, throughput: &mut Throughput) -> anyhow::Result<Snapshot> {
    let now = now_millis();
    let store = state.store();
    let mut fleet = store.fleet(now - ONLINE_WINDOW.as_millis() as i64).await?;
    fleet.online_window_secs = ONLINE_WINDOW.as_secs();
    throughput.sample(now, fleet.units_done_total);
    crate::metrics::fleet(&fleet);
    let rows = store.jobs(SNAPSHOT_JOBS).await?;
    let jobs = crate::http::jobs::views(store, &rows).await?;
    Ok(Snapshot {
        at: now,
        jobs,
        fleet,
        throughput: throughput.points(now),
    })
}

/// After a report: counts the recorded results and the units they decided on the spot, and
/// tells the dashboard which jobs moved.
pub fn results_recorded(
    state: &AppState,
    targets: &HashMap<Uuid, &ReportTarget>,
    successes: &HashSet<Uuid>,
    recorded: &Recorded,
) {
    let mut per_job: HashMap<Uuid, u64> = HashMap::new();
    let mut ok = 0u64;
    for id in &recorded.tasks {
        if successes.contains(id) {
            ok += 1;
        }
        if let Some(t) = targets.get(id) {
            *per_job.entry(t.job_id).or_default() += 1;
        }
    }
    let failed = recorded.tasks.len() as u64 - ok;
    metrics::counter!(crate::metrics::RESULTS_REPORTED, "outcome" => "success").increment(ok);
    metrics::counter!(crate::metrics::RESULTS_REPORTED, "outcome" => "error").increment(failed);
    for (job_id, count) in per_job {
        state.emit(Event::ResultsReported { job_id, count });
    }
    if !recorded.decided.is_empty() {
        Decided::on_report(recorded).publish(state);
    }
}

/// What a batch of verdicts decided, counted before the batch goes to the store.
#[derive(Debug, Default)]
pub struct Decided {
    per_job: HashMap<Uuid, u64>,
    done: u64,
    failed: u64,
    valid: u64,
    invalid: u64,
}

impl Decided {
    pub fn of(verdicts: &[UnitVerdict]) -> Self {
        let mut d = Decided::default();
        for v in verdicts {
            match &v.decision {
                Decision::Valid { valid, invalid, .. } => {
                    d.done += 1;
                    d.valid += valid.len() as u64;
                    d.invalid += invalid.len() as u64;
                }
                Decision::Failed { .. } => d.failed += 1,
                Decision::Pending { .. } => continue,
            }
            *d.per_job.entry(v.job_id).or_default() += 1;
        }
        d
    }

    /// The units a report decided as it was recorded (valid, by quorum 1).
    pub fn on_report(recorded: &Recorded) -> Self {
        Decided {
            done: recorded.decided.values().sum(),
            valid: recorded.valid,
            per_job: recorded.decided.clone(),
            ..Decided::default()
        }
    }

    /// Once the verdicts are written: counts them and tells the dashboard.
    pub fn publish(self, state: &AppState) {
        metrics::counter!(crate::metrics::UNITS_DONE).increment(self.done);
        metrics::counter!(crate::metrics::UNITS_FAILED).increment(self.failed);
        metrics::counter!(crate::metrics::RESULTS_VALID).increment(self.valid);
        metrics::counter!(crate::metrics::RESULTS_INVALID).increment(self.invalid);
        for (job_id, count) in self.per_job {
            state.emit(Event::UnitsDecided { job_id, count });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_events_are_summed_and_sent_before_the_next_other_event() {
        let hub = Hub::default();
        let mut rx = hub.subscribe();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        hub.emit(Event::ResultsReported {
            job_id: a,
            count: 2,
        });
        hub.emit(Event::ResultsReported {
            job_id: a,
            count: 3,
        });
        hub.emit(Event::UnitsDecided {
            job_id: b,
            count: 4,
        });
        hub.flush_due();
        assert!(rx.try_recv().is_err(), "nothing sent before COALESCE");
        hub.emit(Event::JobChanged {
            job_id: a,
            state: sparecycles_protocol::JobState::Completed,
        });
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::ResultsReported {
                job_id: a,
                count: 5
            }
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::UnitsDecided {
                job_id: b,
                count: 4
            }
        );
        assert!(matches!(rx.try_recv().unwrap(), Event::JobChanged { .. }));
        // Counts alone go out once the oldest waited COALESCE.
        hub.emit(Event::UnitsDecided {
            job_id: b,
            count: 1,
        });
        std::thread::sleep(COALESCE);
        hub.flush_due();
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::UnitsDecided {
                job_id: b,
                count: 1
            }
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn throughput_counts_deltas_per_minute() {
        let mut t = Throughput::default();
        let m0: Millis = 28_333_334 * 60_000;
        t.sample(m0 + 1_000, 100); // first sample: baseline only
        t.sample(m0 + 30_000, 130);
        t.sample(m0 + 61_000, 190);
        let p = t.points(m0 + 90_000);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].at, m0);
        assert!((p[0].units_per_sec - 0.5).abs() < 1e-9);
        assert!((p[1].units_per_sec - 2.0).abs() < 1e-9); // 60 units over 30 s
        // An hour later the old minutes are gone.
        t.sample(m0 + 3_700_000, 190);
        assert_eq!(t.points(m0 + 3_700_000).len(), 1);
    }
}
