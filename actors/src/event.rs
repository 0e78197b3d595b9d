//! Normalized session events and their wire shape (DESIGN.md §7).

use crate::ids::{SessionId, TurnId};
use crate::record::{BusyMode, Outcome, SessionState, SessionView, TurnStatus, TurnView};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing that happened in a session. `seq` is per session, starts at 1, gapless.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the session's log.
    pub seq: u64,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// The turn it belongs to, if any.
    pub turn_id: Option<TurnId>,
    /// When it was appended.
    pub ts: Timestamp,
    /// `kind` and `data`.
    #[serde(flatten)]
    pub body: EventBody,
    /// The event's JSON, made once on first use and then shared by the store and every wire
    /// (`Default::default()` when building an event).
    #[serde(skip)]
    pub encoded: EncodedJson,
}

/// An event's JSON, encoded at most once. Never part of the event's equality or wire shape.
#[derive(Clone, Default)]
pub struct EncodedJson(std::sync::OnceLock<Box<str>>);

impl PartialEq for EncodedJson {
    /// A cache: two events are equal whatever each has encoded so far.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for EncodedJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodedJson")
    }
}

impl Event {
    /// The wire JSON, encoded on first use; the store, WebSocket and SSE all take these bytes.
    pub fn json(&self) -> &str {
        self.encoded.0.get_or_init(|| {
            // Serializing plain data with string keys cannot fail.
            serde_json::to_string(self)
                .expect("events serialize")
                .into_boxed_str()
        })
    }

    /// The wire name of the event's kind.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The wire JSON, as an owned string.
    pub fn to_json(&self) -> String {
        self.json().to_string()
    }
}

/// An error as events and completions carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable code (`retries_exhausted`, `prompt_too_long`, `provider_stalled`, …).
    pub code: String,
    /// Human text.
    pub message: String,
}

/// The kind of an event and its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum EventBody {
    /// A session came to be.
    #[serde(rename = "session.created")]
    SessionCreated {
        /// The new session.
        session: SessionView,
        /// The session it was forked or imported from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<crate::record::Origin>,
    },
    /// An attribute changed (provider id mapped, renamed, archived, fallback, reset).
    #[serde(rename = "session.updated")]
    SessionUpdated {
        /// The session after the change.
        session: SessionView,
        /// Why: `provider_session_mapped`, `renamed`, `archived`, `provider_fallback`, …
        reason: String,
    },
    /// The derived state changed.
    #[serde(rename = "session.state")]
    SessionStateChanged {
        /// New state.
        state: SessionState,
        /// Old state.
        previous: SessionState,
        /// Why it changed.
        reason: String,
    },
    /// A turn was accepted.
    #[serde(rename = "turn.accepted")]
    TurnAccepted {
        /// The new turn.
        turn_id: TurnId,
        /// `running` when it started at once (or was steered in), else `queued`.
        status: TurnStatus,
        /// 0 when running, else its 1-based place in the queue.
        position: usize,
        /// The mode it was sent with.
        mode: BusyMode,
    },
    /// An attempt of a turn started.
    #[serde(rename = "turn.started")]
    TurnStarted {
        /// 1 for the first attempt.
        attempt: u32,
        /// The provider running it.
        provider: String,
        /// For a stateless provider: how much of the history the attempt was sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        history: Option<crate::provider::HistorySent>,
    },
    /// A piece of streamed assistant text.
    #[serde(rename = "message.delta")]
    MessageDelta {
        /// The text piece.
        text: String,
    },
    /// A whole message.
    #[serde(rename = "message")]
    Message {
        /// `assistant` or `user`.
        role: String,
        /// The whole text.
        text: String,
    },
    /// Model reasoning text.
    #[serde(rename = "thinking")]
    Thinking {
        /// The reasoning text.
        text: String,
    },
    /// The agent used a tool.
    #[serde(rename = "tool.use")]
    ToolUse {
        /// Pairs the use with its result.
        tool_id: String,
        /// Tool name.
        name: String,
        /// Tool input.
        input: Value,
    },
    /// A tool's result.
    #[serde(rename = "tool.result")]
    ToolResult {
        /// The use it answers.
        tool_id: String,
        /// What the tool returned.
        output: Value,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Usage, token budget, cost, other provider status.
    #[serde(rename = "status")]
    Status(Value),
    /// An error the user should see.
    #[serde(rename = "error")]
    Error {
        /// Machine-readable code.
        code: String,
        /// Human text.
        message: String,
        /// Whether Troupe will retry.
        retryable: bool,
    },
    /// A transient failure; the turn runs again after `delay_ms`.
    #[serde(rename = "turn.retrying")]
    TurnRetrying {
        /// The attempt that comes next.
        attempt: u32,
        /// Wait before it.
        delay_ms: u64,
        /// The failure's code.
        reason: String,
    },
    /// The one terminal event of a turn.
    #[serde(rename = "turn.completed")]
    TurnCompleted {
        /// How it ended.
        outcome: Outcome,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        /// Provider usage figures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
        /// Cost in US dollars, when the provider reports it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
        /// The provider process's exit code, when there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// The queue changed.
    #[serde(rename = "queue.updated")]
    QueueUpdated {
        /// The queued turns in order.
        turns: Vec<TurnView>,
        /// Whether the queue is held.
        paused: bool,
    },
}

impl EventBody {
    /// The wire name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionCreated { .. } => "session.created",
            EventBody::SessionUpdated { .. } => "session.updated",
            EventBody::SessionStateChanged { .. } => "session.state",
            EventBody::TurnAccepted { .. } => "turn.accepted",
            EventBody::TurnStarted { .. } => "turn.started",
            EventBody::MessageDelta { .. } => "message.delta",
            EventBody::Message { .. } => "message",
            EventBody::Thinking { .. } => "thinking",
            EventBody::ToolUse { .. } => "tool.use",
            EventBody::ToolResult { .. } => "tool.result",
            EventBody::Status(_) => "status",
            EventBody::Error { .. } => "error",
            EventBody::TurnRetrying { .. } => "turn.retrying",
            EventBody::TurnCompleted { .. } => "turn.completed",
            EventBody::QueueUpdated { .. } => "queue.updated",
        }
    }

    /// Events that must be on disk before anyone is told of them: acceptance, the terminal
    /// event and session lifecycle. The rest ride on the store's periodic flush.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            EventBody::TurnAccepted { .. }
                | EventBody::TurnCompleted { .. }
                | EventBody::SessionCreated { .. }
                | EventBody::SessionUpdated { .. }
        )
    }

    /// Whether the owner feed (`session_id: "*"`) carries it.
    pub fn is_owner_feed(&self) -> bool {
        matches!(
            self,
            EventBody::SessionCreated { .. }
                | EventBody::SessionUpdated { .. }
                | EventBody::SessionStateChanged { .. }
        )
    }
}
