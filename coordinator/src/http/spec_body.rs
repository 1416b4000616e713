//! The body of `POST /api/v1/jobs`: a job spec as JSON, or as TOML with
//! `Content-Type: application/toml` (what `job-specs/` holds and the dashboard pastes).

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use sparecycles_protocol::JobSpec;

use crate::http::body;
use crate::http::error::ApiError;

/// A job spec parsed from JSON or TOML, by content type.
#[derive(Debug)]
pub struct SpecBody(pub JobSpec);

fn is_toml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/toml" || v == "text/x-toml"
        })
        .unwrap_or(false)
}

/// Parses a spec body as the API does: TOML for a TOML content type, JSON for a JSON one,
/// anything else refused. Pure, so the fuzz target runs exactly this.
pub fn parse_spec(headers: &HeaderMap, bytes: &[u8]) -> Result<JobSpec, ApiError> {
    if is_toml(headers) {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest("the TOML spec is not valid UTF-8".into()))?;
        return toml::from_str::<JobSpec>(text)
            .map_err(|e| ApiError::Unprocessable(format!("invalid TOML job spec: {e}")));
    }
    if !body::is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "a job spec is JSON (Content-Type: application/json) or TOML (application/toml)".into(),
        ));
    }
    body::parse_json(bytes)
}

impl<S: Send + Sync> FromRequest<S> for SpecBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = body::read_body(req, state).await?;
        parse_spec(&headers, &bytes).map(SpecBody)
    }
}
