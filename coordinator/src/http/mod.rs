//! The HTTP API: one module per resource, each with its own `router()`.

pub mod dashboard;
pub mod error;
pub mod events;
pub mod jobs;
pub mod limit;
pub mod metrics;
pub mod modules;
pub mod spec_body;
pub mod tokens;
pub mod views;
pub mod work;
pub mod workers;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(jobs::router())
        .merge(modules::router())
        .merge(work::router())
        .merge(workers::router())
        .merge(dashboard::router())
        .merge(events::router())
        .merge(views::router())
        .merge(metrics::router())
        .merge(tokens::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { error::problem(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        // Limits run before authentication, so a flood costs no database work.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit::limit,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Ready when the database answers.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    match state.store().jobs(1).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => error::problem(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
    }
}
