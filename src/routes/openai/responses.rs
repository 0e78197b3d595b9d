//! The Responses API: `POST /v1/responses` (one turn; streamed, waited for, or run in the
//! background), `GET /v1/responses/{id}` (the object, or its event stream replayed from the
//! durable log with `?stream=true&starting_after=N`), `POST /v1/responses/{id}/cancel`.

use super::errors::OpenAiError;
use super::models::resolve_model;
use super::response_events::{parse_response_id, ResponseMeta, ResponseProjection};
use super::schema::{
    ChatRoleSchema, InputItemTypeSchema, OpenAiErrorBodySchema, ResponseEventFrameSchema,
    ResponseSchema, TextPartTypeSchema, TurnErrors, TurnHeaders,
};
use super::sessions::{self, Conversation, RoleText, Target, SESSION_ID_HEADER};
use super::turn::{read_turn, sse_body, sse_frame, stop_turn, SseFrames, StopOnDrop, TurnFollower};
use super::{OpenAiCaller, OpenAiJson};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use troupe_actors::{Event, RuntimeError, SessionHandle, TurnId};
use utoipa::{IntoParams, ToSchema};

/// How long a cancel waits for the stopped turn's terminal event before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// The request body. Fields OpenAI defines and Troupe does not use (`tools`, `temperature`,
/// `max_output_tokens`, `store`, …) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = CreateResponseRequest,
    example = json!({"model": "echo", "instructions": "be brief", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    ]})
)]
pub(super) struct CreateResponse {
    /// A provider name or `provider/model` (see `GET /v1/models`).
    #[schema(min_length = 1)]
    model: String,
    /// A string (one user message) or message items.
    input: ResponseInput,
    /// The system prompt.
    #[serde(default)]
    instructions: Option<String>,
    /// Continue that response's session.
    #[serde(default)]
    previous_response_id: Option<String>,
    /// Answer as server-sent events.
    #[serde(default)]
    stream: Option<bool>,
    /// Answer at once and run detached from the connection.
    #[serde(default)]
    background: Option<bool>,
    /// Repeated in the Response object: a JSON object.
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

/// A string (one user message, not empty) or message items ending with a user message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

/// A message item: `{"type": "message"?, "role", "content"}`.
#[derive(Debug, Deserialize, ToSchema)]
struct InputItem {
    /// Only messages are supported.
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<InputItemTypeSchema>)]
    kind: Option<String>,
    /// Who speaks.
    #[serde(default)]
    #[schema(value_type = ChatRoleSchema, required = true)]
    role: Option<String>,
    /// Its text, or text parts; none is empty text.
    #[serde(default)]
    content: Option<ItemContent>,
}

/// An item's content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum ItemContent {
    Text(String),
    Parts(Vec<ItemPart>),
}

/// A text part.
#[derive(Debug, Deserialize, ToSchema)]
struct ItemPart {
    /// Only text parts are supported.
    #[serde(rename = "type")]
    #[schema(value_type = TextPartTypeSchema)]
    kind: String,
    /// The text.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    text: Option<String>,
}

impl InputItem {
    fn into_role_text(self) -> Result<RoleText, OpenAiError> {
        let unsupported = |what: String| OpenAiError::invalid_request(what).param("input");
        if let Some(kind) = self.kind.filter(|k| k != "message") {
            return Err(unsupported(format!(
                "input items of type `{kind}` are not supported; only messages"
            )));
        }
        let role = self
            .role
            .ok_or_else(|| unsupported("every input message needs a role".into()))?;
        let text = match self.content {
            None => String::new(),
            Some(ItemContent::Text(text)) => text,
            Some(ItemContent::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("input_text" | "output_text" | "text", Some(piece)) => {
                            text.push_str(&piece)
                        }
                        (kind, _) => {
                            return Err(unsupported(format!(
                                "content parts of type `{kind}` are not supported; only text"
                            )))
                        }
                    }
                }
                text
            }
        };
        Ok(RoleText { role, text })
    }
}

