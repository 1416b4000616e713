//! `/api/v1/jobs`: submit, list, inspect, fetch results, cancel, pause, resume.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sparecycles_protocol::ErrorBody;
use sparecycles_protocol::dashboard::Event;
use sparecycles_protocol::job::MAX_JOB_WAIT_MS;
use sparecycles_protocol::{JobCounts, JobList, JobSpec, JobState, JobView, now_millis};
use uuid::Uuid;

use crate::auth::{JobManager, JobReader, Scope};
use crate::http::error::{ApiError, parse_id};
use crate::http::spec_body::SpecBody;
use crate::state::{AppState, plan_of};
use crate::store::{JobRow, NewJob};

/// Largest accepted job spec body.
const SPEC_BODY_LIMIT: usize = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/jobs",
            get(list)
                .post(create)
                .layer(DefaultBodyLimit::max(SPEC_BODY_LIMIT)),
        )
        .route("/api/v1/jobs/{id}", get(show))
        .route("/api/v1/jobs/{id}/result", get(result))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/jobs/{id}/pause", post(pause))
        .route("/api/v1/jobs/{id}/resume", post(resume))
}

/// Checks a spec completely (common fields, the app or module, and its parameters) without
/// storing anything.
pub async fn check_spec(state: &AppState, spec: &JobSpec) -> Result<NewJob, ApiError> {
    let initial_units = state.settings().initial_units;
    let Some(sha256) = &spec.module else {
        return check_builtin_spec(spec, initial_units);
    };
    let common = spec
        .check_common()
        .map_err(|e| ApiError::Unprocessable(e.0))?;
    let app_name = sparecycles_wasm::app_name(sha256);
    let app = state.app(&app_name).await?.ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "no module with sha256 {sha256}; upload it first (POST /api/v1/modules)"
        ))
    })?;
    // A module plans inside its sandbox, off the async threads.
    let plan = plan_of(app, spec.params.clone())
        .await?
        .map_err(|e| ApiError::Unprocessable(e.0))?;
    new_job(spec, app_name, plan.unit_count(), common, initial_units)
}

/// [`check_spec`] for a built-in app: synchronous and store-free (the fuzzer runs it).
pub fn check_builtin_spec(spec: &JobSpec, initial_units: u64) -> Result<NewJob, ApiError> {
    let common = spec
        .check_common()
        .map_err(|e| ApiError::Unprocessable(e.0))?;
    let app = sparecycles_apps::find(&spec.app).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "unknown app {:?}; this coordinator runs: {} (or a module: set module = \"<sha256>\")",
            spec.app,
            sparecycles_apps::names().join(", ")
        ))
    })?;
    let plan = app
        .plan(&spec.params)
        .map_err(|e| ApiError::Unprocessable(e.0))?;
    new_job(
        spec,
        spec.app.clone(),
        plan.unit_count(),
        common,
        initial_units,
    )
}

fn new_job(
    spec: &JobSpec,
    app: String,
    unit_count: u64,
    (redundancy, timeout_secs, priority): (sparecycles_protocol::Redundancy, u64, i32),
    initial_units: u64,
) -> Result<NewJob, ApiError> {
    if unit_count == 0 || unit_count > sparecycles_apps::MAX_UNITS {
        return Err(ApiError::Unprocessable(format!(
            "the job splits into {unit_count} units; between 1 and {} are accepted",
            sparecycles_apps::MAX_UNITS
        )));
    }
    Ok(NewJob {
        id: Uuid::now_v7(),
        name: spec.name.trim().to_owned(),
        app,
        params: spec.params.clone(),
        priority,
        redundancy,
        unit_timeout_ms: (timeout_secs * 1000) as i64,
        unit_count,
        initial_units,
        owner: None,
    })
}

