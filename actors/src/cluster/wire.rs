//! What travels between nodes: a [`SessionCall`] (a session and one [`SessionOp`]) in JSON, and
//! the owner's [`Reply`] with the operation's result or its error, code and details kept.

use crate::error::RuntimeError;
use crate::ids::{SessionId, TurnId};
use crate::session::{AnswerPermission, SendTurn, UpdateSession};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// One [`SessionHandle`](crate::SessionHandle) operation, as the owner runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SessionOp {
    /// [`SessionHandle::send`](crate::SessionHandle::send).
    Send {
        /// The user message.
        turn: SendTurn,
    },
    /// `abort`.
    Abort,
    /// `abort_turn`.
    AbortTurn {
        /// The turn the running attempt must answer.
        turn: TurnId,
    },
    /// `cancel_turn`.
    CancelTurn {
        /// The queued turn.
        turn: TurnId,
    },
    /// `promote_turn`.
    PromoteTurn {
        /// The queued turn.
        turn: TurnId,
    },
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `reset`.
    Reset,
    /// `info`.
    Info,
    /// `turns`.
    Turns,
    /// `events`.
    Events {
        /// Events with a greater seq.
        after_seq: u64,
        /// At most this many.
        limit: usize,
    },
    /// `update`.
    Update {
        /// The change.
        update: UpdateSession,
    },
    /// `answer_permission`.
    AnswerPermission {
        /// The answer.
        answer: AnswerPermission,
    },
    /// `delete`.
    Delete,
    /// `snapshot`.
    Snapshot,
}

impl SessionOp {
    /// Every operation's name, in the order of [`SessionOp::index`]: the `op` label of
    /// `troupe_forwarded_requests_total`.
    pub const NAMES: [&'static str; 15] = [
        "send",
        "abort",
        "abort_turn",
        "cancel_turn",
        "promote_turn",
        "pause",
        "resume",
        "reset",
        "info",
        "turns",
        "events",
        "update",
        "answer_permission",
        "delete",
        "snapshot",
    ];

    /// The operation's place in [`SessionOp::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            SessionOp::Send { .. } => 0,
            SessionOp::Abort => 1,
            SessionOp::AbortTurn { .. } => 2,
            SessionOp::CancelTurn { .. } => 3,
            SessionOp::PromoteTurn { .. } => 4,
            SessionOp::Pause => 5,
            SessionOp::Resume => 6,
            SessionOp::Reset => 7,
            SessionOp::Info => 8,
            SessionOp::Turns => 9,
            SessionOp::Events { .. } => 10,
            SessionOp::Update { .. } => 11,
            SessionOp::AnswerPermission { .. } => 12,
            SessionOp::Delete => 13,
            SessionOp::Snapshot => 14,
        }
    }

    /// The operation's name.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// A request to the owner: run `op` on `session`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionCall {
    /// The session.
    pub session: SessionId,
    /// What to do.
    pub op: SessionOp,
}

/// The owner's answer: the operation's result, or its error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// The operation's result.
    Ok(T),
    /// Why it failed.
    Err(WireError),
}

/// A [`RuntimeError`] on the wire: its code and what its variant carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// [`RuntimeError::code`].
    pub code: String,
    /// The text a variant carries (a provider name, a reason, the owning node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The field of an `invalid_request` about one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The cap of `queue_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// The fields an [`RuntimeError::InvalidField`] can name (the variant holds a `&'static str`).
const FIELDS: [&str; 4] = ["content", "client_message_id", "options", "option_id"];

impl From<&RuntimeError> for WireError {
    fn from(e: &RuntimeError) -> Self {
        let mut wire = WireError {
            code: e.code().to_string(),
            detail: None,
            field: None,
            max: None,
        };
        match e {
            RuntimeError::UnknownProvider(s)
            | RuntimeError::InvalidSessionKey(s)
            | RuntimeError::InvalidRequest(s)
            | RuntimeError::BudgetExceeded(s)
            | RuntimeError::ProviderUnavailable(s)
            | RuntimeError::Internal(s) => wire.detail = Some(s.clone()),
            RuntimeError::InvalidField { field, message } => {
                wire.field = Some(field.to_string());
                wire.detail = Some(message.clone());
            }
            RuntimeError::QueueFull { max } => wire.max = Some(*max),
            RuntimeError::Store(StoreError::Engine(s)) => wire.detail = Some(s.clone()),
            RuntimeError::Store(e) => wire.detail = Some(e.to_string()),
            RuntimeError::OwnedElsewhere { node } => wire.detail = Some(node.clone()),
            _ => {}
        }
        wire
    }
}