/// The session a new response runs in: the previous response's, the session key's, or a new
/// hidden one-off session.
async fn target_of(
    state: &AppState,
    req: &HttpRequest,
    owner: &str,
    body: &CreateResponse,
    choice: &super::models::ModelChoice,
) -> Result<Target, OpenAiError> {
    if let Some(previous) = &body.previous_response_id {
        let not_found = || OpenAiError::response_not_found(previous).param("previous_response_id");
        let (session, _) = parse_response_id(previous).ok_or_else(not_found)?;
        return sessions::continued(state, owner, session, choice)
            .await
            .map_err(|e| {
                if e.code == "session_not_found" {
                    not_found()
                } else {
                    e
                }
            });
    }
    let key = sessions::header_key(req)?;
    sessions::keyed_or_one_off(state, owner, choice, key).await
}

/// One turn: the Response object (waited for, or at once with `background: true`), or its
/// events as server-sent events with `stream: true`.
#[utoipa::path(
    post, path = "/v1/responses", operation_id = "create_response", tag = "openai",
    params(
        TurnHeaders,
    ),
    request_body = CreateResponse,
    responses(
        (status = 200, description = "The response, or its event stream", headers(("X-Session-Id" = String, description = "The session that answered")), content(
            (ResponseSchema = "application/json"),
            (ResponseEventFrameSchema = "text/event-stream"),
        ), links(
            ("GetResponse" = (operation_id = "get_response", parameters(("id" = "$response.body#/id")))),
            ("CancelResponse" = (operation_id = "cancel_response", parameters(("id" = "$response.body#/id")))),
        )),
        TurnErrors,
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    caller: OpenAiCaller,
    state: web::Data<AppState>,
    req: HttpRequest,
    OpenAiJson(mut body): OpenAiJson<CreateResponse>,
) -> Result<HttpResponse, OpenAiError> {
    let owner = caller.0.owner;
    let choice = resolve_model(state.runtime.providers(), &body.model)?;
    let input = std::mem::replace(&mut body.input, ResponseInput::Items(Vec::new()));
    let messages = match input {
        ResponseInput::Text(text) => vec![RoleText {
            role: "user".into(),
            text,
        }],
        ResponseInput::Items(items) => items
            .into_iter()
            .map(InputItem::into_role_text)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let conversation = Conversation::new(messages, body.instructions.clone(), "input")?;
    let target = target_of(&state, &req, &owner, &body, &choice).await?;
    let background = body.background.unwrap_or(false);
    let meta = ResponseMeta {
        model: body.model.clone(),
        instructions: body.instructions.clone(),
        previous_response_id: body.previous_response_id.clone(),
        metadata: body
            .metadata
            .clone()
            .map(Value::Object)
            .unwrap_or_else(|| json!({})),
        background,
    };
    let mut options = Map::new();
    options.insert("openai".into(), meta.to_options());
    let turn = conversation.into_turn(&target, options, sessions::idempotency_key(&req)?)?;
    let session_id = target.handle.id();
    let (mut follower, receipt) =
        TurnFollower::send(&state.runtime, target.handle.clone(), turn).await?;
    let mut projection = ResponseProjection::new(session_id, receipt.turn_id, meta);
    log::debug!(
        "session {session_id} turn {}: response {} for owner {owner}{}",
        receipt.turn_id,
        projection.id(),
        if background { " (background)" } else { "" }
    );
    let session_header = (SESSION_ID_HEADER, session_id.to_string());
    if body.stream.unwrap_or(false) {
        // A background response runs on whatever happens to the connection.
        let armed = !background && sessions::abort_on_disconnect(&req);
        let guard = StopOnDrop::new(target.handle, receipt.turn_id, armed);
        let frames = ResponseFrames {
            projection,
            starting_after: None,
        };
        return Ok(HttpResponse::Ok()
            .insert_header(session_header)
            .insert_header(("Cache-Control", "no-cache"))
            .content_type("text/event-stream")
            .streaming(sse_body(follower, frames, Some(guard))));
    }
    if background {
        drop(follower);
        let log = read_turn(&target.handle, receipt.turn_id).await?;
        for event in &log.events {
            projection.apply(event);
        }
        return Ok(HttpResponse::Ok()
            .insert_header(session_header)
            .json(projection.response()));
    }
    let mut guard = StopOnDrop::new(
        target.handle,
        receipt.turn_id,
        sessions::abort_on_disconnect(&req),
    );
    while let Some(event) = follower.next().await? {
        projection.apply(&event);
    }
    guard.disarm();
    let response = projection.response();
    if projection.status() == "failed" {
        let error = &response["error"];
        return Err(OpenAiError::new(
            actix_web::http::StatusCode::BAD_GATEWAY,
            error["code"].as_str().unwrap_or("turn_failed"),
            format!(
                "response {} failed: {}",
                projection.id(),
                error["message"].as_str().unwrap_or("the provider failed")
            ),
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header(session_header)
        .json(response))
}

/// The caller's response `id`: its session handle and a projection with its request's meta.
async fn find(
    state: &AppState,
    owner: &str,
    id: &str,
) -> Result<(SessionHandle, ResponseProjection), OpenAiError> {
    let not_found = || OpenAiError::response_not_found(id);
    let (session, turn) = parse_response_id(id).ok_or_else(not_found)?;
    let handle = state
        .runtime
        .session_of(owner, session)
        .await
        .map_err(|_| not_found())?;
    let store = state.runtime.store();
    let record = store
        .get_session(session)
        .await
        .map_err(RuntimeError::from)?
        .ok_or_else(not_found)?;
    let turn_record = store
        .get_turn(session, turn)
        .await
        .map_err(RuntimeError::from)?
        .ok_or_else(not_found)?;
    let default_model = match &record.model {
        Some(model) => format!("{}/{model}", record.provider),
        None => record.provider.clone(),
    };
    let meta = ResponseMeta::from_options(&turn_record.options, default_model);
    Ok((handle, ResponseProjection::new(session, turn, meta)))
}

/// The response as the durable log has it now.
async fn snapshot(
    handle: &SessionHandle,
    turn: TurnId,
    projection: &mut ResponseProjection,
) -> Result<Value, OpenAiError> {
    for event in read_turn(handle, turn).await?.events {
        projection.apply(&event);
    }
    Ok(projection.response())
}

/// How `GET /v1/responses/{id}` answers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RetrieveQuery {
    /// Answer as the event stream, replayed from the durable log, then live.
    #[serde(default)]
    stream: Option<bool>,
    /// With `stream=true`: only events whose `sequence_number` is greater (an `int64` from 0).
    #[serde(default)]
    #[param(minimum = 0)]
    starting_after: Option<i64>,
}

/// The response as its durable log has it now, or its events replayed then followed live.
#[utoipa::path(
    get, path = "/v1/responses/{id}", operation_id = "get_response", tag = "openai",
    params(
        ("id" = String, Path, description = "A response id (`resp_…`)"),
        RetrieveQuery,
    ),
    responses(
        (status = 200, description = "The response, or its event stream", headers(("X-Session-Id" = String, description = "The session that answered")), content(
            (ResponseSchema = "application/json"),
            (ResponseEventFrameSchema = "text/event-stream"),
        )),
        (status = 400, description = "`invalid_request`: a malformed query", body = OpenAiErrorBodySchema),
        (status = 401, description = "`invalid_api_key`", body = OpenAiErrorBodySchema),
        (status = 404, description = "`response_not_found` (also another owner's)", body = OpenAiErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub(super) async fn retrieve(
    caller: OpenAiCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<RetrieveQuery>,
) -> Result<HttpResponse, OpenAiError> {
    let starting_after = query
        .starting_after
        .map(u64::try_from)
        .transpose()
        .map_err(|_| {
            OpenAiError::invalid_request("`starting_after` must be a sequence number from 0")
                .param("starting_after")
        })?;
    let (handle, mut projection) = find(&state, &caller.0.owner, &id).await?;
    let (session, turn) =
        parse_response_id(&id).ok_or_else(|| OpenAiError::response_not_found(&id))?;
    let session_header = (SESSION_ID_HEADER, session.to_string());
    if !query.stream.unwrap_or(false) {
        let response = snapshot(&handle, turn, &mut projection).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(session_header)
            .json(response));
    }
    let follower = TurnFollower::replay(&state.runtime, handle, turn)
        .await
        .map_err(|e| match e {
            RuntimeError::TurnNotFound => OpenAiError::response_not_found(&id),
            other => other.into(),
        })?;
    let frames = ResponseFrames {
        projection,
        starting_after,
    };
    Ok(HttpResponse::Ok()
        .insert_header(session_header)
        .insert_header(("Cache-Control", "no-cache"))
        .content_type("text/event-stream")
        .streaming(sse_body(follower, frames, None)))
}

/// Stops the response's turn (queued or running) and answers the response once it has ended.
#[utoipa::path(
    post, path = "/v1/responses/{id}/cancel", operation_id = "cancel_response", tag = "openai",
    params(("id" = String, Path, description = "A response id (`resp_…`)")),
    responses(
        (status = 200, description = "The response after the cancel", headers(("X-Session-Id" = String, description = "The session that answered")), body = ResponseSchema),
        (status = 401, description = "`invalid_api_key`", body = OpenAiErrorBodySchema),
        (status = 404, description = "`response_not_found`", body = OpenAiErrorBodySchema),
        (status = 503, description = "`store_unavailable`", body = OpenAiErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel(
    caller: OpenAiCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    let (handle, mut projection) = find(&state, &caller.0.owner, &id).await?;
    let (session, turn) =
        parse_response_id(&id).ok_or_else(|| OpenAiError::response_not_found(&id))?;
    stop_turn(&handle, turn).await?;
    log::info!("session {session} turn {turn}: response {id} cancelled");
    let mut follower = TurnFollower::replay(&state.runtime, handle, turn).await?;
    let waited = tokio::time::timeout(CANCEL_WAIT, async {
        while let Some(event) = follower.next().await? {
            projection.apply(&event);
        }
        Ok::<_, RuntimeError>(())
    })
    .await;
    if let Ok(result) = waited {
        result?;
    }
    Ok(HttpResponse::Ok()
        .insert_header((SESSION_ID_HEADER, session.to_string()))
        .json(projection.response()))
}

/// The Responses event stream of one turn, from `starting_after` on.
struct ResponseFrames {
    projection: ResponseProjection,
    /// Events numbered up to this were seen by the client already.
    starting_after: Option<u64>,
}

impl SseFrames for ResponseFrames {
    fn event(&mut self, event: &Event) -> Vec<Bytes> {
        self.projection
            .apply(event)
            .into_iter()
            .filter(|e| {
                let number = e["sequence_number"].as_u64().unwrap_or(0);
                self.starting_after.is_none_or(|after| number > after)
            })
            .map(|e| {
                let kind = e["type"].as_str().unwrap_or("response.unknown").to_string();
                sse_frame(Some(&kind), &e)
            })
            .collect()
    }

    fn failure(&mut self, error: RuntimeError) -> Vec<Bytes> {
        let error = OpenAiError::from(error);
        let event = json!({
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "sequence_number": null,
        });
        vec![sse_frame(Some("error"), &event)]
    }

    fn end(&mut self) -> Vec<Bytes> {
        if self.projection.is_terminal() {
            return Vec::new();
        }
        self.failure(RuntimeError::Internal(
            "the turn's events ended without turn.completed".into(),
        ))
    }
}

/// Registers the routes in the `/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/responses").route(web::post().to(create)))
        .service(web::resource("/responses/{id}").route(web::get().to(retrieve)))
        .service(web::resource("/responses/{id}/cancel").route(web::post().to(cancel)));
}
