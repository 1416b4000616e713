//! SQLite only: what the store's own threads (the writer, the checkpointer) leave behind.

use sparecycles_coordinator::store::{LeaseAsk, Outcome, SqliteStore, Store};
use sparecycles_protocol::JobState;

use crate::harness::{apps, job, redundancy, worker};
use crate::{NOW, lease, record, success};

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
    let recorded = record(&store, w, results, NOW + 1).await;
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

fn decisive(n: u64) -> Outcome {
    Outcome::Decisive {
        output: serde_json::json!({ "count": n }),
        credit: 1.5,
    }
}

/// A decisive result (quorum 1) decides its unit as it is recorded, as the transitioner's
/// verdict would: the task valid and canonical, the job's count, the worker's valid count and
/// credit; a unit with a change still waiting for the transitioner (here a timeout) is left to
/// it; deciding a job's last unit says so, and the job is then ready to assemble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisive_results_decide_their_units_when_nothing_else_is_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    let policy = Default::default();
    let j = job(&store, 3, 3, redundancy(1, false), NOW).await;
    let w = worker(&store, None, 8, NOW).await;
    let first = lease(&store, w, 1, NOW).await;
    assert_eq!(first[0].unit_seq, 0);
    assert_eq!(store.expire_tasks(NOW + 60_001).await.unwrap(), 1);
    let rest = lease(&store, w, 2, NOW + 61_000).await;
    assert_eq!(rest.len(), 2);
    let results = [&first[0], &rest[0], &rest[1]]
        .iter()
        .map(|t| (t.task_id, decisive(t.unit_seq)))
        .collect();
    let r = store
        .record_results(w, results, &policy, NOW + 61_500)
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 3, "all three recorded (the first late)");
    assert_eq!(
        r.decided,
        [(j.id, 2)].into(),
        "units 1 and 2 decided on the spot"
    );
    assert_eq!(r.valid, 2);
    assert!(r.pending, "unit 0's timeout awaits the transitioner");
    assert!(!r.job_done);
    let dirty = store.dirty_units(10).await.unwrap();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0].seq, 0);
    let row = store.job(j.id).await.unwrap().unwrap();
    assert_eq!(row.units_done, 2);
    let outputs = store.canonical_outputs(j.id, 0, 10).await.unwrap();
    assert_eq!(
        outputs,
        vec![
            (1, serde_json::json!({"count": 1})),
            (2, serde_json::json!({"count": 2}))
        ]
    );
    let me = store.workers().await.unwrap();
    let me = me.iter().find(|x| x.id == w).unwrap();
    assert_eq!((me.valid, me.streak, me.credit), (2, 2, 3.0));
    let targets = store.report_targets(&[rest[0].task_id]).await.unwrap();
    assert!(!targets[0].unit_open);

    // A one-unit job: its only result decides it, and the job is ready to assemble.
    let one = job(&store, 1, 1, redundancy(1, false), NOW).await;
    let t = lease(&store, w, 1, NOW + 62_000).await;
    assert_eq!(t[0].job_id, one.id);
    let r = store
        .record_results(w, vec![(t[0].task_id, decisive(0))], &policy, NOW + 62_001)
        .await
        .unwrap();
    assert!(r.job_done && !r.pending);
    let ready: Vec<_> = store.jobs_to_assemble().await.unwrap();
    assert!(
        ready
            .iter()
            .any(|x| x.id == one.id && x.state == JobState::Running)
    );
    store.close().await;
    // The decisive results are marked valid (by the write that recorded them); the late one,
    // left to the transitioner, is not yet.
    let db = rusqlite::Connection::open(dir.path().join("sparecycles.db")).unwrap();
    let validation = |task: uuid::Uuid| -> String {
        db.query_row(
            "SELECT validation FROM tasks WHERE id = ?1",
            [task.to_string()],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(validation(first[0].task_id), "pending");
    for task in [rest[0].task_id, rest[1].task_id, t[0].task_id] {
        assert_eq!(validation(task), "valid");
    }
}
