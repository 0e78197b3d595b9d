//! `POST /v1/chat/completions`: one turn in the request's session, answered as one
//! `chat.completion` or streamed as `chat.completion.chunk`s ending `data: [DONE]`.

use super::errors::OpenAiError;
use super::models::resolve_model;
use super::schema::{
    ChatChunkFrameSchema, ChatCompletionSchema, ChatRoleSchema, TextPartTypeSchema, TurnErrors,
    TurnHeaders,
};
use super::sessions::{self, Conversation, RoleText, SESSION_ID_HEADER};
use super::turn::{sse_body, sse_frame, token_counts, SseFrames, StopOnDrop, TurnFollower};
use super::{OpenAiCaller, OpenAiJson};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{ErrorInfo, Event, EventBody, Outcome, RuntimeError};
use utoipa::ToSchema;

/// How long a streamed answer holds its headers waiting for the first text or the turn's end,
/// so a turn that fails at once (bad provider key, prompt too long) answers with a real error
/// status; after it the stream starts and failures arrive as an in-stream error object.
const HEADER_HOLD: Duration = Duration::from_secs(5);

/// The request body. Fields OpenAI defines and Troupe does not use (`temperature`,
/// `max_tokens`, `tools`, …) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = ChatCompletionRequest,
    example = json!({"model": "echo", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"}
    ]})
)]
pub(super) struct ChatRequest {
    /// A provider name or `provider/model` (see `GET /v1/models`).
    #[schema(min_length = 1)]
    model: String,
    /// The conversation; it must end with a user message whose text is not empty.
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    /// Answer as server-sent chunks.
    #[serde(default)]
    stream: Option<bool>,
    /// `include_usage` adds a usage chunk before `[DONE]`.
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Keys the session `user:<user>` when no session key header is given (so at most 251
    /// bytes, no control characters); empty means none.
    #[serde(default)]
    #[schema(max_length = 251, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    user: Option<String>,
    /// Only 1 is supported: a turn has one answer.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
}

/// Streaming options.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChatStreamOptions)]
struct StreamOptions {
    /// Adds a usage chunk before `[DONE]`.
    #[serde(default)]
    include_usage: Option<bool>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
struct ChatMessage {
    /// Who speaks.
    #[schema(value_type = ChatRoleSchema)]
    role: String,
    /// Its text, or text parts; none is empty text.
    #[serde(default)]
    content: Option<MessageContent>,
}

/// A message's content: a string, or parts of which only text ones are supported.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A text part.
#[derive(Debug, Deserialize, ToSchema)]
struct ContentPart {
    /// Only text parts are supported.
    #[serde(rename = "type")]
    #[schema(value_type = TextPartTypeSchema)]
    kind: String,
    /// The text.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    text: Option<String>,
}

impl ChatMessage {
    fn into_role_text(self) -> Result<RoleText, OpenAiError> {
        let text = match self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text" | "input_text" | "output_text", Some(piece)) => {
                            text.push_str(&piece)
                        }
                        (kind, _) => {
                            return Err(OpenAiError::invalid_request(format!(
                                "content parts of type `{kind}` are not supported; only text"
                            ))
                            .param("messages"))
                        }
                    }
                }
                text
            }
        };
        Ok(RoleText {
            role: self.role,
            text,
        })
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What a streamed or whole answer needs to know of its request.
#[derive(Clone)]
struct Reply {
    /// `chatcmpl-<turn>`: the same in every chunk.
    id: String,
    /// Unix seconds of the request: the same in every chunk.
    created: i64,
    /// The model as the request named it.
    model: String,
}

