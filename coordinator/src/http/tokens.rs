//! `/api/v1/tokens`: submitter tokens, created, listed and revoked by the admin. The secret is
//! in the creation answer only; the store keeps its hash.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use sparecycles_protocol::token::MAX_TOKEN_NAME_CHARS;
use sparecycles_protocol::{
    ErrorBody, TokenCreated, TokenList, TokenRequest, TokenView, now_millis,
};
use uuid::Uuid;

use crate::auth::{Admin, SUBMITTER_PREFIX, generate_token, hash_token};
use crate::http::error::{ApiError, ApiJson, parse_id};
use crate::state::AppState;
use crate::store::SubmitterRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list).post(create))
        .route("/api/v1/tokens/{id}", delete(revoke))
}

fn view(row: SubmitterRow) -> TokenView {
    TokenView {
        id: row.id,
        name: row.name,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("admin" = [])),
    request_body = TokenRequest,
    responses(
        (status = 201, description = "The new submitter token; the secret is shown only here", body = TokenCreated),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 422, description = "Bad name", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "name must be 1 to {MAX_TOKEN_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must not contain control characters".into(),
        ));
    }
    let token = generate_token(SUBMITTER_PREFIX);
    let row = state
        .store()
        .create_submitter(Uuid::now_v7(), name, &hash_token(&token), now_millis())
        .await?;
    tracing::info!(submitter = %row.id, name = %row.name, "submitter token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            view: view(row),
            token,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every submitter token (never the secrets)", body = TokenList),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin token", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.store().submitters().await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(view).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The token's id (a UUID)")),
    responses(
        (status = 200, description = "The revoked token", body = TokenView),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 403, description = "Not the admin token", body = ErrorBody, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = ErrorBody, content_type = "application/problem+json"),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id("token", &id)?;
    let row = state
        .store()
        .revoke_submitter(id, now_millis())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token with id {id}")))?;
    tracing::info!(submitter = %row.id, "submitter token revoked");
    Ok(Json(view(row)))
}
