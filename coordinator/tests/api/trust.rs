//! Trust: right answers from untrusted workers (issue 3), with fault-injecting fake workers.

use std::time::Duration;

use serde_json::json;
use sparecycles_protocol::{JobState, WorkerView};
use sqlx::Row;

use crate::fake_worker::{Behavior, FakeWorker, run_until};
use crate::helpers::{ADMIN_TOKEN, Api, Coordinator, db, naive_prime_count, spec};

async fn all_final(api: &Api, ids: &[uuid::Uuid]) -> bool {
    for id in ids {
        if !api.job(*id).await.state.is_final() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn liars_are_outvoted_and_banned() {
    let c = Coordinator::start();
    let api = c.api();
    let mut fleet = Vec::new();
    for i in 0..7 {
        fleet.push(
            FakeWorker::enroll(
                &api,
                &format!("honest-{i}"),
                &format!("h{i}"),
                Behavior::Honest,
            )
            .await,
        );
    }
    let liars = [
        ("always-wrong", "liar-a", Behavior::AlwaysWrong),
        ("random-wrong", "liar-r", Behavior::RandomWrong),
        ("colluder-1", "ring", Behavior::Collude),
        ("colluder-2", "ring", Behavior::Collude),
    ];
    for (name, owner, b) in liars {
        fleet.push(FakeWorker::enroll(&api, name, owner, b).await);
    }
    fleet.push(FakeWorker::enroll(&api, "staller", "s", Behavior::Stall).await);
    let mut thief = FakeWorker::enroll(&api, "thief", "t", Behavior::Steal).await;

    let mut jobs = Vec::new();
    for (start, end) in [(0u64, 12_000_000u64), (5_000_000, 9_000_037)] {
        let job = api
            .submit(&spec(json!({
                "name": format!("primes {start}..{end}"),
                "app": "prime-count",
                "params": {"start": start, "end": end, "unit_size": 100_000},
                "redundancy": {"min_quorum": 2, "distinct_owners": true, "max_total_results": 8},
                "unit_timeout_secs": 3
            })))
            .await;
        jobs.push((job.id, start, end));
    }
    // The thief reports results under task ids leased to others.
    let pool = db(&c).await;
    thief.stolen = sqlx::query_scalar::<_, String>("SELECT id FROM tasks LIMIT 20")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    fleet.push(thief);

    let ids: Vec<_> = jobs.iter().map(|j| j.0).collect();
    run_until(fleet, 4, || all_final(&api, &ids)).await;

    for (id, start, end) in &jobs {
        let job = api.job(*id).await;
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!(
            api.result_json(*id).await,
            json!({"count": naive_prime_count(*start, *end)}),
            "a wrong canonical result survived"
        );
    }
    let fleet = api.workers().await;
    for w in &fleet {
        let liar =
            ["always-wrong", "random-wrong", "colluder-1", "colluder-2"].contains(&w.name.as_str());
        if liar {
            assert!(w.banned, "liar {} was not banned: {w:?}", w.name);
        } else {
            assert!(!w.banned, "{} was banned: {w:?}", w.name);
            assert_eq!(w.invalid, 0, "{w:?}");
        }
    }
    // A banned worker gets a clear refusal.
    let liar = fleet.iter().find(|w| w.name == "always-wrong").unwrap();
    assert!(liar.invalid >= 3);
    // No stolen result was taken: every valid task's worker is the one it was leased to, and
    // the thief has no valid result for a task it did not lease.
    let thief = fleet.iter().find(|w| w.name == "thief").unwrap();
    assert_eq!(thief.invalid, 0);

    // The staller's leases timed out, and each timeout halved how much it may hold (BOINC
    // issue #3061: a host with 1,663 tasks in flight and 313 errors kept getting work).
    let staller = fleet.iter().find(|w| w.name == "staller").unwrap();
    assert!(staller.timeouts > 0, "{staller:?}");
    assert!(staller.quota < 6 && staller.in_flight <= 6, "{staller:?}");

    // An admin can unban.
    let r = api
        .http
        .post(format!(
            "{}/api/v1/workers/{}/unban",
            api.url, liar.worker_id
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after: WorkerView = r.json().await.unwrap();
    assert!(!after.banned);
}

#[tokio::test(flavor = "multi_thread")]
async fn banned_workers_are_refused_with_a_reason() {
    let c = Coordinator::start();
    let api = c.api();
    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(
            FakeWorker::enroll(&api, &format!("h{i}"), &format!("h{i}"), Behavior::Honest).await,
        );
    }
    let liar = FakeWorker::enroll(&api, "liar", "l", Behavior::AlwaysWrong).await;
    let token = liar.token.clone();
    fleet.push(liar);
    let job = api
        .submit(&spec(json!({
            "name": "catch a liar",
            "app": "prime-count",
            "params": {"start": 0, "end": 3_000_000, "unit_size": 100_000},
            "redundancy": {"min_quorum": 2, "adaptive": false}
        })))
        .await;
    run_until(fleet, 2, || async {
        api.job(job.id).await.state.is_final()
    })
    .await;
    let (status, ct, body) = api
        .post_raw("/api/v1/work/lease", Some(&token), r#"{"max_tasks": 1}"#)
        .await;
    assert_eq!(status, 403);
    assert!(crate::helpers::problem_detail(&ct, &body).contains("banned"));
}

#[tokio::test(flavor = "multi_thread")]
async fn adaptive_replication_costs_little_more_than_one_task_per_unit() {
    let c = Coordinator::start();
    let api = c.api();
    let mut fleet = Vec::new();
    for i in 0..4 {
        fleet.push(
            FakeWorker::enroll(&api, &format!("w{i}"), &format!("o{i}"), Behavior::Honest).await,
        );
    }
    let job = api
        .submit(&spec(json!({
            "name": "long job",
            "app": "collatz",
            "params": {"start": 1, "end": 400_001, "unit_size": 400},
            "redundancy": {"min_quorum": 2}
        })))
        .await;
    run_until(fleet, 16, || async {
        api.job(job.id).await.state.is_final()
    })
    .await;
    let done = api.job(job.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        api.result_json(job.id).await,
        json!({"max_steps": 442, "argmax": 230_631})
    );
    let pool = db(&c).await;
    let worked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND state NOT IN ('unsent', 'aborted')",
    )
    .bind(job.id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    let ratio = worked as f64 / done.units.total as f64;
    println!(
        "adaptive replication: {worked} tasks computed for {} units = {ratio:.3} tasks/unit",
        done.units.total
    );
    assert!(ratio <= 1.25, "{ratio}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzzy_validation_accepts_small_differences_and_rejects_large_ones() {
    let c = Coordinator::start();
    let api = c.api();
    let params = json!({"function": "gaussian", "a": -4.0, "b": 4.0, "points": 40_000, "unit_points": 10_000, "rel_tolerance": 1e-9});
    let job = api
        .submit(&spec(json!({
            "name": "fuzzy", "app": "integrate", "params": params,
            "redundancy": {"min_quorum": 2, "adaptive": false}
        })))
        .await;
    // Within tolerance: an honest worker and one whose float sums differ in the last bits.
    let fleet = vec![
        FakeWorker::enroll(&api, "exact", "a", Behavior::Honest).await,
        FakeWorker::enroll(&api, "jitter", "b", Behavior::Jitter).await,
    ];
    let fleet = run_until(fleet, 8, || async {
        api.job(job.id).await.state.is_final()
    })
    .await;
    assert_eq!(api.job(job.id).await.state, JobState::Completed);
    drop(fleet);
    // Beyond tolerance: the off worker is outvoted by a second honest one.
    let job2 = api
        .submit(&spec(json!({
            "name": "fuzzy 2", "app": "integrate", "params": params,
            "redundancy": {"min_quorum": 2, "adaptive": false}
        })))
        .await;
    let off = FakeWorker::enroll(&api, "off", "c", Behavior::Off).await;
    let mut exact = FakeWorker::enroll(&api, "exact-2", "d", Behavior::Honest).await;
    let mut off = off;
    off.round(8).await;
    exact.round(8).await;
    let fleet = vec![
        off,
        exact,
        FakeWorker::enroll(&api, "exact-3", "e", Behavior::Honest).await,
    ];
    run_until(fleet, 8, || async {
        api.job(job2.id).await.state.is_final()
    })
    .await;
    assert_eq!(api.job(job2.id).await.state, JobState::Completed);
    let fleet = api.workers().await;
    let by = |n: &str| fleet.iter().find(|w| w.name == n).unwrap().clone();
    assert_eq!(by("jitter").invalid, 0);
    assert_eq!(by("jitter").valid, 4);
    assert_eq!(by("off").invalid, 4);
    assert_eq!(by("off").valid, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn credit_is_the_declared_work_not_the_workers_claim() {
    credit_is_declared_work(2).await;
}

/// Quorum 1: each result decides its unit as it is recorded (SQLite), with the same credit
/// and valid counts as the transitioner's verdicts.
#[tokio::test(flavor = "multi_thread")]
async fn credit_is_the_declared_work_at_quorum_1_too() {
    credit_is_declared_work(1).await;
}

async fn credit_is_declared_work(quorum: u32) {
    let c = Coordinator::start();
    let api = c.api();
    let fleet = vec![
        FakeWorker::enroll(&api, "a", "a", Behavior::Honest).await,
        FakeWorker::enroll(&api, "b", "b", Behavior::Honest).await,
        FakeWorker::enroll(&api, "greedy", "g", Behavior::Greedy).await,
    ];
    let params = json!({"start": 0, "end": 2_000_000, "unit_size": 100_000});
    let job = api
        .submit(&spec(json!({
            "name": "credit", "app": "prime-count", "params": params,
            "redundancy": {"min_quorum": quorum, "adaptive": false}
        })))
        .await;
    run_until(fleet, 4, || async {
        api.job(job.id).await.state.is_final()
    })
    .await;
    assert_eq!(api.job(job.id).await.state, JobState::Completed);

    let plan = sparecycles_apps::find("prime-count")
        .unwrap()
        .plan(&params)
        .unwrap();
    let pool = db(&c).await;
    for w in api.workers().await {
        let rows =
            sqlx::query("SELECT unit_seq FROM tasks WHERE worker_id = $1 AND validation = 'valid'")
                .bind(w.worker_id.to_string())
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected: f64 = rows
            .iter()
            .map(|r| plan.unit_work(r.get::<i64, _>(0) as u64))
            .sum();
        assert!(
            (w.credit - expected).abs() < 1e-9,
            "{}: {} != {expected}",
            w.name,
            w.credit
        );
        assert_eq!(w.valid, rows.len() as u64, "{}", w.name);
        if w.name == "greedy" {
            assert_eq!(w.credit, 0.0, "a claimed credit was paid");
            assert!(w.errors > 0, "the padded outputs should count as errors");
        } else {
            assert!(w.credit > 0.0);
        }
    }
    // The public leaderboard shows the same totals, without ids.
    let board: serde_json::Value = api
        .http
        .get(format!("{}/api/v1/leaderboard", api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(board["workers"][0]["credit"].as_f64().unwrap() > 0.0);
    assert!(!board.to_string().contains("worker_id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_worker_is_suspected_and_a_spare_finishes_first() {
    let c = Coordinator::start_with(&["--suspect-after-secs", "2"]);
    let api = c.api();
    let mut staller = FakeWorker::enroll(&api, "staller", "s", Behavior::Stall).await;
    let job = api
        .submit(&spec(json!({
            "name": "spare", "app": "prime-count",
            "params": {"start": 0, "end": 1_000_000, "unit_size": 1_000_000},
            "redundancy": {"min_quorum": 1, "adaptive": false},
            "unit_timeout_secs": 3600
        })))
        .await;
    assert_eq!(staller.round(1).await, Some(1));
    let started = std::time::Instant::now();
    let _w = c.worker("rescuer", 1);
    let done = api.wait(job.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(api.result_json(job.id).await, json!({"count": 78_498}));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited for the deadline"
    );
    let row = sqlx::query("SELECT state, CASE WHEN spared THEN 1 ELSE 0 END AS spared FROM tasks t JOIN workers w ON w.id = t.worker_id WHERE w.name = 'staller'")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("state"), "leased");
    assert_eq!(row.get::<i64, _>("spared"), 1);
}
