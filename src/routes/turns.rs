//! Turns: send a message with a busy mode (idempotent by `client_message_id`), list the turns,
//! cancel or promote a queued one.

use crate::error::{ApiError, ErrorCode};
use crate::extract::{parse_id, ApiJson, OwnedSession};
use crate::schema::{BusyModeSchema, ErrorBodySchema, TurnSchema, TurnStatusSchema};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe_actors::record::TurnView;
use troupe_actors::{BusyMode, SendTurn, TurnId, TurnReceipt, TurnStatus};
use utoipa::ToSchema;

/// `POST /sessions/{id}/turns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTurnBody {
    /// The message text (not empty).
    #[schema(min_length = 1)]
    pub content: String,
    /// What to do when the session is busy (default `enqueue`).
    #[schema(value_type = Option<BusyModeSchema>)]
    pub mode: Option<BusyMode>,
    /// Makes sending idempotent per session: the same id answers the original turn.
    /// 1–256 bytes of UTF-8.
    #[schema(min_length = 1, max_length = 256)]
    pub client_message_id: Option<String>,
    /// Provider options for this turn, a JSON object (the echo provider reads `script`).
    #[schema(value_type = Option<Object>)]
    pub options: Option<Value>,
}

/// Where a turn stands: the answer to sending and promoting.
#[derive(Serialize, ToSchema)]
pub struct TurnAccepted {
    /// The turn (the original one for a repeated `client_message_id`).
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: TurnId,
    /// `running` or `queued` (or `completed` for a repeated id whose turn has ended).
    #[schema(value_type = TurnStatusSchema)]
    pub status: TurnStatus,
    /// 0 while running, 1.. in the queue; absent once completed.
    pub position: Option<usize>,
    /// True when the `client_message_id` was seen before and nothing new was accepted.
    pub duplicate: bool,
}

impl From<TurnReceipt> for TurnAccepted {
    fn from(r: TurnReceipt) -> Self {
        TurnAccepted {
            turn_id: r.turn_id,
            status: r.status,
            position: r.position,
            duplicate: r.duplicate,
        }
    }
}

/// `{turns, paused}`.
#[derive(Serialize, ToSchema)]
pub struct TurnListBody {
    /// Every turn of the session, oldest first; open ones with their position.
    #[schema(value_type = Vec<TurnSchema>)]
    pub turns: Vec<TurnView>,
    /// Whether the queue is held.
    pub paused: bool,
}

/// The `{turn_id}` path segment.
fn turn_id(req: &HttpRequest) -> Result<TurnId, ApiError> {
    parse_id(
        req.match_info().get("turn_id").unwrap_or_default(),
        "turn_id",
    )
}

/// Sends a user message.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/turns", operation_id = "send_turn", tag = "turns",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    request_body = SendTurnBody,
    responses(
        (status = 202, description = "Accepted: running or queued", body = TurnAccepted, links(
            ("ListEvents" = (operation_id = "list_events", parameters(("id" = "$request.path.id")))),
            ("ListTurns" = (operation_id = "list_turns", parameters(("id" = "$request.path.id")))),
        )),
        (status = 200, description = "A repeated `client_message_id`: the original turn", body = TurnAccepted),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`session_busy` (mode `reject`), `session_failed`, `session_archived`", body = ErrorBodySchema),
        (status = 413, description = "`payload_too_large`", body = ErrorBodySchema),
        (status = 429, description = "`queue_full`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    session: OwnedSession,
    ApiJson(body): ApiJson<SendTurnBody>,
) -> Result<HttpResponse, ApiError> {
    let turn = SendTurn::parse(
        body.content,
        body.mode.unwrap_or_default(),
        body.client_message_id,
        body.options,
    )?;
    let receipt = session.handle.send(turn).await?;
    log::debug!(
        "session {} turn {}: {:?} over REST",
        session.handle.id(),
        receipt.turn_id,
        receipt.status
    );
    let duplicate = receipt.duplicate;
    let answer = TurnAccepted::from(receipt);
    Ok(if duplicate {
        HttpResponse::Ok().json(answer)
    } else {
        HttpResponse::Accepted().json(answer)
    })
}

/// Every turn of the session, and whether the queue is held.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/turns", operation_id = "list_turns", tag = "turns",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The turns", body = TurnListBody),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn list(session: OwnedSession) -> Result<HttpResponse, ApiError> {
    let list = session.handle.turns().await?;
    Ok(HttpResponse::Ok().json(TurnListBody {
        turns: list.turns,
        paused: list.paused,
    }))
}

/// Cancels a queued turn; it ends `cancelled`.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{id}/turns/{turn_id}", operation_id = "cancel_turn", tag = "turns",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("turn_id" = uuid::Uuid, Path, description = "Turn id"),
    ),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`, `turn_not_found` (also a turn that has ended)", body = ErrorBodySchema),
        (status = 409, description = "`turn_running`: abort it instead", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(session: OwnedSession, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let turn = turn_id(&req)?;
    session.handle.cancel_turn(turn).await?;
    log::info!("session {} turn {turn}: cancelled", session.handle.id());
    Ok(HttpResponse::NoContent().finish())
}

/// Moves a queued turn to the front of the queue.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/turns/{turn_id}/promote", operation_id = "promote_turn", tag = "turns",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("turn_id" = uuid::Uuid, Path, description = "Turn id"),
    ),
    responses(
        (status = 200, description = "Now first in the queue", body = TurnAccepted),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`, `turn_not_found`", body = ErrorBodySchema),
        (status = 409, description = "`turn_running`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn promote(session: OwnedSession, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let turn = turn_id(&req)?;
    session.handle.promote_turn(turn).await?;
    let list = session.handle.turns().await?;
    // The turn may have started (the queue was free) between the two calls.
    let view = list
        .turns
        .into_iter()
        .find(|t| t.turn_id == turn)
        .ok_or_else(|| ApiError::new(ErrorCode::TurnNotFound, "turn not found"))?;
    Ok(HttpResponse::Ok().json(TurnAccepted {
        turn_id: turn,
        status: view.status,
        position: view.position,
        duplicate: false,
    }))
}

/// Registers the turn routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sessions/{id}/turns")
            .route(web::post().to(send))
            .route(web::get().to(list)),
    )
    .service(web::resource("/sessions/{id}/turns/{turn_id}").route(web::delete().to(cancel)))
    .service(
        web::resource("/sessions/{id}/turns/{turn_id}/promote").route(web::post().to(promote)),
    );
}