impl From<WireError> for RuntimeError {
    /// The error the owner had; a code this build does not know is `internal`.
    fn from(wire: WireError) -> Self {
        let detail = wire.detail.unwrap_or_default();
        match wire.code.as_str() {
            "session_not_found" => RuntimeError::SessionNotFound,
            "turn_not_found" => RuntimeError::TurnNotFound,
            "unknown_provider" => RuntimeError::UnknownProvider(detail),
            "invalid_session_key" => RuntimeError::InvalidSessionKey(detail),
            "invalid_request" => match wire
                .field
                .and_then(|f| FIELDS.iter().find(|known| **known == f))
            {
                Some(field) => RuntimeError::InvalidField {
                    field,
                    message: detail,
                },
                None => RuntimeError::InvalidRequest(detail),
            },
            "session_busy" => RuntimeError::SessionBusy,
            "queue_full" => RuntimeError::QueueFull {
                max: wire.max.unwrap_or_default(),
            },
            "session_failed" => RuntimeError::SessionFailed,
            "session_archived" => RuntimeError::SessionArchived,
            "not_running" => RuntimeError::NotRunning,
            "turn_running" => RuntimeError::TurnRunning,
            "permission_not_found" => RuntimeError::PermissionNotFound,
            "permission_resolved" => RuntimeError::PermissionResolved,
            "budget_exceeded" => RuntimeError::BudgetExceeded(detail),
            "provider_unavailable" => RuntimeError::ProviderUnavailable(detail),
            "store_unavailable" => RuntimeError::Store(StoreError::Engine(detail)),
            "owned_elsewhere" => RuntimeError::OwnedElsewhere { node: detail },
            "internal" => RuntimeError::Internal(detail),
            other => RuntimeError::Internal(format!("the owner answered `{other}`: {detail}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_crosses_the_wire_with_its_code_and_details() {
        let errors = [
            RuntimeError::SessionNotFound,
            RuntimeError::TurnNotFound,
            RuntimeError::UnknownProvider("x".into()),
            RuntimeError::InvalidSessionKey("bad".into()),
            RuntimeError::InvalidRequest("why".into()),
            RuntimeError::InvalidField {
                field: "client_message_id",
                message: "too long".into(),
            },
            RuntimeError::SessionBusy,
            RuntimeError::QueueFull { max: 7 },
            RuntimeError::SessionFailed,
            RuntimeError::SessionArchived,
            RuntimeError::NotRunning,
            RuntimeError::TurnRunning,
            RuntimeError::PermissionNotFound,
            RuntimeError::PermissionResolved,
            RuntimeError::BudgetExceeded("spent".into()),
            RuntimeError::ProviderUnavailable("down".into()),
            RuntimeError::Store(StoreError::Engine("disk".into())),
            RuntimeError::Internal("bug".into()),
            RuntimeError::OwnedElsewhere { node: "b".into() },
        ];
        for error in errors {
            let json = serde_json::to_vec(&Reply::<()>::Err(WireError::from(&error))).unwrap();
            let Reply::<()>::Err(wire) = serde_json::from_slice(&json).unwrap() else {
                panic!("an error came back as a result");
            };
            let back = RuntimeError::from(wire);
            assert_eq!(back.code(), error.code());
            assert_eq!(back.to_string(), error.to_string());
        }
    }

    #[test]
    fn an_update_keeps_a_budget_reset_apart_from_no_change() {
        for update in [
            UpdateSession::default(),
            UpdateSession {
                budget: Some(None),
                ..UpdateSession::default()
            },
            UpdateSession {
                budget: Some(Some(crate::usage::Budget::default())),
                title: Some("t".into()),
                ..UpdateSession::default()
            },
        ] {
            let op = SessionOp::Update {
                update: update.clone(),
            };
            let back: SessionOp =
                serde_json::from_slice(&serde_json::to_vec(&op).unwrap()).unwrap();
            let SessionOp::Update { update: back } = back else {
                panic!("another op came back");
            };
            assert_eq!(back.budget, update.budget);
            assert_eq!(back.title, update.title);
        }
    }
}
