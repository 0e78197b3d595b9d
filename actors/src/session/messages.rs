//! Messages a session actor handles. Each returns its result to the caller; none is fire-and-forget,
//! so a message that reached a stopped actor comes back as a mailbox error and is retried on a
//! fresh activation by [`crate::SessionHandle`].

use crate::error::RuntimeError;
use crate::event::Event;
use crate::ids::TurnId;
use crate::record::{BusyMode, SessionState, SessionView, TurnStatus, TurnView};
use crate::subscription::Subscription;
use crate::time::Timestamp;
use actix::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// A user message for the session.
#[derive(Message, Clone, Debug, Default, Serialize, Deserialize)]
#[rtype(result = "Result<TurnReceipt, RuntimeError>")]
pub struct SendTurn {
    /// The message text.
    pub content: String,
    /// What to do when the session is busy.
    pub mode: BusyMode,
    /// Makes sending idempotent per session.
    pub client_message_id: Option<String>,
    /// Provider options for this turn (the echo provider's script).
    pub options: Value,
}

/// The most bytes a `client_message_id` may have.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 256;

impl SendTurn {
    /// The one door for a user message: every front end (REST, WebSocket, OpenAI) builds its
    /// sends here, and the session checks every send it gets the same way, embedders' too.
    /// `content` must not be empty, a `client_message_id` has 1–256 bytes, `options` is absent,
    /// `null` or a JSON object.
    pub fn parse(
        content: String,
        mode: BusyMode,
        client_message_id: Option<String>,
        options: Option<Value>,
    ) -> Result<SendTurn, RuntimeError> {
        let turn = SendTurn {
            content,
            mode,
            client_message_id,
            options: options.unwrap_or(Value::Null),
        };
        turn.check()?;
        Ok(turn)
    }

    /// Checks the rules of [`SendTurn::parse`].
    pub fn check(&self) -> Result<(), RuntimeError> {
        if self.content.is_empty() {
            return Err(RuntimeError::InvalidField {
                field: "content",
                message: "`content` must not be empty".into(),
            });
        }
        if let Some(id) = &self.client_message_id {
            if id.is_empty() || id.len() > MAX_CLIENT_MESSAGE_ID_BYTES {
                return Err(RuntimeError::InvalidField {
                    field: "client_message_id",
                    message: format!(
                        "`client_message_id` must be 1–{MAX_CLIENT_MESSAGE_ID_BYTES} bytes"
                    ),
                });
            }
        }
        if !(self.options.is_null() || self.options.is_object()) {
            return Err(RuntimeError::InvalidField {
                field: "options",
                message: "`options` must be a JSON object".into(),
            });
        }
        Ok(())
    }
}

/// The answer to [`SendTurn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnReceipt {
    /// The turn's id (the original one for a repeated `client_message_id`).
    pub turn_id: TurnId,
    /// Where it stands now.
    pub status: TurnStatus,
    /// 0 while running, 1.. in the queue; absent once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// True when the `client_message_id` was seen before and nothing new was accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Subscribes to events after `after_seq`.
#[derive(Message)]
#[rtype(result = "Result<Subscription, RuntimeError>")]
pub struct Subscribe {
    /// Replay every event with a greater seq, then the live ones.
    pub after_seq: u64,
}

/// Aborts the running turn.
#[derive(Message)]
#[rtype(result = "Result<AbortResult, RuntimeError>")]
pub struct Abort;

/// The answer to [`Abort`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbortResult {
    /// Whether a turn was running and is now aborted.
    pub aborted: bool,
    /// The aborted turn.
    pub turn_id: Option<TurnId>,
}

/// Aborts the running attempt if it is answering this turn; otherwise nothing happens.
#[derive(Message)]
#[rtype(result = "Result<AbortResult, RuntimeError>")]
pub struct AbortTurn(pub TurnId);

/// Cancels a queued turn (it ends `cancelled`).
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct CancelTurn(pub TurnId);

/// Moves a queued turn to the front.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct PromoteTurn(pub TurnId);

/// A client's answer to a permission request of the running attempt.
#[derive(Message, Clone, Debug, Serialize, Deserialize)]
#[rtype(result = "Result<PermissionResolution, RuntimeError>")]
pub struct AnswerPermission {
    /// The request answered.
    pub request_id: String,
    /// One of the options the request offered.
    pub option_id: String,
    /// Who answers (the owner of the answering client), for `permission.resolved`.
    pub by: String,
}

