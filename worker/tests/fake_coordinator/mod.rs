//! A tiny in-process fake coordinator for the runner tests: the worker endpoints only, with
//! knobs to make it fail the ways a real one can (401 for unknown tokens, 503 with Retry-After,
//! a 422 for a whole report, aborts in heartbeat answers).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use sparecycles_protocol::work::{ReleaseRequest, ReleaseResponse};
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
    LeaseResponse, RefusedResult, ReportRequest, ReportResponse, TaskAssignment, TaskResult,
};
use uuid::Uuid;

/// What the fake coordinator holds and saw.
#[derive(Default)]
pub struct Fake {
    pub enrolls: Vec<EnrollRequest>,
    pub tokens: Vec<String>,
    pub queue: VecDeque<TaskAssignment>,
    pub leased: HashSet<Uuid>,
    pub heartbeats: Vec<HeartbeatRequest>,
    /// Tasks the next heartbeats tell the worker to abort.
    pub abort: Vec<Uuid>,
    pub accepted: Vec<TaskResult>,
    pub refused: Vec<Uuid>,
    /// Report calls to answer with 503 before accepting any.
    pub failing_reports: usize,
    pub report_calls: usize,
    /// A result whose presence makes the whole report a 422.
    pub poison: Option<Uuid>,
    /// How long lease answers take after their tasks are leased (an answer on its way).
    pub lease_delay: Option<std::time::Duration>,
    pub lease_calls: usize,
    /// Tasks handed back with `/api/v1/work/release`.
    pub released: Vec<Uuid>,
}

pub type Shared = Arc<Mutex<Fake>>;

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = ErrorBody {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("").into(),
        status: status.as_u16(),
        detail: detail.into(),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).unwrap(),
    )
        .into_response()
}

fn authorized(fake: &Fake, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    fake.tokens.iter().any(|t| value == format!("Bearer {t}"))
}

async fn enroll(State(fake): State<Shared>, Json(req): Json<EnrollRequest>) -> Response {
    let mut fake = fake.lock().unwrap();
    fake.enrolls.push(req);
    let token = format!("token-{}", fake.enrolls.len());
    fake.tokens.push(token.clone());
    let answer = EnrollResponse {
        worker_id: Uuid::now_v7(),
        token,
    };
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn lease(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<LeaseRequest>,
) -> Response {
    let (tasks, delay) = {
        let mut fake = fake.lock().unwrap();
        if !authorized(&fake, &headers) {
            return problem(StatusCode::UNAUTHORIZED, "unknown worker token");
        }
        fake.lease_calls += 1;
        let n = (req.max_tasks as usize).min(fake.queue.len());
        let tasks: Vec<TaskAssignment> = fake.queue.drain(..n).collect();
        fake.leased.extend(tasks.iter().map(|t| t.task_id));
        (tasks, fake.lease_delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    Json(LeaseResponse { tasks, quota: None }).into_response()
}

async fn release(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<ReleaseRequest>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    if !authorized(&fake, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "unknown worker token");
    }
    let released: Vec<Uuid> = req
        .tasks
        .into_iter()
        .filter(|id| fake.leased.remove(id))
        .collect();
    fake.released.extend(&released);
    Json(ReleaseResponse { released }).into_response()
}

async fn heartbeat(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<HeartbeatRequest>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    if !authorized(&fake, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "unknown worker token");
    }
    let abort = req
        .tasks
        .iter()
        .map(|t| t.task_id)
        .filter(|id| fake.abort.contains(id))
        .collect();
    fake.heartbeats.push(req);
    Json(HeartbeatResponse { abort }).into_response()
}

async fn report(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<ReportRequest>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    fake.report_calls += 1;
    if !authorized(&fake, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "unknown worker token");
    }
    if fake.failing_reports > 0 {
        fake.failing_reports -= 1;
        let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, "database busy");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "0".parse().unwrap());
        return response;
    }
    if req.results.iter().any(|r| Some(r.task_id) == fake.poison) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "output too large");
    }
    let mut answer = ReportResponse {
        accepted: vec![],
        refused: vec![],
    };
    for result in req.results {
        if fake.leased.remove(&result.task_id) {
            answer.accepted.push(result.task_id);
            fake.accepted.push(result);
        } else {
            fake.refused.push(result.task_id);
            answer.refused.push(RefusedResult {
                task_id: result.task_id,
                reason: "not a task of this worker".into(),
            });
        }
    }
    Json(answer).into_response()
}

/// Starts the fake coordinator on a free port; returns its base URL.
pub async fn spawn_fake(fake: Shared) -> String {
    let app = Router::new()
        .route("/api/v1/workers/enroll", post(enroll))
        .route("/api/v1/work/lease", post(lease))
        .route("/api/v1/work/heartbeat", post(heartbeat))
        .route("/api/v1/work/report", post(report))
        .route("/api/v1/work/release", post(release))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}
