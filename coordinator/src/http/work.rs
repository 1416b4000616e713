//! The worker protocol: enroll, lease, heartbeat, report (see README.md, "Worker protocol").

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sparecycles_protocol::ErrorBody;
use sparecycles_protocol::work::{
    MAX_APPS, MAX_ERROR_BYTES, MAX_LABEL_CHARS, MAX_LEASE_TASKS, MAX_LEASE_WAIT_MS,
    MAX_PRESENCE_LINES, MAX_PRESENCE_WAIT_MS, MAX_REPORT_RESULTS, PresenceRequest,
    PresenceResponse, ReleaseRequest, ReleaseResponse,
};
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
    LeaseResponse, RefusedResult, ReportRequest, ReportResponse, TaskAssignment, TaskResultKind,
    WorkerView, now_millis,
};
use uuid::Uuid;

use crate::auth::{Admin, WORKER_PREFIX, WorkerAuth, generate_token, hash_token};
use crate::http::error::{ApiError, ApiJson};
use crate::scheduler::trust::{self, initial_quota};
use crate::state::AppState;
use crate::store::{LeaseAsk, LeasedTask, NewWorker, Outcome, ReportTarget, Suspects, WorkerRow};

/// Largest accepted report body: many results, some of them image tiles.
const REPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest accepted body for the other worker calls.
const SMALL_BODY_LIMIT: usize = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workers/enroll", post(enroll))
        .route("/api/v1/workers", get(list_workers))
        .route("/api/v1/work/lease", post(lease))
        .route("/api/v1/work/heartbeat", post(heartbeat))
        .route("/api/v1/work/release", post(release))
        .route("/api/v1/work/presence", post(presence))
        .route("/api/v1/work/me", get(me))
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        .route(
            "/api/v1/work/report",
            post(report).layer(DefaultBodyLimit::max(REPORT_BODY_LIMIT)),
        )
}

fn check_label(field: &str, value: &str, allow_empty: bool) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if (!allow_empty && value.trim().is_empty()) || chars > MAX_LABEL_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {MAX_LABEL_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Enrolls a worker; the answer holds its token, shown this once.
#[utoipa::path(
    post,
    path = "/api/v1/workers/enroll",
    tag = "work",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "Enrolled", body = EnrollResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = ErrorBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ErrorBody, content_type = "application/problem+json"),
        (status = 422, description = "A field out of bounds", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    if let Some(key) = &state.settings().enroll_key {
        // Compared in constant time; a missing key and a wrong one get the same answer.
        if !req.enroll_key.as_deref().is_some_and(|k| key.matches(k)) {
            return Err(ApiError::Forbidden(
                "this coordinator needs its enrollment key to enroll (worker --enroll-key)".into(),
            ));
        }
    }
    check_label("name", &req.name, false)?;
    check_label("os", &req.os, false)?;
    check_label("arch", &req.arch, false)?;
    if let Some(owner) = &req.owner {
        check_label("owner", owner, false)?;
    }
    if req.cores == 0 || req.cores > 4096 {
        return Err(ApiError::Unprocessable(format!(
            "cores must be between 1 and 4096, got {}",
            req.cores
        )));
    }
    if req.apps.is_empty() || req.apps.len() > MAX_APPS {
        return Err(ApiError::Unprocessable(format!(
            "apps must list 1 to {MAX_APPS} app names"
        )));
    }
    for app in &req.apps {
        check_label("apps[]", app, false)?;
    }
    let token = generate_token(WORKER_PREFIX);
    let worker_id = Uuid::now_v7();
    state
        .store()
        .enroll(
            NewWorker {
                id: worker_id,
                token_hash: hash_token(&token),
                name: req.name.trim().to_owned(),
                owner: req.owner.map(|o| o.trim().to_owned()),
                os: req.os,
                arch: req.arch,
                cores: req.cores,
                apps: req.apps,
                quota: initial_quota(req.cores),
            },
            now_millis(),
        )
        .await?;
    tracing::info!(worker = %worker_id, name = %req.name, cores = req.cores, "worker enrolled");
    state.emit(sparecycles_protocol::dashboard::Event::WorkerEnrolled {
        name: req.name.trim().to_owned(),
        cores: req.cores,
    });
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse { worker_id, token }),
    ))
}

/// Every enrolled worker.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The workers", body = Vec<WorkerView>),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn list_workers(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    let workers = state.store().workers().await?;
    let policy = &state.settings().trust;
    Ok(Json(
        workers
            .into_iter()
            .map(|w| worker_view(w, policy))
            .collect(),
    ))
}

