//! The session's journal: writes in flight to the store, in the order they were made, with what
//! each releases once it is confirmed (events to deliver, replies to send).
//!
//! Invariant: nothing leaves the journal before the store confirmed it durable, and it leaves
//! in submission order. A failed write stops the session (fail-stop): nothing after it is
//! delivered, every waiting reply gets the error, and the next activation rebuilds the session
//! from what the store holds.

use super::Session;
use crate::error::RuntimeError;
use crate::event::{Event, EventBody};
use crate::ids::{SessionId, TurnId};
use crate::metrics::RuntimeMetrics;
use crate::provider::HistoryMessage;
use crate::store::{Batch, Store, StoreError, Write};
use crate::time::Timestamp;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The store's answer to one of the session's writes, delivered to the actor as a stream item.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Confirmation {
    /// Which write.
    ticket: u64,
    /// Durable, or why not.
    result: Result<(), StoreError>,
}

/// A write the store has not confirmed yet.
struct InFlight {
    /// Its place in the session's order of writes.
    ticket: u64,
    /// The events it appends, delivered once it is durable.
    events: Vec<Arc<Event>>,
    /// Replies that wait for it (and so for everything before it).
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// When it was handed to the store: on a store with leases, the write renews the
    /// session's lease from (no earlier than) this moment.
    sent: Instant,
}

/// Writes in flight, oldest first, and the one that waits for them.
///
/// Coalescing: while a write is in flight, later writes are merged into one pending batch
/// (same order, same atomicity per write: a merged batch lands whole or not at all), submitted
/// when the write in flight is confirmed. So a fast provider costs one store write per flush,
/// not one per drain of its output, and a session never has more than one write queued at the
/// store's writer.
pub(crate) struct Journal {
    /// Unconfirmed writes in submission order.
    in_flight: VecDeque<InFlight>,
    /// Writes made while one is in flight, merged, not yet submitted.
    pending: Option<(Batch, InFlight)>,
    /// Source of tickets.
    next_ticket: u64,
    /// Where the store's confirmations go; the actor reads the other end as a stream.
    confirmations: mpsc::UnboundedSender<Confirmation>,
    /// Set while a handler gathers its writes into one ([`Journal::hold`]).
    held: bool,
}

/// A write confirmed durable: what it releases.
pub(crate) struct Released {
    /// Its events, now safe to deliver.
    pub events: Vec<Arc<Event>>,
    /// Replies waiting for it.
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// When it was handed to the store.
    pub sent: Instant,
}

impl Released {
    /// Answers the waiting replies.
    pub fn answer(self) {
        for waiter in self.waiters {
            let _ = waiter.send(Ok(()));
        }
    }
}