/// One turn in the request's session: a whole `chat.completion`, or `chat.completion.chunk`s
/// as server-sent events ending `data: [DONE]`.
#[utoipa::path(
    post, path = "/v1/chat/completions", operation_id = "create_chat_completion", tag = "openai",
    params(
        TurnHeaders,
    ),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer, whole or streamed", headers(("X-Session-Id" = String, description = "The session that answered")), content(
            (ChatCompletionSchema = "application/json"),
            (ChatChunkFrameSchema = "text/event-stream"),
        )),
        TurnErrors,
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    caller: OpenAiCaller,
    state: web::Data<AppState>,
    req: HttpRequest,
    OpenAiJson(body): OpenAiJson<ChatRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let owner = caller.0.owner;
    if body.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid_request("only n = 1 is supported").param("n"));
    }
    let choice = resolve_model(state.runtime.providers(), &body.model)?;
    let messages = body
        .messages
        .into_iter()
        .map(ChatMessage::into_role_text)
        .collect::<Result<Vec<_>, _>>()?;
    let conversation = Conversation::new(messages, None, "messages")?;
    let key = match sessions::header_key(&req)? {
        Some(key) => {
            sessions::user_key(body.user)?;
            Some(key)
        }
        None => sessions::user_key(body.user)?,
    };
    let target = sessions::keyed_or_one_off(&state, &owner, &choice, key).await?;
    let client_message_id = sessions::idempotency_key(&req)?;
    let turn = conversation.into_turn(&target, Map::new(), client_message_id)?;
    let session_id = target.handle.id();
    let (mut follower, receipt) =
        TurnFollower::send(&state.runtime, target.handle.clone(), turn).await?;
    let mut guard = StopOnDrop::new(
        target.handle,
        receipt.turn_id,
        sessions::abort_on_disconnect(&req),
    );
    log::debug!(
        "session {session_id} turn {}: chat completion for owner {owner}",
        receipt.turn_id
    );
    let reply = Reply {
        id: format!("chatcmpl-{}", receipt.turn_id.0.simple()),
        created: unix_now(),
        model: body.model,
    };
    let session_header = (SESSION_ID_HEADER, session_id.to_string());
    if body.stream.unwrap_or(false) {
        let include_usage = body
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let held = hold_headers(&mut follower, &mut guard).await?;
        let frames = ChunkFrames::new(reply, include_usage, held);
        return Ok(HttpResponse::Ok()
            .insert_header(session_header)
            .insert_header(("Cache-Control", "no-cache"))
            .content_type("text/event-stream")
            .streaming(sse_body(follower, frames, Some(guard))));
    }
    let answer = collect(&mut follower).await?;
    guard.disarm();
    let (outcome, error, usage) = answer.completion;
    if outcome != Outcome::Success {
        return Err(OpenAiError::from_outcome(outcome, error.as_ref()));
    }
    let (prompt_tokens, completion_tokens) = token_counts(usage.as_ref());
    Ok(HttpResponse::Ok()
        .insert_header(session_header)
        .json(json!({
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        })))
}

/// A whole answer.
struct Answer {
    /// The assistant's text of the last attempt.
    text: String,
    /// How the turn ended, why, and its usage.
    completion: (Outcome, Option<ErrorInfo>, Option<Value>),
}

/// The assistant's text of the turn's last attempt: its whole messages joined, or the streamed
/// pieces when the provider sent no whole message.
#[derive(Default)]
struct TextOfAttempt {
    messages: Vec<String>,
    deltas: String,
}

impl TextOfAttempt {
    fn apply(&mut self, body: &EventBody) {
        match body {
            EventBody::TurnStarted { .. } => *self = TextOfAttempt::default(),
            EventBody::MessageDelta { text } => self.deltas.push_str(text),
            EventBody::Message { role, text } if role == "assistant" => {
                self.messages.push(text.clone())
            }
            _ => {}
        }
    }

    fn text(self) -> String {
        if self.messages.is_empty() {
            self.deltas
        } else {
            self.messages.join("\n\n")
        }
    }
}

/// Follows the turn to its end.
async fn collect(follower: &mut TurnFollower) -> Result<Answer, RuntimeError> {
    let mut text = TextOfAttempt::default();
    while let Some(event) = follower.next().await? {
        text.apply(&event.body);
        if let EventBody::TurnCompleted {
            outcome,
            error,
            usage,
            ..
        } = &event.body
        {
            return Ok(Answer {
                text: text.text(),
                completion: (*outcome, error.clone(), usage.clone()),
            });
        }
    }
    Err(RuntimeError::Internal(
        "the turn's events ended without turn.completed".into(),
    ))
}

