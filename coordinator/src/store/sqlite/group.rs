//! Group commit for the hot writes: leases, reports, the transitioner's verdicts (and new jobs
//! and lease expiry, which share their statements) that arrive while the writer is busy share
//! one transaction. SQLite has one writer; taking it, beginning
//! and committing once per call made the single connection, not the work, the limit of dispatch
//! (issue 8, W1 profile), and a verdict transaction of its own made the calls queued behind it
//! wait for a second hand-over of the connection (the open-loop latency tail). Each op still
//! runs its own statements, in arrival order, so it sees what the ops before it in the group did
//! (a quota, a lease, a decided unit) exactly as if it ran alone after them.
//!
//! The groups run on a thread of their own with its own connection (rusqlite): through sqlx
//! every statement was a hand-off to the connection's thread and back, two thread wake-ups per
//! statement, about seven context switches per dispatched unit, and that, not SQLite, was most
//! of the writer's cost (issue 8, W1 and W2 profiles). Here a whole group runs without one.
//!
//! The multi-row `UPDATE`s on every unit's path (the lease, the timeouts, the marks for the
//! transitioner, aborting leftover replicas) say `OR FAIL`: under SQLite's default (`ABORT`)
//! such a statement keeps a statement journal, a copy of each page it changes, to undo itself
//! alone if it fails. Here a failing statement fails its op's whole transaction (a group is
//! rolled back and its ops run alone; an op alone is rolled back), so the copies were never
//! used: they were 6 % of the writer's time in W1 (issue 8). A statement calling an SQL
//! function (`->>`, say) keeps its journal whatever its conflict clause.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use sparecycles_protocol::Millis;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::super::{
    LeaseAsk, LeasedTask, NewJob, Outcome, Recorded, StoreError, StoreResult, UnitVerdict,
};
use crate::scheduler::trust::TrustPolicy;

/// Most calls in one transaction: bounds how long the first of them waits for the last.
const MAX_GROUP: usize = 64;

/// A lease request, owned (it waits in a queue).
#[derive(Debug)]
pub(super) struct OwnedAsk {
    pub worker: Uuid,
    pub owner: Option<String>,
    pub apps: Vec<String>,
    pub max: u32,
    pub trusted: bool,
    pub spot_check: f64,
    pub batch_units: u64,
}

impl OwnedAsk {
    pub fn new(ask: &LeaseAsk<'_>) -> Self {
        OwnedAsk {
            worker: ask.worker,
            owner: ask.owner.map(str::to_owned),
            apps: ask.apps.to_vec(),
            max: ask.max,
            trusted: ask.trusted,
            spot_check: ask.spot_check,
            batch_units: ask.batch_units,
        }
    }

    fn ask(&self) -> LeaseAsk<'_> {
        LeaseAsk {
            worker: self.worker,
            owner: self.owner.as_deref(),
            apps: &self.apps,
            max: self.max,
            trusted: self.trusted,
            spot_check: self.spot_check,
            batch_units: self.batch_units,
        }
    }
}

