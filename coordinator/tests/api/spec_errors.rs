//! Bad job specs get a clear 4xx problem+json and create nothing.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{ADMIN_TOKEN, Coordinator, db, problem_detail, send};

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_are_refused_and_create_nothing() {
    let c = Coordinator::start();
    let api = c.api();
    let cases: Vec<(String, &str)> = vec![
        (json!({"name": "x", "app": "no-such-app", "params": {}}).to_string(), "unknown app"),
        (
            json!({"name": "x", "app": "prime-count", "params": {"start": 10, "end": 5, "unit_size": 1}}).to_string(),
            "end",
        ),
        (
            json!({"name": "x", "app": "prime-count", "params": {"start": 0, "end": 100, "unit_size": 0}}).to_string(),
            "unit_size",
        ),
        (
            json!({"name": "x", "app": "prime-count", "params": {"start": 0, "end": 1_000_000_000_000u64, "unit_size": 1}}).to_string(),
            "units",
        ),
        (
            json!({"name": "x", "app": "mandelbrot", "params": {"width": 1_000_000, "height": 1_000_000, "center_re": 0.0, "center_im": 0.0, "scale": 1.0, "max_iter": 10, "tile": 64}}).to_string(),
            "width",
        ),
        (
            json!({"name": "x", "app": "collatz", "params": {"start": 1, "end": 10, "unit_size": 1, "extra": 1}}).to_string(),
            "extra",
        ),
        (
            json!({"name": "x", "app": "collatz", "params": {"start": 1, "end": 10, "unit_size": 1}, "redundancy": {"min_quorum": 0}}).to_string(),
            "min_quorum",
        ),
        (json!({"name": "", "app": "collatz", "params": {}}).to_string(), "name"),
        (json!({"app": "collatz", "params": {}}).to_string(), "name"),
        ("{not json".to_owned(), ""),
        (json!({"name": "x", "app": "collatz", "params": {"start": "one"}}).to_string(), "start"),
    ];
    for (body, needle) in &cases {
        let (status, ct, resp) = api.post_raw("/api/v1/jobs", Some(ADMIN_TOKEN), body).await;
        assert!((400..500).contains(&status), "{body} -> {status} {resp}");
        let detail = problem_detail(&ct, &resp);
        assert!(
            detail.to_lowercase().contains(needle),
            "{body}: detail {detail:?} does not mention {needle:?}"
        );
    }
    // Without the admin token: 401, and nothing is created either.
    let good =
        json!({"name": "x", "app": "collatz", "params": {"start": 1, "end": 10, "unit_size": 1}})
            .to_string();
    let (status, _, _) = api.post_raw("/api/v1/jobs", None, &good).await;
    assert_eq!(status, 401);
    let (status, _, _) = api
        .post_raw("/api/v1/jobs", Some("wrong-token"), &good)
        .await;
    assert_eq!(status, 401);

    let pool = db(&c).await;
    for table in ["jobs", "units", "tasks"] {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
        assert_eq!(n, 0, "{table} is not empty");
    }
    assert!(api.jobs().await.is_empty());

    // Results of unknown or unfinished jobs: 404 and 409.
    let r = api
        .http
        .get(format!(
            "{}/api/v1/jobs/{}/result",
            c.url,
            uuid::Uuid::nil()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api
        .http
        .get(format!("{}/api/v1/jobs/not-a-uuid", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn results_are_409_until_completed_and_cancel_stops_a_job() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&crate::helpers::spec(json!({
            "name": "never computed",
            "app": "collatz",
            "params": {"start": 1, "end": 1000, "unit_size": 10}
        })))
        .await;
    let r = api
        .http
        .get(format!("{}/api/v1/jobs/{}/result", c.url, job.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    for (action, expected) in [
        ("pause", 200),
        ("pause", 200),
        ("resume", 200),
        ("cancel", 200),
        ("resume", 409),
    ] {
        let (status, _, body) = api
            .post_raw(
                &format!("/api/v1/jobs/{}/{action}", job.id),
                Some(ADMIN_TOKEN),
                "",
            )
            .await;
        assert_eq!(status, expected, "{action}: {body}");
    }
    assert_eq!(
        api.job(job.id).await.state,
        sparecycles_protocol::JobState::Canceled
    );
    let (status, _, _) = api
        .post_raw(&format!("/api/v1/jobs/{}/cancel", job.id), None, "")
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_view_can_wait_for_the_job_to_end() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&crate::helpers::spec(json!({
            "name": "waited on",
            "app": "collatz",
            "params": {"start": 1, "end": 1000, "unit_size": 10}
        })))
        .await;
    let get = |query: &'static str| {
        let (http, url) = (
            api.http.clone(),
            format!("{}/api/v1/jobs/{}{query}", c.url, job.id),
        );
        async move {
            let started = std::time::Instant::now();
            let (status, ct, body) = send(http.get(url)).await;
            let body: Value = serde_json::from_str(&body).expect("a JSON body");
            (status, ct, body, started.elapsed())
        }
    };
    // No worker: the job stays queued, and the answer comes when the wait is over.
    let (status, _, view, took) = get("?wait_ms=400").await;
    assert_eq!(status, 200);
    assert_eq!(view["state"], "queued");
    assert!(
        took >= Duration::from_millis(350),
        "answered after {took:?}"
    );
    // A malformed wait is refused, with nothing changed.
    let (status, ct, body, _) = get("?wait_ms=soon").await;
    assert_eq!(status, 400, "{body}");
    assert!(ct.starts_with("application/problem+json"), "{ct}");
    // A waiting view answers as soon as the job ends (here: canceled), not when the wait is over.
    let waiting = tokio::spawn(get("?wait_ms=20000"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the view answered before the job ended"
    );
    let (status, _, _) = api
        .post_raw(
            &format!("/api/v1/jobs/{}/cancel", job.id),
            Some(ADMIN_TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, view, took) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(view["state"], "canceled");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // An ended job is answered at once, whatever the wait.
    let (_, _, view, took) = get("?wait_ms=20000").await;
    assert_eq!(view["state"], "canceled");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}