/// Waits up to [`HEADER_HOLD`] for the turn's first text or its end. A turn that ended without
/// success before any text answers with an error status; otherwise the events seen so far are
/// handed to the stream.
async fn hold_headers(
    follower: &mut TurnFollower,
    guard: &mut StopOnDrop,
) -> Result<VecDeque<Arc<Event>>, OpenAiError> {
    let mut held = VecDeque::new();
    let deadline = tokio::time::Instant::now() + HEADER_HOLD;
    loop {
        let next = match tokio::time::timeout_at(deadline, follower.next()).await {
            Err(_) => return Ok(held),
            Ok(next) => next?,
        };
        let Some(event) = next else { return Ok(held) };
        let is_text = match &event.body {
            EventBody::MessageDelta { .. } => true,
            EventBody::Message { role, .. } => role == "assistant",
            _ => false,
        };
        if let EventBody::TurnCompleted { outcome, error, .. } = &event.body {
            guard.disarm();
            if *outcome != Outcome::Success {
                return Err(OpenAiError::from_outcome(*outcome, error.as_ref()));
            }
        }
        let complete = super::turn::is_completion(&event);
        held.push_back(event);
        if is_text || complete {
            return Ok(held);
        }
    }
}

/// The `chat.completion.chunk` stream of one turn.
struct ChunkFrames {
    reply: Reply,
    /// Send a usage chunk (`choices: []`) before `[DONE]`.
    include_usage: bool,
    /// Events seen while the headers were held, sent first.
    held: VecDeque<Arc<Event>>,
    /// The first chunk (the role) went out.
    started: bool,
    /// Pieces were streamed since the last whole message: the message repeats them.
    streamed_since_message: bool,
    /// `[DONE]` went out.
    done: bool,
}

impl ChunkFrames {
    fn new(reply: Reply, include_usage: bool, held: VecDeque<Arc<Event>>) -> Self {
        ChunkFrames {
            reply,
            include_usage,
            held,
            started: false,
            streamed_since_message: false,
            done: false,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.reply.id,
            "object": "chat.completion.chunk",
            "created": self.reply.created,
            "model": self.reply.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        sse_frame(None, &chunk)
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
            None,
        )
    }

    fn error(&mut self, error: OpenAiError) -> Vec<Bytes> {
        self.done = true;
        vec![
            sse_frame(None, &error.body()),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ]
    }

    /// Frames for one event, the held ones first.
    fn frames_for(&mut self, event: &Event) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(self.delta(json!({"role": "assistant", "content": ""}), None));
        }
        match &event.body {
            EventBody::MessageDelta { text } if !text.is_empty() => {
                self.streamed_since_message = true;
                out.push(self.delta(json!({"content": text}), None));
            }
            EventBody::Message { role, text } if role == "assistant" => {
                if !self.streamed_since_message && !text.is_empty() {
                    out.push(self.delta(json!({"content": text}), None));
                }
                self.streamed_since_message = false;
            }
            EventBody::TurnCompleted {
                outcome,
                error,
                usage,
                ..
            } => {
                if *outcome != Outcome::Success {
                    out.extend(self.error(OpenAiError::from_outcome(*outcome, error.as_ref())));
                    return out;
                }
                out.push(self.delta(json!({}), Some("stop")));
                if self.include_usage {
                    let (prompt, completion) = token_counts(usage.as_ref());
                    out.push(self.chunk(
                        json!([]),
                        Some(json!({
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        })),
                    ));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                self.done = true;
            }
            _ => {}
        }
        out
    }
}

impl SseFrames for ChunkFrames {
    fn start(&mut self) -> Vec<Bytes> {
        let held = std::mem::take(&mut self.held);
        held.iter().flat_map(|e| self.frames_for(e)).collect()
    }

    fn event(&mut self, event: &Event) -> Vec<Bytes> {
        self.frames_for(event)
    }

    fn failure(&mut self, error: RuntimeError) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        self.error(OpenAiError::from(error))
    }

    fn end(&mut self) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        self.error(OpenAiError::from(RuntimeError::Internal(
            "the turn's events ended without turn.completed".into(),
        )))
    }
}

/// Registers the route in the `/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/chat/completions").route(web::post().to(create)));
}
