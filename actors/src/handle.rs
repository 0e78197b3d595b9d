//! A typed handle on one session: async methods that hide `Addr::send`, mailbox errors,
//! passivation (a stopped actor is reactivated from the store and the call is made again) and
//! where the session runs (another node's session gets the call forwarded).

use crate::cluster::forward::{forward, Forwarded};
use crate::cluster::wire::SessionOp;
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
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times a call is made again after finding the actor stopped.
const MAX_REACTIVATIONS: usize = 8;

/// The pause before asking again where a session runs, when its owner is gone or moved.
const OWNER_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Whether a message may be sent again after a mailbox error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Doing it twice is harmless.
    Safe,
    /// It may have been applied; never send it again.
    Never,
}

/// Where a session runs, as its activation said.
enum Route {
    /// In this process: its actor.
    Local(Addr<Session>),
    /// On another node, which holds its lease.
    Remote(String),
}

/// How a call that went to other nodes is doing.
#[derive(Default)]
struct Attempts {
    /// Times the local actor was found stopped.
    reactivations: usize,
    /// Since when the owner has been gone (or moved), when it is.
    owner_gone_since: Option<Instant>,
}

/// A cheap, cloneable handle on one session.
///
/// Every operation goes where the session runs: to its actor in this process, or (several
/// nodes on one shared store) to the node that holds its lease ([`crate::cluster`]). The rule
/// for sending an operation again after a failure of unknown outcome is the same both ways.
#[derive(Clone)]
pub struct SessionHandle {
    /// The session.
    id: SessionId,
    /// Where to reactivate it.
    runtime: Runtime,
    /// The last known live actor.
    addr: Arc<Mutex<Option<Addr<Session>>>>,
    /// The node last found running the session, when another one: calls go there without
    /// asking the store again, until it fails to take one.
    owner: Arc<Mutex<Option<String>>>,
    /// Whether an operation on a session another node owns is sent there: `false` on the
    /// owner's side of a forwarded request, so that a request never travels twice.
    forwards: bool,
}

impl SessionHandle {
    pub(crate) fn new(id: SessionId, runtime: Runtime) -> Self {
        SessionHandle {
            id,
            runtime,
            addr: Arc::default(),
            owner: Arc::default(),
            forwards: true,
        }
    }

    /// A handle that runs operations here or fails with `OwnedElsewhere` (a node answering a
    /// forwarded request).
    pub(crate) fn local_only(id: SessionId, runtime: Runtime) -> Self {
        SessionHandle {
            forwards: false,
            ..SessionHandle::new(id, runtime)
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

    /// Where the session runs now: the node last found running it, or else here (activated)
    /// unless another node owns it.
    async fn route(&self) -> Result<Route, RuntimeError> {
        if self.forwards {
            if let Some(node) = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Ok(Route::Remote(node));
            }
        }
        match self.addr().await {
            Ok(addr) => Ok(Route::Local(addr)),
            Err(RuntimeError::OwnedElsewhere { node }) if self.forwards => {
                *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.clone());
                Ok(Route::Remote(node))
            }
            Err(e) => Err(e),
        }
    }

    /// The local actor was found stopped: forget it, and say whether the call may be made
    /// again.
    fn stopped(&self, resend: Resend, attempts: &mut Attempts) -> Result<(), RuntimeError> {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if resend == Resend::Never {
            return Err(RuntimeError::Internal(
                "the session stopped while taking the request; it may or may not have been \
                 applied"
                    .into(),
            ));
        }
        attempts.reactivations += 1;
        if attempts.reactivations >= MAX_REACTIVATIONS {
            return Err(RuntimeError::Internal("session kept stopping".into()));
        }
        Ok(())
    }