/// The API view of a stored worker.
pub fn worker_view(w: WorkerRow, policy: &trust::TrustPolicy) -> WorkerView {
    let now = now_millis();
    WorkerView {
        recent_credit: trust::per_day(trust::decay(w.rac, w.rac_time, now)),
        streak: w.streak,
        trusted: policy.is_trusted(w.streak, w.banned),
        quota: w.quota,
        worker_id: w.id,
        name: w.name,
        owner: w.owner,
        os: w.os,
        arch: w.arch,
        cores: w.cores,
        apps: w.apps,
        created_at: w.created_at,
        last_seen: w.last_seen,
        in_flight: w.in_flight,
        valid: w.valid,
        invalid: w.invalid,
        errors: w.errors,
        timeouts: w.timeouts,
        credit: w.credit,
        banned: w.banned,
    }
}

/// Leases up to `max_tasks` tasks to the calling worker.
#[utoipa::path(
    post,
    path = "/api/v1/work/lease",
    tag = "work",
    security(("worker" = [])),
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "The leased tasks (maybe none)", body = LeaseResponse),
        WorkerCallRefusals,
    )
)]
async fn lease(
    State(state): State<AppState>,
    WorkerAuth(worker): WorkerAuth,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    if req.max_tasks > MAX_LEASE_TASKS {
        return Err(ApiError::Unprocessable(format!(
            "max_tasks must be at most {MAX_LEASE_TASKS}, got {}",
            req.max_tasks
        )));
    }
    // Only apps this coordinator knows and the worker declared.
    let apps: Vec<String> = worker
        .apps
        .iter()
        .filter(|a| {
            sparecycles_apps::find(a).is_some()
                || a.as_str() == sparecycles_wasm::ANY_MODULE
                || sparecycles_wasm::module_hash(a).is_some()
        })
        .cloned()
        .collect();
    if req
        .held
        .as_ref()
        .is_some_and(|h| h.len() > MAX_LEASE_TASKS as usize * 10)
    {
        return Err(ApiError::Unprocessable(format!(
            "held may name at most {} tasks",
            MAX_LEASE_TASKS * 10
        )));
    }
    let now = now_millis();
    // As of authentication: a hint for the worker's buffer, the store enforces the real one.
    let quota = Some(worker.quota);
    let mut tasks = Vec::new();
    if let Some(held) = &req.held {
        // BOINC's "resend lost results": a lease committed just before a crash, or whose
        // answer was cut off, would otherwise wait for its deadline while the worker idles.
        let held: HashSet<&Uuid> = held.iter().collect();
        let lost: Vec<LeasedTask> = state
            .store()
            .leased_to(worker.id, now - LOST_LEASE_GRACE_MS, now)
            .await?
            .into_iter()
            .filter(|t| !held.contains(&t.task_id))
            .collect();
        if !lost.is_empty() {
            tracing::info!(worker = %worker.id, count = lost.len(), "resending lost tasks");
            metrics::counter!(crate::metrics::TASKS_RESENT).increment(lost.len() as u64);
        }
        tasks = assignments(&state, lost).await?;
    }
    let wanted = req.max_tasks.saturating_sub(tasks.len() as u32);
    if wanted == 0 || apps.is_empty() {
        return Ok(Json(LeaseResponse { tasks, quota }));
    }
    let settings = state.settings();
    let wait = Duration::from_millis(req.wait_ms.unwrap_or(0).min(MAX_LEASE_WAIT_MS).into());
    let give_up = tokio::time::Instant::now() + wait;
    // A lease that had to wait answers with a task per core as soon as work appears: the
    // worker's cores idle until the answer, and leasing a hundred tasks takes milliseconds.
    // The worker asks for the rest at once, while it computes.
    let mut max = wanted;
    // Only a lease that may wait listens for its own quota's room (a registration each).
    let room = (!wait.is_zero()).then(|| state.room_signal(worker.id));
    loop {
        // Registered before looking, so work announced while the lease runs is not missed.
        let signal = state.work_signal();
        tokio::pin!(signal);
        signal.as_mut().enable();
        let freed = room.as_ref().map(|r| r.notified());
        tokio::pin!(freed);
        if let Some(freed) = freed.as_mut().as_pin_mut() {
            freed.enable();
        }
        let ask = LeaseAsk {
            worker: worker.id,
            owner: worker.owner.as_deref(),
            apps: &apps,
            max,
            trusted: settings.trust.is_trusted(worker.streak, worker.banned),
            spot_check: settings.trust.spot_check,
            batch_units: settings.batch_units,
        };
        let leased = state.store().lease(ask, now_millis()).await?;
        if !leased.is_empty() || !tasks.is_empty() {
            metrics::counter!(crate::metrics::TASKS_LEASED).increment(leased.len() as u64);
            tasks.extend(assignments(&state, leased).await?);
            return Ok(Json(LeaseResponse { tasks, quota }));
        }
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || state.closing() {
            return Ok(Json(LeaseResponse { tasks, quota }));
        }
        // Another coordinator on the same database cannot signal this one: look again now
        // and then even without a signal.
        let freed = async {
            match freed.as_mut().as_pin_mut() {
                Some(freed) => freed.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signal => {}
            _ = freed => {}
            _ = tokio::time::sleep(left.min(LEASE_RECHECK)) => {}
        }
        max = wanted.min(worker.cores.max(1));
    }
}

/// How often a waiting lease looks for work without being signaled.
const LEASE_RECHECK: Duration = Duration::from_secs(1);

/// How long a lease must be old before a worker not naming it counts as having lost it. The
/// worker leases one request at a time, so this only absorbs clock skew between coordinators.
const LOST_LEASE_GRACE_MS: i64 = 5_000;

/// What a worker needs to compute each leased task.
async fn assignments(
    state: &AppState,
    leased: Vec<LeasedTask>,
) -> Result<Vec<TaskAssignment>, ApiError> {
    let mut tasks = Vec::with_capacity(leased.len());
    let mut unusable = HashSet::new();
    for t in leased {
        if unusable.contains(&t.job_id) {
            continue;
        }
        let Some(info) = state.runnable_job(t.job_id).await? else {
            // Just failed: its tasks leased now are not sent.
            unusable.insert(t.job_id);
            continue;
        };
        tasks.push(TaskAssignment {
            task_id: t.task_id,
            job_id: t.job_id,
            unit_id: t.unit_id,
            unit_seq: t.unit_seq,
            app: info.app.name().to_owned(),
            params: info.params.clone(),
            unit: info.plan.unit(t.unit_seq),
            deadline: t.deadline,
        });
    }
    Ok(tasks)
}

/// The refusals every JSON call of a worker can meet, as problem+json (documentation only).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses for the OpenAPI document
enum WorkerCallRefusals {
    #[response(
        status = 400,
        description = "Malformed JSON",
        content_type = "application/problem+json"
    )]
    Malformed(ErrorBody),
    #[response(
        status = 401,
        description = "Missing or unknown worker token",
        content_type = "application/problem+json"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "The worker is banned",
        content_type = "application/problem+json"
    )]
    Banned(ErrorBody),
    #[response(
        status = 413,
        description = "The body is too large",
        content_type = "application/problem+json"
    )]
    TooLarge(ErrorBody),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(ErrorBody),
    #[response(
        status = 422,
        description = "Well-formed but refused",
        content_type = "application/problem+json"
    )]
    Refused(ErrorBody),
}

