//! Subscriptions to a session's events: a replay of what the subscriber missed, then the live
//! events, through a bounded buffer. A subscriber that falls `subscriber_buffer` events behind is
//! dropped with [`CloseReason::Lagged`] and resumes with `after_seq`; nobody else slows down.

use crate::event::Event;
use crate::ids::SessionId;
use crate::metrics::RuntimeMetrics;
use crate::record::SessionState;
use crate::store::{Store, StoreRead};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Why a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// It fell too far behind; resume with `after_seq`.
    Lagged,
    /// The session was deleted.
    Deleted,
    /// The session actor stopped (shutdown or crash); resubscribe.
    Stopped,
}

impl CloseReason {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Lagged => "lagged",
            CloseReason::Deleted => "deleted",
            CloseReason::Stopped => "stopped",
        }
    }
}

/// Shared between a subscription and its slot: why it was closed.
pub(crate) type CloseCell = Arc<Mutex<Option<CloseReason>>>;

/// The session's side of a subscriber.
pub(crate) struct SubscriberSlot {
    tx: mpsc::Sender<Arc<Event>>,
    close: CloseCell,
}

/// The subscribers of one session.
#[derive(Default)]
pub(crate) struct Subscribers {
    slots: Vec<SubscriberSlot>,
    /// Subscribers dropped as lagging since the actor started.
    pub lagged_total: u64,
}

impl Subscribers {
    /// Registers a subscriber and hands back its receiving end.
    pub fn add(&mut self, capacity: usize) -> (mpsc::Receiver<Arc<Event>>, CloseCell) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let close = CloseCell::default();
        self.slots.push(SubscriberSlot {
            tx,
            close: close.clone(),
        });
        (rx, close)
    }

    /// Delivers events to every subscriber; drops the ones whose buffer is full.
    /// Returns how many were dropped as lagging.
    pub fn broadcast(&mut self, events: &[Arc<Event>]) -> usize {
        if self.slots.is_empty() {
            return 0;
        }
        let before = self.slots.len();
        let mut lagged = 0;
        self.slots.retain(|slot| {
            for event in events {
                match slot.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        *slot.close.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(CloseReason::Lagged);
                        lagged += 1;
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        debug_assert!(self.slots.len() <= before);
        self.lagged_total += lagged as u64;
        lagged
    }

    /// Resolves when the newest subscriber goes away (its receiving end is dropped).
    pub fn newest_gone(&self) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let tx = self.slots.last()?.tx.clone();
        Some(async move { tx.closed().await })
    }

    /// Forgets subscribers that went away; returns how many remain.
    pub fn live(&mut self) -> usize {
        self.slots.retain(|s| !s.tx.is_closed());
        self.slots.len()
    }

    /// Closes every subscription with `reason`.
    pub fn close_all(&mut self, reason: CloseReason) {
        for slot in self.slots.drain(..) {
            *slot.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        }
    }
}

/// Events to replay from the store, read by the subscriber page by page (outside the session
/// actor): seq in `(after, until]`, all of them durable.
pub(crate) struct Backlog {
    /// Where to read.
    pub store: Arc<dyn Store>,
    /// The last seq read so far.
    pub after: u64,
    /// The last seq to read; the in-memory replay follows it.
    pub until: u64,
    /// The page being read.
    pub reading: Option<StoreRead<Vec<Event>>>,
}

/// Events read from the store in one page of a backlog.
const BACKLOG_PAGE: usize = 512;

/// A subscriber's view of a session: first the replayed events (from the store, then from the
/// session's in-memory tail), then the live ones, in seq order with no gap and no duplicate.
pub struct Subscription {
    /// The session subscribed to.
    pub session_id: SessionId,
    /// The session's last seq when the subscription was made.
    pub last_seq: u64,
    /// The session's state when the subscription was made.
    pub state: SessionState,
    /// The part of the replay the store still has to give.
    backlog: Option<Backlog>,
    /// A page read from the backlog, not yet handed out.
    paged: VecDeque<Arc<Event>>,
    replay: VecDeque<Arc<Event>>,
    live: mpsc::Receiver<Arc<Event>>,
    close: CloseCell,
    /// Events up to this seq are not delivered (a subscriber that asked past the end).
    skip_through: u64,
    /// Keeps the subscriber gauge true.
    metrics: Arc<RuntimeMetrics>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        RuntimeMetrics::add(&self.metrics.subscribers, -1);
    }
}

impl Subscription {
    // The parts come from one actor step; a struct for them would only repeat these names.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        session_id: SessionId,
        last_seq: u64,
        state: SessionState,
        backlog: Option<Backlog>,
        replay: VecDeque<Arc<Event>>,
        (live, close): (mpsc::Receiver<Arc<Event>>, CloseCell),
        skip_through: u64,
        metrics: Arc<RuntimeMetrics>,
    ) -> Self {
        Subscription {
            session_id,
            last_seq,
            state,
            backlog,
            paged: VecDeque::new(),
            replay,
            live,
            close,
            skip_through,
            metrics,
        }
    }

    /// The next event; `None` once the subscription is closed (see [`Subscription::close_reason`]).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Polls for the next event.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        if self.paged.is_empty() && self.poll_backlog(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(event) = self.paged.pop_front() {
            return Poll::Ready(Some(event));
        }
        if self.backlog.is_some() {
            // The store failed to give the backlog: the subscription ends, to be made again.
            self.backlog = None;
            self.replay.clear();
            self.live.close();
            return Poll::Ready(None);
        }
        if let Some(event) = self.replay.pop_front() {
            return Poll::Ready(Some(event));
        }
        loop {
            match self.live.poll_recv(cx) {
                Poll::Ready(Some(event)) if event.seq <= self.skip_through => continue,
                other => return other,
            }
        }
    }

    /// Why the subscription ended; `None` while it is open (or when the session went away
    /// without saying, which means [`CloseReason::Stopped`]).
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events replayed but not yet taken.
    pub fn replay_len(&self) -> usize {
        let backlog = self
            .backlog
            .as_ref()
            .map_or(0, |b| b.until.saturating_sub(b.after) as usize);
        backlog + self.paged.len() + self.replay.len()
    }

    /// Reads the next page of the backlog into `paged`. Ready once a page is in, or once the
    /// read failed, which leaves the backlog set with nothing paged: that ends the
    /// subscription.
    fn poll_backlog(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(backlog) = self.backlog.as_mut() else {
            return Poll::Ready(());
        };
        let session_id = self.session_id;
        let read = backlog.reading.get_or_insert_with(|| {
            let wanted = (backlog.until - backlog.after).min(BACKLOG_PAGE as u64) as usize;
            backlog.store.read_events(session_id, backlog.after, wanted)
        });
        let Poll::Ready(page) = read.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        backlog.reading = None;
        match page {
            Ok(page) if !page.is_empty() => {
                backlog.after = page.last().map_or(backlog.until, |e| e.seq);
                if backlog.after >= backlog.until {
                    self.backlog = None;
                }
                self.paged.extend(page.into_iter().map(Arc::new));
            }
            Ok(_) => {
                log::error!(
                    "session {session_id}: the store has no events after seq {} though {} are durable",
                    backlog.after,
                    backlog.until
                );
            }
            Err(e) => log::error!("session {session_id}: replay read failed: {e}"),
        }
        Poll::Ready(())
    }
}

impl futures::Stream for Subscription {
    type Item = Arc<Event>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_event(cx)
    }
}
