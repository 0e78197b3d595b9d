//! `GET /api/v1/openapi.json`: the OpenAPI document, generated from the handlers' annotations
//! and the request/response types (utoipa), never written by hand.

use crate::routes::{admin, controls, events, health, metrics, providers, sessions, turns};
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe",
        description = "REST, SSE and operator endpoints of Troupe, an actor-model runtime for AI-agent chat sessions. Errors are `{\"error\": {\"code\", \"message\", …}}`; see docs/PROTOCOL.md."
    ),
    paths(
        sessions::create, sessions::list, sessions::get, sessions::patch, sessions::delete,
        turns::send, turns::list, turns::cancel, turns::promote,
        controls::abort, controls::pause, controls::resume, controls::reset,
        events::page, events::stream,
        providers::list,
        admin::actors,
        health::healthz, health::readyz, metrics::metrics,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "sessions", description = "Create, find, list, change and delete sessions"),
        (name = "turns", description = "Send messages, list, cancel and promote turns"),
        (name = "controls", description = "Abort, pause, resume, reset"),
        (name = "events", description = "The event log: pages and SSE"),
        (name = "providers", description = "Configured agent backends"),
        (name = "operators", description = "Probes, metrics, the actor table"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme the paths' `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `[[auth.tokens]]`; not needed when no tokens are configured",
                    ))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "operators",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Registers `/openapi.json` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}