/// Reports progress of the worker's in-flight tasks; the answer names tasks to abort.
#[utoipa::path(
    post,
    path = "/api/v1/work/heartbeat",
    tag = "work",
    security(("worker" = [])),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Tasks to abort", body = HeartbeatResponse),
        WorkerCallRefusals,
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    WorkerAuth(worker): WorkerAuth,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    if req.tasks.len() > MAX_LEASE_TASKS as usize * 10 {
        return Err(ApiError::Unprocessable(
            "a heartbeat may name at most 10000 tasks".into(),
        ));
    }
    let ids: Vec<Uuid> = req.tasks.iter().map(|t| t.task_id).collect();
    let abort = state
        .store()
        .heartbeat(worker.id, &ids, now_millis())
        .await?;
    Ok(Json(HeartbeatResponse { abort }))
}

/// How long after a worker's presence line dropped its tasks get spares, unless it opened
/// another: rides out a connection reset, while a dead worker costs about a second.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// A worker's open line: held for `wait_ms`, then answered (the worker opens the next at once).
/// When the worker's process dies its connection closes and the server drops this request
/// unanswered: after [`DISCONNECT_GRACE`] without a new line, the worker's leased tasks get
/// spare copies, as a silent worker's do after the silence limit (`--suspect-after-secs`). The
/// originals stay leased: the first valid result counts.
#[utoipa::path(
    post,
    path = "/api/v1/work/presence",
    tag = "work",
    security(("worker" = [])),
    request_body = PresenceRequest,
    responses(
        (status = 200, description = "Held its time, or the coordinator is shutting down", body = PresenceResponse),
        (status = 409, description = "The worker already holds the most presence lines allowed", body = ErrorBody, content_type = "application/problem+json"),
        WorkerCallRefusals,
    )
)]
async fn presence(
    State(state): State<AppState>,
    WorkerAuth(worker): WorkerAuth,
    ApiJson(req): ApiJson<PresenceRequest>,
) -> Result<Json<PresenceResponse>, ApiError> {
    let wait = Duration::from_millis(req.wait_ms.min(MAX_PRESENCE_WAIT_MS).into());
    let started = std::time::Instant::now();
    let Some(mut line) = PresenceLine::open(state.clone(), worker.id) else {
        return Err(ApiError::Conflict(format!(
            "this worker already holds {MAX_PRESENCE_LINES} presence lines open"
        )));
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = state.closed() => {}
    }
    line.answered = true;
    Ok(Json(PresenceResponse {
        held_ms: started.elapsed().as_millis() as u64,
    }))
}