/// Submits a job: a spec in JSON, or in TOML with `Content-Type: application/toml`.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    security(("admin" = [])),
    request_body(description = "The job spec", content((JobSpec = "application/json"), (String = "application/toml"))),
    responses(
        (status = 201, description = "The job was created", body = JobView),
        (status = 400, description = "Malformed JSON or TOML", body = ErrorBody, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 256 KiB", body = ErrorBody, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor TOML", body = ErrorBody, content_type = "application/problem+json"),
        (status = 422, description = "The spec is well-formed but refused (unknown app, parameters out of bounds, too many units...)", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    JobManager(scope): JobManager,
    SpecBody(spec): SpecBody,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let mut job = check_spec(&state, &spec).await?;
    job.owner = scope.owner();
    // Submitters share the fleet: only the operator may put a job ahead of the others.
    if job.owner.is_some() && job.priority > 0 {
        return Err(ApiError::Forbidden(
            "only the admin can give a job a priority above 0".into(),
        ));
    }
    let row = state.store().create_job(job, now_millis()).await?;
    tracing::info!(job = %row.id, name = %row.name, app = %row.app, units = row.unit_count, "job submitted");
    state.work_available();
    state.emit(Event::JobChanged {
        job_id: row.id,
        state: row.state,
    });
    Ok((StatusCode::CREATED, Json(view(&row, 0))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Most jobs to return, 1 to 1000 [100].
    limit: Option<u32>,
}

/// Lists jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, description = "A malformed query string", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn list(
    State(state): State<AppState>,
    JobReader(scope): JobReader,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = match scope {
        Scope::All => state.store().jobs(limit).await?,
        Scope::Owner(owner) => state.store().jobs_owned_by(owner, limit).await?,
    };
    let jobs = views(state.store(), &rows).await?;
    Ok(Json(JobList { jobs }))
}

/// Views of a job list, with the units in progress of the unfinished ones in one query.
pub async fn views(
    store: &dyn crate::store::Store,
    rows: &[JobRow],
) -> crate::store::StoreResult<Vec<JobView>> {
    let open: Vec<Uuid> = rows
        .iter()
        .filter(|r| !r.state.is_final())
        .map(|r| r.id)
        .collect();
    let in_progress = store.units_in_progress(&open).await?;
    Ok(rows
        .iter()
        .map(|r| view(r, in_progress.get(&r.id).copied().unwrap_or(0)))
        .collect())
}

/// The job `raw` names, if `scope` may see it. Another submitter's job is a 404 like a
/// missing one, so job ids cannot be probed.
pub async fn load(state: &AppState, raw: &str, scope: Scope) -> Result<JobRow, ApiError> {
    let id = parse_id("job", raw)?;
    state
        .store()
        .job(id)
        .await?
        .filter(|job| scope.allows(job))
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// Hold the answer until the job has ended (completed, failed or canceled), at most this
    /// many milliseconds (capped at 30000); omitted or 0: answer at once. A long poll: a client
    /// waiting for a job hears of its end at once, without polling.
    wait_ms: Option<u64>,
}

/// How often a job wait looks at the job without being signaled: another coordinator on the
/// same database may end it, and its events do not reach this one.
const JOB_WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// One job.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (a UUID)"), ShowQuery),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "A malformed query string", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn show(
    State(state): State<AppState>,
    JobReader(scope): JobReader,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<JobView>, ApiError> {
    let wait = q.wait_ms.unwrap_or(0).min(MAX_JOB_WAIT_MS);
    // Subscribed before the first look, so an end announced in between is not missed.
    let mut events = (wait > 0).then(|| state.hub().subscribe());
    let mut row = load(&state, &id, scope).await?;
    if let Some(events) = events.as_mut() {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
        while !row.state.is_final() {
            let now = tokio::time::Instant::now();
            if now >= give_up {
                break;
            }
            let look = give_up.min(now + JOB_WAIT_RECHECK);
            tokio::select! {
                _ = ended(events, row.id) => {}
                _ = tokio::time::sleep_until(look) => {}
                // Resolves at once when the server is already shutting down.
                _ = state.closed() => break,
            }
            row = load(&state, &id, scope).await?;
        }
    }
    let mut one = views(state.store(), std::slice::from_ref(&row)).await?;
    Ok(Json(one.remove(0)))
}

/// Resolves when job `id` changes state (or events were missed, which may include that);
/// never when the event bus closes.
async fn ended(events: &mut tokio::sync::broadcast::Receiver<Event>, id: Uuid) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(Event::JobChanged { job_id, .. }) if job_id == id => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// A completed job's result: JSON, or an image for picture apps.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/result",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The assembled result, of the job's `result_type`", content((Object = "application/json"), (Vec<u8> = "image/png"))),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
        (status = 409, description = "The job is not completed (yet)", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn result(
    State(state): State<AppState>,
    JobReader(scope): JobReader,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = load(&state, &id, scope).await?;
    if row.state != JobState::Completed {
        let why = match &row.error {
            Some(e) => format!("job is {}: {e}", row.state),
            None => format!(
                "job is {}: {} of {} units done; the result exists once it is completed",
                row.state, row.units_done, row.unit_count
            ),
        };
        return Err(ApiError::Conflict(why));
    }
    let (content_type, body) = state.store().job_result(row.id).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("completed job {} has no result", row.id))
    })?;
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn transition(
    state: &AppState,
    scope: Scope,
    raw: &str,
    from: &[JobState],
    to: JobState,
) -> Result<Json<JobView>, ApiError> {
    // A job's owner never changes, so checking it before the update is race-free.
    let id = load(state, raw, scope).await?.id;
    let row = state
        .store()
        .set_job_state(id, from, to, now_millis())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    if row.state != to {
        return Err(ApiError::Conflict(format!(
            "job is {}; it can be {} only when {}",
            row.state,
            to,
            from.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    tracing::info!(job = %id, state = %to, by = ?scope, "job state changed");
    state.emit(Event::JobChanged {
        job_id: id,
        state: to,
    });
    Ok(Json(view(&row, 0)))
}

/// Cancels a queued, running or paused job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The canceled job", body = JobView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
        (status = 409, description = "The job is not queued, running or paused", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    JobManager(scope): JobManager,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    transition(
        &state,
        scope,
        &id,
        &[JobState::Queued, JobState::Running, JobState::Paused],
        JobState::Canceled,
    )
    .await
}

/// Pauses a queued or running job: no more tasks are leased.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/pause",
    tag = "jobs",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The paused job", body = JobView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
        (status = 409, description = "The job is not queued or running", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn pause(
    State(state): State<AppState>,
    JobManager(scope): JobManager,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    transition(
        &state,
        scope,
        &id,
        &[JobState::Queued, JobState::Running],
        JobState::Paused,
    )
    .await
}

/// Resumes a paused job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/resume",
    tag = "jobs",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The running job", body = JobView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
        (status = 409, description = "The job is not paused", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn resume(
    State(state): State<AppState>,
    JobManager(scope): JobManager,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let view = transition(&state, scope, &id, &[JobState::Paused], JobState::Running).await?;
    state.work_available();
    Ok(view)
}

/// The API view of a stored job.
pub fn view(row: &JobRow, in_progress: u64) -> JobView {
    JobView {
        id: row.id,
        name: row.name.clone(),
        app: row.app.clone(),
        state: row.state,
        params: row.params.clone(),
        redundancy: row.redundancy,
        unit_timeout_secs: (row.unit_timeout_ms / 1000) as u64,
        priority: row.priority,
        units: JobCounts {
            total: row.unit_count,
            done: row.units_done,
            failed: row.units_failed,
            in_progress,
        },
        tasks_created: row.tasks_created,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
        error: row.error.clone(),
        result_type: (row.state == JobState::Completed)
            .then(|| match sparecycles_apps::find(&row.app) {
                Some(app) => Some(app.result_type().to_owned()),
                // Module apps assemble JSON.
                None => sparecycles_wasm::module_hash(&row.app).map(|_| "application/json".into()),
            })
            .flatten(),
    }
}
