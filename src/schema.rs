//! OpenAPI schemas of the core's wire types. The runtime crate knows no HTTP (nor utoipa), so its
//! serialized shapes are described here, field for field; `tests/api/operators.rs` checks that
//! every property named here is what the server really sends, and schemathesis
//! (`tests/api/schemathesis.rs`) checks every answer against them.

use serde_json::Value;
use utoipa::ToSchema;

/// The session object (`troupe_actors::SessionView`).
#[derive(ToSchema)]
#[schema(as = Session)]
pub struct SessionSchema {
    /// Stable application id (UUIDv7).
    #[schema(format = Uuid)]
    pub id: String,
    /// Owner (from authentication).
    pub owner: String,
    /// Project: a canonical path under a configured root, or a free label.
    pub project: Option<String>,
    /// Provider name.
    pub provider: String,
    /// Client-chosen key within (owner, project).
    pub key: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Model, if chosen.
    pub model: Option<String>,
    /// The provider's own conversation id (a mapped attribute, never a route).
    pub provider_session_id: Option<String>,
    /// Current state.
    pub state: SessionStateSchema,
    /// RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Highest seq of its event log (0 when empty).
    pub last_seq: u64,
    /// Queued turns, the running one not counted.
    pub queue_len: usize,
    /// Tokens and cost: all turns and the latest one.
    pub usage: SessionUsageSchema,
    /// The session's own budget; null when the configured one applies.
    pub budget: Option<BudgetSchema>,
}

/// Tokens and cost of some work (`troupe_actors::Usage`).
#[derive(ToSchema)]
#[schema(as = Usage)]
pub struct UsageSchema {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// The part of `input_tokens` read from a prompt cache.
    pub cached_tokens: u64,
    /// `input_tokens + output_tokens`: what token budgets count.
    pub total_tokens: u64,
    /// US dollars: the provider's figure, else the configured price table's.
    pub cost_usd: f64,
}

/// A session's usage (`troupe_actors::usage::SessionUsage`).
#[derive(ToSchema)]
#[schema(as = SessionUsage)]
pub struct SessionUsageSchema {
    /// Every attempt of every turn, failed and retried ones included.
    pub total: UsageSchema,
    /// The latest turn: its `turn_id` and usage fields; null before any usage.
    pub turn: Option<TurnUsageSchema>,
}

/// One turn's usage.
#[derive(ToSchema)]
#[schema(as = TurnUsage)]
pub struct TurnUsageSchema {
    /// The turn.
    #[schema(format = Uuid)]
    pub turn_id: String,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Input plus output.
    pub total_tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
}

/// A spending limit (`troupe_actors::Budget`); an absent or null figure is no limit. Derives
/// `Deserialize` only so the document says what the server enforces: no other fields.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = Budget)]
pub struct BudgetSchema {
    /// Most US dollars.
    #[schema(minimum = 0)]
    pub max_cost_usd: Option<f64>,
    /// Most tokens (input plus output).
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub max_tokens: Option<u64>,
}

/// One owner's usage on one UTC day.
#[derive(ToSchema)]
#[schema(as = OwnerDayUsage)]
pub struct OwnerDayUsageSchema {
    /// The owner.
    pub owner: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Input plus output.
    pub total_tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
}

/// Where a session is in its life.
#[derive(ToSchema)]
#[schema(as = SessionState, rename_all = "snake_case")]
pub enum SessionStateSchema {
    /// Nothing runs.
    Idle,
    /// A turn runs (or waits to retry).
    Running,
    /// The queue is held.
    Paused,
    /// The restart cap was exhausted.
    Failed,
    /// Read-only.
    Archived,
}

/// What a message sent to a busy session does.
#[derive(ToSchema)]
#[schema(as = BusyMode, rename_all = "snake_case")]
pub enum BusyModeSchema {
    /// Refuse with `session_busy` when a turn runs or waits.
    Reject,
    /// Append to the queue (the default).
    Enqueue,
    /// Deliver into the running attempt when the provider can; else front of the queue.
    Steer,
    /// Abort the running attempt and run this one next.
    Interrupt,
}

