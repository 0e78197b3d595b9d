//! OpenAPI schemas of what the OpenAI-compatible routes answer. The answers are built as JSON
//! in [`super::chat`], [`super::responses`] and [`super::models`]; these types describe them
//! field for field for the document at `/v1/openapi.json` (the request bodies derive their
//! schemas from the real request types instead). schemathesis checks every answer against them.
// Descriptions only: nothing builds or reads these types, so the private module's dead-code
// lint would flag every field.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::{IntoParams, IntoResponses, ToSchema};

/// A message's role.
#[derive(ToSchema)]
#[schema(as = ChatRole, rename_all = "snake_case")]
pub enum ChatRoleSchema {
    /// Joined into the system prompt.
    System,
    /// Joined into the system prompt.
    Developer,
    /// A user message; the last one is the turn.
    User,
    /// An earlier answer.
    Assistant,
}

/// The type of a text content part.
#[derive(ToSchema)]
#[schema(as = TextPartType, rename_all = "snake_case")]
pub enum TextPartTypeSchema {
    /// Chat Completions' text part.
    Text,
    /// Responses' input text part.
    InputText,
    /// Responses' output text part (an earlier answer).
    OutputText,
}

/// The type of a Responses input item: only messages.
#[derive(ToSchema)]
#[schema(as = InputItemType, rename_all = "snake_case")]
pub enum InputItemTypeSchema {
    /// A message with a role.
    Message,
}

/// `chat.completion`.
#[derive(ToSchema)]
#[schema(as = ChatCompletion)]
pub struct ChatCompletionSchema {
    /// `chatcmpl-<turn id>`.
    #[schema(pattern = "^chatcmpl-[0-9a-f]{32}$")]
    pub id: String,
    /// Always `chat.completion`.
    #[schema(pattern = "^chat\\.completion$")]
    pub object: String,
    /// Unix seconds of the request.
    pub created: i64,
    /// The model as the request named it.
    pub model: String,
    /// Always null.
    #[schema(value_type = Option<String>)]
    pub system_fingerprint: Option<String>,
    /// Exactly one choice.
    #[schema(min_items = 1, max_items = 1)]
    pub choices: Vec<ChatChoiceSchema>,
    /// Token counts of the turn (0 when the provider reports none).
    pub usage: ChatUsageSchema,
}

/// The one choice of a completion.
#[derive(ToSchema)]
#[schema(as = ChatChoice)]
pub struct ChatChoiceSchema {
    /// Always 0.
    pub index: u32,
    /// The assistant's answer.
    pub message: ChatAnswerSchema,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
    /// Always `stop`.
    pub finish_reason: String,
}

/// The assistant's message of a completion.
#[derive(ToSchema)]
#[schema(as = ChatAnswer)]
pub struct ChatAnswerSchema {
    /// Always `assistant`.
    pub role: String,
    /// The answer's text.
    pub content: String,
    /// Always null.
    #[schema(value_type = Option<String>)]
    pub refusal: Option<String>,
}

