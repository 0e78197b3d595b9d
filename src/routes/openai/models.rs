//! `GET /v1/models` and `GET /v1/models/{id}`: every configured provider by name, plus
//! `provider/model` when the provider has a default model; and how a request's `model` names a
//! provider.

use super::errors::OpenAiError;
use super::schema::{ModelListSchema, ModelSchema, OpenAiErrorBodySchema};
use super::OpenAiCaller;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use std::sync::OnceLock;
use troupe_actors::ProviderSet;

/// What a request's `model` names: a configured provider and, after the first `/`, a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelChoice {
    /// The configured provider that runs the turns.
    pub provider: String,
    /// The provider's model; `None` keeps the provider's (or the session's) default.
    pub model: Option<String>,
}

/// Resolves `model` (`echo`, `openrouter/anthropic/claude-sonnet-4`) against the providers.
pub fn resolve_model(providers: &ProviderSet, model: &str) -> Result<ModelChoice, OpenAiError> {
    let (provider, rest) = match model.split_once('/') {
        Some((provider, rest)) => (provider, Some(rest)),
        None => (model, None),
    };
    if providers.get(provider).is_none() || rest.is_some_and(str::is_empty) {
        return Err(OpenAiError::model_not_found(model));
    }
    Ok(ModelChoice {
        provider: provider.to_string(),
        model: rest.map(str::to_string),
    })
}

/// The `created` of every listed model: when this process first listed its models. Providers
/// have no creation date of their own, and a value that never moves within a run keeps
/// clients' model caches stable.
fn listed_at() -> i64 {
    static LISTED_AT: OnceLock<i64> = OnceLock::new();
    *LISTED_AT.get_or_init(|| chrono::Utc::now().timestamp())
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": listed_at(), "owned_by": "troupe"})
}

/// The listed model ids, in provider-name order.
fn model_ids(providers: &ProviderSet) -> Vec<String> {
    let mut ids = Vec::new();
    for (name, provider) in providers.iter() {
        ids.push(name.clone());
        if let Some(model) = provider.model() {
            ids.push(format!("{name}/{model}"));
        }
    }
    ids
}

/// Every configured provider by name, plus `provider/model` for a provider's default model.
#[utoipa::path(
    get, path = "/v1/models", operation_id = "list_models", tag = "openai",
    responses(
        (status = 200, description = "The models", body = ModelListSchema),
        (status = 401, description = "`invalid_api_key`", body = OpenAiErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(_caller: OpenAiCaller, state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<Value> = model_ids(state.runtime.providers())
        .iter()
        .map(|id| model_object(id))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// Any id a request may use as `model` is found: a provider name, or `provider/anything`.
#[utoipa::path(
    get, path = "/v1/models/{id}", operation_id = "get_model", tag = "openai",
    params(("id" = String, Path, description = "A provider name, or `provider/model`")),
    responses(
        (status = 200, description = "The model", body = ModelSchema),
        (status = 401, description = "`invalid_api_key`", body = OpenAiErrorBodySchema),
        (status = 404, description = "`model_not_found`", body = OpenAiErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub(super) async fn retrieve(
    _caller: OpenAiCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    resolve_model(state.runtime.providers(), &id)?;
    Ok(HttpResponse::Ok().json(model_object(&id)))
}

/// Registers the model routes in the `/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/models").route(web::get().to(list)))
        .service(web::resource("/models/{id:.+}").route(web::get().to(retrieve)));
}