    /// Forwards `op` to `node`; `None` when it may be sent again (after activating again,
    /// which finds where the session runs now), after a short pause.
    async fn forward<R: DeserializeOwned>(
        &self,
        node: &str,
        resend: Resend,
        op: SessionOp,
        attempts: &mut Attempts,
    ) -> Option<Result<R, RuntimeError>> {
        let answer = forward::<R>(&self.runtime, node, self.id, op).await;
        if !matches!(answer, Forwarded::Answered(_)) {
            // Ask the store where the session runs before the next call.
            *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        let why = match answer {
            Forwarded::Answered(result) => return Some(result),
            Forwarded::NotDone(why) => why,
            Forwarded::Unknown(why) if resend == Resend::Safe => why,
            Forwarded::Unknown(why) => return Some(Err(why)),
        };
        let since = *attempts.owner_gone_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.runtime.settings().forwarding.owner_gone_wait {
            return Some(Err(why));
        }
        tokio::time::sleep(OWNER_RETRY_DELAY).await;
        None
    }

    /// Makes a call where the session runs: sends the message `make` makes to the local actor
    /// (reactivating it when it is gone), or forwards the operation `op` makes to the owner.
    ///
    /// A failure after the message was handed over does not say whether it was applied (a
    /// mailbox error here, no answer in time from the owner); the message is made again only
    /// when `resend` says doing it twice is harmless (reads, idempotent changes, a send with a
    /// `client_message_id`). Otherwise the caller gets `internal` and decides. An owner that is
    /// gone did nothing: the call is made again, wherever the session runs now, for up to
    /// `forwarding.owner_gone_wait`.
    async fn call<M, R>(
        &self,
        resend: Resend,
        make: impl Fn() -> M,
        op: impl Fn() -> SessionOp,
    ) -> Result<R, RuntimeError>
    where
        M: Message<Result = Result<R, RuntimeError>> + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        Session: Handler<M>,
        <Session as Actor>::Context: ToEnvelope<Session, M>,
    {
        let mut attempts = Attempts::default();
        loop {
            match self.route().await? {
                Route::Local(addr) => match addr.send(make()).await {
                    Ok(result) => return result,
                    Err(MailboxError::Closed) => {
                        self.stopped(resend, &mut attempts)?;
                        tokio::task::yield_now().await;
                    }
                    Err(MailboxError::Timeout) => {
                        return Err(RuntimeError::Internal("session did not answer".into()))
                    }
                },
                Route::Remote(node) => {
                    if let Some(answer) = self.forward(&node, resend, op(), &mut attempts).await {
                        return answer;
                    }
                }
            }
        }
    }

    /// Sends a user message with a busy mode.
    pub async fn send(&self, turn: SendTurn) -> Result<TurnReceipt, RuntimeError> {
        let resend = if turn.client_message_id.is_some() {
            Resend::Safe
        } else {
            Resend::Never
        };
        self.call(
            resend,
            || turn.clone(),
            || SessionOp::Send { turn: turn.clone() },
        )
        .await
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

    /// Subscribes to events after `after_seq`. A session another node runs is followed from
    /// the store ([`crate::cluster::remote_follow`]).
    pub async fn subscribe(&self, after_seq: u64) -> Result<Subscription, RuntimeError> {
        let mut attempts = Attempts::default();
        loop {
            match self.route().await? {
                Route::Local(addr) => match addr.send(Subscribe { after_seq }).await {
                    Ok(result) => return result,
                    Err(MailboxError::Closed) => {
                        self.stopped(Resend::Safe, &mut attempts)?;
                        tokio::task::yield_now().await;
                    }
                    Err(MailboxError::Timeout) => {
                        return Err(RuntimeError::Internal("session did not answer".into()))
                    }
                },
                Route::Remote(_) => {
                    return crate::cluster::remote_follow::subscribe(
                        &self.runtime,
                        self.id,
                        after_seq,
                    )
                    .await
                }
            }
        }
    }

    /// Aborts the running turn.
    pub async fn abort(&self) -> Result<AbortResult, RuntimeError> {
        self.call(Resend::Never, || Abort, || SessionOp::Abort)
            .await
    }

    /// Aborts the running attempt only if it answers `turn` (`aborted: false` otherwise).
    pub async fn abort_turn(&self, turn: TurnId) -> Result<AbortResult, RuntimeError> {
        self.call(
            Resend::Never,
            || AbortTurn(turn),
            || SessionOp::AbortTurn { turn },
        )
        .await
    }

    /// Cancels a queued turn.
    pub async fn cancel_turn(&self, turn: TurnId) -> Result<(), RuntimeError> {
        self.call(
            Resend::Never,
            || CancelTurn(turn),
            || SessionOp::CancelTurn { turn },
        )
        .await
    }

    /// Moves a queued turn to the front.
    pub async fn promote_turn(&self, turn: TurnId) -> Result<(), RuntimeError> {
        self.call(
            Resend::Safe,
            || PromoteTurn(turn),
            || SessionOp::PromoteTurn { turn },
        )
        .await
    }

    /// Holds the queue.
    pub async fn pause(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Safe, || Control::Pause, || SessionOp::Pause)
            .await
    }

    /// Releases the queue and clears a failure.
    pub async fn resume(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Safe, || Control::Resume, || SessionOp::Resume)
            .await
    }

