//! The configured providers: `GET /api/v1/providers`.

use crate::auth::Caller;
use crate::schema::{CapabilitiesSchema, ErrorBodySchema};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use troupe_actors::Capabilities;
use utoipa::ToSchema;

/// One configured provider.
#[derive(Serialize, ToSchema)]
pub struct ProviderInfo {
    /// The name sessions use (`provider` of `POST /sessions`).
    pub name: String,
    /// Its kind (`echo`, `claude-cli`, `openai-http`, …).
    pub kind: String,
    /// Whether it can be used now (its executable exists, its key is set).
    pub available: bool,
    /// Its default model.
    pub model: Option<String>,
    /// What it can do.
    #[schema(value_type = CapabilitiesSchema)]
    pub capabilities: Capabilities,
}

/// `{providers: [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ProviderList {
    /// By name.
    pub providers: Vec<ProviderInfo>,
}

/// The configured providers, by name.
#[utoipa::path(
    get, path = "/api/v1/providers", operation_id = "list_providers", tag = "providers",
    responses(
        (status = 200, description = "The providers", body = ProviderList),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn list(state: web::Data<AppState>, _caller: Caller) -> HttpResponse {
    let providers = state
        .runtime
        .providers()
        .iter()
        .map(|(name, provider)| ProviderInfo {
            name: name.clone(),
            kind: provider.kind().to_string(),
            available: provider.available(),
            model: provider.model().map(str::to_string),
            capabilities: provider.capabilities(),
        })
        .collect();
    HttpResponse::Ok().json(ProviderList { providers })
}

/// Registers `/providers` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/providers").route(web::get().to(list)));
}
