//! The HTTP API: one module per resource, each with its own `router()`.

pub mod body;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;
pub mod limit;
pub mod metrics;
pub mod modules;
pub mod openapi;
pub mod spec_body;
pub mod tokens;
pub mod views;
pub mod work;
pub mod workers;

use axum::Router;
use axum::http::StatusCode;

use crate::state::AppState;

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    routes()
        // Limits run before authentication, so a flood costs no database work.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit::limit,
        ))
        .with_state(state)
}

/// Every route, fallback and layer, before the state is attached (the OpenAPI test reads the
/// routes from this).
pub fn routes() -> Router<AppState> {
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
        .merge(health::router())
        .merge(openapi::router())
        .fallback(|| async { error::problem(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::map_response(body::problems_only))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .route_layer(axum::middleware::from_fn(metrics::track))
}
