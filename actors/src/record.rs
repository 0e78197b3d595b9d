//! What the store keeps: session and turn records, and the enums of their lifecycles.

use crate::ids::{SessionId, TurnId};
use crate::time::Timestamp;
use crate::usage::{Budget, SessionUsage, Usage};
use serde::{Deserialize, Serialize};

/// Where a session is in its life. Derived from the record's flags and whether a turn runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Nothing runs; a new turn starts at once.
    Idle,
    /// A turn's attempt runs (or waits to retry).
    Running,
    /// The queue is held; a running turn may finish.
    Paused,
    /// The restart cap was exhausted; queued turns are held until `reset` or `resume`.
    Failed,
    /// Read-only.
    Archived,
}

impl SessionState {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Running => "running",
            SessionState::Paused => "paused",
            SessionState::Failed => "failed",
            SessionState::Archived => "archived",
        }
    }
}

/// The persisted record of a session. The session actor owns it while the session is live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Stable application id (UUIDv7).
    pub id: SessionId,
    /// Who may see and drive it.
    pub owner: String,
    /// Working directory or label; part of the scope.
    pub project: Option<String>,
    /// The configured provider name that runs its turns.
    pub provider: String,
    /// The client's name for the session within the scope, if any.
    pub key: Option<String>,
    /// A human title.
    pub title: Option<String>,
    /// The provider's model, if chosen.
    pub model: Option<String>,
    /// The provider's own conversation id, used to resume; a mapped attribute, never a route.
    pub provider_session_id: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its record last changed.
    pub updated_at: Timestamp,
    /// Hidden sessions (internal, OpenAI requests without a key) are never listed.
    #[serde(default)]
    pub hidden: bool,
    /// The queue is held by the user.
    #[serde(default)]
    pub paused: bool,
    /// The restart cap was exhausted; cleared by `reset` or `resume`.
    #[serde(default)]
    pub failed: bool,
    /// Read-only.
    #[serde(default)]
    pub archived: bool,
    /// Transient failures in a row; reset by a success. Persisted so a restart keeps the cap.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the current run began, so startup recovery can tell stale sessions.
    #[serde(default)]
    pub running_since: Option<Timestamp>,
    /// How the next attempt hands the conversation to the provider after a fork, an import or
    /// a provider switch; cleared by the first turn that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// Tokens and cost of all its turns and of the latest one; changed only in the batch of the
    /// event that reports the usage.
    #[serde(default)]
    pub usage: SessionUsage,
    /// The session's own budget (`PATCH {budget}`); replaces the configured one.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// A turn found the budget spent: the queue is held (state `paused`) until the budget is
    /// raised or the session resumed.
    #[serde(default)]
    pub budget_held: bool,
}

/// How a session's conversation reaches a provider that has not seen it yet (a fork, an
/// import, a switch to another provider). Stateless providers need none: they get the history
/// from the session's own log at every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Handover {
    /// Resume the copied provider session id as a fork of it (Claude's `--fork-session`), so
    /// the source conversation is never continued by the copy.
    Fork,
    /// Start a fresh provider conversation whose first prompt carries this transcript of the
    /// copied turns before the user's new message.
    Transcript {
        /// The earlier conversation, as `role: text` paragraphs.
        text: String,
    },
    /// Start a fresh provider conversation whose first prompt carries a transcript of this
    /// session's own conversation so far, read from its log (a switch to another provider).
    TranscriptOfLog,
}

impl Handover {
    /// The prompt an attempt sends: `prompt` as is, or after a copied transcript
    /// ([`Handover::TranscriptOfLog`] is made by the session, which has the log).
    pub fn prompt(handover: Option<&Handover>, prompt: &str) -> String {
        match handover {
            Some(Handover::Transcript { text }) => Self::with_transcript(text, prompt),
            _ => prompt.to_string(),
        }
    }

    /// `prompt` after the transcript `text` (`prompt` alone when there is none).
    pub fn with_transcript(text: &str, prompt: &str) -> String {
        if text.is_empty() {
            return prompt.to_string();
        }
        format!("The conversation so far:\n\n{text}The user's new message:\n\n{prompt}")
    }
}

/// Where a forked or imported session came from; `session.created` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// `fork` or `import`.
    pub kind: OriginKind,
    /// The source session (for an import: its id in the exporting server).
    pub session_id: SessionId,
    /// The last turn copied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<TurnId>,
    /// The seq of the source's log the copy ends at.
    pub seq: u64,
}

/// How a session was made from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    /// `POST /sessions/{id}/fork`.
    Fork,
    /// `POST /sessions/import`.
    Import,
}

