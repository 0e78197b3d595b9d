//! `POST /api/v1/agui`: the AG-UI protocol (the event protocol CopilotKit frontends speak).
//! The request is AG-UI's `RunAgentInput`; the answer is the run's AG-UI events over SSE,
//! derived from the session's durable log ([`frames`]) like the OpenAI streams.
//!
//! `threadId` names the session: the id of one of the caller's sessions, else a session key
//! in the caller's scope (created on first use, on `forwardedProps.model` or `agui.model`).
//! The last user message of `messages` is the turn (the session keeps the history), sent with
//! `client_message_id` `agui:<runId>`: posting the same `runId` again starts no new turn but
//! replays that run from the log, and `Last-Event-ID` skips what the client saw.

mod frames;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::openai::turn::{sse_body, TurnFollower};
use crate::schema::ErrorBodySchema;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use troupe_actors::{BusyMode, NewSession, SendTurn, SessionHandle, SessionId};
use utoipa::ToSchema;

pub use frames::ID_STRIDE;

/// The prefix of the `client_message_id` of an AG-UI run's turn.
const RUN_PREFIX: &str = "agui:";

/// AG-UI's `RunAgentInput`. Fields Troupe does not use (`state`, `tools`, `context`,
/// `protocolVersion`, …) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAgentInput {
    /// The session: one of the caller's session ids, or a session key.
    #[schema(min_length = 1, max_length = 256)]
    pub thread_id: String,
    /// The run: the same id again replays that run instead of starting a new turn.
    #[schema(min_length = 1, max_length = 250)]
    pub run_id: String,
    /// The conversation; its last user message is the turn.
    #[serde(default)]
    pub messages: Vec<AguiMessage>,
    /// `{"model": "<provider>[/<model>]"}` picks the provider of a new session.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub forwarded_props: Value,
}

/// A message of `RunAgentInput.messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AguiMessage {
    /// `user`, `assistant`, `system`, `developer`, `tool`, …
    pub role: String,
    /// A string, or content parts (`{"type": "text", "text"}`; others are ignored).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub content: Value,
}

impl AguiMessage {
    fn text(&self) -> String {
        match &self.content {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// Runs (or replays) an AG-UI run in a session and streams its AG-UI events.
#[utoipa::path(
    post, path = "/api/v1/agui", operation_id = "agui_run", tag = "turns",
    request_body = RunAgentInput,
    params(("Last-Event-ID" = Option<u64>, Header, description = "Skip the events numbered up to this (resuming a replayed run)")),
    responses(
        (status = 200, description = "AG-UI events over SSE (`id:` = seq × 8 + i, `data:` = the event)", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_json`, `invalid_request` (no user message to run; a bad `Last-Event-ID`), `unknown_provider`, `invalid_session_key`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 409, description = "`session_failed`, `session_archived`", body = ErrorBodySchema),
        (status = 429, description = "`queue_full`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn run(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    ApiJson(input): ApiJson<RunAgentInput>,
) -> Result<HttpResponse, ApiError> {
    let after = match req.headers().get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::invalid_request("`Last-Event-ID` must be an integer")
                    .with("field", "Last-Event-ID")
            })?,
    };
    if input.run_id.is_empty() || input.run_id.len() > 250 {
        return Err(ApiError::invalid_request("`runId` must be 1–250 bytes").with("field", "runId"));
    }
    let handle = thread(&state, &caller, &input).await?;
    let client_id = format!("{RUN_PREFIX}{}", input.run_id);
    let runtime = &state.runtime;
    let known = runtime
        .store()
        .turn_for_client_id(handle.id(), &client_id)
        .await
        .map_err(troupe_actors::RuntimeError::from)?;
    let (follower, turn) = match known {
        Some(turn) => (TurnFollower::replay(runtime, handle, turn).await?, turn),
        None => {
            let content = input
                .messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(AguiMessage::text)
                .unwrap_or_default();
            if content.is_empty() {
                return Err(ApiError::invalid_request(
                    "`messages` must hold a user message with text to run",
                )
                .with("field", "messages"));
            }
            let send = SendTurn::parse(content, BusyMode::Enqueue, Some(client_id), None)?;
            let (follower, receipt) = TurnFollower::send(runtime, handle, send).await?;
            (follower, receipt.turn_id)
        }
    };
    let frames = frames::AguiFrames::new(input.thread_id, input.run_id, turn, after);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-cache"))
        .content_type("text/event-stream")
        .streaming(sse_body(follower, frames, None)))
}

/// The session `threadId` names: one of the caller's session ids, else a key in their scope.
async fn thread(
    state: &AppState,
    caller: &Caller,
    input: &RunAgentInput,
) -> Result<SessionHandle, ApiError> {
    if let Ok(id) = input.thread_id.parse::<SessionId>() {
        if let Ok(handle) = state.runtime.session_of(&caller.owner, id).await {
            return Ok(handle);
        }
    }
    let named = input.forwarded_props["model"]
        .as_str()
        .unwrap_or(&state.config.agui.model);
    let (provider, model) = match named.split_once('/') {
        Some((provider, model)) => (provider.to_string(), Some(model.to_string())),
        None => (named.to_string(), None),
    };
    let (handle, _) = state
        .runtime
        .get_or_create(NewSession {
            owner: caller.owner.clone(),
            key: Some(input.thread_id.clone()),
            provider,
            model,
            ..NewSession::default()
        })
        .await?;
    Ok(handle)
}

/// Registers `/agui` (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/agui").route(web::post().to(run)));
}
