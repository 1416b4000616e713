//! The store contract: the same tests on every backend. SQLite always; PostgreSQL when
//! `TEST_POSTGRES_URL` is set (each test in a database of its own).

#[macro_use]
mod harness;
mod leadership;
mod modules;
mod sqlite;
mod submitters;
mod verdicts;

use std::collections::HashSet;

use sparecycles_coordinator::store::{LeaseAsk, LeasedTask, Outcome, Store, Suspects};
use sparecycles_protocol::{JobState, Millis};
use uuid::Uuid;

use harness::{Fresh, apps, job, redundancy, worker};

pub const NOW: Millis = 1_700_000_000_000;

/// Leases up to `max` tasks for an untrusted worker.
pub async fn lease(store: &dyn Store, w: Uuid, max: u32, now: Millis) -> Vec<LeasedTask> {
    let apps = apps();
    store
        .lease(
            LeaseAsk {
                worker: w,
                owner: None,
                apps: &apps,
                max,
                trusted: false,
                spot_check: 0.0,
                batch_units: 4,
            },
            now,
        )
        .await
        .expect("lease")
}

/// Records results with the default trust policy; the tasks recorded.
pub async fn record(
    store: &dyn Store,
    w: Uuid,
    results: Vec<(Uuid, Outcome)>,
    now: Millis,
) -> Vec<Uuid> {
    store
        .record_results(w, results, &Default::default(), now)
        .await
        .expect("record results")
        .tasks
}

pub fn success(n: u64) -> Outcome {
    Outcome::Success(serde_json::json!({ "count": n }))
}

async fn create_job_makes_the_first_units(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 10, 4, redundancy(2, false), NOW).await;
    assert_eq!((j.unit_count, j.units_created, j.tasks_created), (10, 4, 8));
    assert_eq!(j.state, JobState::Queued);
    let later = job(s, 3, 100, redundancy(1, false), NOW + 1).await;
    assert_eq!(later.units_created, 3, "never more units than the job has");
    let listed: Vec<Uuid> = s.jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(listed, vec![later.id, j.id], "newest first");
    let again = s.job(j.id).await.unwrap().expect("stored");
    assert_eq!(again.redundancy, j.redundancy);
    assert_eq!(again.params, j.params);
    assert!(s.job(Uuid::now_v7()).await.unwrap().is_none());
}
contract!(create_job, create_job_makes_the_first_units);

async fn lease_gives_one_replica_per_unit_and_creates_units_lazily(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 6, 1, redundancy(2, false), NOW).await;
    let (a, b, c) = (
        worker(s, None, 20, NOW).await,
        worker(s, None, 20, NOW).await,
        worker(s, None, 20, NOW).await,
    );
    let got = lease(s, a, 20, NOW).await;
    let units: HashSet<Uuid> = got.iter().map(|t| t.unit_id).collect();
    assert_eq!(
        got.len(),
        6,
        "every unit, created as the lease reached them"
    );
    assert_eq!(units.len(), 6, "one replica per unit");
    let seqs: Vec<u64> = got.iter().map(|t| t.unit_seq).collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    assert!(got.iter().all(|t| t.deadline == NOW + 60_000));
    assert!(
        lease(s, a, 20, NOW).await.is_empty(),
        "never a second replica"
    );
    let second = lease(s, b, 20, NOW).await;
    assert_eq!(second.len(), 6);
    assert!(second.iter().all(|t| units.contains(&t.unit_id)));
    assert!(
        lease(s, c, 20, NOW).await.is_empty(),
        "all replicas are out"
    );
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!((row.units_created, row.tasks_created), (6, 12));
    assert_eq!(row.state, JobState::Running);
    let in_progress = s.units_in_progress(&[j.id, Uuid::now_v7()]).await.unwrap();
    assert_eq!(in_progress.get(&j.id), Some(&6));
    assert_eq!(
        in_progress.len(),
        1,
        "jobs with nothing in progress are left out"
    );
}
contract!(
    lease_one_replica_per_unit,
    lease_gives_one_replica_per_unit_and_creates_units_lazily
);