/// An open presence request; dropped unanswered means the worker hung up.
struct PresenceLine {
    state: AppState,
    worker: Uuid,
    answered: bool,
}

impl PresenceLine {
    /// `None` when the worker already holds [`MAX_PRESENCE_LINES`] open.
    fn open(state: AppState, worker: Uuid) -> Option<Self> {
        // Built only once counted: dropping a line uncounts it.
        let counted = state.open_presence(worker, MAX_PRESENCE_LINES);
        counted.then(|| PresenceLine {
            state,
            worker,
            answered: false,
        })
    }
}

impl Drop for PresenceLine {
    fn drop(&mut self) {
        self.state.close_presence(self.worker);
        if self.answered || self.state.closing() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, worker) = (self.state.clone(), self.worker);
        runtime.spawn(async move {
            tokio::time::sleep(DISCONNECT_GRACE).await;
            if state.is_present(worker) || state.closing() {
                return;
            }
            match state.store().spare_suspects(Suspects::Worker(worker)).await {
                Ok(0) => tracing::info!(%worker, "worker disconnected"),
                Ok(spared) => {
                    metrics::counter!(crate::metrics::TASKS_SPARED, "reason" => "disconnected")
                        .increment(spared);
                    tracing::info!(%worker, spared, "worker disconnected; its tasks get spare copies");
                    state.wake_transitioner();
                }
                Err(e) => {
                    tracing::warn!(%worker, error = %e, "cannot spare a disconnected worker's tasks")
                }
            }
        });
    }
}

