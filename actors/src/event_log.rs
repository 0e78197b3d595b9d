//! A session's event log: assigns the gapless `seq`, persists through the store before anything
//! is delivered, and keeps the in-memory tail that serves most replays.

use crate::event::{Event, EventBody};
use crate::ids::{SessionId, TurnId};
use crate::store::{Store, StoreError, StoreRead};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::sync::Arc;

/// The log of one session. Invariant: `seq` starts at 1, strictly increases, never repeats and
/// never skips; an event is in the tail, in a read or with a subscriber only once the store
/// confirmed it durable ([`EventLog::confirm`]).
pub struct EventLog {
    /// The session the log belongs to.
    session_id: SessionId,
    /// The seq of the last event appended (0 when empty); it may still be in flight.
    last_seq: u64,
    /// The seq of the last event the store confirmed durable: the end of what may be shown.
    durable_seq: u64,
    /// The last `tail_cap` durable events.
    tail: VecDeque<Arc<Event>>,
    /// How many events the tail keeps.
    tail_cap: usize,
    /// When the last durable event was appended, for the actor table.
    pub last_event_at: Option<Timestamp>,
}

impl EventLog {
    /// Loads the log's end from the store (all of it durable: it survived a start).
    pub async fn load(
        store: &dyn Store,
        session_id: SessionId,
        tail_cap: usize,
    ) -> Result<Self, StoreError> {
        let last_seq = store.last_seq(session_id).await?;
        let from = last_seq.saturating_sub(tail_cap as u64);
        let tail: VecDeque<_> = store
            .read_events(session_id, from, tail_cap)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let last_event_at = tail.back().map(|e| e.ts);
        Ok(EventLog {
            session_id,
            last_seq,
            durable_seq: last_seq,
            tail,
            tail_cap,
            last_event_at,
        })
    }

    /// The seq of the last event appended (durable or in flight), 0 when empty.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The seq of the last durable event: what reads, replays and views may show.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Gives `events` the seqs right after the last one; they are to be submitted to the store
    /// and shown only after [`EventLog::confirm`].
    pub fn append(&mut self, events: Vec<(Option<TurnId>, EventBody)>) -> Vec<Arc<Event>> {
        let ts = Timestamp::now();
        let appended: Vec<_> = events
            .into_iter()
            .enumerate()
            .map(|(i, (turn_id, body))| {
                Arc::new(Event {
                    encoded: Default::default(),
                    seq: self.last_seq + 1 + i as u64,
                    session_id: self.session_id,
                    turn_id,
                    ts,
                    body,
                })
            })
            .collect();
        if let Some(last) = appended.last() {
            self.last_seq = last.seq;
        }
        appended
    }

    /// The durable events held in memory, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.tail.iter()
    }

    /// The store confirmed `events` durable (they come in seq order): they join the tail.
    pub fn confirm(&mut self, events: &[Arc<Event>]) {
        for event in events {
            debug_assert_eq!(event.seq, self.durable_seq + 1, "confirmed in order");
            self.durable_seq = event.seq;
            self.last_event_at = Some(event.ts);
            if self.tail.len() == self.tail_cap {
                self.tail.pop_front();
            }
            self.tail.push_back(event.clone());
        }
    }

    /// A subscriber's replay after `after_seq`, split so the actor does no store read: the seq
    /// range the subscriber reads from the store itself (`(after, until]`, durable), and the
    /// events of the in-memory tail that follow it.
    pub fn replay_after(&self, after_seq: u64) -> (Option<(u64, u64)>, Vec<Arc<Event>>) {
        if after_seq >= self.durable_seq {
            return (None, Vec::new());
        }
        let tail_first = self.tail.front().map_or(self.durable_seq + 1, |e| e.seq);
        if after_seq + 1 >= tail_first {
            let skip = (after_seq + 1 - tail_first) as usize;
            return (None, self.tail.iter().skip(skip).cloned().collect());
        }
        (
            Some((after_seq, tail_first - 1)),
            self.tail.iter().cloned().collect(),
        )
    }

    /// Durable events with seq > `after_seq`, at most `limit`: from the tail when it covers them,
    /// else read from the store (the returned future does that read, outside the caller).
    pub fn read(
        &self,
        store: &dyn Store,
        after_seq: u64,
        limit: usize,
    ) -> StoreRead<Vec<Arc<Event>>> {
        if after_seq >= self.durable_seq || limit == 0 {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        // Never past the durable end, even where the store has applied more.
        let limit = limit.min((self.durable_seq - after_seq) as usize);
        let tail_first = self.tail.front().map_or(self.durable_seq + 1, |e| e.seq);
        if after_seq + 1 >= tail_first {
            let skip = (after_seq + 1 - tail_first) as usize;
            let events = self.tail.iter().skip(skip).take(limit).cloned().collect();
            return Box::pin(std::future::ready(Ok(events)));
        }
        // The store holds up to the tail's start; the tail the rest (what it has now).
        let from_store = limit.min((tail_first - 1 - after_seq) as usize);
        let rest: Vec<Arc<Event>> = self.tail.iter().take(limit - from_store).cloned().collect();
        let read = store.read_events(self.session_id, after_seq, from_store);
        Box::pin(async move {
            let mut out: Vec<Arc<Event>> = read.await?.into_iter().map(Arc::new).collect();
            let next = out.last().map_or(after_seq, |e| e.seq);
            if next + 1 == tail_first {
                out.extend(rest);
            }
            Ok(out)
        })
    }
}
