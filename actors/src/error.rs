//! The runtime's error type; each variant has the wire code of DESIGN.md §11.

use crate::store::StoreError;

/// Why a runtime operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// No such session (or not the caller's).
    #[error("session not found")]
    SessionNotFound,
    /// No such turn in the session.
    #[error("turn not found")]
    TurnNotFound,
    /// The provider name is not configured.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// The session key is malformed.
    #[error("invalid session key: {0}")]
    InvalidSessionKey(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// One field of the request is malformed.
    #[error("{message}")]
    InvalidField {
        /// The field's wire name (`content`, `client_message_id`, …).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `reject` mode and the session has a running or queued turn.
    #[error("session is busy")]
    SessionBusy,
    /// The queue holds `max_queue` turns already.
    #[error("queue is full ({max} turns)")]
    QueueFull {
        /// The configured cap.
        max: usize,
    },
    /// The session failed; `reset` or `resume` it first.
    #[error("session has failed; reset or resume it")]
    SessionFailed,
    /// The session is archived (read-only).
    #[error("session is archived")]
    SessionArchived,
    /// Nothing runs.
    #[error("no turn is running")]
    NotRunning,
    /// The turn runs already; abort it instead.
    #[error("turn is running; abort it instead")]
    TurnRunning,
    /// No permission request of that id waits in the session.
    #[error("permission request not found")]
    PermissionNotFound,
    /// The permission request was answered already (or ended with its turn).
    #[error("permission request already resolved")]
    PermissionResolved,
    /// A budget (the owner's daily cap) leaves nothing to spend.
    #[error("{0}")]
    BudgetExceeded(String),
    /// The provider cannot be used now.
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// Another node holds the session's lease: the session runs there, not here.
    #[error("session is owned by node `{node}`")]
    OwnedElsewhere {
        /// The node id of the lease holder.
        node: String,
    },
    /// The store failed.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The actor system failed (mailbox closed, actor gone).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// The wire code.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::SessionNotFound => "session_not_found",
            RuntimeError::TurnNotFound => "turn_not_found",
            RuntimeError::UnknownProvider(_) => "unknown_provider",
            RuntimeError::InvalidSessionKey(_) => "invalid_session_key",
            RuntimeError::InvalidRequest(_) | RuntimeError::InvalidField { .. } => {
                "invalid_request"
            }
            RuntimeError::SessionBusy => "session_busy",
            RuntimeError::QueueFull { .. } => "queue_full",
            RuntimeError::SessionFailed => "session_failed",
            RuntimeError::SessionArchived => "session_archived",
            RuntimeError::NotRunning => "not_running",
            RuntimeError::TurnRunning => "turn_running",
            RuntimeError::PermissionNotFound => "permission_not_found",
            RuntimeError::PermissionResolved => "permission_resolved",
            RuntimeError::BudgetExceeded(_) => "budget_exceeded",
            RuntimeError::ProviderUnavailable(_) => "provider_unavailable",
            RuntimeError::OwnedElsewhere { .. } => "owned_elsewhere",
            RuntimeError::Store(_) => "store_unavailable",
            RuntimeError::Internal(_) => "internal",
        }
    }
}
