//! The OpenAPI document (`/api/v1/openapi.json`), generated from the handlers' `#[utoipa::path]`
//! attributes and the protocol's wire types, and a browsable page of it (`/api/v1/docs`), a
//! self-contained file embedded in the binary.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use sparecycles_protocol::error::PROBLEM_JSON;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::state::AppState;

const DOCS_PAGE: &str = include_str!("openapi_docs.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(spec))
        .route("/api/v1/docs", get(docs))
}

/// The whole API. Every route of [`crate::http::router`] is listed here; a test fails when one
/// is not.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SpareCycles coordinator API",
        description = "Submit jobs, lease work units to workers, report results, watch progress. \
            Every error is an `application/problem+json` document (RFC 9457).",
    ),
    paths(
        crate::http::jobs::list,
        crate::http::jobs::create,
        crate::http::jobs::show,
        crate::http::jobs::result,
        crate::http::jobs::cancel,
        crate::http::jobs::pause,
        crate::http::jobs::resume,
        crate::http::views::units,
        crate::http::views::job_specs,
        crate::http::work::enroll,
        crate::http::work::list_workers,
        crate::http::work::lease,
        crate::http::work::heartbeat,
        crate::http::work::release,
        crate::http::work::presence,
        crate::http::work::report,
        crate::http::work::me,
        crate::http::workers::unban,
        crate::http::workers::leaderboard,
        crate::http::events::events,
        crate::http::dashboard::index,
        crate::http::dashboard::app_js,
        crate::http::dashboard::style_css,
        crate::http::metrics::render,
        crate::http::health::healthz,
        crate::http::health::readyz,
        crate::http::tokens::create,
        crate::http::tokens::list,
        crate::http::tokens::revoke,
        crate::http::modules::upload,
        crate::http::modules::fetch,
        spec,
        docs,
    ),
    components(schemas(sparecycles_protocol::ErrorBody)),
    modifiers(&Security, &Problems, &Links),
    tags(
        (name = "jobs", description = "Submitting and managing jobs (admin token for changes)"),
        (name = "work", description = "The worker protocol (worker token from enrollment)"),
        (name = "workers", description = "Workers and credit"),
        (name = "dashboard", description = "The web dashboard and its live views"),
        (name = "tokens", description = "Submitter tokens (admin token)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The two kinds of bearer token.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "admin",
                "The operator's admin token (`coordinator serve --admin-token`), or a submitter token (`coordinator token create`) on the routes that manage jobs and modules.",
            ),
            ("worker", "A worker's token, returned once by enrollment."),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// Every operation's undeclared statuses (a 405, a 413 from a body limit, a 500) still answer
/// with a problem document: say so once, as each operation's `default` response.
struct Problems;

impl Modify for Problems {
    fn modify(&self, doc: &mut Document) {
        let problem = ResponseBuilder::new()
            .description("An error, as an RFC 9457 problem document")
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        sparecycles_protocol::ErrorBody::name(),
                    ))))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| RefOr::T(problem.clone()));
            }
        }
    }
}

/// A created job links to the operations on it, so generated clients (schemathesis's stateful
/// phase among them) can follow a submission with real ids.
struct Links;

impl Modify for Links {
    fn modify(&self, doc: &mut Document) {
        let Some(created) = doc
            .paths
            .paths
            .get_mut("/api/v1/jobs")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut("201"))
        else {
            return;
        };
        let RefOr::T(created) = created else {
            return;
        };
        for operation in ["show", "result", "units", "cancel", "pause", "resume"] {
            created.links.insert(
                operation.to_owned(),
                RefOr::T(
                    LinkBuilder::new()
                        .operation_id(operation)
                        .parameter("id", "$response.body#/id")
                        .build(),
                ),
            );
        }
    }
}

/// The document itself.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
async fn spec() -> impl IntoResponse {
    // Built per request: it is small, and rarely asked for.
    let json = document().to_json().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// A browsable page of this document (no external assets).
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "operations",
    responses((status = 200, description = "HTML page", content_type = "text/html"))
)]
async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(method, path)` of every route the real router serves, read from its `Debug` output
    /// (axum lists each path with its method router there).
    fn routed() -> BTreeSet<(String, String)> {
        let debug = format!("{:?}", crate::http::routes());
        // Only the path router: the fallback router that follows it has ids of its own.
        let start = debug.find("path_router: PathRouter").unwrap();
        let end = debug.find("fallback_router: PathRouter").unwrap();
        let debug = &debug[start..end];
        let mut paths = std::collections::HashMap::new();
        // `RouteId(3): "/api/v1/jobs"` in the node's path table.
        let mut rest = debug;
        while let Some(at) = rest.find("RouteId(") {
            rest = &rest[at + "RouteId(".len()..];
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = &rest[id.len()..];
            if let Some(path) = after.strip_prefix("): \"") {
                let end = path.find('"').unwrap();
                paths.insert(id, path[..end].to_owned());
            }
        }
        let mut routes = BTreeSet::new();
        let mut rest = debug;
        while let Some(at) = rest.find("RouteId(") {
            rest = &rest[at + "RouteId(".len()..];
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = &rest[id.len()..];
            let Some(body) = after.strip_prefix("): MethodRouter(MethodRouter { ") else {
                continue;
            };
            let body = &body[..body.find("fallback:").unwrap()];
            for field in body.split(", ") {
                let Some((method, endpoint)) = field.split_once(": ") else {
                    continue;
                };
                // HEAD comes with GET; `None` is a method without a handler.
                let path = &paths[&id];
                if method != "head" && !endpoint.starts_with("None") {
                    routes.insert((method.to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(document()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    out.insert((method.clone(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let routed = routed();
        assert!(
            routed.len() >= 20,
            "could not read the router's routes: {routed:?}"
        );
        let documented = documented();
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn operations_name_their_security_and_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["admin"]["scheme"], "bearer");
        assert_eq!(schemes["worker"]["scheme"], "bearer");
        let create = &doc["paths"]["/api/v1/jobs"]["post"];
        assert_eq!(create["security"][0]["admin"], serde_json::json!([]));
        assert!(create["responses"]["422"]["content"][PROBLEM_JSON].is_object());
        let lease = &doc["paths"]["/api/v1/work/lease"]["post"];
        assert_eq!(lease["security"][0]["worker"], serde_json::json!([]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    op["responses"]["default"].is_object(),
                    "{method} {path} has no default problem response"
                );
            }
        }
    }
}
