//! The session actor: owns one session's record, state machine, turn queue, running attempt,
//! event log tail and subscribers. Every mutation is persisted before it is acknowledged or
//! broadcast.
//!
//! Invariant: every accepted turn ends with exactly one `turn.completed`. The only place that
//! makes it is [`Session::completed`] (startup recovery included), and a turn reaches it only
//! by being taken out of the queue, out of the running attempt or out of the orphans of a dead
//! actor, each of which holds it once.
//!
//! # Layout
//! One actor, a file per role:
//! - this file: the [`Session`] type, its arguments, loading and the actor's lifecycle;
//! - `journal`: persisting writes and delivering their events once the store confirms them;
//! - `attempt`: dispatching turns and running their attempts on the provider;
//! - `outcome`: how turns end (success, failure, retry, fallback, recovery);
//! - `budget`: usage counted into the totals, and the budget checks;
//! - `lease`: keeping the session's lease on a store shared by several nodes;
//! - `turn_handlers` and `handlers`: the messages that act on turns and on the session;
//! - `messages`: the messages themselves and their answers.

mod attempt;
mod budget;
mod handlers;
mod journal;
mod lease;
mod messages;
mod outcome;
mod permissions;
mod processes;
mod turn_handlers;

pub use messages::*;

use crate::event::EventBody;
use crate::event_log::EventLog;
use crate::ids::{SessionId, TurnId};
use crate::lifecycle::{SessionPanicked, SessionStopped};
use crate::metrics::RuntimeMetrics;
use crate::provider::{HistoryMessage, ProviderEvent};
use crate::record::{SessionRecord, SessionState, SessionView, TurnRecord, TurnStatus};
use crate::shared::RuntimeShared;
use crate::store::{Batch, StoreError};
use crate::subscription::{CloseReason, Subscribers};
use crate::time::Timestamp;
use crate::turn_queue::TurnQueue;
use actix::prelude::*;
use journal::{Confirmation, Journal};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// What a session actor starts from.
pub struct SessionArgs {
    /// The session's record as stored.
    pub record: SessionRecord,
    /// Store, providers, settings, feed, limiter, metrics.
    pub shared: Arc<RuntimeShared>,
    /// Told when the actor stops, so it can activate a fresh one next time.
    pub registry: Recipient<SessionStopped>,
    /// Which activation of the session this is; pairs the stop notice with this actor.
    pub generation: u64,
    /// Told when the actor dies by a panic, so it is restarted from the store.
    pub panic_notice: Recipient<SessionPanicked>,
    /// Panics of this session within the panic window before this activation.
    pub recent_panics: u32,
    /// When the session's lease was last sent to the store (its acquisition): the lease
    /// holds until at least this plus the lease TTL.
    pub lease_sent: Instant,
}

/// The attempt that runs now, and the turns it answers.
struct ActiveRun {
    /// The turns the attempt answers, in order: the first is being answered, the rest were
    /// steered in. Never empty while the run exists.
    turns: VecDeque<TurnRecord>,
    /// Attempt number of the first turn (1-based).
    attempt: u32,
    /// Tags the provider's output so output of an aborted attempt is never taken for this one.
    attempt_id: u64,
    /// Fired when the attempt is stopped; a fresh token per attempt.
    cancel: CancellationToken,
    /// The provider's output stream within the actor.
    stream: Option<SpawnHandle>,
    /// The wall-clock and stall watchdog.
    watchdog: Option<SpawnHandle>,
    /// Set while waiting to retry after a transient failure.
    retry_timer: Option<SpawnHandle>,
    /// Where steered messages go, when the provider takes them.
    steer: Option<mpsc::UnboundedSender<String>>,
    /// When the attempt started.
    started: Instant,
    /// The same, for the actor table.
    started_at: Timestamp,
    /// When the provider last said anything.
    last_output: Instant,
    /// The provider's process id.
    pid: Option<u32>,
    /// Where answers to the attempt's permission requests go.
    permissions: Option<mpsc::UnboundedSender<crate::provider::PermissionAnswer>>,
    /// The attempt's permission requests that wait for an answer.
    pending: permissions::PendingPermissions,
    /// A resume-lost failure already got its one fresh start.
    fresh_retry_used: bool,
    /// Usage of the current attempt (and message) already counted into the totals.
    counted: crate::usage::Usage,
    /// A slot of `max_concurrent_runs`, released when the run ends.
    _permit: OwnedSemaphorePermit,
    /// Keeps the running-attempts gauge true however the run ends.
    metrics: Arc<RuntimeMetrics>,
}

impl Drop for ActiveRun {
    /// However the run ends (also by a panic), its provider is told to stop.
    fn drop(&mut self) {
        self.cancel.cancel();
        RuntimeMetrics::add(&self.metrics.running_attempts, -1);
    }
}

