//! The session actor: owns one session's record, state machine, turn queue, running attempt,
//! event log tail and subscribers. Every mutation is persisted before it is acknowledged or
//! broadcast.
//!
//! Invariant: every accepted turn ends with exactly one `turn.completed`. The only place that
//! makes it is [`Session::completed`] (startup recovery included), and a turn reaches it only
//! by being taken out of the queue, out of the running attempt or out of the orphans of a dead
//! actor, each of which holds it once.

mod journal;
mod messages;

pub use messages::*;

use crate::error::RuntimeError;
use crate::event::{ErrorInfo, EventBody};
use crate::event_log::EventLog;
use crate::ids::{SessionId, TurnId};
use crate::metrics::{outcome_index, RuntimeMetrics};
use crate::provider::{
    AttemptRequest, Completion, FailureClass, HistoryMessage, ProviderError, ProviderEvent,
};
use crate::record::{
    BusyMode, Outcome, SessionRecord, SessionState, SessionView, TurnRecord, TurnStatus, TurnView,
};
use crate::registry::{SessionPanicked, SessionStopped};
use crate::runtime::RuntimeShared;
use crate::event::Event;
use crate::store::{Batch, StoreError, Write};
use journal::{Confirmation, Journal};
use crate::subscription::{CloseReason, Subscribers, Subscription};
use crate::time::Timestamp;
use crate::turn_queue::TurnQueue;
use actix::prelude::*;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// A resume-lost failure already got its one fresh start.
    fresh_retry_used: bool,
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
    /// A store write failed: the actor is stopping and writes nothing more.
    store_failed: bool,
    /// Writes in flight to the store; their events are delivered when they are confirmed.
    journal: Journal,
    /// The confirmations of the journal's writes, until `started` makes them a stream.
    confirmations: Option<mpsc::UnboundedReceiver<Confirmation>>,
}

