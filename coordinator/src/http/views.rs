//! Read views for the dashboard: a job's unit map (`/api/v1/jobs/{id}/units`) and the example
//! job specs built into the binary (`/api/v1/job-specs`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use sparecycles_protocol::dashboard::{ExampleSpec, MAX_UNIT_CELLS, UnitMap};

use crate::auth::JobReader;
use sparecycles_protocol::ErrorBody;

use crate::examples::EXAMPLES;
use crate::http::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs/{id}/units", get(units))
        .route("/api/v1/job-specs", get(job_specs))
}

/// A job's units as a map of cells, for the dashboard.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/units",
    tag = "dashboard",
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The unit map", body = UnitMap),
        (status = 404, description = "No such job", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn units(
    State(state): State<AppState>,
    JobReader(scope): JobReader,
    Path(id): Path<String>,
) -> Result<Json<UnitMap>, ApiError> {
    let job = crate::http::jobs::load(&state, &id, scope).await?;
    // Bounded whatever the job's size: big jobs get several units per cell.
    let per_cell = job.unit_count.div_ceil(MAX_UNIT_CELLS).max(1);
    Ok(Json(state.store().unit_map(&job, per_cell).await?))
}

/// The example job specs built into the coordinator.
#[utoipa::path(
    get,
    path = "/api/v1/job-specs",
    tag = "dashboard",
    responses(
        (status = 200, description = "The examples", body = Vec<ExampleSpec>),
    )
)]
async fn job_specs() -> Json<Vec<ExampleSpec>> {
    Json(
        EXAMPLES
            .iter()
            .map(|(file, toml)| ExampleSpec {
                file: (*file).to_owned(),
                app: toml::from_str::<toml::Table>(toml)
                    .ok()
                    .and_then(|t| t.get("app").and_then(|a| a.as_str()).map(str::to_owned))
                    .unwrap_or_default(),
                toml: (*toml).to_owned(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_spec_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../job-specs");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        files.sort();
        let mut embedded: Vec<String> = EXAMPLES.iter().map(|(f, _)| (*f).to_owned()).collect();
        embedded.sort();
        assert_eq!(files, embedded, "add new job-specs/*.toml to EXAMPLES");
    }
}