impl ActiveRun {
    fn front_id(&self) -> TurnId {
        // A run is created with a turn and removed when its last turn ends.
        self.turns.front().expect("a run always has a turn").id
    }
}

/// How running turns were cut off; decides whether that counts against the restart cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cutoff {
    /// The process or the actor died (crash, `kill -9`, panic): it counts as a failure of the
    /// turn, so a turn that keeps killing its host stops being re-run.
    Died,
    /// Graceful shutdown: not the turn's doing; it re-runs however often the server restarts.
    Shutdown,
}

/// A provider event tagged with the attempt it belongs to; `None` marks the end of the stream.
#[derive(Message)]
#[rtype(result = "()")]
struct AttemptOutput {
    attempt_id: u64,
    event: Option<ProviderEvent>,
}

/// The most provider events the actor takes from an attempt's stream in one step. Whatever is
/// ready (up to this many) is persisted as one batch and broadcast together, so a fast provider
/// costs one store commit and one wake-up per drain, not per delta.
const OUTPUT_CHUNK: usize = 256;

/// The session actor.
pub struct Session {
    /// The session's persisted record; the actor is its only writer while live.
    record: SessionRecord,
    /// Store, providers, settings and the other runtime-wide parts.
    shared: Arc<RuntimeShared>,
    /// Seq assignment, persistence and the replay tail.
    log: EventLog,
    /// Turns waiting, in run order.
    queue: TurnQueue,
    /// The running attempt.
    run: Option<ActiveRun>,
    /// Live subscribers with their bounded buffers.
    subscribers: Subscribers,
    /// The state last announced with `session.state`.
    reported_state: SessionState,
    /// When the actor last did anything, for passivation.
    last_activity: Instant,
    /// Set while waiting for a `max_concurrent_runs` slot.
    waiting_for_permit: Option<SpawnHandle>,
    /// A turn ended in this activation; a hidden session then passivates as soon as it is
    /// idle ([`Session::one_off_done`]).
    ended_a_turn: bool,
    /// Graceful shutdown: no new turns start.
    draining: bool,
    /// The session was deleted; nothing more is written.
    deleted: bool,
    /// Tells the registry when this actor stops.
    registry: Recipient<SessionStopped>,
    /// Which activation this is.
    generation: u64,
    /// Source of attempt ids.
    next_attempt_id: u64,
    /// Turns that were running when the previous actor died, recovered in `started`.
    orphans: Vec<TurnRecord>,
    /// Panics within the panic window before this activation (the actor table's `restarts`).
    restarts: u32,
    /// Told when the actor stops without having been asked to (a panic in a handler).
    panic_notice: Recipient<SessionPanicked>,
    /// Set wherever the actor stops itself on purpose (passivation, delete, shutdown). actix
    /// does not restart an actor whose handler panicked: tokio catches the unwind and actix
    /// stops the dropped actor, so a stop nobody asked for is the mark of a panic.
    stop_requested: bool,
    /// The conversation's messages with their turns, for stateless providers: read from the log
    /// on the first attempt that needs it, then kept up to date as messages are appended, so an
    /// attempt never rescans the whole log.
    conversation: Option<Vec<(Option<TurnId>, HistoryMessage)>>,
    /// `client_message_id`s accepted by this actor: a repeat is recognised while the first
    /// acceptance is still on its way to the store.
    client_ids: std::collections::HashMap<String, TurnId>,
    /// A store write failed: the actor is stopping and writes nothing more.
    store_failed: bool,
    /// Writes in flight to the store; their events are delivered when they are confirmed.
    journal: Journal,
    /// The confirmations of the journal's writes, until `started` makes them a stream.
    confirmations: Option<mpsc::UnboundedReceiver<Confirmation>>,
    /// When the newest write the store confirmed (each renews the lease) was sent: on a store
    /// whose leases expire, the session stops once this is too old ([`Session::check_lease`]).
    lease_sent: Instant,
}

impl Session {
    /// Loads the session's queue and log from the store.
    pub async fn load(args: SessionArgs) -> Result<Self, StoreError> {
        let store = args.shared.store.clone();
        let id = args.record.id;
        let log = EventLog::load(store.as_ref(), id, args.shared.settings.replay_tail).await?;
        let (orphans, queued): (Vec<_>, Vec<_>) = store
            .open_turns(id)
            .await?
            .into_iter()
            .partition(|t| t.status == TurnStatus::Running);
        let reported_state = args.record.derive_state(false);
        let (journal, confirmations) = Journal::new();
        Ok(Session {
            record: args.record,
            shared: args.shared,
            log,
            queue: TurnQueue::from_turns(queued),
            run: None,
            subscribers: Subscribers::default(),
            reported_state,
            last_activity: Instant::now(),
            waiting_for_permit: None,
            ended_a_turn: false,
            draining: false,
            deleted: false,
            registry: args.registry,
            generation: args.generation,
            next_attempt_id: 0,
            orphans,
            restarts: args.recent_panics,
            panic_notice: args.panic_notice,
            stop_requested: false,
            conversation: None,
            client_ids: Default::default(),
            store_failed: false,
            journal,
            confirmations: Some(confirmations),
            lease_sent: args.lease_sent,
        })
    }