/// Where a turn is in its life.
#[derive(ToSchema)]
#[schema(as = TurnStatus, rename_all = "snake_case")]
pub enum TurnStatusSchema {
    /// Waiting in the queue.
    Queued,
    /// Running (or steered into the running attempt).
    Running,
    /// Ended with exactly one `turn.completed`.
    Completed,
}

/// How a turn ended.
#[derive(ToSchema)]
#[schema(as = Outcome, rename_all = "snake_case")]
pub enum OutcomeSchema {
    /// The provider answered.
    Success,
    /// The provider failed terminally or retries were exhausted.
    Failed,
    /// Aborted by the user (or interrupted by a new turn).
    Aborted,
    /// The server stopped while it ran.
    Interrupted,
    /// Cancelled while queued.
    Cancelled,
    /// Dropped by the `abandon` failure policy.
    Abandoned,
}

/// A turn in turn lists (`troupe_actors::TurnView`).
#[derive(ToSchema)]
#[schema(as = Turn)]
pub struct TurnSchema {
    /// Turn id (UUIDv7).
    #[schema(format = Uuid)]
    pub turn_id: String,
    /// Queued, running or completed.
    pub status: TurnStatusSchema,
    /// 0 while running, 1.. in the queue; absent once completed.
    pub position: Option<usize>,
    /// The busy mode it was sent with.
    pub mode: BusyModeSchema,
    /// The message text.
    pub content: String,
    /// The client's idempotency id.
    pub client_message_id: Option<String>,
    /// How it ended; absent while open.
    pub outcome: Option<OutcomeSchema>,
    /// When it was accepted (RFC 3339).
    #[schema(format = DateTime)]
    pub accepted_at: String,
}

/// The kind of an event; `data` depends on it (see docs/PROTOCOL.md).
#[derive(ToSchema)]
#[schema(as = EventKind)]
pub enum EventKindSchema {
    /// `{session}`
    #[schema(rename = "session.created")]
    SessionCreated,
    /// `{session, reason}`
    #[schema(rename = "session.updated")]
    SessionUpdated,
    /// `{state, previous, reason}`
    #[schema(rename = "session.state")]
    SessionState,
    /// `{turn_id, status, position, mode}`
    #[schema(rename = "turn.accepted")]
    TurnAccepted,
    /// `{attempt, provider, history?}`
    #[schema(rename = "turn.started")]
    TurnStarted,
    /// `{text}`
    #[schema(rename = "message.delta")]
    MessageDelta,
    /// `{role, text}`
    #[schema(rename = "message")]
    Message,
    /// `{text}`
    #[schema(rename = "thinking")]
    Thinking,
    /// `{tool_id, name, input}`
    #[schema(rename = "tool.use")]
    ToolUse,
    /// `{tool_id, output, is_error}`
    #[schema(rename = "tool.result")]
    ToolResult,
    /// usage, token budget, cost
    #[schema(rename = "status")]
    Status,
    /// `{code, message, retryable}`
    #[schema(rename = "error")]
    Error,
    /// `{attempt, delay_ms, reason}`
    #[schema(rename = "turn.retrying")]
    TurnRetrying,
    /// `{outcome, error?, usage?, cost_usd?, exit_code?}`
    #[schema(rename = "turn.completed")]
    TurnCompleted,
    /// `{turns, paused}`
    #[schema(rename = "queue.updated")]
    QueueUpdated,
}

