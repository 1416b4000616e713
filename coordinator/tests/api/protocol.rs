//! The worker protocol driven by hand: leases, refused reports, heartbeats.

use serde_json::json;
use sparecycles_protocol::{
    HeartbeatRequest, HeartbeatResponse, JobState, LeaseRequest, LeaseResponse, ReportRequest,
    ReportResponse, TaskProgress, TaskResult,
};
use sqlx::Row;

use crate::helpers::{Coordinator, db, problem_detail, spec};

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

    let lease: LeaseResponse = api
        .worker_call(
            &alice.token,
            "/api/v1/work/lease",
            &LeaseRequest { max_tasks: 10 },
        )
        .await;
    // Never two tasks of one unit to the same worker: one task per unit.
    assert_eq!(lease.tasks.len(), 2);
    assert_ne!(lease.tasks[0].unit_id, lease.tasks[1].unit_id);
    assert_eq!(lease.tasks[0].unit, json!({"start": 0, "end": 50}));
    let task = lease.tasks[0].task_id;

    // Mallory reports Alice's task: refused, nothing changes.
    let before = snapshot(&c).await;
    let r: ReportResponse = api
        .worker_call(
            &mallory.token,
            "/api/v1/work/report",
            &ReportRequest {
                results: vec![TaskResult::success(task, json!({"count": 15}))],
            },
        )
        .await;
    assert!(r.accepted.is_empty());
    assert_eq!(r.refused.len(), 1);
    assert!(r.refused[0].reason.contains("not leased to this worker"));
    assert_eq!(snapshot(&c).await, before);

    // Alice reports it: accepted.
    let r: ReportResponse = api
        .worker_call(
            &alice.token,
            "/api/v1/work/report",
            &ReportRequest {
                results: vec![TaskResult::success(task, json!({"count": 15}))],
            },
        )
        .await;
    assert_eq!(r.accepted, vec![task]);

    // Reported again (even with another answer): refused, nothing changes.
    let before = snapshot(&c).await;
    let r: ReportResponse = api
        .worker_call(
            &alice.token,
            "/api/v1/work/report",
            &ReportRequest {
                results: vec![TaskResult::success(task, json!({"count": 99}))],
            },
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
    let lease_m: LeaseResponse = api
        .worker_call(
            &mallory.token,
            "/api/v1/work/lease",
            &LeaseRequest { max_tasks: 1 },
        )
        .await;
    assert_eq!(lease_m.tasks.len(), 1);
    assert_eq!(lease_m.tasks[0].unit_seq, 0);
    let r: ReportResponse = api
        .worker_call(
            &mallory.token,
            "/api/v1/work/report",
            &ReportRequest {
                results: vec![TaskResult::success(
                    lease_m.tasks[0].task_id,
                    json!({"count": 15}),
                )],
            },
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
        .worker_call(
            &alice.token,
            "/api/v1/work/report",
            &ReportRequest {
                results: vec![TaskResult {
                    task_id: lease.tasks[1].task_id,
                    output: Some(json!({"count": 10})),
                    error: Some("x".into()),
                }],
            },
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
