//! Session controls: abort the running turn; pause, resume or reset the queue.

use crate::error::ApiError;
use crate::extract::OwnedSession;
use crate::routes::sessions::SessionBody;
use crate::schema::ErrorBodySchema;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use troupe_actors::TurnId;
use utoipa::ToSchema;

/// The answer to `POST /sessions/{id}/abort`.
#[derive(Serialize, ToSchema)]
pub struct Aborted {
    /// Whether a turn was running and is now aborted (false: nothing ran).
    pub aborted: bool,
    /// The aborted turn; null when nothing ran.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub turn_id: Option<TurnId>,
}

/// Aborts the running turn (it ends `aborted`); the queue goes on.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/abort", operation_id = "abort_session", tag = "controls",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "Aborted, or nothing ran", body = Aborted),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn abort(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let result = session.handle.abort().await?;
    if let Some(turn) = result.turn_id {
        log::info!("session {} turn {turn}: aborted", session.handle.id());
    }
    Ok(HttpResponse::Ok().json(Aborted {
        aborted: result.aborted,
        turn_id: result.turn_id,
    }))
}

/// Holds the queue; a running turn may finish.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/pause", operation_id = "pause_session", tag = "controls",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session, `paused`", body = SessionBody),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`session_archived`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn pause(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let session = session.handle.pause().await?;
    Ok(HttpResponse::Ok().json(SessionBody { session }))
}

/// Releases the queue and clears a failure.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/resume", operation_id = "resume_session", tag = "controls",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`session_archived`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn resume(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let session = session.handle.resume().await?;
    Ok(HttpResponse::Ok().json(SessionBody { session }))
}

/// Clears a failure, the restart count and the provider session id; the queue runs again.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/reset", operation_id = "reset_session", tag = "controls",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`session_archived`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn reset(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let session = session.handle.reset().await?;
    Ok(HttpResponse::Ok().json(SessionBody { session }))
}

/// Registers the control routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/sessions/{id}/abort").route(web::post().to(abort)))
        .service(web::resource("/sessions/{id}/pause").route(web::post().to(pause)))
        .service(web::resource("/sessions/{id}/resume").route(web::post().to(resume)))
        .service(web::resource("/sessions/{id}/reset").route(web::post().to(reset)));
}
