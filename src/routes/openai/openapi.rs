//! `GET /v1/openapi.json`: the OpenAPI document of the OpenAI-compatible routes, generated like
//! the REST one (`/api/v1/openapi.json`) from the handlers' annotations and served with the
//! configured providers filled in.

use super::{chat, models, responses};
use crate::routes::openapi::{served, BearerAuth};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

/// The document, before the configuration is applied.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe: OpenAI-compatible endpoints",
        description = "The subset of OpenAI's Chat Completions, Responses and Models APIs that Troupe implements, answered by configured providers with durable sessions. Fields OpenAI defines and Troupe ignores are accepted. Errors have OpenAI's shape `{\"error\": {\"message\", \"type\", \"code\", \"param\"}}`; see docs/PROTOCOL.md, \"OpenAI-compatible endpoints\"."
    ),
    paths(
        chat::create,
        responses::create, responses::retrieve, responses::cancel,
        models::list, models::retrieve,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    tags((name = "openai", description = "OpenAI-compatible endpoints")),
)]
pub struct OpenAiDoc;

/// The JSON pointers of the request fields that name a model.
const MODEL_FIELDS: [&str; 2] = [
    "/components/schemas/ChatCompletionRequest/properties/model",
    "/components/schemas/CreateResponseRequest/properties/model",
];

/// This document.
#[utoipa::path(
    get, path = "/v1/openapi.json", operation_id = "get_openai_openapi", tag = "openai",
    responses((status = 200, description = "The OpenAPI 3.1 document of the `/v1` routes", content_type = "application/json", body = Object))
)]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(served(OpenAiDoc::openapi(), &state, &[], &MODEL_FIELDS))
}

/// Registers `/openapi.json` in the `/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}
