//! Group commit for the hot writes: leases, reports and the transitioner's verdicts that arrive
//! while the writer is busy share one transaction. SQLite has one writer; taking it, beginning
//! and committing once per call made the single connection, not the work, the limit of dispatch
//! (issue 8, W1 profile), and a verdict transaction of its own made the calls queued behind it
//! wait for a second hand-over of the connection (the open-loop latency tail). Each op still
//! runs its own statements, in arrival order, so it sees what the ops before it in the group did
//! (a quota, a lease, a decided unit) exactly as if it ran alone after them.

use sparecycles_protocol::Millis;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::super::{LeaseAsk, LeasedTask, Outcome, StoreError, StoreResult, UnitVerdict};
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
        now: Millis,
        reply: oneshot::Sender<StoreResult<Vec<Uuid>>>,
    },
    /// The transitioner's verdicts: in the same transactions as the calls, so the writer is
    /// never handed between two transactions that wait for each other.
    Verdicts {
        verdicts: Vec<UnitVerdict>,
        policy: TrustPolicy,
        now: Millis,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

/// What an op came to, before its transaction committed.
enum Done {
    Leased(Vec<LeasedTask>),
    Recorded(Vec<Uuid>),
    Applied,
}

impl Op {
    async fn run(&self, conn: &mut sqlx::SqliteConnection) -> StoreResult<Done> {
        match self {
            Op::Lease { ask, now, .. } => Ok(Done::Leased(
                super::lease::lease(conn, &ask.ask(), *now).await?,
            )),
            Op::Record {
                worker,
                results,
                now,
                ..
            } => Ok(Done::Recorded(
                super::record_results(conn, *worker, results, *now).await?,
            )),
            Op::Verdicts {
                verdicts,
                policy,
                now,
                ..
            } => {
                super::verdicts::apply(conn, verdicts, policy, *now).await?;
                Ok(Done::Applied)
            }
        }
    }

    fn answer(self, done: StoreResult<Done>) {
        // A caller that went away (its request was dropped) needs no answer.
        match (self, done) {
            (Op::Lease { reply, .. }, Ok(Done::Leased(v))) => drop(reply.send(Ok(v))),
            (Op::Record { reply, .. }, Ok(Done::Recorded(v))) => drop(reply.send(Ok(v))),
            (Op::Lease { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Record { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Verdicts { reply, .. }, Ok(Done::Applied)) => drop(reply.send(Ok(()))),
            (Op::Verdicts { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (op, Ok(_)) => op.answer(Err(StoreError::Corrupt("group commit mixed up".into()))),
        }
    }
}

/// Starts the loop that runs queued ops in groups; it ends when every sender is gone.
pub(super) fn spawn(writer: SqlitePool) -> mpsc::Sender<Op> {
    let (tx, mut rx) = mpsc::channel::<Op>(4 * MAX_GROUP);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_GROUP);
        while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
            run_group(&writer, &mut batch).await;
        }
    });
    tx
}

/// Runs the ops in one transaction; if that fails, runs each alone so only a failing op fails.
async fn run_group(writer: &SqlitePool, batch: &mut Vec<Op>) {
    if batch.len() > 1 {
        match together(writer, batch).await {
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
        let done = alone(writer, &op).await;
        op.answer(done);
    }
}

async fn together(writer: &SqlitePool, batch: &[Op]) -> StoreResult<Vec<Done>> {
    let mut tx = writer.begin().await?;
    let mut done = Vec::with_capacity(batch.len());
    for op in batch {
        done.push(op.run(&mut tx).await?);
    }
    tx.commit().await?;
    Ok(done)
}

async fn alone(writer: &SqlitePool, op: &Op) -> StoreResult<Done> {
    let mut tx = writer.begin().await?;
    let done = op.run(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}
