//! `/api/v1/modules`: upload a WebAssembly module (binary or text format), stored once under the
//! SHA-256 of its binary form; workers fetch it by that hash.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sparecycles_protocol::{ErrorBody, ModuleView, is_sha256_hex, now_millis};
use sparecycles_wasm::{MAX_MODULE_BYTES, WasmApp};

use crate::auth::JobManager;
use crate::http::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/modules", post(upload))
        .route("/api/v1/modules/{sha256}", get(fetch))
}

/// Checks the module completely (it compiles, imports nothing, fits the ABI) before storing it.
#[utoipa::path(
    post,
    path = "/api/v1/modules",
    tag = "jobs",
    security(("admin" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A WebAssembly module, binary or text format (at most 4 MiB); any content type"),
    responses(
        (status = 201, description = "Stored", body = ModuleView),
        (status = 200, description = "Already stored", body = ModuleView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin or submitter token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 413, description = "Too large", body = ErrorBody, content_type = "application/problem+json"),
        (status = 422, description = "Not a usable module", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn upload(
    State(state): State<AppState>,
    _submitter: JobManager,
    body: Body,
) -> Result<(StatusCode, Json<ModuleView>), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_MODULE_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!("a module may be at most {MAX_MODULE_BYTES} bytes"))
        })?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body must be a WebAssembly module (binary or text format)".into(),
        ));
    }
    // Compiling is CPU work: off the async runtime.
    let checked = tokio::task::spawn_blocking(move || {
        let binary = sparecycles_wasm::to_binary(&bytes)?;
        let app = WasmApp::new(&binary)?;
        Ok::<_, String>((binary, app))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    let (binary, app) = checked.map_err(ApiError::Unprocessable)?;
    let sha256 = app.hash().to_owned();
    let created = state
        .store()
        .put_module(&sha256, &binary, now_millis())
        .await?;
    tracing::info!(module = %sha256, size = binary.len(), created, "module uploaded");
    let view = ModuleView {
        app: sparecycles_wasm::app_name(&sha256),
        sha256,
        size: binary.len() as u64,
    };
    state.cache_module(Arc::new(app));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// The module's binary form; public, like job parameters (it is part of the job).
#[utoipa::path(
    get,
    path = "/api/v1/modules/{sha256}",
    tag = "work",
    params(("sha256" = String, Path, description = "The module's SHA-256, 64 hex digits")),
    responses(
        (status = 200, description = "The module's binary form", body = Vec<u8>, content_type = "application/wasm"),
        (status = 400, description = "Not a SHA-256", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such module", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn fetch(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::BadRequest(format!(
            "{sha256:?} is not a SHA-256 in hex (64 lowercase hex digits)"
        )));
    }
    let bytes = state
        .store()
        .module(&sha256)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no module with sha256 {sha256}")))?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
