//! The session's journal: writes in flight to the store, in the order they were made, with what
//! each releases once it is confirmed (events to deliver, replies to send).
//!
//! Invariant: nothing leaves the journal before the store confirmed it durable, and it leaves
//! in submission order. A failed write stops the session (fail-stop): nothing after it is
//! delivered, every waiting reply gets the error, and the next activation rebuilds the session
//! from what the store holds.

use crate::event::Event;
use crate::ids::SessionId;
use crate::store::{Batch, Store, StoreError, Write};
use actix::Message;
use std::collections::VecDeque;
use std::sync::Arc;
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
}

/// Writes in flight, oldest first.
pub(crate) struct Journal {
    /// Unconfirmed writes in submission order.
    in_flight: VecDeque<InFlight>,
    /// Source of tickets.
    next_ticket: u64,
    /// Where the store's confirmations go; the actor reads the other end as a stream.
    confirmations: mpsc::UnboundedSender<Confirmation>,
}

/// A write confirmed durable: what it releases.
pub(crate) struct Released {
    /// Its events, now safe to deliver.
    pub events: Vec<Arc<Event>>,
    /// Replies waiting for it.
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
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
            next_ticket: 0,
            confirmations: tx,
        };
        (journal, rx)
    }

    /// Submits `batch` (whose events are `events`) to the store; returns at once.
    pub fn submit(&mut self, store: &dyn Store, session: SessionId, batch: Batch) {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.in_flight.push_back(InFlight {
            ticket,
            events: batch.events.clone(),
            waiters: Vec::new(),
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
        let last = self.in_flight.back_mut()?;
        let (tx, rx) = oneshot::channel();
        last.waiters.push(tx);
        Some(rx)
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Takes a confirmation: the write it releases, or the store error to stop on.
    pub fn confirm(&mut self, confirmation: Confirmation) -> Result<Released, StoreError> {
        let Confirmation { ticket, result } = confirmation;
        result?;
        match self.in_flight.pop_front() {
            Some(write) if write.ticket == ticket => Ok(Released {
                events: write.events,
                waiters: write.waiters,
            }),
            other => Err(StoreError::Engine(format!(
                "the store confirmed write {ticket} out of order (expected {:?})",
                other.map(|w| w.ticket)
            ))),
        }
    }

    /// Fails every write in flight: their replies get `error`, their events are never shown.
    pub fn fail_all(&mut self, error: &StoreError) {
        for write in self.in_flight.drain(..) {
            for waiter in write.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}
