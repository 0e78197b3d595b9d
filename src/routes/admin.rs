//! The operators' actor table: `GET /api/v1/admin/actors` (admin tokens only).

use crate::auth::Admin;
use crate::error::ApiError;
use crate::schema::{ActorSnapshotSchema, ErrorBodySchema, RegistryFiguresSchema};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use troupe_actors::runtime::RegistryFigures;
use troupe_actors::session::ActorSnapshot;
use utoipa::ToSchema;

/// `{actors, registry}`.
#[derive(Serialize, ToSchema)]
pub struct ActorTable {
    /// A row per live session actor, by session id.
    #[schema(value_type = Vec<ActorSnapshotSchema>)]
    pub actors: Vec<ActorSnapshot>,
    /// Registry figures.
    #[schema(value_type = RegistryFiguresSchema)]
    pub registry: RegistryFigures,
}

/// Every live session actor, and the registry's figures.
#[utoipa::path(
    get, path = "/api/v1/admin/actors", operation_id = "list_actors", tag = "operators",
    responses(
        (status = 200, description = "The actor table", body = ActorTable),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 403, description = "`forbidden`: not an admin token", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn actors(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let actors = state.runtime.actors().await;
    let registry = state.runtime.figures().await?;
    Ok(HttpResponse::Ok().json(ActorTable { actors, registry }))
}

/// Registers `/admin/actors` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/actors").route(web::get().to(actors)));
}