/// A worker hands back tasks it will not compute (it is shutting down): they are reissued at
/// once instead of waiting for their deadline. Tasks not leased to it are ignored.
#[utoipa::path(
    post,
    path = "/api/v1/work/release",
    tag = "work",
    security(("worker" = [])),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "The released tasks", body = ReleaseResponse),
        WorkerCallRefusals,
    )
)]
async fn release(
    State(state): State<AppState>,
    WorkerAuth(worker): WorkerAuth,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<ReleaseResponse>, ApiError> {
    if req.tasks.len() > MAX_LEASE_TASKS as usize {
        return Err(ApiError::Unprocessable(format!(
            "a release may name at most {MAX_LEASE_TASKS} tasks"
        )));
    }
    let released = state
        .store()
        .release(worker.id, &req.tasks, now_millis())
        .await?;
    if !released.is_empty() {
        state.work_available();
        tracing::info!(worker = %worker.id, count = released.len(), "tasks handed back");
    }
    Ok(Json(ReleaseResponse { released }))
}

/// The calling worker as the coordinator sees it: its counts and credit.
#[utoipa::path(
    get,
    path = "/api/v1/work/me",
    tag = "work",
    security(("worker" = [])),
    responses(
        (status = 200, description = "The worker", body = WorkerView),
        (status = 401, description = "Missing or unknown worker token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 403, description = "The worker is banned", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn me(State(state): State<AppState>, WorkerAuth(worker): WorkerAuth) -> Json<WorkerView> {
    Json(worker_view(worker, &state.settings().trust))
}

/// Reports results; each is accepted or refused with a reason.
#[utoipa::path(
    post,
    path = "/api/v1/work/report",
    tag = "work",
    security(("worker" = [])),
    request_body = ReportRequest,
    responses(
        (status = 200, description = "Which results were taken", body = ReportResponse),
        WorkerCallRefusals,
    )
)]
async fn report(
    State(state): State<AppState>,
    WorkerAuth(worker): WorkerAuth,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<Json<ReportResponse>, ApiError> {
    if req.results.len() > MAX_REPORT_RESULTS {
        return Err(ApiError::Unprocessable(format!(
            "a report may carry at most {MAX_REPORT_RESULTS} results, got {}",
            req.results.len()
        )));
    }
    let ids: Vec<Uuid> = req.results.iter().map(|r| r.task_id).collect();
    let targets = state.store().report_targets(&ids).await?;
    // By task: a report may carry a thousand results.
    let by_task: HashMap<Uuid, &ReportTarget> = targets.iter().map(|t| (t.task_id, t)).collect();
    let mut refused = Vec::new();
    let mut to_record = Vec::new();
    let mut seen = HashSet::new();
    for result in &req.results {
        let refuse = |reason: String| RefusedResult {
            task_id: result.task_id,
            reason,
        };
        if !seen.insert(result.task_id) {
            refused.push(refuse("the same task appears twice in this report".into()));
            continue;
        }
        let Some(target) = by_task.get(&result.task_id) else {
            refused.push(refuse("unknown task".into()));
            continue;
        };
        if target.worker_id != Some(worker.id) {
            refused.push(refuse("this task is not leased to this worker".into()));
            continue;
        }
        match target.task_state.as_str() {
            "leased" | "timed_out" => {}
            "success" | "error" => {
                refused.push(refuse("this task was already reported".into()));
                continue;
            }
            other => {
                refused.push(refuse(format!("this task is {other}")));
                continue;
            }
        }
        if target.job_state.is_final() {
            refused.push(refuse(format!("the job is {}", target.job_state)));
            continue;
        }
        if !target.unit_open {
            refused.push(refuse("the unit is already decided".into()));
            continue;
        }
        let outcome = match result.kind() {
            None => {
                refused.push(refuse(
                    "a result must carry exactly one of \"output\" and \"error\"".into(),
                ));
                continue;
            }
            Some(TaskResultKind::Error(e)) => Outcome::Error(truncate(e, MAX_ERROR_BYTES)),
            Some(TaskResultKind::Output(output)) => {
                let Some(info) = state.runnable_job(target.job_id).await? else {
                    refused.push(refuse("the job can no longer be run".into()));
                    continue;
                };
                let unit = info.plan.unit(target.unit_seq);
                let max = info.app.max_output_bytes(&info.params, &unit);
                let checked = if json_len_within(output, max) {
                    info.app.check_output(&info.params, &unit, output)
                } else {
                    Err(sparecycles_apps::AppError(format!(
                        "the output is larger than {max} bytes, the most this app's unit \
                         can produce"
                    )))
                };
                match checked {
                    // Quorum 1: this result alone decides its unit (unless the app's
                    // comparison would not even accept it against itself).
                    Ok(())
                        if info.redundancy.min_quorum == 1
                            && info.app.compare(&info.params, output, output) =>
                    {
                        Outcome::Decisive {
                            output: output.clone(),
                            credit: info.plan.unit_work(target.unit_seq),
                        }
                    }
                    Ok(()) => Outcome::Success(output.clone()),
                    // A malformed output is the worker's error, not a refusal: it counts.
                    Err(e) => {
                        Outcome::Error(truncate(&format!("invalid output: {e}"), MAX_ERROR_BYTES))
                    }
                }
            }
        };
        to_record.push((result.task_id, outcome));
    }
    let wanted: Vec<Uuid> = to_record.iter().map(|(id, _)| *id).collect();
    let successes: HashSet<Uuid> = to_record
        .iter()
        .filter(|(_, o)| o.is_success())
        .map(|(id, _)| *id)
        .collect();
    let recorded = state
        .store()
        .record_results(worker.id, to_record, &state.settings().trust, now_millis())
        .await?;
    let accepted: HashSet<Uuid> = recorded.tasks.iter().copied().collect();
    for id in wanted {
        if !accepted.contains(&id) {
            refused.push(RefusedResult {
                task_id: id,
                reason: "the task changed state while this report was processed".into(),
            });
        }
    }
    crate::events::results_recorded(&state, &by_task, &successes, &recorded);
    if recorded.pending {
        state.wake_transitioner();
    }
    if recorded.job_done {
        state.job_done();
    }
    if !recorded.tasks.is_empty() {
        // Its results no longer count against the worker's quota, and valid ones may have
        // raised it: its own waiting lease may get tasks now, no other worker's.
        state.room_available([worker.id]);
    }
    Ok(Json(ReportResponse {
        accepted: recorded.tasks,
        refused,
    }))
}

/// Whether `value` serializes to at most `max` bytes of compact JSON; stops counting early.
pub fn json_len_within(value: &serde_json::Value, max: usize) -> bool {
    struct Counter {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.max {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Counter { n: 0, max }, value).is_ok()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
