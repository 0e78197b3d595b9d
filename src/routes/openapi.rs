//! `GET /api/v1/openapi.json`: the OpenAPI document of the REST API, generated from the
//! handlers' annotations and the request/response types (utoipa), never written by hand. What
//! depends on the configuration is filled in when it is served ([`served`]): the configured
//! providers as the `provider` enum, and the bearer scheme only when tokens are required.

use crate::routes::{
    admin, agui, controls, events, health, metrics, providers, sessions, transfer, turns, usage,
};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document, before the configuration is applied.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe",
        description = "REST, SSE and operator endpoints of Troupe, an actor-model runtime for AI-agent chat sessions. Errors are `{\"error\": {\"code\", \"message\", …}}`; see docs/PROTOCOL.md. The OpenAI-compatible routes have their own document at `/v1/openapi.json`."
    ),
    paths(
        sessions::create, sessions::list, sessions::get, sessions::patch, sessions::delete,
        transfer::fork, transfer::export, transfer::import,
        turns::send, turns::list, turns::cancel, turns::promote, agui::run,
        controls::abort, controls::pause, controls::resume, controls::reset,
        events::page, events::stream,
        providers::list,
        usage::usage,
        admin::actors,
        health::healthz, health::readyz, metrics::metrics,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "sessions", description = "Create, find, list, change, fork, export, import and delete sessions"),
        (name = "turns", description = "Send messages, list, cancel and promote turns"),
        (name = "controls", description = "Abort, pause, resume, reset"),
        (name = "events", description = "The event log: pages and SSE"),
        (name = "providers", description = "Configured agent backends"),
        (name = "usage", description = "Tokens and cost per owner and day"),
        (name = "operators", description = "Probes, metrics, the actor table"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme the paths' `security` names.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `[[auth.tokens]]`"))
                    .build(),
            ),
        );
    }
}

/// `doc` as this server serves it: the configured provider names set as the enum of each
/// field at the JSON pointers `provider_fields`; `model_fields` (a provider name or
/// `provider/model`) get the matching pattern; and, when no tokens are configured (every
/// request acts as the implicit owner), no security requirement anywhere.
pub fn served(
    doc: utoipa::openapi::OpenApi,
    state: &AppState,
    provider_fields: &[&str],
    model_fields: &[&str],
) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|e| {
        // utoipa's types serialize infallibly; an error here is a bug, answered as a document
        // that says so rather than a panic.
        log::error!("the OpenAPI document does not serialize: {e}");
        json!({})
    });
    let names: Vec<&String> = state
        .runtime
        .providers()
        .iter()
        .map(|(name, _)| name)
        .collect();
    for pointer in provider_fields {
        if let Some(Value::Object(field)) = doc.pointer_mut(pointer) {
            field.insert("enum".into(), json!(names));
        }
    }
    // The request examples name `echo`; a server without it gets its first provider there.
    if let Some(first) = names.first() {
        for pointer in provider_fields.iter().chain(model_fields) {
            if let Some((schema, field)) = pointer.split_once("/properties/") {
                if let Some(Value::Object(example)) = doc.pointer_mut(&format!("{schema}/example"))
                {
                    example.insert(field.to_string(), json!(first));
                }
            }
        }
    }
    let model_pattern = format!(
        "^({})(/.+)?$",
        names
            .iter()
            .map(|name| regex_escaped(name))
            .collect::<Vec<_>>()
            .join("|")
    );
    for pointer in model_fields {
        if let Some(Value::Object(field)) = doc.pointer_mut(pointer) {
            field.insert("pattern".into(), json!(model_pattern));
        }
    }
    camel_case_links(&mut doc);
    non_null_parameters(&mut doc);
    if !state.auth.enabled() {
        for operation in operations_mut(&mut doc) {
            operation.remove("security");
        }
        if let Some(Value::Object(components)) = doc.get_mut("components") {
            components.remove("securitySchemes");
        }
    }
    doc
}

/// Every operation object of `doc` (`paths.<path>.<method>`).
fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    doc.get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
}

/// `text` as a literal in an ECMA-262 (and Python) regular expression.
fn regex_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// utoipa 5.5 serializes Link objects' fields in snake case (`operation_id`); OpenAPI names
/// them `operationId`, `operationRef`, `requestBody`, and clients ignore the others.
fn camel_case_links(doc: &mut Value) {
    let responses = operations_mut(doc)
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(Value::Object(links)) = response.get_mut("links") else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.into(), value);
                }
            }
        }
    }
}

/// A query, path or header parameter is text on the wire, never JSON `null`; utoipa writes
/// `Option<T>` parameters as `[T, "null"]`, which would invite clients to send `null`.
fn non_null_parameters(doc: &mut Value) {
    let parameters = operations_mut(doc)
        .filter_map(|op| op.get_mut("parameters").and_then(Value::as_array_mut))
        .flat_map(|parameters| parameters.iter_mut());
    for parameter in parameters {
        if let Some(Value::Array(types)) = parameter.pointer_mut("/schema/type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                parameter["schema"]["type"] = only;
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", operation_id = "get_openapi", tag = "operators",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(served(
        ApiDoc::openapi(),
        &state,
        &[
            "/components/schemas/CreateSession/properties/provider",
            "/components/schemas/PatchSession/properties/provider",
        ],
        &[],
    ))
}

/// Registers `/openapi.json` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}