impl Session {
    /// Loads the session's queue and log from the store.
    pub fn load(args: SessionArgs) -> Result<Self, StoreError> {
        let store = args.shared.store.as_ref();
        let id = args.record.id;
        let log = EventLog::load(store, id, args.shared.settings.replay_tail)?;
        let (orphans, queued): (Vec<_>, Vec<_>) = store
            .open_turns(id)?
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
            store_failed: false,
            journal,
            confirmations: Some(confirmations),
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

    /// Submits `batch` with `events` (plus `session.state` when the state changed) to the store
    /// and goes on; the events are delivered when the store confirms them durable
    /// ([`Session::deliver`]). A store failure stops the session ([`Session::fail_stop`]).
    fn persist(
        &mut self,
        mut batch: Batch,
        mut events: Vec<(Option<TurnId>, EventBody)>,
        reason: &str,
    ) {
        if self.deleted || self.store_failed {
            return;
        }
        let state = self.state();
        if state != self.reported_state {
            events.push((
                None,
                EventBody::SessionStateChanged {
                    state,
                    previous: self.reported_state,
                    reason: reason.to_string(),
                },
            ));
        }
        if batch.record.is_some() {
            self.record.updated_at = Timestamp::now();
            batch.record = Some(self.record.clone());
        }
        batch.events = self.log.append(events);
        self.reported_state = state;
        if let Some(conversation) = self.conversation.as_mut() {
            conversation.extend(batch.events.iter().filter_map(|e| match &e.body {
                EventBody::Message { role, text } => Some((
                    e.turn_id,
                    HistoryMessage {
                        role: role.clone(),
                        text: text.clone(),
                    },
                )),
                _ => None,
            }));
        }
        if batch.is_empty() {
            return;
        }
        let id = self.id();
        self.journal.submit(self.shared.store.as_ref(), id, batch);
    }

    /// Events the store confirmed durable: into the tail, to subscribers and the owner feed.
    fn deliver(&mut self, appended: &[Arc<Event>]) {
        if appended.is_empty() {
            return;
        }
        self.log.confirm(appended);
        self.shared
            .metrics
            .events_appended
            .fetch_add(appended.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let lagged = self.subscribers.broadcast(appended);
        if lagged > 0 {
            log::info!(
                "session {}: dropped {lagged} lagging subscriber(s)",
                self.id()
            );
            self.metrics()
                .lagged_drops
                .fetch_add(lagged as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if !self.record.hidden {
            for event in appended.iter().filter(|e| e.body.is_owner_feed()) {
                self.shared.feed.publish(&self.record.owner, event.clone());
            }
        }
    }

    /// A store write failed: the session stops here. Nothing written after the failure is
    /// shown, waiting replies get the error, and the next activation rebuilds the session from
    /// what the store holds (its running turn ends `interrupted` and runs again).
    fn fail_stop(&mut self, error: StoreError, ctx: &mut Context<Self>) {
        log::error!(
            "session {}: store write failed, stopping the session: {error}",
            self.id()
        );
        RuntimeMetrics::bump(&self.metrics().store_failures);
        self.journal.fail_all(&error);
        self.stop_attempt(ctx);
        // Dropping the run stops its provider; the store still says `running`, which the
        // next activation recovers.
        self.run = None;
        self.store_failed = true;
        self.stop_requested = true;
        ctx.stop();
    }

    /// Answers `value` once everything written so far is durable, or with the store's error.
    fn reply_when_durable<T: Send + 'static>(
        &mut self,
        value: Result<T, RuntimeError>,
    ) -> ResponseFuture<Result<T, RuntimeError>> {
        let waiting = match &value {
            Ok(_) => self.journal.wait_for_all(),
            Err(_) => None,
        };
        Box::pin(async move {
            if let Some(durable) = waiting {
                match durable.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(RuntimeError::Store(e)),
                    Err(_) => {
                        return Err(RuntimeError::Internal(
                            "the session stopped before its write was confirmed".into(),
                        ))
                    }
                }
            }
            value
        })
    }

    /// Persists provider events gathered from one drain of the attempt's stream, if any.
    fn persist_output(&mut self, pending: &mut Vec<(Option<TurnId>, EventBody)>) {
        if !pending.is_empty() {
            self.persist(Batch::default(), std::mem::take(pending), "provider output");
        }
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

    /// Whether a turn may start now.
    fn may_dispatch(&self) -> bool {
        self.run.is_none()
            && self.waiting_for_permit.is_none()
            && !self.draining
            && !self.deleted
            && !self.record.paused
            && !self.record.failed
            && !self.record.archived
            && !self.queue.is_empty()
    }

    /// Starts the next queued turn when the session is free, waiting for a run slot if needed.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if !self.may_dispatch() {
            return;
        }
        match self.shared.limiter.clone().try_acquire_owned() {
            Ok(permit) => self.begin_turn(permit, ctx),
            Err(_) => {
                let limiter = self.shared.limiter.clone();
                let wait = async move { limiter.acquire_owned().await.ok() }
                    .into_actor(self)
                    .map(|permit, act, ctx| {
                        act.waiting_for_permit = None;
                        if let Some(permit) = permit {
                            if act.may_dispatch() {
                                act.begin_turn(permit, ctx);
                            }
                        }
                    });
                self.waiting_for_permit = Some(ctx.spawn(wait));
            }
        }
    }

    /// Takes the front turn out of the queue and starts its first attempt.
    fn begin_turn(&mut self, permit: OwnedSemaphorePermit, ctx: &mut Context<Self>) {
        let before = self.queue.len();
        let Some(mut turn) = self.queue.pop_front() else {
            return;
        };
        self.set_queue_gauge(before);
        turn.status = TurnStatus::Running;
        turn.started_at = Some(Timestamp::now());
        self.record.running_since = turn.started_at;
        let turn_id = turn.id;
        let content = turn.content.clone();
        self.run = Some(ActiveRun {
            turns: VecDeque::from([turn.clone()]),
            attempt: 0,
            attempt_id: 0,
            cancel: CancellationToken::new(),
            stream: None,
            watchdog: None,
            retry_timer: None,
            steer: None,
            started: Instant::now(),
            started_at: Timestamp::now(),
            last_output: Instant::now(),
            pid: None,
            fresh_retry_used: false,
            _permit: permit,
            metrics: self.shared.metrics.clone(),
        });
        RuntimeMetrics::add(&self.metrics().running_attempts, 1);
        let batch = Batch {
            turns: vec![turn],
            record: Some(self.record.clone()),
            active: Some(true),
            ..Batch::default()
        };
        let mut events = vec![(
            Some(turn_id),
            EventBody::Message {
                role: "user".into(),
                text: content,
            },
        )];
        if before > 1 || self.record.paused {
            events.push(self.queue_updated());
        }
        self.persist(batch, events, "turn started");
        self.start_attempt(ctx);
    }

    /// The conversation so far, without the current turn, for stateless providers.
    fn history(&mut self, current: TurnId) -> Vec<HistoryMessage> {
        if self.conversation.is_none() {
            let events = match self.shared.store.read_events(self.id(), 0, usize::MAX) {
                Ok(events) => events,
                Err(e) => {
                    log::warn!("session {}: history unreadable: {e}", self.id());
                    return Vec::new();
                }
            };
            let messages = events.into_iter().filter_map(|e| match e.body {
                EventBody::Message { role, text } => {
                    Some((e.turn_id, HistoryMessage { role, text }))
                }
                _ => None,
            });
            self.conversation = Some(messages.collect());
        }
        self.conversation
            .iter()
            .flatten()
            .filter(|(turn, _)| *turn != Some(current))
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Starts the next attempt of the front turn.
    fn start_attempt(&mut self, ctx: &mut Context<Self>) {
        let Some(provider) = self.shared.providers.get(&self.record.provider).cloned() else {
            let error = ProviderError::terminal(
                "unknown_provider",
                format!("provider `{}` is not configured", self.record.provider),
            );
            self.on_failure(error, ctx);
            return;
        };
        let caps = provider.capabilities();
        if caps.stateless && self.record.provider_session_id.is_none() {
            let synthetic = format!("{}-{}", self.record.provider, self.id());
            self.map_provider_session(synthetic);
        }
        self.next_attempt_id += 1;
        let attempt_id = self.next_attempt_id;
        let Some(run) = self.run.as_mut() else { return };
        run.attempt += 1;
        run.attempt_id = attempt_id;
        run.cancel = CancellationToken::new();
        run.started = Instant::now();
        run.started_at = Timestamp::now();
        run.last_output = Instant::now();
        run.retry_timer = None;
        let turn = run.turns.front().expect("a run always has a turn").clone();
        let attempt = run.attempt;
        let cancel = run.cancel.clone();
        let history = if caps.stateless {
            let mut history = seeded_history(&turn.options);
            history.extend(self.history(turn.id));
            history
        } else {
            Vec::new()
        };
        let request = AttemptRequest {
            session_id: self.id(),
            turn_id: turn.id,
            attempt,
            provider_session_id: self.record.provider_session_id.clone(),
            prompt: turn.content.clone(),
            history,
            project: self.record.project.clone(),
            model: self.record.model.clone(),
            options: turn.options.clone(),
            cancel,
        };
        RuntimeMetrics::bump(&self.metrics().attempts);
        let mut turn_record = turn.clone();
        turn_record.attempts = attempt;
        let events = vec![(
            Some(turn.id),
            EventBody::TurnStarted {
                attempt,
                provider: self.record.provider.clone(),
            },
        )];
        log::info!(
            "session {} turn {}: attempt {attempt} on `{}`",
            self.id(),
            turn.id,
            self.record.provider
        );
        self.persist(
            Batch {
                turns: vec![turn_record],
                ..Batch::default()
            },
            events,
            "turn started",
        );
        let started = provider.start(request);
        let stream = started
            .events
            .map(move |event| AttemptOutput {
                attempt_id,
                event: Some(event),
            })
            .chain(futures::stream::once(async move {
                AttemptOutput {
                    attempt_id,
                    event: None,
                }
            }));
        let stream_handle = ctx.add_stream(stream.ready_chunks(OUTPUT_CHUNK));
        let settings = &self.shared.settings;
        let tick = settings
            .output_idle_timeout
            .min(settings.attempt_timeout)
            .div_f64(4.0)
            .clamp(Duration::from_millis(5), Duration::from_secs(5));
        let watchdog = ctx.run_interval(tick, move |act, ctx| act.check_limits(attempt_id, ctx));
        if let Some(run) = self.run.as_mut() {
            run.stream = Some(stream_handle);
            run.watchdog = Some(watchdog);
            run.steer = started.steer;
            run.pid = started.pid;
        }
    }

    /// Fails the attempt when it ran too long or went silent.
    fn check_limits(&mut self, attempt_id: u64, ctx: &mut Context<Self>) {
        let Some(run) = &self.run else { return };
        if run.attempt_id != attempt_id || run.retry_timer.is_some() {
            return;
        }
        let settings = &self.shared.settings;
        if run.started.elapsed() >= settings.attempt_timeout {
            let error = ProviderError::terminal(
                "turn_timeout",
                format!("attempt ran longer than {:?}", settings.attempt_timeout),
            );
            self.on_failure(error, ctx);
        } else if run.last_output.elapsed() >= settings.output_idle_timeout {
            let error = ProviderError::transient(
                "provider_stalled",
                format!("no output for {:?}", settings.output_idle_timeout),
            );
            self.on_failure(error, ctx);
        }
    }

    /// Records the provider's own session id and announces it.
    fn map_provider_session(&mut self, provider_session_id: String) {
        if self.record.provider_session_id.as_deref() == Some(provider_session_id.as_str()) {
            return;
        }
        self.record.provider_session_id = Some(provider_session_id.clone());
        let batch = Batch {
            record: Some(self.record.clone()),
            provider_mapping: Some((self.record.provider.clone(), provider_session_id)),
            ..Batch::default()
        };
        let event = EventBody::SessionUpdated {
            session: self.view(),
            reason: "provider_session_mapped".into(),
        };
        self.persist(batch, vec![(None, event)], "provider session mapped");
    }

    /// Stops the attempt's stream, timers and provider; the run itself stays.
    fn stop_attempt(&mut self, ctx: &mut Context<Self>) {
        if let Some(run) = self.run.as_mut() {
            run.cancel.cancel();
            run.steer = None;
            for handle in [
                run.stream.take(),
                run.watchdog.take(),
                run.retry_timer.take(),
            ]
            .into_iter()
            .flatten()
            {
                ctx.cancel_future(handle);
            }
        }
    }

    /// Puts the steered turns of the run (all but the first) back at the front of the queue.
    fn requeue_riders(&mut self) -> Vec<TurnRecord> {
        let Some(run) = self.run.as_mut() else {
            return Vec::new();
        };
        let riders: Vec<_> = run.turns.drain(1..).collect();
        let before = self.queue.len();
        let mut written = Vec::new();
        for mut turn in riders.into_iter().rev() {
            turn.status = TurnStatus::Queued;
            turn.order = self.queue.front_order(None);
            self.queue.insert(turn.clone());
            written.push(turn);
        }
        self.set_queue_gauge(before);
        written
    }

    /// Ends `turns` with `outcome` and persists that after `events`, in `batch`.
    fn finish_turns(
        &mut self,
        turns: Vec<TurnRecord>,
        outcome: Outcome,
        error: Option<ErrorInfo>,
        completion: Completion,
        mut batch: Batch,
        mut events: Vec<(Option<TurnId>, EventBody)>,
    ) {
        let (turns, completed) = self.completed(turns, outcome, error, &completion);
        batch.turns.extend(turns);
        events.extend(completed);
        batch.active = Some(self.has_open_turns());
        batch.record = Some(self.record.clone());
        self.persist(batch, events, "turn completed");
    }

    /// The only place `turn.completed` is made: each turn of `turns` ends with `outcome`;
    /// returns the completed records and their `turn.completed` events, to be persisted.
    fn completed(
        &mut self,
        turns: Vec<TurnRecord>,
        outcome: Outcome,
        error: Option<ErrorInfo>,
        completion: &Completion,
    ) -> (Vec<TurnRecord>, Vec<(Option<TurnId>, EventBody)>) {
        let now = Timestamp::now();
        let mut records = Vec::with_capacity(turns.len());
        let mut events = Vec::with_capacity(turns.len());
        for mut turn in turns {
            turn.status = TurnStatus::Completed;
            turn.outcome = Some(outcome);
            turn.completed_at = Some(now);
            log::info!("session {} turn {}: {outcome:?}", self.id(), turn.id);
            RuntimeMetrics::bump(&self.metrics().turns_completed[outcome_index(outcome)]);
            events.push((
                Some(turn.id),
                EventBody::TurnCompleted {
                    outcome,
                    error: error.clone(),
                    usage: completion.usage.clone(),
                    cost_usd: completion.cost_usd,
                    exit_code: completion.exit_code,
                },
            ));
            records.push(turn);
        }
        (records, events)
    }

    /// Ends the whole run (every turn in it) with `outcome`.
    fn end_run(&mut self, outcome: Outcome, error: Option<ErrorInfo>, ctx: &mut Context<Self>) {
        self.stop_attempt(ctx);
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.record.running_since = None;
        let turns: Vec<_> = std::mem::take(&mut run.turns).into_iter().collect();
        self.finish_turns(
            turns,
            outcome,
            error,
            Completion::default(),
            Batch::default(),
            Vec::new(),
        );
    }

    /// The front turn was answered; the run goes on while steered turns remain.
    fn on_done(&mut self, completion: Completion, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_mut() else { return };
        let turn = run.turns.pop_front().expect("a run always has a turn");
        let finished = run.turns.is_empty();
        self.record.consecutive_failures = 0;
        if finished {
            self.stop_attempt(ctx);
            self.run = None;
            self.record.running_since = None;
        }
        self.finish_turns(
            vec![turn],
            Outcome::Success,
            None,
            completion,
            Batch::default(),
            Vec::new(),
        );
        if finished {
            self.dispatch(ctx);
        }
    }

    /// Handles a failed attempt by its class: retry, fresh start, or fail the turn.
    fn on_failure(&mut self, error: ProviderError, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_ref() else { return };
        let turn_id = run.front_id();
        let attempt = run.attempt;
        let fresh_retry_used = run.fresh_retry_used;
        log::warn!(
            "session {} turn {turn_id}: attempt {attempt} failed ({:?}): {error}",
            self.id(),
            error.class
        );
        self.stop_attempt(ctx);
        let riders = self.requeue_riders();
        let info = ErrorInfo {
            code: error.code.clone(),
            message: error.message.clone(),
        };
        let completion = Completion {
            exit_code: error.exit_code,
            ..Completion::default()
        };
        let mut batch = Batch {
            turns: riders,
            ..Batch::default()
        };
        match error.class {
            FailureClass::ResumeLost
                if !fresh_retry_used && self.record.provider_session_id.is_some() =>
            {
                self.record.provider_session_id = None;
                if let Some(run) = self.run.as_mut() {
                    run.fresh_retry_used = true;
                }
                batch.record = Some(self.record.clone());
                let events = vec![(
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: "provider_session_reset".into(),
                    },
                )];
                self.persist(batch, events, "provider session reset");
                self.start_attempt(ctx);
            }
            FailureClass::Transient => {
                self.record.consecutive_failures += 1;
                let n = self.record.consecutive_failures;
                let settings = &self.shared.settings;
                if n > settings.max_consecutive_restarts {
                    let exhausted = ErrorInfo {
                        code: "retries_exhausted".into(),
                        message: format!("{} attempts failed in a row; last: {}", n, error.message),
                    };
                    self.record.failed = true;
                    self.fail_run(&error, exhausted, completion, batch);
                    self.after_session_failed(ctx);
                } else {
                    let delay = settings
                        .retry_delay(n)
                        .max(error.retry_after.unwrap_or_default());
                    RuntimeMetrics::bump(&self.metrics().retries);
                    batch.record = Some(self.record.clone());
                    let events = vec![
                        (
                            Some(turn_id),
                            EventBody::Error {
                                code: error.code.clone(),
                                message: error.message.clone(),
                                retryable: true,
                            },
                        ),
                        (
                            Some(turn_id),
                            EventBody::TurnRetrying {
                                attempt: attempt + 1,
                                delay_ms: delay.as_millis() as u64,
                                reason: error.code.clone(),
                            },
                        ),
                    ];
                    self.persist(batch, events, "retrying");
                    let timer = ctx.run_later(delay, |act, ctx| {
                        if act.run.as_ref().is_some_and(|r| r.retry_timer.is_some()) {
                            act.start_attempt(ctx);
                        }
                    });
                    if let Some(run) = self.run.as_mut() {
                        run.retry_timer = Some(timer);
                    }
                }
            }
            FailureClass::Terminal | FailureClass::ResumeLost => {
                self.fail_run(&error, info, completion, batch);
                self.dispatch(ctx);
            }
        }
    }

    /// Ends every turn of the run `failed` with `info`, after an `error` event naming the
    /// provider's own failure (not retryable).
    fn fail_run(
        &mut self,
        error: &ProviderError,
        info: ErrorInfo,
        completion: Completion,
        batch: Batch,
    ) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.record.running_since = None;
        let events = vec![(
            Some(run.front_id()),
            EventBody::Error {
                code: error.code.clone(),
                message: error.message.clone(),
                retryable: false,
            },
        )];
        let turns = std::mem::take(&mut run.turns).into_iter().collect();
        self.finish_turns(
            turns,
            Outcome::Failed,
            Some(info),
            completion,
            batch,
            events,
        );
    }

