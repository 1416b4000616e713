//! The web dashboard: static assets from `dashboards/web/`, embedded in the binary.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../../dashboards/web/index.html");
const APP_JS: &str = include_str!("../../../dashboards/web/app.js");
const STYLE: &str = include_str!("../../../dashboards/web/style.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
}

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard's HTML page", content_type = "text/html"))
)]
async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/assets/app.js",
    tag = "dashboard",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript"))
)]
async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/assets/style.css",
    tag = "dashboard",
    responses((status = 200, description = "CSS", content_type = "text/css"))
)]
async fn style_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
