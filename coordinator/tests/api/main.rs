//! End-to-end tests: the real coordinator and worker binaries on 127.0.0.1.

mod access;
mod agent;
mod backend;
mod bench;
mod bounds;
mod dashboard;
mod fake_worker;
mod helpers;
mod postgres;
mod protocol;
mod security;
mod spec_errors;
mod trust;
mod wasm;

use std::time::Duration;

use serde_json::json;
use sparecycles_protocol::JobState;
use sqlx::Row;

use helpers::{Coordinator, db, naive_prime_count, spec, tasks_of};

const LONG: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn prime_count_to_1e9_with_quorum_2_on_three_workers() {
    let c = Coordinator::start();
    let api = c.api();
    let _w: Vec<_> = (1..=3).map(|i| c.worker(&format!("w{i}"), 1)).collect();
    let job = api
        .submit(&spec(json!({
            "name": "pi(1e9)",
            "app": "prime-count",
            "params": {"start": 0, "end": 1_000_000_000u64, "unit_size": 10_000_000},
            "redundancy": {"min_quorum": 2, "adaptive": false}
        })))
        .await;
    assert_eq!(job.units.total, 100);
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(api.result_json(job.id).await, json!({"count": 50_847_534}));

    // Every unit has a canonical result backed by two agreeing results from two workers.
    let pool = db(&c).await;
    let rows = sqlx::query(
        "SELECT u.seq, COUNT(t.id) AS valid, COUNT(DISTINCT t.worker_id) AS workers, \
         COUNT(DISTINCT t.output) AS outputs FROM units u \
         JOIN tasks t ON t.unit_id = u.id AND t.validation = 'valid' \
         WHERE u.job_id = $1 AND u.state = 'done' GROUP BY u.seq",
    )
    .bind(job.id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 100);
    for r in rows {
        assert!(r.get::<i64, _>("valid") >= 2);
        assert_eq!(r.get::<i64, _>("workers"), r.get::<i64, _>("valid"));
        assert_eq!(r.get::<i64, _>("outputs"), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uneven_splits_lose_and_double_count_nothing() {
    let c = Coordinator::start();
    let api = c.api();
    let _w = [c.worker("a", 1), c.worker("b", 1)];
    let primes = api
        .submit(&spec(json!({
            "name": "uneven primes",
            "app": "prime-count",
            "params": {"start": 10, "end": 100_003, "unit_size": 997},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    let collatz = api
        .submit(&spec(json!({
            "name": "uneven collatz",
            "app": "collatz",
            "params": {"start": 3, "end": 1_000_001, "unit_size": 33_333},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    let pi = api
        .submit(&spec(json!({
            "name": "uneven pi",
            "app": "monte-carlo-pi",
            "params": {"samples": 1_000_003, "unit_samples": 99_991, "seed": 7},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    assert_eq!(primes.units.total, (100_003u64 - 10).div_ceil(997));
    for id in [primes.id, collatz.id, pi.id] {
        let done = api.wait(id, LONG).await;
        assert_eq!(done.state, JobState::Completed, "{done:?}");
        assert_eq!(done.units.done, done.units.total);
    }
    assert_eq!(
        api.result_json(primes.id).await,
        json!({"count": naive_prime_count(10, 100_003)})
    );
    assert_eq!(
        api.result_json(collatz.id).await,
        json!({"max_steps": 524, "argmax": 837_799})
    );
    let pi = api.result_json(pi.id).await;
    assert_eq!(pi["samples"], 1_000_003);
    let estimate = pi["estimate"].as_f64().unwrap();
    assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{pi}");
    let inside = pi["inside"].as_f64().unwrap();
    assert_eq!(estimate, 4.0 * inside / 1_000_003.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mandelbrot_job_returns_the_right_png() {
    let c = Coordinator::start();
    let api = c.api();
    let _w = [c.worker("a", 1), c.worker("b", 1)];
    let params = json!({
        "width": 200, "height": 150, "center_re": -0.75, "center_im": 0.0,
        "scale": 3.0, "max_iter": 200, "tile": 64
    });
    let job = api
        .submit(&spec(
            json!({"name": "mandel", "app": "mandelbrot", "params": params.clone()}),
        ))
        .await;
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let (ct, png) = api.result_bytes(job.id).await;
    assert_eq!(ct, "image/png");

    // The same picture computed here, directly with the app, byte for byte.
    let app = sparecycles_apps::find("mandelbrot").unwrap();
    let expected = sparecycles_apps::run_in_process(app, &params).unwrap();
    assert_eq!(png, expected.body);
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (200, 150));
}

/// SIGSTOPs `worker` (enrolled as `name`) once it holds leases; a freeze that falls just after
/// it reported everything it held is undone and tried again.
async fn freeze_holding_leases(pool: &sqlx::AnyPool, worker: &helpers::Worker, name: &str) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        while tasks_of(pool, name, "leased").await == 0 {
            assert!(std::time::Instant::now() < deadline, "{name} never leased");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.freeze();
        // A moment for a report already on its way to land.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tasks_of(pool, name, "leased").await > 0 {
            return;
        }
        worker.thaw();
    }
}

/// A hung worker (its connections open, so nothing tells the coordinator it is gone) is found
/// by its tasks' deadlines.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_worker_s_tasks_time_out_and_the_job_ends_correct() {
    let c = Coordinator::start();
    let api = c.api();
    let doomed = c.worker("doomed", 1);
    let job = api
        .submit(&spec(json!({
            "name": "survives a crash",
            "app": "prime-count",
            // Units of ~10 ms, so the worker is caught holding leases (see the next test).
            "params": {"start": 0, "end": 3_000_000_000u64, "unit_size": 100_000_000},
            "redundancy": {"min_quorum": 2},
            "unit_timeout_secs": 3
        })))
        .await;
    // Frozen while it holds leases, before the other workers start: the job then cannot end
    // until those leases time out.
    let pool = db(&c).await;
    freeze_holding_leases(&pool, &doomed, "doomed").await;
    let _w = [c.worker("a", 1), c.worker("b", 1)];
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    // pi(3 * 10^9)
    assert_eq!(api.result_json(job.id).await, json!({"count": 144_449_537}));
    // The frozen worker's leases were timed out and replaced.
    let timed_out = tasks_of(&pool, "doomed", "timed_out").await;
    assert!(
        timed_out >= 1,
        "the frozen worker held no lease when it stopped"
    );
}

/// Two workers at quorum 2, one frozen past its deadlines and then thawed: no worker gets two
/// tasks of a unit, so the replacements of its timed-out tasks can go to neither worker; the
/// late worker gets its own tasks back once a unit's timeout passed, and the job ends.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_at_quorum_2_end_a_job_after_one_missed_its_deadlines() {
    let c = Coordinator::start();
    let api = c.api();
    let late = c.worker("late", 1);
    let job = api
        .submit(&spec(json!({
            "name": "outlives a late worker",
            "app": "prime-count",
            // Units of ~10 ms: long enough for the worker to be caught holding leases (with
            // units of 0.1 ms it could lease and report all of them between two looks).
            "params": {"start": 0, "end": 2_000_000_000u64, "unit_size": 100_000_000},
            "redundancy": {"min_quorum": 2},
            "unit_timeout_secs": 2
        })))
        .await;
    let pool = db(&c).await;
    freeze_holding_leases(&pool, &late, "late").await;
    let deadline = std::time::Instant::now() + LONG;
    let _steady = c.worker("steady", 1);
    while tasks_of(&pool, "late", "timed_out").await == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    late.thaw();
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    // pi(2 * 10^9)
    assert_eq!(api.result_json(job.id).await, json!({"count": 98_222_287}));
}

/// With the default limits (a worker is suspected after 60 s of silence, a unit times out
/// after an hour), a SIGKILLed worker's unit is computed elsewhere within seconds: its
/// presence line closed with the process.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_unit_is_recomputed_within_seconds_with_default_limits() {
    let c = Coordinator::start();
    let api = c.api();
    // One unit of a few seconds on one core.
    let job = api
        .submit(&spec(json!({
            "name": "outlives its first worker",
            "app": "prime-count",
            "params": {"start": 0, "end": 10_000_000_000u64, "unit_size": 10_000_000_000u64},
            "redundancy": {"min_quorum": 1, "adaptive": false}
        })))
        .await;
    let mut doomed = c.worker("doomed", 1);
    let pool = db(&c).await;
    let started = std::time::Instant::now();
    while tasks_of(&pool, "doomed", "leased").await == 0 {
        assert!(started.elapsed() < LONG, "the worker never leased the unit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    let killed = std::time::Instant::now();
    let _rescuer = c.worker("rescuer", 1);
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    // pi(10^10)
    assert_eq!(api.result_json(job.id).await, json!({"count": 455_052_511}));
    assert!(
        killed.elapsed() < Duration::from_secs(40),
        "took {:?}: the dead worker was found by its silence, not its closed line",
        killed.elapsed()
    );
    assert_eq!(helpers::spared_of(&c, "doomed").await.0, 1);
    assert!(c.log_text().contains("worker disconnected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_restart_mid_job_loses_nothing() {
    let mut c = Coordinator::start();
    let api = c.api();
    let _w = [c.worker("a", 1), c.worker("b", 1)];
    let job = api
        .submit(&spec(json!({
            "name": "survives a restart",
            "app": "prime-count",
            "params": {"start": 0, "end": 400_000_000u64, "unit_size": 5_000_000},
            "redundancy": {"min_quorum": 2}
        })))
        .await;
    let before = api.wait_done(job.id, 5, LONG).await;
    c.kill();
    // Workers keep computing and keep results in their outboxes while it is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart();
    let after_restart = api.job(job.id).await;
    assert!(
        after_restart.units.done >= before.units.done,
        "finished units were lost"
    );
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(api.result_json(job.id).await, json!({"count": 21_336_326}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_every_job_spec_to_the_right_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dashboard:   http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("{\"count\":50847534}"), "{stdout}");
    assert!(stdout.contains("\"argmax\":8400511"), "{stdout}");
    assert!(stdout.contains("\"max_steps\":685"), "{stdout}");
    assert!(stdout.contains("\"value\":1.77245385"), "{stdout}");
    assert!(
        stdout.contains("\"named\":{\"solutions\":14200}"),
        "{stdout}"
    );
    assert!(stdout.contains("\"integral\":3.14"), "{stdout}");
    let png = std::fs::read(tmp.path().join("mandelbrot-seahorse.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_health_are_served() {
    let c = Coordinator::start();
    let http = c.api().http;
    let page = http.get(format!("{}/", c.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("SpareCycles"));
    let js = http
        .get(format!("{}/assets/app.js", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    for path in ["/healthz", "/readyz"] {
        let r = http.get(format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 0);
}