    fn id(&self) -> SessionId {
        self.record.id
    }

    fn state(&self) -> SessionState {
        self.record.derive_state(self.run.is_some())
    }

    fn view(&self) -> SessionView {
        SessionView::new(
            &self.record,
            self.run.is_some(),
            self.log.durable_seq(),
            self.queue.len(),
        )
    }

    fn metrics(&self) -> &RuntimeMetrics {
        &self.shared.metrics
    }

    fn queue_updated(&self) -> (Option<TurnId>, EventBody) {
        (
            None,
            EventBody::QueueUpdated {
                turns: self.queue.views(),
                paused: self.record.paused,
            },
        )
    }

    fn has_open_turns(&self) -> bool {
        self.run.is_some() || !self.queue.is_empty()
    }

    fn set_queue_gauge(&self, before: usize) {
        RuntimeMetrics::add(
            &self.metrics().queue_depth,
            self.queue.len() as i64 - before as i64,
        );
    }

    /// A hidden (one-off) session that has ended a turn in this activation: it passivates as
    /// soon as it is idle, not after `idle_passivate`, so a gateway serving keyless requests
    /// keeps no actor per request.
    fn one_off_done(&self) -> bool {
        self.record.hidden && self.ended_a_turn
    }

    /// For a one-off session: checks for idleness again when this newest subscriber (the
    /// request's follower) goes away.
    fn watch_one_off_follower(&mut self, ctx: &mut Context<Self>) {
        if !self.record.hidden {
            return;
        }
        if let Some(gone) = self.subscribers.newest_gone() {
            ctx.spawn(
                gone.into_actor(self)
                    .map(|(), act, ctx| act.check_idle(ctx)),
            );
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.has_open_turns() || self.waiting_for_permit.is_some() || !self.journal.is_idle() {
            return;
        }
        if self.subscribers.live() > 0 {
            self.last_activity = Instant::now();
            return;
        }
        if self.one_off_done()
            || self.last_activity.elapsed() >= self.shared.settings.idle_passivate
        {
            log::debug!("session {}: passivating", self.id());
            RuntimeMetrics::bump(&self.metrics().passivations);
            self.stop_requested = true;
            ctx.stop();
        }
    }
}

impl Drop for Session {
    /// Gauges are taken back here, so they stay true however the actor ends.
    fn drop(&mut self) {
        RuntimeMetrics::add(&self.metrics().live_sessions, -1);
        RuntimeMetrics::add(&self.metrics().queue_depth, -(self.queue.len() as i64));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Some(confirmations) = self.confirmations.take() {
            ctx.add_stream(tokio_stream_of(confirmations));
        }
        RuntimeMetrics::add(&self.metrics().live_sessions, 1);
        RuntimeMetrics::add(&self.metrics().queue_depth, self.queue.len() as i64);
        RuntimeMetrics::bump(&self.metrics().activations);
        if self.restarts > self.shared.settings.max_panics && !self.record.failed {
            log::error!(
                "session {}: {} panics within {:?}; marking it failed",
                self.id(),
                self.restarts,
                self.shared.settings.panic_window
            );
            self.record.failed = true;
            let event = EventBody::Error {
                code: "session_panicked".into(),
                message: format!("the session actor panicked {} times", self.restarts),
                retryable: false,
            };
            self.persist(
                Batch {
                    record: Some(self.record.clone()),
                    ..Batch::default()
                },
                vec![(None, event)],
                "too many panics",
            );
        }
        self.keep_lease(ctx);
        self.recover_orphans(Cutoff::Died);
        let interval = self.shared.settings.idle_check_interval();
        ctx.run_interval(interval, |act, ctx| act.check_idle(ctx));
        self.dispatch(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(provider) = self.shared.providers.get(&self.record.provider) {
            provider.end_session(self.id());
        }
        if let Some(run) = self.run.take() {
            // The actor is gone (system shutdown): the provider must not outlive it. The turn
            // stays `running` in the store and startup recovery ends it `interrupted`.
            run.cancel.cancel();
        }
        let reason = if self.deleted {
            CloseReason::Deleted
        } else {
            CloseReason::Stopped
        };
        self.subscribers.close_all(reason);
        if self.stop_requested {
            self.registry.do_send(SessionStopped {
                id: self.id(),
                generation: self.generation,
            });
        } else {
            self.panic_notice.do_send(SessionPanicked {
                id: self.id(),
                generation: self.generation,
            });
        }
    }
}

/// A tokio receiver as a stream.
fn tokio_stream_of<T>(mut rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
