//! Worker administration and the public leaderboard.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use sparecycles_protocol::{Leaderboard, LeaderboardEntry, WorkerView, now_millis};

use sparecycles_protocol::ErrorBody;

use crate::auth::Admin;
use crate::http::error::{ApiError, parse_id};
use crate::http::work::worker_view;
use crate::scheduler::trust::{decay, per_day};
use crate::state::AppState;

/// Lines per leaderboard table.
const LEADERBOARD_SIZE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workers/{id}/unban", post(unban))
        .route("/api/v1/leaderboard", get(leaderboard))
}

/// Lifts a ban.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/unban",
    tag = "workers",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The worker's id (a UUID)")),
    responses(
        (status = 200, description = "The worker", body = WorkerView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn unban(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    let id = parse_id("worker", &id)?;
    if !state.store().unban(id).await? {
        return Err(ApiError::NotFound(format!("no worker with id {id}")));
    }
    tracing::info!(worker = %id, "worker unbanned by admin");
    let worker = state
        .store()
        .workers()
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no worker with id {id}")))?;
    Ok(Json(worker_view(worker, &state.settings().trust)))
}

#[utoipa::path(
    get,
    path = "/api/v1/leaderboard",
    tag = "workers",
    responses(
        (status = 200, description = "Best first", body = Leaderboard),
    )
)]
/// Credit per worker and per owner, best first; banned workers are left out.
async fn leaderboard(State(state): State<AppState>) -> Result<Json<Leaderboard>, ApiError> {
    let now = now_millis();
    let mut workers = Vec::new();
    let mut owners: HashMap<String, LeaderboardEntry> = HashMap::new();
    for w in state.store().workers().await? {
        if w.banned {
            continue;
        }
        let recent = per_day(decay(w.rac, w.rac_time, now));
        if let Some(owner) = &w.owner {
            let e = owners
                .entry(owner.clone())
                .or_insert_with(|| LeaderboardEntry {
                    name: owner.clone(),
                    owner: Some(owner.clone()),
                    workers: 0,
                    valid: 0,
                    credit: 0.0,
                    recent_credit: 0.0,
                });
            e.workers += 1;
            e.valid += w.valid;
            e.credit += w.credit;
            e.recent_credit += recent;
        }
        workers.push(LeaderboardEntry {
            name: w.name,
            owner: w.owner,
            workers: 1,
            valid: w.valid,
            credit: w.credit,
            recent_credit: recent,
        });
    }
    let mut owners: Vec<_> = owners.into_values().collect();
    for list in [&mut workers, &mut owners] {
        list.sort_by(|a, b| b.credit.total_cmp(&a.credit).then(a.name.cmp(&b.name)));
        list.truncate(LEADERBOARD_SIZE);
    }
    Ok(Json(Leaderboard { workers, owners }))
}