/// Quorum 1: a lease past the created units creates the next batch and takes its first units,
/// in order, as a lease of already created ones would; the rest of the batch stays unsent for
/// the next lease, and results of either kind are taken.
async fn a_lease_past_the_created_units_takes_the_new_ones_in_order(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 10, 2, redundancy(1, false), NOW).await;
    let w = worker(s, None, 20, NOW).await;
    let first = lease(s, w, 5, NOW).await;
    let seqs: Vec<u64> = first.iter().map(|t| t.unit_seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert!(first.iter().all(|t| t.job_id == j.id && t.deadline > NOW));
    let row = s.job(j.id).await.unwrap().unwrap();
    // Two at submission, then a batch for the rest of the lease (of the harness's four units).
    assert!(row.units_created >= 5 && row.units_created < 10);
    assert_eq!(row.tasks_created, row.units_created);
    let targets = s
        .report_targets(&first.iter().map(|t| t.task_id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        targets
            .iter()
            .all(|t| t.task_state == "leased" && t.worker_id == Some(w) && t.unit_open)
    );
    let next = lease(s, w, 20, NOW + 1).await;
    let seqs: Vec<u64> = next.iter().map(|t| t.unit_seq).collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9]);
    let all: Vec<(Uuid, Outcome)> = first
        .iter()
        .chain(&next)
        .map(|t| (t.task_id, success(t.unit_seq)))
        .collect();
    assert_eq!(record(s, w, all, NOW + 2).await.len(), 10);
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!((row.units_created, row.tasks_created), (10, 10));
}
contract!(
    lease_past_created_units,
    a_lease_past_the_created_units_takes_the_new_ones_in_order
);

async fn lease_respects_quota_bans_and_owners(f: Fresh) {
    let s = f.store.as_ref();
    let mut r = redundancy(2, false);
    r.distinct_owners = true;
    job(s, 4, 4, r, NOW).await;
    let small = worker(s, None, 3, NOW).await;
    assert_eq!(
        lease(s, small, 10, NOW).await.len(),
        3,
        "quota caps the lease"
    );
    assert!(lease(s, small, 10, NOW).await.is_empty(), "no room left");
    let apps = apps();
    let ask = |w, owner| LeaseAsk {
        worker: w,
        owner,
        apps: &apps,
        max: 10,
        trusted: false,
        spot_check: 0.0,
        batch_units: 4,
    };
    let (m1, m2) = (
        worker(s, Some("mallory"), 10, NOW).await,
        worker(s, Some("mallory"), 10, NOW).await,
    );
    let first = s.lease(ask(m1, Some("mallory")), NOW).await.unwrap();
    let second = s.lease(ask(m2, Some("mallory")), NOW).await.unwrap();
    assert_eq!(first.len(), 4);
    let mine: HashSet<Uuid> = first.iter().map(|t| t.unit_id).collect();
    assert!(
        second.iter().all(|t| !mine.contains(&t.unit_id)),
        "one owner never gets two replicas of a unit"
    );
}
contract!(lease_quota_and_owners, lease_respects_quota_bans_and_owners);

async fn concurrent_leases_never_share_a_task(f: Fresh) {
    let store = f.store.clone();
    job(store.as_ref(), 200, 10, redundancy(2, false), NOW).await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        workers.push(worker(store.as_ref(), None, 1000, NOW).await);
    }
    let mut handles = Vec::new();
    for w in workers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.extend(lease(store.as_ref(), w, 7, NOW).await);
            }
            (w, got)
        }));
    }
    let mut leases = Vec::new();
    for h in handles {
        leases.push(h.await.unwrap());
    }
    // Concurrent leases may come up short (rows another transaction holds are skipped): a
    // calm sweep takes the rest.
    for (w, got) in &mut leases {
        loop {
            let more = lease(store.as_ref(), *w, 50, NOW).await;
            if more.is_empty() {
                break;
            }
            got.extend(more);
        }
    }
    let mut tasks = HashSet::new();
    let mut per_worker_units = HashSet::new();
    let mut total = 0;
    for (w, got) in leases {
        for t in got {
            total += 1;
            assert!(tasks.insert(t.task_id), "task {} leased twice", t.task_id);
            assert!(
                per_worker_units.insert((w, t.unit_id)),
                "two replicas to one worker"
            );
        }
    }
    assert_eq!(total, 400, "both replicas of 200 units, each leased once");
}
contract!(concurrent_leases, concurrent_leases_never_share_a_task);

async fn results_are_recorded_once_and_only_for_their_worker(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 2, 2, redundancy(2, false), NOW).await;
    let (a, b) = (
        worker(s, None, 10, NOW).await,
        worker(s, None, 10, NOW).await,
    );
    let got = lease(s, a, 10, NOW).await;
    let t0 = got[0].task_id;
    let refused = record(s, b, vec![(t0, success(4))], NOW + 1).await;
    assert!(refused.is_empty(), "not b's task");
    let ok = record(
        s,
        a,
        vec![
            (t0, success(4)),
            (got[1].task_id, Outcome::Error("oom".into())),
        ],
        NOW + 2,
    )
    .await;
    assert_eq!(ok, vec![t0, got[1].task_id]);
    let twice = record(s, a, vec![(t0, success(5))], NOW + 3).await;
    assert!(twice.is_empty(), "already reported");
    let targets = s.report_targets(&[t0]).await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].task_state, "success");
    assert_eq!(targets[0].worker_id, Some(a));
    assert_eq!(targets[0].job_id, j.id);
    assert!(targets[0].unit_open);
    let wa = s
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == a)
        .unwrap();
    assert_eq!(
        (wa.errors, wa.quota, wa.in_flight),
        (1, 5, 0),
        "an error halves the quota"
    );
    // A heartbeat keeps live tasks and names those to abort.
    let other = lease(s, b, 10, NOW).await;
    let abort = s
        .heartbeat(b, &[other[0].task_id, t0], NOW + 4)
        .await
        .unwrap();
    assert_eq!(abort, vec![t0]);
}
contract!(
    record_results,
    results_are_recorded_once_and_only_for_their_worker
);

