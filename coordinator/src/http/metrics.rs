//! `GET /metrics` in the Prometheus text format, and the middleware that times every request.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{HTTP_DURATION, handle};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
async fn render() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
}

/// Records the latency of a request by method, route template (never the raw path: ids would
/// explode the label set) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    // The event stream stays open for minutes: its "latency" says nothing.
    if route != "/api/v1/events" {
        metrics::histogram!(
            HTTP_DURATION,
            "method" => method,
            "route" => route,
            "status" => resp.status().as_u16().to_string(),
        )
        .record(started.elapsed().as_secs_f64());
    }
    resp
}