impl Journal {
    /// A journal and the stream of its confirmations (for `ctx.add_stream`).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Confirmation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let journal = Journal {
            in_flight: VecDeque::new(),
            pending: None,
            next_ticket: 0,
            confirmations: tx,
            held: false,
        };
        (journal, rx)
    }

    /// Hands `batch` to the store, or merges it into the pending batch while a write is in
    /// flight; returns at once.
    pub fn submit(&mut self, store: &dyn Store, session: SessionId, batch: Batch) {
        if self.in_flight.is_empty() && !self.held {
            return self.send(store, session, batch, Vec::new());
        }
        let batch = match self.pending.as_mut() {
            Some((pending, write)) => match pending.absorb(batch) {
                Ok(events) => {
                    write.events.extend(events);
                    return;
                }
                // Not mergeable (two provider-id mappings): the pending batch goes now.
                Err(batch) => {
                    self.submit_pending(store, session);
                    *batch
                }
            },
            None => batch,
        };
        let events = batch.events.clone();
        self.pending = Some((
            batch,
            InFlight {
                ticket: 0,
                events,
                waiters: Vec::new(),
                sent: Instant::now(),
            },
        ));
    }

    /// Gathers what is submitted from now on into the pending batch, until
    /// [`Journal::release`]: a handler that writes several times (a turn accepted and started
    /// at once) costs one store write.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Ends a [`Journal::hold`]: the gathered batch goes to the store unless a write is in
    /// flight (then it goes when that one is confirmed).
    pub fn release(&mut self, store: &dyn Store, session: SessionId) {
        self.held = false;
        if self.in_flight.is_empty() {
            self.submit_pending(store, session);
        }
    }

    /// Submits the pending batch, if any (the write in flight before it was confirmed).
    pub fn submit_pending(&mut self, store: &dyn Store, session: SessionId) {
        if let Some((batch, write)) = self.pending.take() {
            self.send(store, session, batch, write.waiters);
        }
    }

    /// Hands a batch to the store.
    fn send(
        &mut self,
        store: &dyn Store,
        session: SessionId,
        batch: Batch,
        waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    ) {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.in_flight.push_back(InFlight {
            ticket,
            events: batch.events.clone(),
            waiters,
            sent: Instant::now(),
        });
        let confirmations = self.confirmations.clone();
        store.submit(
            Write::Commit { session, batch },
            Box::new(move |result| {
                // The actor may be gone (stopped); then nobody waits for this write any more.
                let _ = confirmations.send(Confirmation {
                    ticket,
                    result: result.map(|_| ()),
                });
            }),
        );
    }

    /// A receiver that is answered when everything submitted so far is durable; `None` when
    /// nothing is in flight.
    pub fn wait_for_all(&mut self) -> Option<oneshot::Receiver<Result<(), StoreError>>> {
        let last = match self.pending.as_mut() {
            Some((_, write)) => write,
            None => self.in_flight.back_mut()?,
        };
        let (tx, rx) = oneshot::channel();
        last.waiters.push(tx);
        Some(rx)
    }

    /// The events written but not confirmed yet, in seq order: they follow the durable log.
    pub fn unconfirmed_events(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.in_flight
            .iter()
            .chain(self.pending.as_ref().map(|(_, write)| write))
            .flat_map(|write| write.events.iter())
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.pending.is_none()
    }

    /// Takes a confirmation: the write it releases, or the store error to stop on.
    pub fn confirm(&mut self, confirmation: Confirmation) -> Result<Released, StoreError> {
        let Confirmation { ticket, result } = confirmation;
        result?;
        match self.in_flight.pop_front() {
            Some(write) if write.ticket == ticket => Ok(Released {
                events: write.events,
                waiters: write.waiters,
                sent: write.sent,
            }),
            other => Err(StoreError::Engine(format!(
                "the store confirmed write {ticket} out of order (expected {:?})",
                other.map(|w| w.ticket)
            ))),
        }
    }

    /// Fails every write in flight: their replies get `error`, their events are never shown.
    pub fn fail_all(&mut self, error: &StoreError) {
        let pending = self.pending.take().map(|(_, write)| write);
        for write in self.in_flight.drain(..).chain(pending) {
            for waiter in write.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}

impl Session {
    /// Submits `batch` with `events` (plus `session.state` when the state changed) to the store
    /// and goes on; the events are delivered when the store confirms them durable
    /// ([`Session::deliver`]). A store failure stops the session ([`Session::fail_stop`]).
    pub(super) fn persist(
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
            conversation.extend(
                batch
                    .events
                    .iter()
                    .filter_map(|e| HistoryMessage::of_event(e)),
            );
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
    pub(super) fn fail_stop(&mut self, error: StoreError, ctx: &mut Context<Self>) {
        log::error!(
            "session {}: store write failed, stopping the session: {error}",
            self.id()
        );
        RuntimeMetrics::bump(&self.metrics().store_failures);
        if matches!(error, StoreError::LeaseLost { .. }) {
            RuntimeMetrics::bump(&self.metrics().leases_lost);
        }
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
    pub(super) fn reply_when_durable<T: Send + 'static>(
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
    pub(super) fn persist_output(&mut self, pending: &mut Vec<(Option<TurnId>, EventBody)>) {
        if !pending.is_empty() {
            self.persist(Batch::default(), std::mem::take(pending), "provider output");
        }
    }
}

/// `impl Handler<$msg> for Session` that runs `self.$method(msg, ctx)` and answers its result
/// once everything it wrote is durable ([`Session::reply_when_durable`]).
macro_rules! answered_when_durable {
    ($msg:ty => $method:ident, $answer:ty) => {
        impl actix::Handler<$msg> for Session {
            type Result = actix::ResponseFuture<Result<$answer, RuntimeError>>;

            /// Answered once what it wrote is durable.
            fn handle(&mut self, msg: $msg, ctx: &mut actix::Context<Self>) -> Self::Result {
                let result = self.$method(msg, ctx);
                self.reply_when_durable(result)
            }
        }
    };
}
pub(super) use answered_when_durable;

impl StreamHandler<Confirmation> for Session {
    /// The store confirmed a write durable (in submission order): deliver what it released and
    /// answer who waited; a failed write stops the session.
    fn handle(&mut self, confirmation: Confirmation, ctx: &mut Context<Self>) {
        if self.deleted || self.store_failed {
            return;
        }
        match self.journal.confirm(confirmation) {
            Ok(released) => {
                self.lease_sent = self.lease_sent.max(released.sent);
                let id = self.id();
                self.journal.submit_pending(self.shared.store.as_ref(), id);
                self.deliver(&released.events);
                released.answer();
                if self.one_off_done() {
                    self.check_idle(ctx);
                }
            }
            Err(e) => self.fail_stop(e, ctx),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The journal keeps a sender for as long as the actor lives.
    }
}
