//! Access control: every route of the router, called with no token, a bad token, a worker
//! token, submitter A's, submitter B's (on A's job) and the admin token, answers as the table
//! says; submitter tokens are created, scoped and revoked; enrollment keys; tokens stay out of
//! the logs.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use sparecycles_protocol::{JobList, TokenCreated, TokenList, TokenView};
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Api, Coordinator, spec};

/// The callers of the matrix, in column order.
const ROLES: [&str; 6] = [
    "none",
    "bad",
    "worker",
    "submitter A",
    "submitter B",
    "admin",
];

/// What a cell needs before its request: a fresh job of A's (so that each allowed mutation
/// starts from the same state), paused or not; a fresh token to revoke.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The path has no `{id}`, or uses A's long-lived job / the enrolled worker.
    Fixed,
    /// A new job of A's, queued.
    FreshJob,
    /// A new job of A's, paused by the admin.
    PausedJob,
    /// A new submitter token, to revoke.
    FreshToken,
}

struct Route {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    target: Target,
    /// Expected status per role, in [`ROLES`] order.
    expect: [u16; 6],
}

fn route(
    method: Method,
    path: &'static str,
    body: Option<Value>,
    target: Target,
    expect: [u16; 6],
) -> Route {
    Route {
        method,
        path,
        body,
        target,
        expect,
    }
}

fn small_job(name: &str) -> Value {
    json!({"name": name, "app": "collatz", "params": {"start": 1, "end": 1000, "unit_size": 100}})
}

/// Every route of the coordinator, once. `every_route_is_in_the_matrix` checks this list
/// against the routes declared in `src/http/`.
fn routes() -> Vec<Route> {
    use Method as M;
    use Target::*;
    let public = [200; 6];
    // Job views are public; a submitter token narrows them to its own jobs (B gets 404 for A's);
    // a bad token is refused rather than treated as none; a worker token is the wrong kind.
    let job_read = [200, 401, 403, 200, 404, 200];
    let job_manage = [401, 401, 403, 200, 404, 200];
    let admin_only = [401, 401, 403, 403, 403, 200];
    let worker_only = [401, 401, 200, 403, 403, 403];
    vec![
        route(M::GET, "/", None, Fixed, public),
        route(M::GET, "/assets/app.js", None, Fixed, public),
        route(M::GET, "/assets/style.css", None, Fixed, public),
        route(M::GET, "/healthz", None, Fixed, public),
        route(M::GET, "/readyz", None, Fixed, public),
        route(M::GET, "/metrics", None, Fixed, public),
        route(M::GET, "/api/v1/openapi.json", None, Fixed, public),
        route(M::GET, "/api/v1/docs", None, Fixed, public),
        route(M::GET, "/api/v1/events", None, Fixed, public),
        route(M::GET, "/api/v1/leaderboard", None, Fixed, public),
        route(M::GET, "/api/v1/job-specs", None, Fixed, public),
        route(
            M::GET,
            "/api/v1/jobs",
            None,
            Fixed,
            [200, 401, 403, 200, 200, 200],
        ),
        route(
            M::POST,
            "/api/v1/jobs",
            Some(small_job("matrix")),
            Fixed,
            [401, 401, 403, 201, 201, 201],
        ),
        route(M::GET, "/api/v1/jobs/{id}", None, Fixed, job_read),
        // Not completed yet: a 409 means the caller got past access control.
        route(
            M::GET,
            "/api/v1/jobs/{id}/result",
            None,
            Fixed,
            [409, 401, 403, 409, 404, 409],
        ),
        route(M::GET, "/api/v1/jobs/{id}/units", None, Fixed, job_read),
        route(
            M::POST,
            "/api/v1/jobs/{id}/pause",
            None,
            FreshJob,
            job_manage,
        ),
        route(
            M::POST,
            "/api/v1/jobs/{id}/resume",
            None,
            PausedJob,
            job_manage,
        ),
        route(
            M::POST,
            "/api/v1/jobs/{id}/cancel",
            None,
            FreshJob,
            job_manage,
        ),
        // Enrollment is open on this coordinator: credentials play no part.
        route(
            M::POST,
            "/api/v1/workers/enroll",
            Some(
                json!({"name": "m", "cores": 1, "os": "linux", "arch": "x86_64", "apps": ["collatz"]}),
            ),
            Fixed,
            [201; 6],
        ),
        route(M::GET, "/api/v1/workers", None, Fixed, admin_only),
        route(
            M::POST,
            "/api/v1/workers/{id}/unban",
            None,
            Fixed,
            admin_only,
        ),
        route(
            M::POST,
            "/api/v1/work/lease",
            Some(json!({"max_tasks": 1})),
            Fixed,
            worker_only,
        ),
        route(
            M::POST,
            "/api/v1/work/heartbeat",
            Some(json!({"tasks": []})),
            Fixed,
            worker_only,
        ),
        route(
            M::POST,
            "/api/v1/work/report",
            Some(json!({"results": []})),
            Fixed,
            worker_only,
        ),
        route(
            M::POST,
            "/api/v1/work/release",
            Some(json!({"tasks": []})),
            Fixed,
            worker_only,
        ),
        route(
            M::POST,
            "/api/v1/work/presence",
            Some(json!({"wait_ms": 0})),
            Fixed,
            worker_only,
        ),
        route(M::GET, "/api/v1/work/me", None, Fixed, worker_only),
        // A JSON body is not a module: a 422 means the caller got past access control.
        route(
            M::POST,
            "/api/v1/modules",
            Some(json!({"not": "a module"})),
            Fixed,
            [401, 401, 403, 422, 422, 422],
        ),
        // Modules are public data (workers fetch them by hash); this hash is malformed.
        route(M::GET, "/api/v1/modules/{sha256}", None, Fixed, [400; 6]),
        route(M::GET, "/api/v1/tokens", None, Fixed, admin_only),
        route(
            M::POST,
            "/api/v1/tokens",
            Some(json!({"name": "made in the matrix"})),
            Fixed,
            [401, 401, 403, 403, 403, 201],
        ),
        route(
            M::DELETE,
            "/api/v1/tokens/{id}",
            None,
            FreshToken,
            admin_only,
        ),
    ]
}