/// One event of a session's log (`troupe_actors::Event`).
#[derive(ToSchema)]
#[schema(as = Event)]
pub struct EventSchema {
    /// Per-session position: starts at 1, gapless, never reused.
    pub seq: u64,
    /// The session.
    #[schema(format = Uuid)]
    pub session_id: String,
    /// The turn it belongs to, if any.
    #[schema(format = Uuid)]
    pub turn_id: Option<String>,
    /// What happened.
    pub kind: EventKindSchema,
    /// When it was appended (RFC 3339 UTC, milliseconds).
    #[schema(format = DateTime)]
    pub ts: String,
    /// The kind's data.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// What a provider can do.
#[derive(ToSchema)]
#[schema(as = Capabilities)]
pub struct CapabilitiesSchema {
    /// It continues a conversation from its own provider session id.
    pub resume: bool,
    /// It takes further user messages into a running attempt.
    pub steer: bool,
    /// It keeps no conversation; Troupe sends the history.
    pub stateless: bool,
    /// It resumes a conversation as a new one (a forked session continues the source's).
    pub fork: bool,
}

/// The running attempt of a live session actor.
#[derive(ToSchema)]
#[schema(as = RunInfo)]
pub struct RunInfoSchema {
    /// The turn being answered.
    #[schema(format = Uuid)]
    pub turn_id: String,
    /// Its attempt number (1 for the first).
    pub attempt: u32,
    /// When the attempt started.
    #[schema(format = DateTime)]
    pub started_at: String,
    /// The provider's process id, if any.
    pub pid: Option<u32>,
}

/// A row of the actor table (`troupe_actors::session::ActorSnapshot`).
#[derive(ToSchema)]
#[schema(as = ActorSnapshot)]
pub struct ActorSnapshotSchema {
    /// The session.
    #[schema(format = Uuid)]
    pub session_id: String,
    /// Its owner.
    pub owner: String,
    /// Its state.
    pub state: SessionStateSchema,
    /// Live subscribers.
    pub subscribers: usize,
    /// Queued turns.
    pub queue_len: usize,
    /// Restarts after panics.
    pub restarts: u32,
    /// The running attempt, if any.
    pub run: Option<RunInfoSchema>,
    /// Last seq.
    pub last_seq: u64,
    /// When the last event was appended.
    #[schema(format = DateTime)]
    pub last_event_at: Option<String>,
}

/// Registry figures (`troupe_actors::runtime::RegistryFigures`).
#[derive(ToSchema)]
#[schema(as = RegistryFigures)]
pub struct RegistryFiguresSchema {
    /// Live session actors.
    pub live: usize,
    /// Sessions in the store with no live actor.
    pub passivated: u64,
    /// Activations since start.
    pub activations: u64,
    /// Agent process groups a previous server left alive, killed at this start.
    pub reaped_process_groups: u64,
    /// This node's id among the nodes sharing a store (`[cluster] node_id`).
    pub node_id: String,
    /// Session leases this node holds (0 on an embedded store, which needs none).
    pub leases_held: usize,
    /// Sessions with open turns this node took over because no node held their lease.
    pub takeovers: u64,
    /// Session operations sent to the node that runs their session (several nodes).
    pub forwarded_requests: u64,
    /// Session operations other nodes forwarded here.
    pub forwards_served: u64,
    /// Follows of sessions another node runs, read from the store's stream.
    pub remote_follows: u64,
}

/// Every error answer: `{"error": {"code", "message", …}}`.
#[derive(ToSchema)]
#[schema(as = ErrorBody)]
pub struct ErrorBodySchema {
    /// The error.
    pub error: ErrorObjectSchema,
}

/// The error object. Some codes add fields: `field` (`invalid_request`), `limit`
/// (`payload_too_large`), `max` (`queue_full`), `provider` (`unknown_provider`).
#[derive(ToSchema)]
#[schema(as = ErrorObject)]
pub struct ErrorObjectSchema {
    /// One of the codes of docs/PROTOCOL.md (`session_not_found`, `invalid_json`, …).
    pub code: crate::error::ErrorCode,
    /// Human text.
    pub message: String,
    /// The offending field's JSON path, for `invalid_request`.
    pub field: Option<String>,
}

/// One Server-Sent Events frame of an event stream, as a client's SSE parser sees it.
#[derive(ToSchema)]
#[schema(as = SseFrame)]
pub struct SseFrameSchema {
    /// The event's seq (absent on the closing `stream.closed` frame).
    pub id: Option<String>,
    /// The event's kind, or `stream.closed` on the last frame.
    pub event: String,
    /// The event as JSON (`Event`), or `{"reason"}` on the closing frame.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}
