//! Following a session another node runs, from the store: the events up to the session's
//! last seq are replayed from the store, page by page (as a local subscription replays what
//! its actor no longer holds), and the live ones come from the store's stream, starting right
//! after the last one replayed. No event passes through the owner, and no gap opens between
//! the replay and the live part: the stream is read from the position of the last event the
//! replay ends at.
//!
//! The subscription ends the way a local one does: `lagged` when the follower falls
//! `subscriber_buffer` events behind, `deleted` when the session is gone (checked whenever the
//! stream is quiet for [`DELETED_CHECK`]), and without a reason (the follow subscribes again,
//! wherever the session runs by then) when the stream fails.

use crate::cluster::EventTail;
use crate::error::RuntimeError;
use crate::event::Event;
use crate::ids::SessionId;
use crate::metrics::RuntimeMetrics;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::subscription::{Backlog, CloseCell, CloseReason, Subscription};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the stream may be quiet before the follow checks that the session still exists.
pub const DELETED_CHECK: Duration = Duration::from_secs(1);

/// Subscribes to `session` after `after_seq` from the store's stream.
pub(crate) async fn subscribe(
    runtime: &Runtime,
    session: SessionId,
    after_seq: u64,
) -> Result<Subscription, RuntimeError> {
    let store = runtime.store().clone();
    let Some(link) = store.cluster() else {
        return Err(RuntimeError::Internal(format!(
            "session {session} runs on another node, and this store cannot follow it"
        )));
    };
    let tail = link.tail_events(session);
    let record = store
        .get_session(session)
        .await?
        .ok_or(RuntimeError::SessionNotFound)?;
    let EventTail { last_seq, events } = tail.await?;
    let state = record.derive_state(record.running_since.is_some());
    let backlog = (after_seq < last_seq).then(|| Backlog {
        store: store.clone(),
        after: after_seq,
        until: last_seq,
        reading: None,
    });
    let (tx, rx) = mpsc::channel(runtime.settings().subscriber_buffer.max(1));
    let close = CloseCell::default();
    let metrics = runtime.metrics().clone();
    RuntimeMetrics::add(&metrics.subscribers, 1);
    RuntimeMetrics::bump(&metrics.remote_follows);
    log::debug!("session {session}: followed from the store after seq {after_seq}");
    tokio::spawn(pump(
        events,
        Live {
            tx,
            close: close.clone(),
            store,
            session,
            metrics: metrics.clone(),
        },
    ));
    Ok(Subscription::new(
        session,
        last_seq,
        state,
        backlog,
        VecDeque::new(),
        (rx, close),
        after_seq,
        metrics,
    ))
}

/// Where the pump hands the stream's events.
struct Live {
    /// The subscription's live channel.
    tx: mpsc::Sender<Arc<Event>>,
    /// Why the subscription ended, once it has.
    close: CloseCell,
    /// Where to check that the session exists.
    store: Arc<dyn Store>,
    /// The session.
    session: SessionId,
    /// Lagged drops are counted.
    metrics: Arc<RuntimeMetrics>,
}

impl Live {
    fn close(&self, reason: CloseReason) {
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }
}

/// Moves the stream's events into the subscription until one side ends. Dropping the sender
/// ends the subscription; the reason set before says why (none: the stream failed).
async fn pump(mut events: mpsc::Receiver<Result<Event, crate::store::StoreError>>, live: Live) {
    let session = live.session;
    loop {
        let next = tokio::select! {
            _ = live.tx.closed() => return,
            next = tokio::time::timeout(DELETED_CHECK, events.recv()) => next,
        };
        match next {
            Ok(Some(Ok(event))) => match live.tx.try_send(Arc::new(event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    RuntimeMetrics::bump(&live.metrics.lagged_drops);
                    live.close(CloseReason::Lagged);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Ok(Some(Err(e))) => {
                log::warn!("session {session}: the stream followed failed: {e}");
                return;
            }
            Ok(None) => return,
            Err(_quiet) => match live.store.get_session(session).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    live.close(CloseReason::Deleted);
                    return;
                }
                Err(e) => {
                    log::warn!("session {session}: checking the followed session failed: {e}");
                    return;
                }
            },
        }
    }
}
