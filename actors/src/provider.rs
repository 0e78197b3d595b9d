//! The provider boundary: an attempt goes in, a stream of normalized events comes out, ending in
//! exactly one [`ProviderEvent::Done`] or [`ProviderEvent::Failed`] (a stream that ends without
//! either is read as a transient "exited without a result").

mod echo;
mod history_window;

pub use echo::{EchoProvider, EchoScript};
pub use history_window::{HistorySent, HistoryWindow};

use crate::ids::{SessionId, TurnId};
use crate::process_groups::ProcessLedger;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a provider can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// It can continue a conversation from its own provider session id.
    pub resume: bool,
    /// It takes further user messages into a running attempt.
    pub steer: bool,
    /// It keeps no conversation: Troupe sends the history from its own log.
    pub stateless: bool,
    /// It can resume its conversation as a new one, leaving the original untouched (Claude's
    /// `--resume <id> --fork-session`): a forked session continues the source's conversation.
    #[serde(default)]
    pub fork: bool,
}

/// How a provider failure is handled (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Worth another attempt after a backoff (crash, reset, 429/5xx, stall).
    Transient,
    /// Never retried (prompt too long, bad key, missing executable, invalid request).
    Terminal,
    /// The provider forgot its session id: clear it and start fresh once.
    ResumeLost,
}

/// A classified provider failure.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// How to handle it.
    pub class: FailureClass,
    /// Machine-readable code (`prompt_too_long`, `provider_crashed`, `rate_limited`, …).
    pub code: String,
    /// Human text, free of secrets.
    pub message: String,
    /// The process's exit code, when there was a process.
    pub exit_code: Option<i32>,
    /// A wait the provider asked for (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// A failure of `class` with `code` and `message`.
    pub fn new(class: FailureClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError {
            class,
            code: code.into(),
            message: message.into(),
            exit_code: None,
            retry_after: None,
        }
    }

    /// A transient failure.
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FailureClass::Transient, code, message)
    }

    /// A terminal failure.
    pub fn terminal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(FailureClass::Terminal, code, message)
    }

    /// With the process's exit code.
    pub fn with_exit_code(mut self, code: Option<i32>) -> Self {
        self.exit_code = code;
        self
    }
}

/// How an attempt ended well.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// Token usage as the provider reports it.
    pub usage: Option<Value>,
    /// Cost in US dollars.
    pub cost_usd: Option<f64>,
    /// Exit code of the process, when there was one.
    pub exit_code: Option<i32>,
}

/// One normalized thing a provider reports.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderEvent {
    /// The provider's own conversation id, captured mid-run.
    SessionId(String),
    /// A piece of assistant text.
    Delta(String),
    /// A whole message.
    Message {
        /// `assistant` usually.
        role: String,
        /// Its text.
        text: String,
    },
    /// Reasoning text.
    Thinking(String),
    /// A tool was used.
    ToolUse {
        /// Pairs the use with its result.
        tool_id: String,
        /// Tool name.
        name: String,
        /// Tool input.
        input: Value,
    },
    /// A tool answered.
    ToolResult {
        /// The use it answers.
        tool_id: String,
        /// The answer.
        output: Value,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Usage, budget, cost or other status.
    Status(Value),
    /// The attempt's usage so far (cumulative: each report replaces the one before), sent
    /// mid-run or before a failure, so budgets are checked while a turn streams and failed
    /// attempts are counted. A `Done`'s own figures, when it has them, are the final ones.
    Usage(crate::usage::Usage),
    /// The current user message was answered (one per user message in a steered run).
    Done(Completion),
    /// The attempt failed.
    Failed(ProviderError),
}

/// One earlier message, for stateless providers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub text: String,
}

impl HistoryMessage {
    /// The message an event carries (a `message` event), with its turn.
    pub fn of_event(
        event: &crate::event::Event,
    ) -> Option<(Option<crate::ids::TurnId>, HistoryMessage)> {
        match &event.body {
            crate::event::EventBody::Message { role, text } => Some((
                event.turn_id,
                HistoryMessage {
                    role: role.clone(),
                    text: text.clone(),
                },
            )),
            _ => None,
        }
    }
}

/// Everything a provider needs to start one attempt.
#[derive(Clone, Debug)]
pub struct AttemptRequest {
    /// The application session.
    pub session_id: SessionId,
    /// The turn being attempted.
    pub turn_id: TurnId,
    /// 1 for the first attempt of the turn.
    pub attempt: u32,
    /// The provider's id to resume, if it has one.
    pub provider_session_id: Option<String>,
    /// Resume `provider_session_id` as a new conversation (a forked session's first attempt).
    pub fork_session: bool,
    /// The user's message.
    pub prompt: String,
    /// Earlier messages, filled in for stateless providers.
    pub history: Vec<HistoryMessage>,
    /// The session's project (working directory for coding agents).
    pub project: Option<String>,
    /// The model, if chosen.
    pub model: Option<String>,
    /// Per-turn options.
    pub options: Value,
    /// Cancelled when the attempt is aborted; fresh for every attempt.
    pub cancel: CancellationToken,
    /// Where a provider that starts processes records their process group, durably, before
    /// it gives them any work (untracked outside a runtime).
    pub processes: ProcessLedger,
}

/// A started attempt.
pub struct ProviderRun {
    /// Normalized events, ending with `Done` or `Failed`.
    pub events: BoxStream<'static, ProviderEvent>,
    /// Where steered user messages go, when the provider takes them mid-run.
    pub steer: Option<mpsc::UnboundedSender<String>>,
    /// The child process id, when there is one (for the actor table).
    pub pid: Option<u32>,
}

impl ProviderRun {
    /// A run that fails at once, for failures found before anything started.
    pub fn failed(error: ProviderError) -> Self {
        ProviderRun {
            events: Box::pin(futures::stream::once(async move {
                ProviderEvent::Failed(error)
            })),
            steer: None,
            pid: None,
        }
    }
}

/// An agent backend. Implementations must stop all work (kill their processes, drop their
/// streams) when the request's cancellation token fires or the run is dropped.
pub trait Provider: Send + Sync + 'static {
    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts an attempt. Called inside the actix system (a tokio runtime is current).
    fn start(&self, request: AttemptRequest) -> ProviderRun;

    /// Whether it can be used now (its executable exists, its key is set).
    fn available(&self) -> bool {
        true
    }

    /// The kind of provider, for listings (`echo`, `claude-cli`, `openai-http`, …).
    fn kind(&self) -> &str;

    /// The default model, for listings.
    fn model(&self) -> Option<&str> {
        None
    }

    /// For a stateless provider: how much of the session's history each attempt is sent.
    fn history_window(&self) -> HistoryWindow {
        HistoryWindow::default()
    }
}

/// The configured providers by name.
#[derive(Clone, Default)]
pub struct ProviderSet {
    /// Name → provider; sorted so listings are stable.
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl ProviderSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a provider under `name`.
    pub fn insert(&mut self, name: impl Into<String>, provider: Arc<dyn Provider>) {
        self.providers.insert(name.into(), provider);
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// Every provider with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Provider>)> {
        self.providers.iter()
    }
}