    /// After the restart cap: switch to the fallback provider, abandon, or hold the queue.
    fn after_session_failed(&mut self, ctx: &mut Context<Self>) {
        let settings = self.shared.settings.clone();
        let fallback = settings
            .fallbacks
            .get(&self.record.provider)
            .filter(|f| self.shared.providers.get(f).is_some())
            .cloned();
        if let Some(fallback) = fallback {
            log::warn!(
                "session {}: provider `{}` failed; falling back to `{fallback}`",
                self.id(),
                self.record.provider
            );
            self.record.provider = fallback;
            self.record.provider_session_id = None;
            self.record.failed = false;
            self.record.consecutive_failures = 0;
            let event = EventBody::SessionUpdated {
                session: self.view(),
                reason: "provider_fallback".into(),
            };
            self.persist(
                Batch {
                    record: Some(self.record.clone()),
                    ..Batch::default()
                },
                vec![(None, event)],
                "provider_fallback",
            );
            self.dispatch(ctx);
        } else if settings.on_failure == crate::settings::FailurePolicy::Abandon {
            let before = self.queue.len();
            let turns = self.queue.drain();
            self.set_queue_gauge(before);
            let events = vec![self.queue_updated()];
            self.finish_turns(
                turns,
                Outcome::Abandoned,
                Some(ErrorInfo {
                    code: "session_failed".into(),
                    message: "the session failed; queued turns abandoned".into(),
                }),
                Completion::default(),
                Batch::default(),
                events,
            );
        }
    }

