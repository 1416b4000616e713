//! Bad job specs get a clear 4xx problem+json and create nothing.

use serde_json::json;
use sqlx::Row;

use crate::helpers::{ADMIN_TOKEN, Coordinator, db, problem_detail};

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
