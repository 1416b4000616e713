//! The transitioner's side of the contract: units marked by results, verdicts written back
//! (only over an unchanged mark), reputation, liar undo, and assembly in unit order.

use sparecycles_coordinator::scheduler::trust::TrustPolicy;
use sparecycles_coordinator::scheduler::validate::Decision;
use sparecycles_coordinator::store::{DirtyUnit, LeaseAsk, Store, UnitVerdict};
use sparecycles_protocol::{JobState, Millis};
use uuid::Uuid;

use crate::harness::{Fresh, apps, job, redundancy, worker};
use crate::{NOW, lease, record, success};

fn verdict(u: &DirtyUnit, decision: Decision, solo: bool) -> UnitVerdict {
    UnitVerdict {
        unit_id: u.unit_id,
        job_id: u.job_id,
        seq: u.seq,
        changes: u.changes,
        decision,
        credit: 2.5,
        solo,
        task_workers: u
            .tasks
            .iter()
            .filter_map(|t| t.worker_id.map(|w| (t.id, w)))
            .collect(),
    }
}

/// Both replicas of every unit computed by `a` and `b`, reporting `count = seq`.
async fn compute_all(s: &dyn Store, a: Uuid, b: Uuid) {
    for w in [a, b] {
        let got = lease(s, w, 100, NOW).await;
        let results = got
            .iter()
            .map(|t| (t.task_id, success(t.unit_seq)))
            .collect();
        record(s, w, results, NOW + 10).await;
    }
}

async fn verdicts_clear_only_unchanged_marks_and_decide_units(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 3, 3, redundancy(2, false), NOW).await;
    let (a, b) = (
        worker(s, None, 10, NOW).await,
        worker(s, None, 10, NOW).await,
    );
    let got_a = lease(s, a, 10, NOW).await;
    let results = got_a
        .iter()
        .map(|t| (t.task_id, success(t.unit_seq)))
        .collect();
    record(s, a, results, NOW + 1).await;
    let seen = s.dirty_units(100).await.unwrap();
    assert_eq!(seen.len(), 3);
    // b reports unit 0 after the transitioner read it: the mark must survive the verdict.
    let got_b = lease(s, b, 10, NOW).await;
    let b0 = got_b.iter().find(|t| t.unit_seq == 0).unwrap().task_id;
    record(s, b, vec![(b0, success(0))], NOW + 2).await;
    let pending = seen
        .iter()
        .map(|u| verdict(u, Decision::Pending { new_tasks: 0 }, false))
        .collect();
    let complete = s
        .apply_verdicts(pending, &TrustPolicy::default(), NOW + 3)
        .await
        .unwrap();
    assert!(!complete, "no unit was decided");
    let again = s.dirty_units(100).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "only the unit that changed since stays marked"
    );
    let u0 = &again[0];
    assert_eq!(u0.seq, 0);
    assert!(u0.open && u0.replicated);
    assert_eq!(u0.tasks.len(), 2);
    let canonical = u0.tasks[0].id;
    let valid = u0.tasks.iter().map(|t| t.id).collect();
    let decided = Decision::Valid {
        canonical,
        valid,
        invalid: vec![],
    };
    let complete = s
        .apply_verdicts(
            vec![verdict(u0, decided, false)],
            &TrustPolicy::default(),
            NOW + 4,
        )
        .await
        .unwrap();
    assert!(!complete, "two of the job's three units are still open");
    assert!(s.dirty_units(100).await.unwrap().is_empty());
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(row.units_done, 1);
    let workers = s.workers().await.unwrap();
    for w in workers.iter().filter(|w| w.id == a || w.id == b) {
        assert_eq!((w.valid, w.streak), (1, 1));
        assert!((w.credit - 2.5).abs() < 1e-9);
    }
    // A late result for a decided unit is refused.
    let late = record(s, b, vec![(b0, success(9))], NOW + 5).await;
    assert!(late.is_empty());
    // More tasks for a pending unit, then a failed unit fails its job.
    let u1 = s.dirty_units(100).await.unwrap();
    assert!(u1.is_empty());
    let unit1 = seen.iter().find(|u| u.seq == 1).unwrap();
    let more = verdict(unit1, Decision::Pending { new_tasks: 2 }, false);
    s.apply_verdicts(vec![more], &TrustPolicy::default(), NOW + 6)
        .await
        .unwrap();
    assert_eq!(s.job(j.id).await.unwrap().unwrap().tasks_created, 8);
    let failed = verdict(
        unit1,
        Decision::Failed {
            reason: "no quorum".into(),
        },
        false,
    );
    s.apply_verdicts(vec![failed], &TrustPolicy::default(), NOW + 7)
        .await
        .unwrap();
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Failed);
    assert_eq!(row.units_failed, 1);
    assert!(
        row.error
            .unwrap_or_default()
            .contains("unit 1 failed: no quorum")
    );
}
contract!(
    apply_verdicts,
    verdicts_clear_only_unchanged_marks_and_decide_units
);