    /// Turns that were running when the previous actor or process died, or that a graceful
    /// shutdown cut off: each ends `interrupted` and runs again at the front. After a death
    /// that is only while within the restart cap and not stale; a shutdown always re-queues.
    fn recover_orphans(&mut self, cutoff: Cutoff) {
        let orphans = std::mem::take(&mut self.orphans);
        if orphans.is_empty() {
            return;
        }
        let settings = self.shared.settings.clone();
        let requeue = match cutoff {
            Cutoff::Died => {
                // A clock that stepped backwards gives a negative age: not stale.
                let stale = self.record.running_since.is_some_and(|since| {
                    let age = Timestamp::now().millis().saturating_sub(since.millis());
                    u128::try_from(age).unwrap_or(0) >= settings.stale_running.as_millis()
                });
                self.record.consecutive_failures += 1;
                !stale && self.record.consecutive_failures <= settings.max_consecutive_restarts
            }
            Cutoff::Shutdown => true,
        };
        self.record.running_since = None;
        if !requeue {
            self.record.failed = true;
        }
        let mut batch = Batch::default();
        let mut events = Vec::new();
        if requeue {
            let before = self.queue.len();
            for orphan in orphans.iter().rev() {
                let retry = TurnRecord {
                    id: TurnId::new(),
                    status: TurnStatus::Queued,
                    outcome: None,
                    order: self.queue.front_order(None),
                    attempts: 0,
                    accepted_at: Timestamp::now(),
                    started_at: None,
                    completed_at: None,
                    client_message_id: None,
                    ..orphan.clone()
                };
                self.queue.insert(retry.clone());
                events.push((
                    Some(retry.id),
                    EventBody::TurnAccepted {
                        turn_id: retry.id,
                        status: TurnStatus::Queued,
                        position: self.queue.position(retry.id).unwrap_or(1),
                        mode: retry.mode,
                    },
                ));
                batch.turns.push(retry);
            }
            self.set_queue_gauge(before);
            events.push(self.queue_updated());
        }
        log::warn!(
            "session {}: {} turn(s) interrupted by a stop; {}",
            self.id(),
            orphans.len(),
            if requeue {
                "re-queued"
            } else {
                "session failed"
            }
        );
        let interrupted = ErrorInfo {
            code: "interrupted".into(),
            message: "the process running this turn stopped".into(),
        };
        // The interrupted turns complete first, so the re-queued copies follow them in the log;
        // both land in one batch, so a crash never leaves one without the other.
        let (mut completed_turns, mut completed_events) = self.completed(
            orphans,
            Outcome::Interrupted,
            Some(interrupted),
            &Completion::default(),
        );
        completed_turns.extend(batch.turns);
        completed_events.extend(events);
        let batch = Batch {
            turns: completed_turns,
            record: Some(self.record.clone()),
            active: Some(self.has_open_turns()),
            ..Batch::default()
        };
        self.persist(batch, completed_events, "recovered after a stop");
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.has_open_turns() || self.waiting_for_permit.is_some() || !self.journal.is_idle() {
            return;
        }
        if self.subscribers.live() > 0 {
            self.last_activity = Instant::now();
            return;
        }
        if self.last_activity.elapsed() >= self.shared.settings.idle_passivate {
            log::debug!("session {}: passivating", self.id());
            RuntimeMetrics::bump(&self.metrics().passivations);
            self.stop_requested = true;
            ctx.stop();
        }
    }

