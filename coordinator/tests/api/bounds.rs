//! Bounded input: body limits per route, JSON nesting, string lengths, malformed query strings,
//! output sizes per app. Every refusal is a 4xx problem+json with a reason and writes nothing;
//! and the OpenAPI document and its page are served.

use serde_json::{Value, json};
use sparecycles_protocol::{LeaseResponse, ReportResponse, TaskResult};
use sqlx::Row;

use crate::helpers::{ADMIN_TOKEN, Coordinator, db, problem_detail, send, spec};

/// Rows per table, to show that refused requests wrote nothing.
async fn counts(c: &Coordinator) -> Vec<(String, i64)> {
    let pool = db(c).await;
    let mut out = Vec::new();
    for table in ["jobs", "units", "tasks", "workers"] {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
        out.push((table.to_owned(), n));
    }
    out
}

fn detail(ct: &str, body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    problem_detail(ct, &value)
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_deep_and_malformed_requests_are_refused_and_change_nothing() {
    let c = Coordinator::start();
    let api = c.api();
    let empty = counts(&c).await;
    let jobs = format!("{}/api/v1/jobs", c.url);
    let enroll = format!("{}/api/v1/workers/enroll", c.url);
    let valid =
        json!({"name": "x", "app": "collatz", "params": {"start": 1, "end": 10, "unit_size": 1}});

    // JSON nested deeper than the bound, in a spec's params and in an enrollment.
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let body = format!(r#"{{"name": "x", "app": "collatz", "params": {{"start": {deep}}}}}"#);
    let (status, ct, text) = send(
        api.http
            .post(&jobs)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        detail(&ct, &text).contains("nests deeper than 32"),
        "{text}"
    );
    let (status, ct, text) = send(
        api.http
            .post(&enroll)
            .header("content-type", "application/json")
            .body("[".repeat(100_000)),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(detail(&ct, &text).contains("nests deeper"), "{text}");

    // Bodies over each route's limit: 256 KiB for specs and enrollment.
    let mut big = valid.clone();
    big["name"] = json!("n".repeat(300 * 1024));
    for url in [&jobs, &enroll] {
        let (status, ct, text) = send(api.http.post(url).bearer_auth(ADMIN_TOKEN).json(&big)).await;
        assert_eq!(status, 413, "{url}: {text}");
        detail(&ct, &text);
    }

    // Neither JSON nor TOML; TOML of the wrong shape; TOML nested past its parser's bound.
    let (status, ct, text) = send(
        api.http
            .post(&jobs)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/plain")
            .body(valid.to_string()),
    )
    .await;
    assert_eq!(status, 415, "{text}");
    assert!(detail(&ct, &text).contains("TOML"), "{text}");
    for (toml, needle) in [
        ("name = \"x\"\napp = \"collatz\"\nparams = 3\n", "params"),
        (
            "name = \"x\"\napp = \"collatz\"\nsurprise = 1\n[params]\n",
            "surprise",
        ),
        (
            &format!(
                "name = \"x\"\napp = \"collatz\"\nparams = {{ a = {}1{} }}\n",
                "[".repeat(200),
                "]".repeat(200)
            ),
            "recurs",
        ),
    ] {
        let (status, ct, text) = send(
            api.http
                .post(&jobs)
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/toml")
                .body(toml.to_owned()),
        )
        .await;
        assert!((400..500).contains(&status), "{toml}: {status} {text}");
        assert!(detail(&ct, &text).contains(needle), "{toml}: {text}");
    }

    // String lengths: a job name and a worker name one character over their limits.
    let mut long = valid.clone();
    long["name"] = json!("n".repeat(201));
    let (status, ct, text) = send(api.http.post(&jobs).bearer_auth(ADMIN_TOKEN).json(&long)).await;
    assert_eq!(status, 422, "{text}");
    assert!(detail(&ct, &text).contains("200"), "{text}");
    let worker = json!({"name": "w".repeat(101), "cores": 1, "os": "linux", "arch": "x86_64", "apps": ["collatz"]});
    let (status, ct, text) = send(api.http.post(&enroll).json(&worker)).await;
    assert_eq!(status, 422, "{text}");
    assert!(detail(&ct, &text).contains("100"), "{text}");
    // Wrong types and unknown fields in an enrollment.
    for bad in [
        json!({"name": "w", "cores": "many", "os": "linux", "arch": "x86_64", "apps": ["collatz"]}),
        json!({"name": "w", "cores": 1, "os": "linux", "arch": "x86_64", "apps": ["collatz"], "admin": true}),
    ] {
        let (status, ct, text) = send(api.http.post(&enroll).json(&bad)).await;
        assert_eq!(status, 422, "{bad}: {text}");
        detail(&ct, &text);
    }

    // Malformed query strings are problem+json too (axum's own rejection is plain text).
    for query in ["limit=-1", "limit=abc", "limit=99999999999"] {
        let (status, ct, text) = send(api.http.get(format!("{jobs}?{query}"))).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(!detail(&ct, &text).is_empty());
    }
    // Unknown routes and methods as well.
    let (status, ct, text) = send(api.http.delete(&jobs)).await;
    assert_eq!(status, 405, "{text}");
    detail(&ct, &text);

    assert_eq!(counts(&c).await, empty, "a refused request wrote something");
    assert!(api.jobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_larger_than_its_app_allows_is_a_task_error_and_is_not_stored() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&spec(json!({
            "name": "bounded outputs",
            "app": "prime-count",
            "params": {"start": 0, "end": 100, "unit_size": 50},
            "redundancy": {"min_quorum": 1, "max_error_results": 5}
        })))
        .await;
    let w = api.enroll("stuffer").await;
    let lease: LeaseResponse = api.lease(&w.token, 1).await;
    let task = lease.tasks[0].task_id;
    let r: ReportResponse = api
        .report(
            &w.token,
            vec![TaskResult::success(
                task,
                json!({"count": 15, "padding": "p".repeat(100_000)}),
            )],
        )
        .await;
    // Taken, as the worker's error: it counts against the worker, the output is dropped.
    assert_eq!(r.accepted, vec![task]);
    let row = sqlx::query("SELECT state, output, error FROM tasks WHERE id = $1")
        .bind(task.to_string())
        .fetch_one(&db(&c).await)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("state"), "error");
    assert!(row.get::<Option<String>, _>("output").is_none());
    let error: String = row.get("error");
    assert!(error.contains("larger than 1024 bytes"), "{error}");
    assert!(error.len() < 5000);
    assert_eq!(api.job(job.id).await.units.done, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_and_its_page_are_served() {
    let c = Coordinator::start();
    let api = c.api();
    let (status, ct, text) = send(api.http.get(format!("{}/api/v1/openapi.json", c.url))).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/jobs",
        "/api/v1/work/report",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert!(doc["components"]["schemas"]["JobSpec"].is_object());
    let (status, ct, page) = send(api.http.get(format!("{}/api/v1/docs", c.url))).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.contains("/api/v1/openapi.json"));
    // Self-contained: nothing is loaded from another origin.
    assert!(!page.contains("http://") && !page.contains("https://"));
}