async fn expired_tasks_time_out_and_late_results_still_count(f: Fresh) {
    let s = f.store.as_ref();
    job(s, 1, 1, redundancy(2, false), NOW).await;
    let a = worker(s, None, 8, NOW).await;
    let got = lease(s, a, 10, NOW).await;
    assert_eq!(s.expire_tasks(NOW + 59_000).await.unwrap(), 0);
    assert_eq!(s.expire_tasks(NOW + 61_000).await.unwrap(), 1);
    let wa = s
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == a)
        .unwrap();
    assert_eq!((wa.timeouts, wa.quota), (1, 4));
    let dirty = s.dirty_units(10).await.unwrap();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0].tasks.len(), 2);
    let late = record(s, a, vec![(got[0].task_id, success(1))], NOW + 62_000).await;
    assert_eq!(
        late,
        vec![got[0].task_id],
        "late, but the unit is undecided"
    );
}
contract!(expire, expired_tasks_time_out_and_late_results_still_count);

async fn released_and_canceled_tasks(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 3, 3, redundancy(1, false), NOW).await;
    let (a, b) = (worker(s, None, 8, NOW).await, worker(s, None, 8, NOW).await);
    let got = lease(s, a, 2, NOW).await;
    let ids: Vec<Uuid> = got.iter().map(|t| t.task_id).collect();
    assert_eq!(s.release(b, &ids, NOW).await.unwrap(), Vec::<Uuid>::new());
    let mut released = s.release(a, &ids, NOW).await.unwrap();
    released.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(released, want);
    assert_eq!(
        lease(s, b, 8, NOW).await.len(),
        3,
        "released tasks go out again"
    );
    let row = s
        .set_job_state(j.id, &[JobState::Running], JobState::Canceled, NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, JobState::Canceled);
    assert!(row.finished_at.is_some());
    let unchanged = s
        .set_job_state(j.id, &[JobState::Running], JobState::Paused, NOW + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unchanged.state,
        JobState::Canceled,
        "only from the listed states"
    );
}
contract!(release_and_cancel, released_and_canceled_tasks);

async fn spares_go_to_the_tasks_of_silent_or_disconnected_workers(f: Fresh) {
    let s = f.store.as_ref();
    job(s, 3, 3, redundancy(1, false), NOW).await;
    let (a, b) = (
        worker(s, None, 20, NOW).await,
        worker(s, None, 20, NOW).await,
    );
    let of_a: HashSet<Uuid> = lease(s, a, 2, NOW)
        .await
        .iter()
        .map(|t| t.unit_id)
        .collect();
    let of_b = lease(s, b, 1, NOW).await[0].unit_id;
    assert_eq!(s.spare_suspects(Suspects::Worker(a)).await.unwrap(), 2);
    assert_eq!(
        s.spare_suspects(Suspects::Worker(a)).await.unwrap(),
        0,
        "spared once"
    );
    // Both were seen at NOW: neither is silent since then.
    assert_eq!(
        s.spare_suspects(Suspects::SilentSince(NOW)).await.unwrap(),
        0
    );
    let dirty = s.dirty_units(10).await.unwrap();
    let suspects: HashSet<Uuid> = dirty
        .iter()
        .filter(|u| u.tasks.iter().any(|t| t.suspect))
        .map(|u| u.unit_id)
        .collect();
    assert_eq!(suspects, of_a, "a's units are up for a spare, b's is not");
    assert_eq!(
        s.spare_suspects(Suspects::SilentSince(NOW + 1))
            .await
            .unwrap(),
        1,
        "only b's task was left unspared"
    );
    let dirty = s.dirty_units(10).await.unwrap();
    assert!(
        dirty
            .iter()
            .any(|u| u.unit_id == of_b && u.tasks.iter().all(|t| t.suspect))
    );
}
contract!(
    spare_suspects,
    spares_go_to_the_tasks_of_silent_or_disconnected_workers
);
