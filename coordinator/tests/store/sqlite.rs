//! SQLite only: what the store's own threads (the writer, the checkpointer) leave behind.

use sparecycles_coordinator::store::{LeaseAsk, Outcome, SqliteStore, Store};

use crate::harness::{apps, job, redundancy, worker};
use crate::{NOW, lease, success};

/// A clean close checkpoints and removes the WAL, with everything written before it kept, and
/// grouped writes after it fail instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_leaves_no_wal_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    let j = job(&store, 20, 20, redundancy(1, false), NOW).await;
    let w = worker(&store, None, 8, NOW).await;
    let leased = lease(&store, w, 8, NOW).await;
    assert_eq!(leased.len(), 8);
    let results: Vec<(uuid::Uuid, Outcome)> =
        leased.iter().map(|t| (t.task_id, success(1))).collect();
    let recorded = store.record_results(w, results, NOW + 1).await.unwrap();
    assert_eq!(recorded.len(), 8);
    assert!(
        dir.path().join("sparecycles.db-wal").exists(),
        "writes went to the WAL"
    );

    store.close().await;
    assert!(
        !dir.path().join("sparecycles.db-wal").exists(),
        "the WAL is checkpointed and removed at close"
    );
    let apps = apps();
    let late = store.lease(
        LeaseAsk {
            worker: w,
            owner: None,
            apps: &apps,
            max: 1,
            trusted: false,
            spot_check: 0.0,
            batch_units: 4,
        },
        NOW + 2,
    );
    let late = tokio::time::timeout(std::time::Duration::from_secs(5), late)
        .await
        .expect("a lease after close answers at once");
    assert!(late.is_err(), "a lease after close fails: {late:?}");

    let again = SqliteStore::open(dir.path()).await.expect("reopen");
    let row = again.job(j.id).await.unwrap().expect("the job is kept");
    assert_eq!((row.units_created, row.tasks_created), (20, 20));
    let targets = again
        .report_targets(&leased.iter().map(|t| t.task_id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(targets.len(), 8);
    assert!(
        targets.iter().all(|t| t.task_state == "success"),
        "the recorded results are kept"
    );
    again.close().await;
}
