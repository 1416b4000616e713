//! Request bodies: JSON with a nesting bound, and the safety net that turns any plain-text
//! rejection (query strings, paths, body limits) into `application/problem+json`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use sparecycles_protocol::error::PROBLEM_JSON;

use crate::http::error::{ApiError, problem};

/// Deepest accepted nesting of arrays and objects in a JSON body. No request of the API
/// nests deeper than a few levels; the bound keeps recursion (parsing, dropping, comparing
/// values) shallow whatever a client sends.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether the arrays and objects of `bytes` nest at most `max` deep. A linear scan that
/// skips strings; it does not validate the JSON (the parser does that next).
pub fn json_depth_within(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// `application/json` or any `application/*+json`, parameters ignored.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body: nesting bound first, then serde (syntax errors are 400, well-formed
/// bodies of the wrong shape 422, as axum's `Json` does).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !json_depth_within(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::BadRequest(format!(
            "the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let axum::Json(value) = axum::Json::<T>::from_bytes(bytes)?;
    Ok(value)
}

/// Reads the whole body within the route's limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(r.body_text())
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })
}

/// Longest original rejection text kept in a problem's detail.
const MAX_REJECTION_TEXT: usize = 1024;

/// Middleware: an error response that is not problem+json already (axum's own rejections of
/// query strings, paths and bodies are plain text) becomes one, with the same status and the
/// original text as its detail.
pub async fn problems_only(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), MAX_REJECTION_TEXT * 4).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let mut detail: String = text.trim().chars().take(MAX_REJECTION_TEXT).collect();
    if detail.is_empty() {
        detail = status.canonical_reason().unwrap_or("error").to_owned();
    }
    problem(status, detail).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(json_depth_within(br#"{"a": [1, {"b": 2}]}"#, 3));
        assert!(!json_depth_within(br#"{"a": [1, {"b": 2}]}"#, 2));
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(json_depth_within(br#"{"a": "[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(100_000);
        assert!(!json_depth_within(deep.as_bytes(), MAX_JSON_DEPTH));
        assert!(json_depth_within(b"]]]]", 0));
    }

    #[test]
    fn deep_bodies_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let err = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let ok = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert!(parse_json::<serde_json::Value>(ok.as_bytes()).is_ok());
    }

    #[test]
    fn json_media_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("application/toml", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