/// The answer to [`AnswerPermission`]: what `permission.resolved` says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PermissionResolution {
    /// The request.
    pub request_id: String,
    /// The option chosen.
    pub option_id: String,
    /// Who answered.
    pub by: String,
}

/// Queue and failure controls.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
#[rtype(result = "Result<SessionView, RuntimeError>")]
pub enum Control {
    /// Hold the queue; a running turn may finish.
    Pause,
    /// Release the queue and clear a failure.
    Resume,
    /// Clear a failure, the restart count and the provider session id; the queue runs again.
    Reset,
}

/// The session object.
#[derive(Message)]
#[rtype(result = "Result<SessionView, RuntimeError>")]
pub struct GetInfo;

/// The session's turns.
#[derive(Message)]
#[rtype(result = "Result<TurnList, RuntimeError>")]
pub struct ListTurns;

/// The answer to [`ListTurns`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TurnList {
    /// Every turn, oldest first; open ones with their position.
    pub turns: Vec<TurnView>,
    /// Whether the queue is held.
    pub paused: bool,
}

/// A page of events.
#[derive(Message)]
#[rtype(result = "Result<EventPage, RuntimeError>")]
pub struct ReadEvents {
    /// Events with a greater seq.
    pub after_seq: u64,
    /// At most this many.
    pub limit: usize,
}

/// The answer to [`ReadEvents`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventPage {
    /// The events, in seq order.
    pub events: Vec<Arc<Event>>,
    /// The session's last seq.
    pub last_seq: u64,
}

/// Changes the title or archives.
#[derive(Message, Clone, Debug, Default, Serialize, Deserialize)]
#[rtype(result = "Result<SessionView, RuntimeError>")]
pub struct UpdateSession {
    /// New title.
    pub title: Option<String>,
    /// Archive (true) or unarchive (false).
    pub archived: Option<bool>,
    /// Sets the project of a session that has none (project backfill).
    pub project: Option<String>,
    /// The model from the next attempt on (`session.updated` reason `model_changed`).
    pub model: Option<String>,
    /// Another configured provider from the next attempt on (`provider_changed`): a stateless
    /// one reads the history from the log; any other starts a fresh conversation whose first
    /// prompt carries a transcript of this one. The model is cleared unless `model` is given.
    pub provider: Option<String>,
    /// A new budget of the session (`Some(None)`: back to the configured one). A held queue
    /// runs again when the new budget leaves something to spend. On the wire (forwarded to
    /// another node): absent, `null`, or the budget.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub budget: Option<Option<crate::usage::Budget>>,
}

/// A field that is present, even as `null`: `Some` of what it holds.
fn present<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Aborts, cancels the queue, deletes the log and stops the actor.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct DeleteSession;

/// A row of the operators' actor table.
#[derive(Message)]
#[rtype(result = "ActorSnapshot")]
pub struct Snapshot;

/// What operators see of a live session actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorSnapshot {
    /// The session.
    pub session_id: crate::SessionId,
    /// Its owner.
    pub owner: String,
    /// Its state.
    pub state: SessionState,
    /// Live subscribers.
    pub subscribers: usize,
    /// Queued turns.
    pub queue_len: usize,
    /// Restarts after panics.
    pub restarts: u32,
    /// The running attempt.
    pub run: Option<RunInfo>,
    /// Last seq.
    pub last_seq: u64,
    /// When the last event was appended.
    pub last_event_at: Option<Timestamp>,
}

/// The running attempt, for the actor table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// The turn being answered.
    pub turn_id: TurnId,
    /// Its attempt number.
    pub attempt: u32,
    /// When the attempt started.
    pub started_at: Timestamp,
    /// The provider's process id, if any.
    pub pid: Option<u32>,
    /// Permission requests waiting for an answer: the attempt waits for approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for_approval: Vec<String>,
}

/// Stop dispatching new turns (graceful shutdown); running ones go on.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Drain;

/// Ends the running turn `interrupted` (graceful shutdown after the grace period) and stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Interrupt;

/// Fault injection for supervision tests and drills: the session actor panics in its handler.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;