/// A queued write and where its answer goes.
#[derive(Debug)]
pub(super) enum Op {
    Lease {
        ask: OwnedAsk,
        now: Millis,
        reply: oneshot::Sender<StoreResult<Vec<LeasedTask>>>,
    },
    Record {
        worker: Uuid,
        results: Vec<(Uuid, Outcome)>,
        policy: TrustPolicy,
        now: Millis,
        reply: oneshot::Sender<StoreResult<Recorded>>,
    },
    /// The transitioner's verdicts: in the same transactions as the calls, so the writer is
    /// never handed between two transactions that wait for each other.
    Verdicts {
        verdicts: Vec<UnitVerdict>,
        policy: TrustPolicy,
        now: Millis,
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    CreateJob {
        job: Box<NewJob>,
        now: Millis,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Expire {
        now: Millis,
        reply: oneshot::Sender<StoreResult<u64>>,
    },
    /// A job's end: its result stored and the job completed, or the job failed. Here rather
    /// than through the pool, whose write would wait for this thread's lock in sleeps of a
    /// millisecond and more, at the end of every job.
    Finish {
        job_id: Uuid,
        end: JobEnd,
        now: Millis,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    /// Ends the writer thread once the ops queued before it ran; the answer comes after its
    /// connection closed.
    Close { reply: oneshot::Sender<()> },
}

/// How a job ends.
#[derive(Debug)]
pub(super) enum JobEnd {
    Completed { content_type: String, body: Vec<u8> },
    Failed { reason: String },
}

/// What an op came to, before its transaction committed.
enum Done {
    Leased(Vec<LeasedTask>),
    Recorded(Recorded),
    Applied,
    /// Verdicts written; whether they decided a job's last unit.
    Decided(bool),
    Expired(u64),
}

impl Op {
    fn run(&self, conn: &Connection) -> StoreResult<Done> {
        match self {
            Op::Lease { ask, now, .. } => {
                Ok(Done::Leased(super::lease::lease(conn, &ask.ask(), *now)?))
            }
            Op::Record {
                worker,
                results,
                policy,
                now,
                ..
            } => Ok(Done::Recorded(super::writes::record_results(
                conn, *worker, results, policy, *now,
            )?)),
            Op::Verdicts {
                verdicts,
                policy,
                now,
                ..
            } => Ok(Done::Decided(super::verdicts::apply(
                conn,
                verdicts,
                policy,
                *now,
                super::verdicts::Marked::No,
            )?)),
            Op::CreateJob { job, now, .. } => {
                super::writes::insert_job(conn, job, *now)?;
                Ok(Done::Applied)
            }
            Op::Expire { now, .. } => Ok(Done::Expired(super::writes::expire(conn, *now)?)),
            Op::Finish {
                job_id, end, now, ..
            } => {
                super::writes::finish_job(conn, *job_id, end, *now)?;
                Ok(Done::Applied)
            }
            // Never run: the writer loop ends at it.
            Op::Close { .. } => Ok(Done::Applied),
        }
    }

    fn answer(self, done: StoreResult<Done>) {
        // A caller that went away (its request was dropped) needs no answer.
        match (self, done) {
            (Op::Lease { reply, .. }, Ok(Done::Leased(v))) => drop(reply.send(Ok(v))),
            (Op::Record { reply, .. }, Ok(Done::Recorded(v))) => drop(reply.send(Ok(v))),
            (Op::Verdicts { reply, .. }, Ok(Done::Decided(complete))) => {
                drop(reply.send(Ok(complete)))
            }
            (Op::CreateJob { reply, .. }, Ok(Done::Applied)) => drop(reply.send(Ok(()))),
            (Op::Expire { reply, .. }, Ok(Done::Expired(n))) => drop(reply.send(Ok(n))),
            (Op::Finish { reply, .. }, Ok(Done::Applied)) => drop(reply.send(Ok(()))),
            (Op::Lease { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Record { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Verdicts { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::CreateJob { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Expire { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Finish { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Close { reply }, _) => drop(reply.send(())),
            (op, Ok(_)) => op.answer(Err(StoreError::Corrupt("group commit mixed up".into()))),
        }
    }
}

/// Opens the writer's connection (the schema is already migrated) and starts the thread that
/// runs queued ops in groups; the thread ends when every sender is gone or at `Op::Close`.
pub(super) fn spawn(path: &Path) -> StoreResult<mpsc::Sender<Op>> {
    let conn = Connection::open(path)?;
    // As the pool's connections: WAL + NORMAL survives a process crash; a rare write through the
    // pool (enrolment, a job's state) waits for the lock instead of failing.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    super::plan_once(&conn)?;
    // Checkpoints run beside the writer (see `checkpointer`), not inside its commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let checkpointer = Checkpointer::start(path)?;
    let (tx, rx) = mpsc::channel::<Op>(4 * MAX_GROUP);
    // Started by the caller of `SqliteStore::open`, before the async threads lower their
    // priority (`cli::yield_to_the_sqlite_writer`): this thread is the serial part of dispatch.
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let close = writer_loop(conn, rx, &checkpointer.long);
            // The checkpointer's last checkpoint, then the answer to `Close`.
            checkpointer.stop();
            if let Some(Op::Close { reply }) = close {
                let _ = reply.send(());
            }
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite writer: {e}")))?;
    Ok(tx)
}

/// How often the checkpointer copies the WAL's frames into the database file. A page rewritten
/// by many commits (an index leaf of the newest units) is copied once per checkpoint: at 1 s
/// instead of 250 ms the checkpointer's CPU per W2 job halved (1.1-1.4 → 0.6-0.7 ms, issue 8).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// WAL frames (pages) past which the writer finishes a checkpoint itself, so the WAL starts
/// over: about 16 MB.
const RESTART_AT: i64 = 4096;

/// The thread that checkpoints the WAL.
///
/// SQLite checkpoints inside the commit that crosses 1,000 WAL pages: that commit, and every
/// lease and report waiting behind it, took milliseconds longer (the open-loop lease tail,
/// issue 8). A passive checkpoint on a connection of its own copies the pages and syncs the
/// database file without blocking the writer or the readers. But the WAL starts over only when
/// a write transaction begins with every page copied, which a writer busy with the next group
/// rarely sees, so the writer checkpoints what little is left itself when the WAL gets long.
struct Checkpointer {
    /// Dropped to stop the thread (after a last checkpoint).
    stop: std::sync::mpsc::Sender<()>,
    /// Disconnects once the thread ended and closed its connection.
    ended: std::sync::mpsc::Receiver<()>,
    /// Set when the WAL is long: asks the writer to finish a checkpoint (see [`writer_loop`]).
    long: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Opens its connection and starts the thread.
    fn start(path: &Path) -> StoreResult<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let long = Arc::new(AtomicBool::new(false));
        let flag = long.clone();
        let (done, ended) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                loop {
                    let last = matches!(
                        stopped.recv_timeout(CHECKPOINT_EVERY),
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                    );
                    match checkpoint(&conn) {
                        Ok(frames) => flag.store(frames >= RESTART_AT, Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                    if last {
                        break;
                    }
                }
                drop(conn);
                drop(done);
            })
            .map_err(|e| {
                StoreError::Corrupt(format!("cannot start the SQLite checkpointer: {e}"))
            })?;
        Ok(Checkpointer { stop, ended, long })
    }

    /// Stops the thread and waits until its last checkpoint is done and its connection closed.
    fn stop(self) {
        drop(self.stop);
        let _ = self.ended.recv();
    }
}

/// A passive checkpoint; returns the WAL's length in frames.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// Runs groups until every sender is gone or a `Close` arrives (returned, unanswered).
fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Op>, long: &AtomicBool) -> Option<Op> {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while let Some(op) = rx.blocking_recv() {
        let mut close = None;
        match op {
            Op::Close { .. } => close = Some(op),
            op => batch.push(op),
        }
        while close.is_none() && batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op @ Op::Close { .. }) => close = Some(op),
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_group(&mut conn, &mut batch);
        }
        if close.is_some() {
            // Ops sent after the close get no answer: their senders see the store closed.
            rx.close();
            return close;
        }
        if long.swap(false, Ordering::Relaxed) {
            // The checkpointer copied most pages; this copies the rest, so the next
            // transaction begins with all of them copied and the WAL starts over.
            if let Err(e) = checkpoint(&conn) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }
    None
}

/// Runs the ops in one transaction; if that fails, runs each alone so only a failing op fails.
fn run_group(conn: &mut Connection, batch: &mut Vec<Op>) {
    if batch.len() > 1 {
        match together(conn, batch) {
            Ok(done) => {
                for (op, done) in batch.drain(..).zip(done) {
                    op.answer(Ok(done));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = batch.len(), "group commit failed; retrying one by one");
            }
        }
    }
    for op in batch.drain(..) {
        let done = alone(conn, &op);
        op.answer(done);
    }
}

fn together(conn: &mut Connection, batch: &[Op]) -> StoreResult<Vec<Done>> {
    // Immediate: the write lock is taken before the first read, so a commit through the pool in
    // between cannot make the transaction's snapshot stale.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::with_capacity(batch.len());
    for op in batch {
        done.push(op.run(&tx)?);
    }
    tx.commit()?;
    Ok(done)
}

fn alone(conn: &mut Connection, op: &Op) -> StoreResult<Done> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done = op.run(&tx)?;
    tx.commit()?;
    Ok(done)
}