    /// Clears a failure and the provider session id; the queue runs again.
    pub async fn reset(&self) -> Result<SessionView, RuntimeError> {
        self.call(Resend::Never, || Control::Reset, || SessionOp::Reset)
            .await
    }

    /// The session object, from the node that runs the session; as the store has it when
    /// that node cannot be asked (on the node answering a forwarded call that no longer runs
    /// the session).
    pub async fn info(&self) -> Result<SessionView, RuntimeError> {
        match self
            .call(Resend::Safe, || GetInfo, || SessionOp::Info)
            .await
        {
            Err(RuntimeError::OwnedElsewhere { .. }) => self.runtime.stored_view(self.id).await,
            answer => answer,
        }
    }

    /// Every turn with positions of the open ones.
    pub async fn turns(&self) -> Result<TurnList, RuntimeError> {
        self.call(Resend::Safe, || ListTurns, || SessionOp::Turns)
            .await
    }

    /// A page of events after `after_seq`, from the node that runs the session; read from the
    /// store when that node cannot be asked (what the store holds was acknowledged, so nothing
    /// undurable is shown).
    pub async fn events(&self, after_seq: u64, limit: usize) -> Result<EventPage, RuntimeError> {
        match self
            .call(
                Resend::Safe,
                || ReadEvents { after_seq, limit },
                || SessionOp::Events { after_seq, limit },
            )
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
        self.call(
            Resend::Safe,
            || update.clone(),
            || SessionOp::Update {
                update: update.clone(),
            },
        )
        .await
    }

    /// Answers a permission request of the running attempt with one of its options; `by` names
    /// who answers. A second answer gets `permission_resolved`.
    pub async fn answer_permission(
        &self,
        request_id: &str,
        option_id: &str,
        by: &str,
    ) -> Result<PermissionResolution, RuntimeError> {
        let answer = AnswerPermission {
            request_id: request_id.to_string(),
            option_id: option_id.to_string(),
            by: by.to_string(),
        };
        self.call(
            Resend::Never,
            || answer.clone(),
            || SessionOp::AnswerPermission {
                answer: answer.clone(),
            },
        )
        .await
    }

    /// Aborts, cancels the queue, deletes the log.
    pub async fn delete(&self) -> Result<(), RuntimeError> {
        self.call(Resend::Safe, || DeleteSession, || SessionOp::Delete)
            .await
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

    /// The actor-table row (of the owner's actor when another node runs the session).
    pub async fn snapshot(&self) -> Result<ActorSnapshot, RuntimeError> {
        let mut attempts = Attempts::default();
        loop {
            match self.route().await? {
                Route::Local(addr) => {
                    return addr
                        .send(Snapshot)
                        .await
                        .map_err(|e| RuntimeError::Internal(e.to_string()))
                }
                Route::Remote(node) => {
                    let op = SessionOp::Snapshot;
                    if let Some(answer) = self.forward(&node, Resend::Safe, op, &mut attempts).await
                    {
                        return answer;
                    }
                }
            }
        }
    }
}