async fn assembly_reads_canonical_outputs_in_unit_order(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 7, 2, redundancy(2, false), NOW).await;
    let (a, b) = (
        worker(s, None, 50, NOW).await,
        worker(s, None, 50, NOW).await,
    );
    compute_all(s, a, b).await;
    assert!(s.jobs_to_assemble().await.unwrap().is_empty());
    let units = s.dirty_units(100).await.unwrap();
    assert_eq!(units.len(), 7);
    let verdicts = units
        .iter()
        .map(|u| {
            let d = Decision::Valid {
                canonical: u.tasks[0].id,
                valid: u.tasks.iter().map(|t| t.id).collect(),
                invalid: vec![],
            };
            verdict(u, d, false)
        })
        .collect();
    let complete = s
        .apply_verdicts(verdicts, &TrustPolicy::default(), NOW + 20)
        .await
        .unwrap();
    assert!(complete, "the batch decided the job's last unit");
    let ready: Vec<Uuid> = s
        .jobs_to_assemble()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ready, vec![j.id]);
    let first = s.canonical_outputs(j.id, 0, 4).await.unwrap();
    let rest = s.canonical_outputs(j.id, 4, 4).await.unwrap();
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    for (seq, out) in first.iter().chain(&rest) {
        assert_eq!(out, &serde_json::json!({ "count": seq }));
    }
    s.complete_job(j.id, "application/json", b"{\"count\":21}", NOW + 30)
        .await
        .unwrap();
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Completed);
    let (ct, body) = s.job_result(j.id).await.unwrap().unwrap();
    assert_eq!(
        (ct.as_str(), body.as_slice()),
        ("application/json", &b"{\"count\":21}"[..])
    );
    assert!(s.jobs_to_assemble().await.unwrap().is_empty());
}
contract!(
    assemble_in_order,
    assembly_reads_canonical_outputs_in_unit_order
);

async fn a_caught_liar_loses_what_it_decided_alone(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 2, 2, redundancy(2, true), NOW).await;
    assert_eq!(j.tasks_created, 2, "adaptive units start with one task");
    let liar = worker(s, None, 10, NOW).await;
    let apps = apps();
    let trusted = LeaseAsk {
        worker: liar,
        owner: None,
        apps: &apps,
        max: 1,
        trusted: true,
        spot_check: 0.0,
        batch_units: 4,
    };
    let solo = s.lease(trusted, NOW).await.unwrap();
    assert_eq!(
        s.job(j.id).await.unwrap().unwrap().tasks_created,
        2,
        "not replicated"
    );
    record(s, liar, vec![(solo[0].task_id, success(0))], NOW + 1).await;
    let units = s.dirty_units(10).await.unwrap();
    assert!(!units[0].replicated);
    let t = units[0].tasks[0].id;
    let d = Decision::Valid {
        canonical: t,
        valid: vec![t],
        invalid: vec![],
    };
    s.apply_verdicts(
        vec![verdict(&units[0], d, true)],
        &TrustPolicy::default(),
        NOW + 2,
    )
    .await
    .unwrap();
    assert_eq!(s.job(j.id).await.unwrap().unwrap().units_done, 1);
    // Untrusted now: unit 1 is replicated, and the liar is outvoted on it.
    let honest = worker(s, None, 10, NOW).await;
    let mine = lease(s, liar, 10, NOW).await;
    assert_eq!(s.job(j.id).await.unwrap().unwrap().tasks_created, 3);
    let theirs = lease(s, honest, 10, NOW).await;
    record(s, liar, vec![(mine[0].task_id, success(666))], NOW + 3).await;
    record(s, honest, vec![(theirs[0].task_id, success(1))], NOW + 3).await;
    let u = s.dirty_units(10).await.unwrap();
    let d = Decision::Pending { new_tasks: 0 };
    let mut v = verdict(&u[0], d, false);
    v.decision = Decision::Valid {
        canonical: theirs[0].task_id,
        valid: vec![theirs[0].task_id],
        invalid: vec![mine[0].task_id],
    };
    s.apply_verdicts(vec![v], &TrustPolicy::default(), NOW + 4)
        .await
        .unwrap();
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(
        row.units_done, 1,
        "unit 0, decided by the liar alone, is open again"
    );
    let reopened = s.dirty_units(10).await.unwrap();
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened[0].seq, 0);
    assert!(reopened[0].open && reopened[0].replicated);
    let w = s.workers().await.unwrap();
    let l = w.iter().find(|w| w.id == liar).unwrap();
    assert_eq!((l.invalid, l.streak), (1, 0));
}
contract!(liar_undo, a_caught_liar_loses_what_it_decided_alone);

