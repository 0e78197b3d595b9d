//! A typed handle on one session: async methods that hide `Addr::send`, mailbox errors and
//! passivation (a stopped actor is reactivated from the store and the call is made again).

use crate::error::RuntimeError;
use crate::ids::{SessionId, TurnId};
use crate::record::{BusyMode, SessionView};
use crate::runtime::Runtime;
use crate::session::{
    Abort, AbortResult, AbortTurn, ActorSnapshot, AnswerPermission, CancelTurn, Control,
    DeleteSession, EventPage, GetInfo, ListTurns, PermissionResolution, PromoteTurn, ReadEvents,
    SendTurn, Session, Snapshot, Subscribe, TurnList, TurnReceipt, UpdateSession,
};
use crate::subscription::Subscription;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use std::sync::{Arc, Mutex};

/// How many times a call is made again after finding the actor stopped.
const MAX_REACTIVATIONS: usize = 8;

/// Whether a message may be sent again after a mailbox error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Doing it twice is harmless.
    Safe,
    /// It may have been applied; never send it again.
    Never,
}

/// A cheap, cloneable handle on one session.
#[derive(Clone)]
pub struct SessionHandle {
    /// The session.
    id: SessionId,
    /// Where to reactivate it.
    runtime: Runtime,
    /// The last known live actor.
    addr: Arc<Mutex<Option<Addr<Session>>>>,
}

impl SessionHandle {
    pub(crate) fn new(id: SessionId, runtime: Runtime) -> Self {
        SessionHandle {
            id,
            runtime,
            addr: Arc::default(),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    async fn addr(&self) -> Result<Addr<Session>, RuntimeError> {
        let cached = self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(addr) = cached.filter(|a| a.connected()) {
            return Ok(addr);
        }
        let addr = self.runtime.activate(self.id).await?;
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        Ok(addr)
    }

    /// Sends a message made by `make`, reactivating the session when its actor is gone.
    ///
    /// A mailbox error after the message was handed over does not say whether the actor handled
    /// it; the message is made again only when `resend` says doing it twice is harmless (reads,
    /// idempotent changes, a send with a `client_message_id`). Otherwise the caller gets
    /// `internal` and decides.
    async fn call<M, R>(&self, resend: Resend, make: impl Fn() -> M) -> Result<R, RuntimeError>
    where
        M: Message<Result = Result<R, RuntimeError>> + Send + 'static,
        R: Send + 'static,
        Session: Handler<M>,
        <Session as Actor>::Context: ToEnvelope<Session, M>,
    {
        for _ in 0..MAX_REACTIVATIONS {
            let addr = self.addr().await?;
            match addr.send(make()).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => {
                    *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if resend == Resend::Never {
                        return Err(RuntimeError::Internal(
                            "the session stopped while taking the request; it may or may not \
                             have been applied"
                                .into(),
                        ));
                    }
                    tokio::task::yield_now().await;
                }
                Err(MailboxError::Timeout) => {
                    return Err(RuntimeError::Internal("session did not answer".into()))
                }
            }
        }
        Err(RuntimeError::Internal("session kept stopping".into()))
    }

    /// Sends a user message with a busy mode.
    pub async fn send(&self, turn: SendTurn) -> Result<TurnReceipt, RuntimeError> {
        let resend = if turn.client_message_id.is_some() {
            Resend::Safe
        } else {
            Resend::Never
        };
        self.call(resend, || turn.clone()).await
    }

    /// Sends `content` with `mode` and no options.
    pub async fn send_text(
        &self,
        content: &str,
        mode: BusyMode,
    ) -> Result<TurnReceipt, RuntimeError> {
        self.send(SendTurn {
            content: content.to_string(),
            mode,
            ..SendTurn::default()
        })
        .await
    }

    /// Subscribes to events after `after_seq`.
    pub async fn subscribe(&self, after_seq: u64) -> Result<Subscription, RuntimeError> {
        self.call(Resend::Safe, || Subscribe { after_seq }).await
    }

    /// Aborts the running turn.
    pub async fn abort(&self) -> Result<AbortResult, RuntimeError> {
        self.call(Resend::Never, || Abort).await
    }

    /// Aborts the running attempt only if it answers `turn` (`aborted: false` otherwise).
    pub async fn abort_turn(&self, turn: TurnId) -> Result<AbortResult, RuntimeError> {
        self.call(Resend::Never, || AbortTurn(turn)).await
    }

    /// Cancels a queued turn.
    pub async fn cancel_turn(&self, turn: TurnId) -> Result<(), RuntimeError> {
        self.call(Resend::Never, || CancelTurn(turn)).await
    }

    /// Moves a queued turn to the front.
    pub async fn promote_turn(&self, turn: TurnId) -> Result<(), RuntimeError> {
        self.call(Resend::Safe, || PromoteTurn(turn)).await
    }

    /// Holds the queue.
    pub async fn pause(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Safe, || Control::Pause).await
    }