    fn receipt_for(&self, turn_id: TurnId) -> Result<TurnReceipt, RuntimeError> {
        if let Some(run) = &self.run {
            if run.turns.iter().any(|t| t.id == turn_id) {
                return Ok(TurnReceipt {
                    turn_id,
                    status: TurnStatus::Running,
                    position: Some(0),
                    duplicate: true,
                });
            }
        }
        if let Some(position) = self.queue.position(turn_id) {
            return Ok(TurnReceipt {
                turn_id,
                status: TurnStatus::Queued,
                position: Some(position),
                duplicate: true,
            });
        }
        Ok(TurnReceipt {
            turn_id,
            status: TurnStatus::Completed,
            position: None,
            duplicate: true,
        })
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
        self.recover_orphans(Cutoff::Died);
        let interval = self.shared.settings.idle_check_interval();
        ctx.run_interval(interval, |act, ctx| act.check_idle(ctx));
        self.dispatch(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
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

impl StreamHandler<Vec<AttemptOutput>> for Session {
    /// Provider output that was ready at once, in order; output of any attempt but the current
    /// one is ignored. Consecutive plain events (text, tools, status) are persisted as one batch;
    /// the batch is written before a control event (done, failure, session id) is handled, so
    /// the log keeps the provider's order.
    fn handle(&mut self, outputs: Vec<AttemptOutput>, ctx: &mut Context<Self>) {
        let mut pending: Vec<(Option<TurnId>, EventBody)> = Vec::new();
        for output in outputs {
            let Some(run) = self.run.as_mut() else {
                continue;
            };
            if run.attempt_id != output.attempt_id || run.retry_timer.is_some() {
                continue;
            }
            run.last_output = Instant::now();
            let turn_id = Some(run.front_id());
            let body = match output.event {
                Some(ProviderEvent::Delta(text)) => EventBody::MessageDelta { text },
                Some(ProviderEvent::Message { role, text }) => EventBody::Message { role, text },
                Some(ProviderEvent::Thinking(text)) => EventBody::Thinking { text },
                Some(ProviderEvent::ToolUse {
                    tool_id,
                    name,
                    input,
                }) => EventBody::ToolUse {
                    tool_id,
                    name,
                    input,
                },
                Some(ProviderEvent::ToolResult {
                    tool_id,
                    output,
                    is_error,
                }) => EventBody::ToolResult {
                    tool_id,
                    output,
                    is_error,
                },
                Some(ProviderEvent::Status(value)) => EventBody::Status(value),
                control => {
                    self.persist_output(&mut pending);
                    match control {
                        None => self.on_failure(
                            ProviderError::transient(
                                "provider_exited",
                                "the provider ended without a result",
                            ),
                            ctx,
                        ),
                        Some(ProviderEvent::Done(completion)) => self.on_done(completion, ctx),
                        Some(ProviderEvent::Failed(error)) => self.on_failure(error, ctx),
                        Some(ProviderEvent::SessionId(id)) => self.map_provider_session(id),
                        Some(_) => unreachable!("plain events are matched above"),
                    }
                    continue;
                }
            };
            pending.push((turn_id, body));
        }
        self.persist_output(&mut pending);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The end of an attempt's stream is an `AttemptOutput` with no event; the actor lives on.
    }
}

impl Session {

    /// Accepts a turn by its busy mode; the acceptance is on disk before the answer.
    fn accept_turn(&mut self, msg: SendTurn, ctx: &mut Context<Self>) -> Result<TurnReceipt, RuntimeError> {
        self.last_activity = Instant::now();
        if self.record.archived {
            return Err(RuntimeError::SessionArchived);
        }
        if let Some(client_id) = &msg.client_message_id {
            if let Some(turn_id) = self.shared.store.turn_for_client_id(self.id(), client_id)? {
                return self.receipt_for(turn_id);
            }
        }
        if msg.content.is_empty() {
            return Err(RuntimeError::InvalidRequest(
                "content must not be empty".into(),
            ));
        }
        if self.record.failed {
            return Err(RuntimeError::SessionFailed);
        }
        let busy =
            self.run.is_some() || !self.queue.is_empty() || self.waiting_for_permit.is_some();
        if msg.mode == BusyMode::Reject && busy {
            return Err(RuntimeError::SessionBusy);
        }
        let steer_into = match (&self.run, msg.mode) {
            (Some(run), BusyMode::Steer) if run.retry_timer.is_none() => run.steer.clone(),
            _ => None,
        };
        if steer_into.is_none() && self.queue.len() >= self.shared.settings.max_queue {
            return Err(RuntimeError::QueueFull {
                max: self.shared.settings.max_queue,
            });
        }
        let running_order = self.run.as_ref().map(|r| r.turns[0].order);
        let front = matches!(msg.mode, BusyMode::Steer | BusyMode::Interrupt);
        let order = if front {
            self.queue.front_order(running_order)
        } else {
            self.queue.back_order(running_order)
        };
        let mut turn = TurnRecord {
            id: TurnId::new(),
            session_id: self.id(),
            content: msg.content,
            mode: msg.mode,
            client_message_id: msg.client_message_id.clone(),
            options: msg.options,
            status: TurnStatus::Queued,
            outcome: None,
            order,
            attempts: 0,
            accepted_at: Timestamp::now(),
            started_at: None,
            completed_at: None,
        };
        let turn_id = turn.id;
        let mut batch = Batch {
            active: Some(true),
            client_ids: msg
                .client_message_id
                .map(|c| vec![(c, turn_id)])
                .unwrap_or_default(),
            ..Batch::default()
        };
        let mut events = Vec::new();
        let (status, position);
        if let Some(steer) = steer_into {
            turn.status = TurnStatus::Running;
            status = TurnStatus::Running;
            position = 0;
            batch.turns.push(turn.clone());
            events.push((
                Some(turn_id),
                EventBody::TurnAccepted {
                    turn_id,
                    status,
                    position,
                    mode: msg.mode,
                },
            ));
            events.push((
                Some(turn_id),
                EventBody::Message {
                    role: "user".into(),
                    text: turn.content.clone(),
                },
            ));
            self.persist(batch, events, "turn accepted");
            RuntimeMetrics::bump(&self.metrics().turns_accepted);
            if steer.send(turn.content.clone()).is_ok() {
                if let Some(run) = self.run.as_mut() {
                    run.turns.push_back(turn);
                }
            } else {
                // The attempt ended as the message arrived: it runs next instead.
                turn.status = TurnStatus::Queued;
                turn.order = self.queue.front_order(running_order);
                self.queue.insert(turn.clone());
                self.set_queue_gauge(self.queue.len() - 1);
                let events = vec![self.queue_updated()];
                self.persist(
                    Batch {
                        turns: vec![turn],
                        ..Batch::default()
                    },
                    events,
                    "steer fell back to the queue",
                );
            }
            return Ok(TurnReceipt {
                turn_id,
                status,
                position: Some(position),
                duplicate: false,
            });
        }
        let starts_now = !busy
            && !self.record.paused
            && !self.draining
            && self.shared.limiter.available_permits() > 0;
        let before = self.queue.len();
        self.queue.insert(turn.clone());
        self.set_queue_gauge(before);
        let queue_position = self.queue.position(turn_id).unwrap_or(1);
        (status, position) = if starts_now {
            (TurnStatus::Running, 0)
        } else {
            (TurnStatus::Queued, queue_position)
        };
        batch.turns.push(turn);
        events.push((
            Some(turn_id),
            EventBody::TurnAccepted {
                turn_id,
                status,
                position,
                mode: msg.mode,
            },
        ));
        if !starts_now {
            events.push(self.queue_updated());
        }
        self.persist(batch, events, "turn accepted");
        RuntimeMetrics::bump(&self.metrics().turns_accepted);
        if msg.mode == BusyMode::Interrupt && self.run.is_some() {
            self.end_run(
                Outcome::Aborted,
                Some(ErrorInfo {
                    code: "interrupted_by_user".into(),
                    message: format!("interrupted by turn {turn_id}"),
                }),
                ctx,
            );
        }
        self.dispatch(ctx);
        Ok(TurnReceipt {
            turn_id,
            status,
            position: Some(position),
            duplicate: false,
        })
    }
}

impl StreamHandler<Confirmation> for Session {
    /// The store confirmed a write durable (in submission order): deliver what it released and
    /// answer who waited; a failed write stops the session.
    fn handle(&mut self, confirmation: Confirmation, ctx: &mut Context<Self>) {
        if self.deleted || self.store_failed {
            return;
        }
        match self.journal.confirm(confirmation) {
            Ok(released) => {
                self.deliver(&released.events);
                released.answer();
            }
            Err(e) => self.fail_stop(e, ctx),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The journal keeps a sender for as long as the actor lives.
    }
}

/// A tokio receiver as a stream.
fn tokio_stream_of<T>(mut rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl Handler<SendTurn> for Session {
    type Result = ResponseFuture<Result<TurnReceipt, RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: SendTurn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.accept_turn(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Handler<Subscribe> for Session {
    type Result = Result<Subscription, RuntimeError>;

    /// Reads the replay and registers the subscriber in one step: no gap, no duplicate.
    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let replay = self
            .log
            .read(self.shared.store.as_ref(), msg.after_seq, usize::MAX)?;
        let channel = self.subscribers.add(self.shared.settings.subscriber_buffer);
        RuntimeMetrics::add(&self.metrics().subscribers, 1);
        Ok(Subscription::new(
            self.id(),
            self.log.durable_seq(),
            self.state(),
            replay.into(),
            channel,
            msg.after_seq,
            self.shared.metrics.clone(),
        ))
    }
}

/// Earlier messages the sender put in the turn's `options.history` (`[{role, text}]`): the
/// conversation of a one-off session that has no log of its own (an OpenAI request without a
/// session key carries its whole conversation). They come before the session's own history.
fn seeded_history(options: &serde_json::Value) -> Vec<HistoryMessage> {
    options
        .get("history")
        .and_then(|h| serde_json::from_value(h.clone()).ok())
        .unwrap_or_default()
}

impl Session {

    /// Aborts the running attempt only while it answers this turn, so a caller that raced the
    /// turn's end never aborts the next one.
    fn abort_turn_now(&mut self, msg: AbortTurn, ctx: &mut Context<Self>) -> Result<AbortResult, RuntimeError> {
        self.last_activity = Instant::now();
        let answering = self
            .run
            .as_ref()
            .is_some_and(|r| r.turns.iter().any(|t| t.id == msg.0));
        if !answering {
            return Ok(AbortResult {
                aborted: false,
                turn_id: None,
            });
        }
        self.end_run(Outcome::Aborted, None, ctx);
        self.dispatch(ctx);
        Ok(AbortResult {
            aborted: true,
            turn_id: Some(msg.0),
        })
    }
}

impl Handler<AbortTurn> for Session {
    type Result = ResponseFuture<Result<AbortResult, RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: AbortTurn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.abort_turn_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Session {

    /// Aborts the running attempt (also while it waits to retry); its turns end `aborted`.
    fn abort_now(&mut self, _msg: Abort, ctx: &mut Context<Self>) -> Result<AbortResult, RuntimeError> {
        self.last_activity = Instant::now();
        let Some(turn_id) = self.run.as_ref().map(|r| r.front_id()) else {
            return Ok(AbortResult {
                aborted: false,
                turn_id: None,
            });
        };
        self.end_run(Outcome::Aborted, None, ctx);
        self.dispatch(ctx);
        Ok(AbortResult {
            aborted: true,
            turn_id: Some(turn_id),
        })
    }
}

impl Handler<Abort> for Session {
    type Result = ResponseFuture<Result<AbortResult, RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: Abort, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.abort_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Session {

    fn cancel_turn_now(&mut self, msg: CancelTurn, _ctx: &mut Context<Self>) -> Result<(), RuntimeError> {
        self.last_activity = Instant::now();
        if self
            .run
            .as_ref()
            .is_some_and(|r| r.turns.iter().any(|t| t.id == msg.0))
        {
            return Err(RuntimeError::TurnRunning);
        }
        let before = self.queue.len();
        let turn = self.queue.remove(msg.0).ok_or(RuntimeError::TurnNotFound)?;
        self.set_queue_gauge(before);
        let events = vec![self.queue_updated()];
        self.finish_turns(
            vec![turn],
            Outcome::Cancelled,
            None,
            Completion::default(),
            Batch::default(),
            events,
        );
        Ok(())
    }
}

impl Handler<CancelTurn> for Session {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: CancelTurn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.cancel_turn_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Session {

    fn promote_turn_now(&mut self, msg: PromoteTurn, _ctx: &mut Context<Self>) -> Result<(), RuntimeError> {
        self.last_activity = Instant::now();
        if self
            .run
            .as_ref()
            .is_some_and(|r| r.turns.iter().any(|t| t.id == msg.0))
        {
            return Err(RuntimeError::TurnRunning);
        }
        let mut turn = self.queue.remove(msg.0).ok_or(RuntimeError::TurnNotFound)?;
        turn.order = self.queue.front_order(None);
        self.queue.insert(turn.clone());
        let events = vec![self.queue_updated()];
        self.persist(
            Batch {
                turns: vec![turn],
                ..Batch::default()
            },
            events,
            "turn promoted",
        );
        Ok(())
    }
}

impl Handler<PromoteTurn> for Session {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: PromoteTurn, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.promote_turn_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Session {

    fn control_now(&mut self, msg: Control, ctx: &mut Context<Self>) -> Result<SessionView, RuntimeError> {
        self.last_activity = Instant::now();
        if self.record.archived {
            return Err(RuntimeError::SessionArchived);
        }
        let mut events = Vec::new();
        let reason = match msg {
            Control::Pause => {
                self.record.paused = true;
                events.push(self.queue_updated());
                "paused"
            }
            Control::Resume => {
                self.record.paused = false;
                self.record.failed = false;
                self.record.consecutive_failures = 0;
                events.push(self.queue_updated());
                "resumed"
            }
            Control::Reset => {
                self.record.paused = false;
                self.record.failed = false;
                self.record.consecutive_failures = 0;
                self.record.provider_session_id = None;
                events.push((
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: "reset".into(),
                    },
                ));
                "reset"
            }
        };
        self.persist(
            Batch {
                record: Some(self.record.clone()),
                ..Batch::default()
            },
            events,
            reason,
        );
        self.dispatch(ctx);
        Ok(self.view())
    }
}

impl Handler<Control> for Session {
    type Result = ResponseFuture<Result<SessionView, RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.control_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Handler<GetInfo> for Session {
    type Result = Result<SessionView, RuntimeError>;

    fn handle(&mut self, _msg: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.view())
    }
}

impl Handler<ListTurns> for Session {
    type Result = Result<TurnList, RuntimeError>;

    fn handle(&mut self, _msg: ListTurns, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let turns = self.shared.store.all_turns(self.id())?;
        let turns = turns
            .iter()
            .map(|t| {
                let running = self
                    .run
                    .as_ref()
                    .is_some_and(|r| r.turns.iter().any(|rt| rt.id == t.id));
                let position = if running {
                    Some(0)
                } else {
                    self.queue.position(t.id)
                };
                TurnView::new(t, position)
            })
            .collect();
        Ok(TurnList {
            turns,
            paused: self.record.paused,
        })
    }
}

impl Handler<ReadEvents> for Session {
    type Result = Result<EventPage, RuntimeError>;

    fn handle(&mut self, msg: ReadEvents, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let events = self
            .log
            .read(self.shared.store.as_ref(), msg.after_seq, msg.limit)?;
        Ok(EventPage {
            events,
            last_seq: self.log.durable_seq(),
        })
    }
}

impl Session {

    fn update_now(&mut self, msg: UpdateSession, ctx: &mut Context<Self>) -> Result<SessionView, RuntimeError> {
        self.last_activity = Instant::now();
        let mut reasons = Vec::new();
        if let Some(project) = msg.project {
            if self.record.project.is_none() {
                self.record.project = Some(project);
                reasons.push("project_backfilled");
            }
        }
        if let Some(title) = msg.title {
            if self.record.archived {
                return Err(RuntimeError::SessionArchived);
            }
            self.record.title = Some(title);
            reasons.push("renamed");
        }
        match msg.archived {
            Some(true) if !self.record.archived => {
                if self.run.is_some() {
                    self.end_run(Outcome::Aborted, None, ctx);
                }
                let before = self.queue.len();
                let queued = self.queue.drain();
                self.set_queue_gauge(before);
                if !queued.is_empty() {
                    let events = vec![self.queue_updated()];
                    self.finish_turns(
                        queued,
                        Outcome::Cancelled,
                        None,
                        Completion::default(),
                        Batch::default(),
                        events,
                    );
                }
                self.record.archived = true;
                reasons.push("archived");
            }
            Some(false) if self.record.archived => {
                self.record.archived = false;
                reasons.push("unarchived");
            }
            _ => {}
        }
        if reasons.is_empty() {
            return Ok(self.view());
        }
        let events = reasons
            .iter()
            .map(|reason| {
                (
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: reason.to_string(),
                    },
                )
            })
            .collect();
        self.persist(
            Batch {
                record: Some(self.record.clone()),
                ..Batch::default()
            },
            events,
            reasons[0],
        );
        Ok(self.view())
    }
}

impl Handler<UpdateSession> for Session {
    type Result = ResponseFuture<Result<SessionView, RuntimeError>>;

    /// Answered once what it wrote is durable.
    fn handle(&mut self, msg: UpdateSession, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.update_now(msg, ctx);
        self.reply_when_durable(result)
    }
}

impl Handler<DeleteSession> for Session {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    /// Stops the session and deletes it from the store; answered once the deletion is durable.
    /// The store's writer applies it after every write of the session still in flight.
    fn handle(&mut self, _msg: DeleteSession, ctx: &mut Context<Self>) -> Self::Result {
        self.stop_attempt(ctx);
        // Dropping the run stops its provider.
        self.run = None;
        let deleted = self.shared.store.write(Write::Delete(self.id()));
        self.deleted = true;
        log::info!("session {}: deleted", self.id());
        self.stop_requested = true;
        ctx.stop();
        Box::pin(async move {
            deleted.await?;
            Ok(())
        })
    }
}

impl Handler<Snapshot> for Session {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let run = self.run.as_ref().map(|r| RunInfo {
            turn_id: r.front_id(),
            attempt: r.attempt,
            started_at: r.started_at,
            pid: r.pid,
        });
        MessageResult(ActorSnapshot {
            session_id: self.id(),
            owner: self.record.owner.clone(),
            state: self.state(),
            subscribers: self.subscribers.live(),
            queue_len: self.queue.len(),
            restarts: self.restarts,
            run,
            last_seq: self.log.durable_seq(),
            last_event_at: self.log.last_event_at,
        })
    }
}

impl Handler<Drain> for Session {
    type Result = bool;

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) -> bool {
        self.draining = true;
        if let Some(handle) = self.waiting_for_permit.take() {
            ctx.cancel_future(handle);
        }
        self.run.is_some()
    }
}

impl Handler<Interrupt> for Session {
    type Result = ResponseActFuture<Self, ()>;

    /// Ends the running turns `interrupted` and stops once that is durable; the turns run
    /// again at the next start.
    fn handle(&mut self, _msg: Interrupt, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(run) = self.run.as_ref() {
            // They end `interrupted` now and their re-queued copies run at the next start;
            // a deploy is not the turn's failure, so it does not use up the restart cap.
            run.cancel.cancel();
            let turns: Vec<_> = run.turns.iter().cloned().collect();
            self.stop_attempt(ctx);
            self.run = None;
            self.orphans = turns;
            self.recover_orphans(Cutoff::Shutdown);
        }
        let durable = self.journal.wait_for_all();
        Box::pin(
            async move {
                if let Some(durable) = durable {
                    let _ = durable.await;
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.stop_requested = true;
                ctx.stop();
            }),
        )
    }
}

impl Handler<InjectPanic> for Session {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected panic in session {}", self.id());
    }
}