/// Times out the leases overdue at `now` and gives each marked unit one replacement task, as
/// the transitioner would; returns how many tasks timed out and how many units it marked.
async fn time_out_and_replace(s: &dyn Store, now: Millis) -> (u64, usize) {
    let expired = s.expire_tasks(now).await.unwrap();
    let marked = s.dirty_units(100).await.unwrap();
    let replace = marked
        .iter()
        .map(|u| verdict(u, Decision::Pending { new_tasks: 1 }, false))
        .collect();
    s.apply_verdicts(replace, &TrustPolicy::default(), now + 1)
        .await
        .unwrap();
    (expired, marked.len())
}

/// Units of one task each are leased in order without looking at their other tasks; once a
/// unit has a replacement task, the worker whose task timed out never gets it.
async fn a_replacement_never_goes_to_the_worker_that_timed_out(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 3, 2, redundancy(1, false), NOW).await;
    let (a, b) = (
        worker(s, None, 20, NOW).await,
        worker(s, None, 20, NOW).await,
    );
    let first: Vec<u64> = lease(s, a, 2, NOW)
        .await
        .iter()
        .map(|t| t.unit_seq)
        .collect();
    assert_eq!(first, [0, 1]);
    assert_eq!(time_out_and_replace(s, NOW + 60_001).await, (2, 2));
    let row = s.job(j.id).await.unwrap().unwrap();
    assert_eq!((row.units_created, row.tasks_created), (2, 4));
    let again: Vec<u64> = lease(s, a, 20, NOW + 60_003)
        .await
        .iter()
        .map(|t| t.unit_seq)
        .collect();
    assert_eq!(again, [2], "only the unit a never had");
    let mut others: Vec<u64> = lease(s, b, 20, NOW + 60_003)
        .await
        .iter()
        .map(|t| t.unit_seq)
        .collect();
    others.sort_unstable();
    assert_eq!(others, [0, 1], "the replacements");
}
contract!(
    replacement_not_to_the_worker_that_timed_out,
    a_replacement_never_goes_to_the_worker_that_timed_out
);

/// A replacement nobody takes within a unit's timeout: the worker whose task timed out gets that
/// same task back (never a second task of the unit), so a unit whose live workers all have a task
/// of it still ends (two workers at quorum 2, one of them late once).
async fn a_timed_out_task_goes_back_to_its_worker_when_its_replacement_waits(f: Fresh) {
    let s = f.store.as_ref();
    let j = job(s, 1, 1, redundancy(2, false), NOW).await;
    let (a, b) = (
        worker(s, None, 20, NOW).await,
        worker(s, None, 20, NOW).await,
    );
    let late = lease(s, a, 1, NOW).await;
    let done = lease(s, b, 1, NOW).await;
    assert_eq!((late.len(), done.len()), (1, 1));
    record(s, b, vec![(done[0].task_id, success(0))], NOW + 10).await;
    assert_eq!(time_out_and_replace(s, NOW + 60_001).await.0, 1);
    assert_eq!(s.job(j.id).await.unwrap().unwrap().tasks_created, 3);
    // Within a unit's timeout the replacement waits for another worker.
    assert!(lease(s, a, 20, NOW + 60_003).await.is_empty());
    assert!(lease(s, b, 20, NOW + 60_003).await.is_empty());
    // After it, the late worker gets its own task back, with a new deadline.
    let again = lease(s, a, 20, NOW + 120_001).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].task_id, late[0].task_id,
        "the same task, not the replacement"
    );
    assert_eq!(again[0].deadline, NOW + 120_001 + 60_000);
    assert!(lease(s, a, 20, NOW + 120_002).await.is_empty());
    assert_eq!(
        record(s, a, vec![(late[0].task_id, success(0))], NOW + 120_010).await,
        [late[0].task_id]
    );
}
contract!(
    timed_out_task_back_to_its_worker,
    a_timed_out_task_goes_back_to_its_worker_when_its_replacement_waits
);