impl SessionRecord {
    /// The state the flags and the running flag give.
    pub fn derive_state(&self, running: bool) -> SessionState {
        if self.archived {
            SessionState::Archived
        } else if self.failed {
            SessionState::Failed
        } else if self.paused || self.budget_held {
            SessionState::Paused
        } else if running {
            SessionState::Running
        } else {
            SessionState::Idle
        }
    }
}

/// The session object of the wire contract (DESIGN.md §11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Stable application id.
    pub id: SessionId,
    /// Owner of the session.
    pub owner: String,
    /// Project (working directory or label).
    pub project: Option<String>,
    /// Provider name.
    pub provider: String,
    /// Client-chosen key.
    pub key: Option<String>,
    /// Human title.
    pub title: Option<String>,
    /// Model, if chosen.
    pub model: Option<String>,
    /// The provider's own id for the conversation.
    pub provider_session_id: Option<String>,
    /// Current state.
    pub state: SessionState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of the record.
    pub updated_at: Timestamp,
    /// Highest seq in its event log (0 when empty).
    pub last_seq: u64,
    /// Turns waiting in the queue (the running one not counted).
    pub queue_len: usize,
    /// Tokens and cost: all turns (`total`) and the latest turn (`turn`).
    pub usage: SessionUsage,
    /// The session's own budget, null when the configured one applies.
    pub budget: Option<Budget>,
}

impl SessionView {
    /// The view of a record with the live figures given.
    pub fn new(record: &SessionRecord, running: bool, last_seq: u64, queue_len: usize) -> Self {
        SessionView {
            id: record.id,
            owner: record.owner.clone(),
            project: record.project.clone(),
            provider: record.provider.clone(),
            key: record.key.clone(),
            title: record.title.clone(),
            model: record.model.clone(),
            provider_session_id: record.provider_session_id.clone(),
            state: record.derive_state(running),
            created_at: record.created_at,
            updated_at: record.updated_at,
            last_seq,
            queue_len,
            usage: record.usage.clone(),
            budget: record.budget,
        }
    }
}

/// What a message sent to a busy session does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyMode {
    /// Refuse with `session_busy` when a turn runs or waits.
    Reject,
    /// Append to the persisted FIFO queue.
    #[default]
    Enqueue,
    /// Deliver into the running attempt when the provider can; else front of the queue.
    Steer,
    /// Abort the running attempt and run this one next.
    Interrupt,
}

/// Where a turn is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// Waiting in the queue.
    Queued,
    /// Its attempt runs, or it was steered into a running attempt.
    Running,
    /// Ended with exactly one `turn.completed`.
    Completed,
}

/// How a turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider answered.
    Success,
    /// The provider failed terminally or retries were exhausted.
    Failed,
    /// The user aborted it (or interrupted it with a new turn).
    Aborted,
    /// The process running it stopped (shutdown, crash).
    Interrupted,
    /// Cancelled while queued.
    Cancelled,
    /// Dropped by the `abandon` failure policy.
    Abandoned,
}

/// The persisted record of one accepted turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// Stable id (UUIDv7).
    pub id: TurnId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// The user's message.
    pub content: String,
    /// The busy mode it was sent with.
    pub mode: BusyMode,
    /// The client's idempotency id, if given.
    pub client_message_id: Option<String>,
    /// Per-turn provider options (the echo provider's script lives here).
    #[serde(default)]
    pub options: serde_json::Value,
    /// Queued, running or completed.
    pub status: TurnStatus,
    /// Set once completed.
    pub outcome: Option<Outcome>,
    /// Queue position key: lower runs first. Fronting takes min - 1, appending max + 1.
    pub order: i64,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When it was accepted.
    pub accepted_at: Timestamp,
    /// When its latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When it completed.
    pub completed_at: Option<Timestamp>,
    /// Tokens and cost of all its attempts so far.
    #[serde(default)]
    pub usage: Usage,
}

/// A turn as clients see it in turn lists and `queue.updated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnView {
    /// Turn id.
    pub turn_id: TurnId,
    /// Queued, running or completed.
    pub status: TurnStatus,
    /// 0 while running, 1.. in the queue; absent once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// The busy mode it was sent with.
    pub mode: BusyMode,
    /// The message text.
    pub content: String,
    /// The client's idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// How it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// When it was accepted.
    pub accepted_at: Timestamp,
}

impl TurnView {
    /// The view of a turn at `position`.
    pub fn new(turn: &TurnRecord, position: Option<usize>) -> Self {
        TurnView {
            turn_id: turn.id,
            status: turn.status,
            position,
            mode: turn.mode,
            content: turn.content.clone(),
            client_message_id: turn.client_message_id.clone(),
            outcome: turn.outcome,
            accepted_at: turn.accepted_at,
        }
    }
}
