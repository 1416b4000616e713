//! The worker protocol driven by hand: leases, refused reports, heartbeats.

use std::time::{Duration, Instant};

use serde_json::json;
use sparecycles_protocol::work::{MAX_PRESENCE_LINES, PresenceRequest, PresenceResponse};
use sparecycles_protocol::{
    HeartbeatRequest, HeartbeatResponse, JobState, LeaseRequest, LeaseResponse, ReportResponse,
    TaskAssignment, TaskProgress, TaskResult,
};
use sqlx::Row;

use crate::helpers::{Api, Coordinator, db, problem_detail, spared_of, spec};

/// Every task row, as text, to compare the database before and after refused requests.
async fn snapshot(c: &Coordinator) -> Vec<String> {
    let rows = sqlx::query(
        "SELECT id, state, validation, COALESCE(worker_id, ''), COALESCE(output, ''), \
         COALESCE(error, '') FROM tasks ORDER BY id",
    )
    .fetch_all(&db(c).await)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            (0..6)
                .map(|i| r.get::<String, _>(i))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_and_foreign_reports_change_nothing() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&spec(json!({
            "name": "by hand",
            "app": "prime-count",
            "params": {"start": 0, "end": 100, "unit_size": 50},
            "redundancy": {"min_quorum": 2}
        })))
        .await;
    let alice = api.enroll("alice").await;
    let mallory = api.enroll("mallory").await;

    let lease: LeaseResponse = api.lease(&alice.token, 10).await;
    // Never two tasks of one unit to the same worker: one task per unit.
    assert_eq!(lease.tasks.len(), 2);
    assert_ne!(lease.tasks[0].unit_id, lease.tasks[1].unit_id);
    assert_eq!(lease.tasks[0].unit, json!({"start": 0, "end": 50}));
    let task = lease.tasks[0].task_id;

    // Mallory reports Alice's task: refused, nothing changes.
    let before = snapshot(&c).await;
    let r: ReportResponse = api
        .report(
            &mallory.token,
            vec![TaskResult::success(task, json!({"count": 15}))],
        )
        .await;
    assert!(r.accepted.is_empty());
    assert_eq!(r.refused.len(), 1);
    assert!(r.refused[0].reason.contains("not leased to this worker"));
    assert_eq!(snapshot(&c).await, before);

    // Alice reports it: accepted.
    let r: ReportResponse = api
        .report(
            &alice.token,
            vec![TaskResult::success(task, json!({"count": 15}))],
        )
        .await;
    assert_eq!(r.accepted, vec![task]);

    // Reported again (even with another answer): refused, nothing changes.
    let before = snapshot(&c).await;
    let r: ReportResponse = api
        .report(
            &alice.token,
            vec![TaskResult::success(task, json!({"count": 99}))],
        )
        .await;
    assert!(r.accepted.is_empty());
    assert!(r.refused[0].reason.contains("already reported"), "{r:?}");
    assert_eq!(snapshot(&c).await, before);

    // A quorum of one is not enough: the job waits for a second worker.
    let view = api.job(job.id).await;
    assert_eq!(view.units.done, 0);
    assert_eq!(view.state, JobState::Running);

    // Mallory leases the second replica of unit 0 and agrees; the unit is decided.
    let lease_m: LeaseResponse = api.lease(&mallory.token, 1).await;
    assert_eq!(lease_m.tasks.len(), 1);
    assert_eq!(lease_m.tasks[0].unit_seq, 0);
    let r: ReportResponse = api
        .report(
            &mallory.token,
            vec![TaskResult::success(
                lease_m.tasks[0].task_id,
                json!({"count": 15}),
            )],
        )
        .await;
    assert_eq!(r.accepted.len(), 1);
    api.wait_done(job.id, 1, std::time::Duration::from_secs(10))
        .await;

    // Heartbeats: Alice's other task goes on; a task of another worker is to be aborted.
    let hb: HeartbeatResponse = api
        .worker_call(
            &alice.token,
            "/api/v1/work/heartbeat",
            &HeartbeatRequest {
                tasks: vec![
                    TaskProgress {
                        task_id: lease.tasks[1].task_id,
                        progress: 0.5,
                    },
                    TaskProgress {
                        task_id: lease_m.tasks[0].task_id,
                        progress: 0.5,
                    },
                ],
            },
        )
        .await;
    assert_eq!(hb.abort, vec![lease_m.tasks[0].task_id]);

    // A result with both output and error is refused.
    let r: ReportResponse = api
        .report(
            &alice.token,
            vec![TaskResult {
                task_id: lease.tasks[1].task_id,
                output: Some(json!({"count": 10})),
                error: Some("x".into()),
            }],
        )
        .await;
    assert!(r.refused[0].reason.contains("exactly one"));
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_endpoints_need_a_worker_token() {
    let c = Coordinator::start();
    let api = c.api();
    for path in [
        "/api/v1/work/lease",
        "/api/v1/work/heartbeat",
        "/api/v1/work/report",
    ] {
        let (status, ct, body) = api.post_raw(path, None, "{}").await;
        assert_eq!(status, 401, "{path}");
        assert!(!problem_detail(&ct, &body).is_empty());
        let (status, _, _) = api.post_raw(path, Some("scw_forged"), "{}").await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, ct, body) = api
        .post_raw(
            "/api/v1/workers/enroll",
            None,
            r#"{"name": "", "cores": 1, "os": "l", "arch": "x", "apps": ["collatz"]}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert!(problem_detail(&ct, &body).contains("name"));
    let workers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workers")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(workers, 0);
}

/// A lease whose answer never reached the worker (the coordinator crashed after committing it,
/// or the connection broke) is sent again when the worker's next lease does not name it; tasks
/// it does name are not, and nothing is leased twice in the database.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_a_worker_never_received_are_resent() {
    let c = Coordinator::start();
    let api = c.api();
    api.submit(&spec(json!({
        "name": "lost answers",
        "app": "prime-count",
        "params": {"start": 0, "end": 300, "unit_size": 100},
    })))
    .await;
    let alice = api.enroll("alice").await;
    let lease = |max_tasks, held| {
        let (api, token) = (api.clone(), alice.token.clone());
        async move {
            let r: LeaseResponse = api
                .worker_call(
                    &token,
                    "/api/v1/work/lease",
                    &LeaseRequest {
                        max_tasks,
                        held,
                        wait_ms: None,
                    },
                )
                .await;
            r.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>()
        }
    };
    // The answer to this lease is "lost": the worker never learns these two tasks.
    let lost = lease(2, Some(vec![])).await;
    assert_eq!(lost.len(), 2);
    // Fresh leases are not resent at once (the grace absorbs coordinators' clock skew).
    let third = lease(1, Some(vec![])).await;
    assert_eq!(third.len(), 1);
    assert!(!lost.contains(&third[0]));
    // Once past the grace, a lease naming only the third gets the lost two again, and nothing
    // new (the job has no other units).
    tokio::time::sleep(std::time::Duration::from_millis(5_500)).await;
    let mut again = lease(10, Some(third.clone())).await;
    let mut lost = lost;
    again.sort();
    lost.sort();
    assert_eq!(again, lost);
    // An old worker that names nothing it holds gets nothing resent.
    assert!(lease(10, None).await.is_empty());
    let leased_twice: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks WHERE worker_id IS NOT NULL GROUP BY unit_id \
         HAVING COUNT(*) > 1",
    )
    .fetch_optional(&db(&c).await)
    .await
    .unwrap()
    .unwrap_or(0);
    assert_eq!(leased_twice, 0, "a unit got a second task");
}