    /// Releases the queue and clears a failure.
    pub async fn resume(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Safe, || Control::Resume).await
    }

    /// Clears a failure and the provider session id; the queue runs again.
    pub async fn reset(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Never, || Control::Reset).await
    }

    /// The session object. When another node runs the session, as the store has it.
    pub async fn info(&self) -> Result<SessionView, RuntimeError> {
        match self.call(Resend::Safe, || GetInfo).await {
            Err(RuntimeError::OwnedElsewhere { .. }) => self.runtime.stored_view(self.id).await,
            answer => answer,
        }
    }

    /// Every turn with positions of the open ones.
    pub async fn turns(&self) -> Result<TurnList, RuntimeError> {
        self.call(Resend::Safe, || ListTurns).await
    }

    /// A page of events after `after_seq`. When another node runs the session, read from the
    /// store: what it holds was acknowledged, so nothing undurable is shown.
    pub async fn events(&self, after_seq: u64, limit: usize) -> Result<EventPage, RuntimeError> {
        match self
            .call(Resend::Safe, || ReadEvents { after_seq, limit })
            .await
        {
            Err(RuntimeError::OwnedElsewhere { .. }) => {
                let store = self.runtime.store();
                let last_seq = store.last_seq(self.id).await?;
                let events = store.read_events(self.id, after_seq, limit).await?;
                Ok(EventPage {
                    events: events.into_iter().map(Arc::new).collect(),
                    last_seq,
                })
            }
            answer => answer,
        }
    }

    /// Renames, archives or backfills the project.
    pub async fn update(&self, update: UpdateSession) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Safe, || update.clone()).await
    }

    /// Answers a permission request of the running attempt with one of its options; `by` names
    /// who answers. A second answer gets `permission_resolved`.
    pub async fn answer_permission(
        &self,
        request_id: &str,
        option_id: &str,
        by: &str,
    ) -> Result<PermissionResolution, RuntimeError> {
        self.call(Resend::Never, || AnswerPermission {
            request_id: request_id.to_string(),
            option_id: option_id.to_string(),
            by: by.to_string(),
        })
        .await
    }

    /// Aborts, cancels the queue, deletes the log.
    pub async fn delete(&self) -> Result<(), RuntimeError> {
        self.call(Resend::Safe, || DeleteSession).await
    }

    /// Fault injection: makes the live session actor panic (supervision tests and drills).
    #[doc(hidden)]
    pub async fn inject_panic(&self) -> Result<(), RuntimeError> {
        let addr = self.addr().await?;
        // The actor dies answering, so the reply is a mailbox error by design.
        let _ = addr.send(crate::session::InjectPanic).await;
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// The actor-table row.
    pub async fn snapshot(&self) -> Result<ActorSnapshot, RuntimeError> {
        let addr = self.addr().await?;
        addr.send(Snapshot)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))
    }
}
