//! Troupe's runtime core: an actor per AI-agent chat session, a registry that serializes session
//! creation per key, a persisted turn queue, and a durable, gapless event log.
//!
//! No HTTP here: the `troupe` crate puts this behind REST, WebSocket, SSE and OpenAI-compatible
//! endpoints. Embedders use [`Runtime`] directly inside their own actix `System`.
//!
//! # Layout
//! - [`runtime`]: the builder and the [`Runtime`] handle (get or create sessions, list, shut down).
//! - [`registry`]: the registry actor; creation per scoped key, single activation, passivation.
//! - [`shared`]: [`RuntimeShared`](shared::RuntimeShared), what every actor of a runtime shares.
//! - [`session`]: the session actor; state machine, busy modes, attempts, retries, recovery.
//! - [`retention`]: the sweeper that removes expired sessions (one-off, archived, idle).
//! - [`lifecycle`]: the notices a session actor sends the registry when it stops or panics.
//! - [`handle`]: [`SessionHandle`], typed async calls that survive passivation.
//! - [`follow`]: [`Follow`], a session's events after a seq (replay, then live) across actor
//!   restarts: the one stream every front end adapts.
//! - [`event_log`], [`turn_queue`], [`subscription`], [`owner_feed`]: the session's parts.
//! - [`store`]: the [`Store`] trait with sled and in-memory implementations.
//! - [`provider`]: the [`Provider`] trait and the scripted [`EchoProvider`].
//! - [`transfer`]: sessions made from others (fork at a turn, import of an export).
//! - [`usage`]: tokens and cost normalized, totals per session and owner day, budgets.
//! - [`process_groups`]: the durable record of running agent process groups, read by the
//!   reaper that kills what a crashed server left behind.
//! - [`cluster`]: several nodes on one shared store: operations forwarded to the node that
//!   runs the session, sessions followed from the store on any node.
//! - [`event`], [`record`], [`ids`], [`time`]: the data and its wire shapes.
//!
//! # Supervision tree
//! ```text
//! actix System
//! └── SessionRegistry            one per Runtime; creates, activates, forgets stopped sessions
//!     ├── Session (id A)         owns record, queue, running attempt, log tail, subscribers
//!     │   └── provider attempt   stream of ProviderEvents; cancelled by a fresh token per attempt
//!     └── Session (id B) …       passivated when idle; reactivated from the store on demand
//! ```
//!
//! # Guarantees
//! - One session per scoped key, however many callers race ([`registry`]).
//! - `seq` per session starts at 1, never skips, never repeats ([`event_log::EventLog`]).
//! - Every accepted turn ends with exactly one `turn.completed` ([`session`]).
//! - A subscriber with `after_seq` gets exactly the missing suffix, then live events.

#![warn(missing_docs)]

pub mod cluster;
pub mod error;
pub mod event;
pub mod event_log;
pub mod follow;
pub mod handle;
pub mod ids;
pub mod lifecycle;
pub mod metrics;
pub mod owner_feed;
pub mod process_groups;
pub mod provider;
pub mod record;
pub mod registry;
pub mod retention;
pub mod runtime;
pub mod session;
pub mod settings;
pub mod shared;
pub mod store;
pub mod subscription;
pub mod time;
pub mod transfer;
pub mod turn_queue;
pub mod usage;

pub use error::RuntimeError;
pub use event::{ErrorInfo, Event, EventBody};
pub use follow::{Follow, FollowEnd};
pub use handle::SessionHandle;
pub use ids::{ScopedKey, SessionId, TurnId};
pub use process_groups::{ProcessLedger, RecordedGroup, SpawnedGroup};
pub use provider::{
    AttemptRequest, Capabilities, Completion, EchoProvider, FailureClass, PermissionAnswer,
    PermissionOption, PermissionRequest, Provider, ProviderError, ProviderEvent, ProviderRun,
    ProviderSet,
};
pub use record::{BusyMode, Outcome, SessionState, SessionView, TurnStatus, TurnView};
pub use registry::NewSession;
pub use runtime::{Runtime, RuntimeBuilder, SessionFilter};
pub use session::{PermissionResolution, SendTurn, TurnReceipt, MAX_CLIENT_MESSAGE_ID_BYTES};
pub use settings::{FailurePolicy, Settings};
pub use store::{MemoryStore, NatsOptions, NatsStore, SledStore, Store};
pub use subscription::{CloseReason, Subscription};
pub use time::Timestamp;
pub use usage::{Budget, Usage};
