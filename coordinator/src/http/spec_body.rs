//! The body of `POST /api/v1/jobs`: a job spec as JSON, or as TOML with
//! `Content-Type: application/toml` (what `job-specs/` holds and the dashboard pastes).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use sparecycles_protocol::JobSpec;

use crate::http::error::{ApiError, ApiJson};

/// A job spec parsed from JSON or TOML, by content type.
#[derive(Debug)]
pub struct SpecBody(pub JobSpec);

fn is_toml(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/toml" || v == "text/x-toml"
        })
        .unwrap_or(false)
}

impl<S: Send + Sync> FromRequest<S> for SpecBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_toml(&req) {
            let ApiJson(spec) = ApiJson::<JobSpec>::from_request(req, state).await?;
            return Ok(SpecBody(spec));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(r.body_text())
            } else {
                ApiError::BadRequest(r.body_text())
            }
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::BadRequest("the TOML spec is not valid UTF-8".into()))?;
        let spec = toml::from_str::<JobSpec>(text)
            .map_err(|e| ApiError::Unprocessable(format!("invalid TOML job spec: {e}")))?;
        Ok(SpecBody(spec))
    }
}