/// Token counts.
#[derive(ToSchema)]
#[schema(as = ChatUsage)]
pub struct ChatUsageSchema {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// One SSE frame of a streamed chat completion: `data:` is a `chat.completion.chunk` as JSON,
/// or `[DONE]` on the last frame (an in-stream failure is `{"error": {…}}`).
#[derive(ToSchema)]
#[schema(as = ChatChunkFrame)]
pub struct ChatChunkFrameSchema {
    /// The chunk's JSON, or `[DONE]`.
    pub data: String,
}

/// One SSE frame of a streamed response: `event:` is the event's `type`, `data:` the event as
/// JSON with its `sequence_number`.
#[derive(ToSchema)]
#[schema(as = ResponseEventFrame)]
pub struct ResponseEventFrameSchema {
    /// The event type (`response.created`, `response.output_text.delta`, …, or `error`).
    pub event: String,
    /// The event's JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// Where a response is in its life.
#[derive(ToSchema)]
#[schema(as = ResponseStatus, rename_all = "snake_case")]
pub enum ResponseStatusSchema {
    /// Waiting in its session's queue.
    Queued,
    /// Running.
    InProgress,
    /// Answered.
    Completed,
    /// The provider failed; `error` says why.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Interrupted by a server stop.
    Incomplete,
}

/// The Response object.
#[derive(ToSchema)]
#[schema(as = Response)]
pub struct ResponseSchema {
    /// `resp_<session id><turn id>` (hex): durable, usable after a restart.
    #[schema(pattern = "^resp_[0-9a-f]{64}$")]
    pub id: String,
    /// Always `response`.
    #[schema(pattern = "^response$")]
    pub object: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Its state.
    pub status: ResponseStatusSchema,
    /// Whether it was created with `background: true`.
    pub background: bool,
    /// `{code, message}` when failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// `{reason}` when cancelled or interrupted.
    #[schema(value_type = Option<Object>)]
    pub incomplete_details: Option<Value>,
    /// The request's `instructions`.
    pub instructions: Option<String>,
    /// The request's `metadata` (`{}` when none).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The model as the request named it.
    pub model: String,
    /// Output message items.
    #[schema(value_type = Vec<Object>)]
    pub output: Vec<Value>,
    /// The text of the completed output items.
    pub output_text: String,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// Token counts, once known.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
}

/// A model: a provider name, or `provider/model`.
#[derive(ToSchema)]
#[schema(as = Model)]
pub struct ModelSchema {
    /// What a request's `model` may name.
    pub id: String,
    /// Always `model`.
    #[schema(pattern = "^model$")]
    pub object: String,
    /// When this process first listed its models (Unix seconds).
    pub created: i64,
    /// Always `troupe`.
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
#[schema(as = ModelList)]
pub struct ModelListSchema {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    pub object: String,
    /// The models, in provider-name order.
    pub data: Vec<ModelSchema>,
}

/// Every `/v1` error answer, in OpenAI's shape.
#[derive(ToSchema)]
#[schema(as = OpenAiErrorBody)]
pub struct OpenAiErrorBodySchema {
    /// The error.
    pub error: OpenAiErrorObjectSchema,
}

/// OpenAI's error object.
#[derive(ToSchema)]
#[schema(as = OpenAiErrorObject)]
pub struct OpenAiErrorObjectSchema {
    /// Human text.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[schema(rename = "type")]
    pub kind: String,
    /// OpenAI's code where one exists (`invalid_api_key`, `model_not_found`), else Troupe's.
    pub code: String,
    /// The request field or header at fault, when one is.
    pub param: Option<String>,
}

/// The request headers of the two routes that send a turn (chat completions, responses).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TurnHeaders {
    /// Names the session in the caller's scope: 1–256 printable ASCII characters, not only
    /// spaces; wins over `user`. Every session key header present must be valid.
    #[param(
        rename = "X-Session-Key",
        max_length = 256,
        pattern = r"^[ -~]*[!-~][ -~]*$"
    )]
    pub session_key: Option<String>,
    /// Alias of `X-Session-Key`.
    #[param(
        rename = "x-openclaw-session-key",
        max_length = 256,
        pattern = r"^[ -~]*[!-~][ -~]*$"
    )]
    pub openclaw_session_key: Option<String>,
    /// Makes the send idempotent in its session: the same key answers the original turn;
    /// empty means none.
    #[param(rename = "Idempotency-Key", max_length = 256, pattern = r"^[\t -~]*$")]
    pub idempotency_key: Option<String>,
    /// `true` or `1`: a client disconnect stops the turn.
    #[param(rename = "X-Troupe-Abort-On-Disconnect")]
    pub abort_on_disconnect: Option<String>,
}

/// The error answers of the two routes that send a turn.
#[derive(IntoResponses)]
pub enum TurnErrors {
    /// `invalid_request`, `invalid_json`, `invalid_session_key`.
    #[response(status = 400)]
    BadRequest(OpenAiErrorBodySchema),
    /// `invalid_api_key`.
    #[response(status = 401)]
    Unauthorized(OpenAiErrorBodySchema),
    /// `model_not_found`, `response_not_found`.
    #[response(status = 404)]
    NotFound(OpenAiErrorBodySchema),
    /// The turn was aborted or cancelled by someone else; the session is failed or archived.
    #[response(status = 409)]
    Conflict(OpenAiErrorBodySchema),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(OpenAiErrorBodySchema),
    /// `queue_full`.
    #[response(status = 429)]
    QueueFull(OpenAiErrorBodySchema),
    /// The provider failed (the turn's error code).
    #[response(status = 502)]
    ProviderFailed(OpenAiErrorBodySchema),
    /// The provider is unavailable, or the server stopped while the turn ran.
    #[response(status = 503)]
    Unavailable(OpenAiErrorBodySchema),
    /// `turn_timeout`.
    #[response(status = 504)]
    Timeout(OpenAiErrorBodySchema),
}