/// A lease may wait for work (a long poll): one asked before any job exists gets a task per
/// core of the job's once it is submitted (the worker's cores are idle until the answer), the
/// next call the rest, and a clean shutdown ends waiting leases instead of waiting for them.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_lease_gets_work_submitted_later_and_ends_at_shutdown() {
    let mut c = Coordinator::start();
    let api = c.api();
    let alice = api.enroll("alice").await;
    let ask = |wait_ms| {
        let (api, token) = (api.clone(), alice.token.clone());
        tokio::spawn(async move { api.lease_waiting(&token, 5, wait_ms).await.tasks.len() })
    };
    let waiting = ask(20_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before there was work");
    api.submit(&spec(json!({
        "name": "appears later",
        "app": "prime-count",
        "params": {"start": 0, "end": 300, "unit_size": 100},
    })))
    .await;
    assert_eq!(waiting.await.unwrap(), 1, "alice has one core");
    assert_eq!(ask(0).await.unwrap(), 2);

    // Nothing left for alice (one task per unit): this lease waits until the shutdown ends it.
    let waiting = ask(30_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    assert!(
        c.terminate(std::time::Duration::from_secs(10)).is_some(),
        "the coordinator waited for a waiting lease instead of ending it"
    );
    assert_eq!(waiting.await.unwrap(), 0);
}

/// A report wakes the waiting lease of the worker that sent it (its quota has room again), not
/// every idle worker's: each of those ran a lease transaction for nothing at every report of
/// the fleet. A lease's look shows in its worker's `last_seen`, which every look writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_wakes_its_own_worker_s_waiting_lease_only() {
    let c = Coordinator::start();
    let api = c.api();
    let (alice, bob) = (api.enroll("alice").await, api.enroll("bob").await);
    api.submit(&spec(json!({
        "name": "room",
        "app": "prime-count",
        "params": {"start": 0, "end": 800, "unit_size": 100},
        "redundancy": {"min_quorum": 1, "adaptive": false},
    })))
    .await;
    // One core: a quota of six tasks, two units left over.
    let held = api.lease(&alice.token, 10).await.tasks;
    assert_eq!(held.len(), 6, "alice's quota");
    let waiting = |token: &str| {
        let (api, token) = (api.clone(), token.to_owned());
        tokio::spawn(async move { api.lease_waiting(&token, 1, 20_000).await.tasks.len() })
    };
    let report = |task: &TaskAssignment| {
        let (api, token) = (api.clone(), alice.token.clone());
        let result = TaskResult::success(task.task_id, crate::fake_worker::honest(task));
        async move {
            let r: ReportResponse = api.report(&token, vec![result]).await;
            assert_eq!(r.accepted.len(), 1);
        }
    };
    let last_seen = || {
        let api = api.clone();
        async move {
            let fleet = api.workers().await;
            fleet
                .iter()
                .find(|w| w.name == "bob")
                .expect("bob")
                .last_seen
        }
    };

    // Alice's lease waits on her quota; her report makes room and it gets a task at once (well
    // within the 1 s after which a waiting lease looks again anyway).
    let alice_waits = waiting(&alice.token);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!alice_waits.is_finished(), "leased beyond alice's quota");
    let reported = Instant::now();
    report(&held[0]).await;
    assert_eq!(alice_waits.await.unwrap(), 1);
    assert!(
        reported.elapsed() < Duration::from_millis(800),
        "{:?}",
        reported.elapsed()
    );

    // Bob takes the last unit and waits for more; alice's next report does not wake him.
    assert_eq!(api.lease(&bob.token, 10).await.tasks.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = last_seen().await;
    let bob_waits = waiting(&bob.token);
    let deadline = Instant::now() + Duration::from_secs(10);
    let looked = loop {
        let seen = last_seen().await;
        if seen > before {
            break seen;
        }
        assert!(Instant::now() < deadline, "bob's lease never looked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    report(&held[1]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last_seen().await, looked, "alice's report woke bob's lease");
    assert!(!bob_waits.is_finished());
    bob_waits.abort();
}

/// Opens a presence line as the worker with `token`; resolves to how long it was held.
fn open_line(api: &Api, token: String, wait_ms: u32) -> tokio::task::JoinHandle<u64> {
    let api = api.clone();
    tokio::spawn(async move {
        let r: PresenceResponse = api
            .worker_call(
                &token,
                "/api/v1/work/presence",
                &PresenceRequest { wait_ms },
            )
            .await;
        r.held_ms
    })
}

/// A worker keeps a presence request open. One whose line drops (its process died: the
/// connection closed with the request unanswered) gets its leased tasks spared within about a
/// second, long before the 60 s silence limit, and a spare goes to another worker; a line
/// answered in time, or dropped and opened again at once (a connection reset), spares nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_presence_line_gets_the_worker_s_tasks_spares_at_once() {
    let c = Coordinator::start();
    let api = c.api();
    api.submit(&spec(json!({
        "name": "held by three",
        "app": "prime-count",
        "params": {"start": 0, "end": 300, "unit_size": 100},
        "redundancy": {"min_quorum": 1, "adaptive": false},
    })))
    .await;
    let line = |token: String, wait_ms| open_line(&api, token, wait_ms);
    let mut held = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let w = api.enroll(name).await;
        let leased = api.lease(&w.token, 1).await.tasks;
        assert_eq!(leased.len(), 1, "{name}");
        held.push((w.token, leased[0].unit_id));
    }
    let alice = line(held[0].0.clone(), 30_000);
    let carol = line(held[2].0.clone(), 30_000);
    // Bob's line runs its time and is answered.
    let held_ms = line(held[1].0.clone(), 300).await.unwrap();
    assert!((300..5_000).contains(&held_ms), "{held_ms}");
    // Carol's connection resets and she opens a new line at once.
    carol.abort();
    let _carol_again = line(held[2].0.clone(), 30_000);
    // Alice's process dies.
    alice.abort();
    let dropped = std::time::Instant::now();
    while spared_of(&c, "alice").await.0 == 0 {
        assert!(
            dropped.elapsed() < std::time::Duration::from_secs(10),
            "alice's task was not spared after her line dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The grace is a second; a lost line is noticed at once.
    assert!(
        dropped.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        dropped.elapsed()
    );
    // A spare of alice's unit goes to the next worker that asks.
    let dave = api.enroll("dave").await;
    let mut spare = Vec::new();
    for _ in 0..100 {
        spare = api.lease(&dave.token, 5).await.tasks;
        if !spare.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(spare.len(), 1, "{spare:?}");
    assert_eq!(spare[0].unit_id, held[0].1);
    // Past carol's grace too: neither bob's nor carol's task was spared.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(spared_of(&c, "alice").await, (1, 0));
    assert_eq!(spared_of(&c, "bob").await, (0, 1));
    assert_eq!(spared_of(&c, "carol").await, (0, 1));
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(r#"sparecycles_tasks_spared_total{reason="disconnected"} 1"#),
        "{metrics}"
    );
}

/// A clean shutdown answers open presence lines at once (and spares nothing): the server does
/// not wait 30 s for them to run out.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_shutdown_answers_presence_lines() {
    let mut c = Coordinator::start();
    let api = c.api();
    let alice = api.enroll("alice").await;
    let line = open_line(&api, alice.token.clone(), 30_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!line.is_finished(), "answered before its time");
    let asked = std::time::Instant::now();
    assert!(
        c.terminate(std::time::Duration::from_secs(10)).is_some(),
        "the coordinator waited for a presence line instead of ending it"
    );
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    assert!(line.await.unwrap() < 10_000);
    assert!(!c.log_text().contains("worker disconnected"));
}

/// One worker may hold only a few presence lines open (each ties up a connection for 30 s);
/// one more is refused with a problem, and refusing it spares nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_may_hold_only_a_few_presence_lines() {
    let c = Coordinator::start();
    let api = c.api();
    api.submit(&spec(json!({
        "name": "held",
        "app": "prime-count",
        "params": {"start": 0, "end": 100, "unit_size": 100},
    })))
    .await;
    let alice = api.enroll("alice").await;
    assert_eq!(api.lease(&alice.token, 1).await.tasks.len(), 1);
    let mut lines = Vec::new();
    for _ in 0..MAX_PRESENCE_LINES {
        lines.push(open_line(&api, alice.token.clone(), 30_000));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (status, ct, body) = api
        .post_raw(
            "/api/v1/work/presence",
            Some(&alice.token),
            r#"{"wait_ms": 30000}"#,
        )
        .await;
    assert_eq!(status, 409);
    assert!(problem_detail(&ct, &body).contains("presence lines"));
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(spared_of(&c, "alice").await, (0, 1));
    // The held lines are still open.
    assert!(lines.iter().all(|l| !l.is_finished()));
}