/// `(METHOD, path)` of every `.route(…)` in the coordinator's HTTP modules, read from the
/// source: a route added there without a line in [`routes`] fails the test below.
fn declared_routes() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            let call = &rest[at + ".route(".len()..];
            // The call's text, up to its closing parenthesis.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("balanced .route( call");
            let call = &call[..end];
            let path = call.split('"').nth(1).expect("a path literal").to_owned();
            for method in ["get", "post", "put", "patch", "delete"] {
                let needle = format!("{method}(");
                let used = call.match_indices(&needle).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                });
                if used {
                    found.insert((method.to_uppercase(), path.clone()));
                }
            }
            rest = &rest[at + 1..];
        }
    }
    found
}

#[test]
fn every_route_is_in_the_matrix() {
    let listed: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(routes().len(), listed.len(), "a route is listed twice");
    let declared = declared_routes();
    assert!(
        declared.len() >= 25,
        "the source scan found too little: {declared:?}"
    );
    assert_eq!(
        listed, declared,
        "the authorization matrix and the router disagree: add the new route to routes()"
    );
}

async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = api.http.request(method, format!("{}{path}", api.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    if path == "/api/v1/events" {
        // An event stream never ends: the status is the answer.
        return (status, Value::Null);
    }
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn new_token(api: &Api, name: &str) -> TokenCreated {
    let (status, body) = call(
        api,
        Method::POST,
        "/api/v1/tokens",
        Some(ADMIN_TOKEN),
        Some(&json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn new_job(api: &Api, token: &str, name: &str) -> Uuid {
    let (status, body) = call(
        api,
        Method::POST,
        "/api/v1/jobs",
        Some(token),
        Some(&small_job(name)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix_covers_every_route_and_role() {
    let c = Coordinator::start();
    let api = c.api();
    let a = new_token(&api, "submitter A").await;
    let b = new_token(&api, "submitter B").await;
    let worker = api.enroll("matrix-worker").await;
    let a_job = new_job(&api, &a.token, "A's job").await;
    let tokens: [Option<&str>; 6] = [
        None,
        Some("scw_this-is-not-a-token-of-this-coordinator"),
        Some(&worker.token),
        Some(&a.token),
        Some(&b.token),
        Some(ADMIN_TOKEN),
    ];
    let mut failures = Vec::new();
    for r in routes() {
        for (role, token) in tokens.iter().enumerate() {
            let id = match r.target {
                Target::Fixed if r.path.contains("/workers/") => worker.worker_id.to_string(),
                Target::Fixed => a_job.to_string(),
                Target::FreshJob => new_job(&api, &a.token, "fresh").await.to_string(),
                Target::PausedJob => {
                    let id = new_job(&api, &a.token, "paused").await;
                    let path = format!("/api/v1/jobs/{id}/pause");
                    assert_eq!(
                        call(&api, Method::POST, &path, Some(ADMIN_TOKEN), None)
                            .await
                            .0,
                        200
                    );
                    id.to_string()
                }
                Target::FreshToken => new_token(&api, "to revoke").await.view.id.to_string(),
            };
            let path = r.path.replace("{id}", &id);
            let (status, body) = call(&api, r.method.clone(), &path, *token, r.body.as_ref()).await;
            if status != r.expect[role] {
                failures.push(format!(
                    "{} {} as {}: expected {}, got {status}: {body}",
                    r.method, r.path, ROLES[role], r.expect[role]
                ));
            }
            if status >= 400 && r.path != "/api/v1/events" {
                assert!(
                    body.get("detail").is_some(),
                    "{} {path}: not problem+json: {body}",
                    r.method
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn submitters_see_and_manage_only_their_own_jobs_until_revoked() {
    let c = Coordinator::start();
    let api = c.api();
    let a = new_token(&api, "alice").await;
    let b = new_token(&api, "bob").await;
    assert!(a.token.starts_with("scs_") && a.token.len() > 60);
    let a_job = new_job(&api, &a.token, "alice's").await;
    let b_job = new_job(&api, &b.token, "bob's").await;
    let admin_job = api.submit(&spec(small_job("admin's"))).await.id;

    let list = |token: &'static str| {
        let api = api.clone();
        async move {
            let (status, body) = call(&api, Method::GET, "/api/v1/jobs", Some(token), None).await;
            assert_eq!(status, 200);
            let list: JobList = serde_json::from_value(body).unwrap();
            list.jobs.iter().map(|j| j.id).collect::<BTreeSet<_>>()
        }
    };
    let a_token: &'static str = Box::leak(a.token.clone().into_boxed_str());
    let b_token: &'static str = Box::leak(b.token.clone().into_boxed_str());
    assert_eq!(list(a_token).await, BTreeSet::from([a_job]));
    assert_eq!(list(b_token).await, BTreeSet::from([b_job]));
    assert_eq!(
        list(ADMIN_TOKEN).await,
        BTreeSet::from([a_job, b_job, admin_job])
    );

    // B cannot touch A's job, and cannot tell it from a missing one.
    let missing = Uuid::now_v7();
    for id in [a_job, missing] {
        let (status, body) = call(
            &api,
            Method::POST,
            &format!("/api/v1/jobs/{id}/cancel"),
            Some(b_token),
            None,
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["detail"], format!("no job with id {id}"));
    }
    assert_eq!(
        api.job(a_job).await.state,
        sparecycles_protocol::JobState::Queued
    );
    // The admin can manage anyone's job.
    let (status, _) = call(
        &api,
        Method::POST,
        &format!("/api/v1/jobs/{b_job}/pause"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The database keeps the owner and only a hash of each token.
    let pool = crate::helpers::db(&c).await;
    let owner: Option<String> = sqlx::query_scalar("SELECT owner FROM jobs WHERE id = $1")
        .bind(a_job.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, Some(a.view.id.to_string()));
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM submitters")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2);
    assert!(!hashes.contains(&a.token) && hashes.iter().all(|h| h.len() == 64));

    // Listing shows no secrets; revoking stops the token at once and keeps its jobs.
    let (_, body) = call(&api, Method::GET, "/api/v1/tokens", Some(ADMIN_TOKEN), None).await;
    assert!(!body.to_string().contains(&a.token));
    let listed: TokenList = serde_json::from_value(body).unwrap();
    assert_eq!(listed.tokens.len(), 2);
    let (status, body) = call(
        &api,
        Method::DELETE,
        &format!("/api/v1/tokens/{}", a.view.id),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let revoked: TokenView = serde_json::from_value(body).unwrap();
    assert!(revoked.revoked_at.is_some());
    let (status, _) = call(&api, Method::GET, "/api/v1/jobs", Some(a_token), None).await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &api,
        Method::POST,
        "/api/v1/jobs",
        Some(a_token),
        Some(&small_job("late")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        list(ADMIN_TOKEN).await.len(),
        3,
        "a revoked submitter's jobs stay"
    );
    let (status, _) = call(
        &api,
        Method::DELETE,
        &format!("/api/v1/tokens/{missing}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Only the admin jumps the queue.
    let mut urgent = small_job("urgent");
    urgent["priority"] = json!(5);
    let (status, body) = call(
        &api,
        Method::POST,
        "/api/v1/jobs",
        Some(b_token),
        Some(&urgent),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(
        &api,
        Method::POST,
        "/api/v1/jobs",
        Some(ADMIN_TOKEN),
        Some(&urgent),
    )
    .await;
    assert_eq!(status, 201);
    // Bad names change nothing.
    for name in ["", "   ", &"x".repeat(101), "tab\there"] {
        let (status, _) = call(
            &api,
            Method::POST,
            "/api/v1/tokens",
            Some(ADMIN_TOKEN),
            Some(&json!({"name": name})),
        )
        .await;
        assert_eq!(status, 422, "{name:?}");
    }
    assert_eq!(list_tokens(&api).await.len(), 2);
}

async fn list_tokens(api: &Api) -> Vec<TokenView> {
    let (_, body) = call(api, Method::GET, "/api/v1/tokens", Some(ADMIN_TOKEN), None).await;
    serde_json::from_value::<TokenList>(body).unwrap().tokens
}
