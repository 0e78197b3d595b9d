//! The owner feed: `session.created`, `session.updated` and `session.state` of all of an owner's
//! sessions, live (the WebSocket's `session_id: "*"`).

use crate::event::Event;
use std::sync::Arc;
use tokio::sync::broadcast;

/// One feed item: the owner it is for and the event.
#[derive(Clone, Debug)]
pub struct FeedItem {
    /// The owner of the session the event is from.
    pub owner: Arc<str>,
    /// The event.
    pub event: Arc<Event>,
}

/// A runtime-wide broadcast of lifecycle events; receivers filter by owner.
#[derive(Clone)]
pub struct OwnerFeed {
    tx: broadcast::Sender<FeedItem>,
}

impl OwnerFeed {
    /// A feed that keeps up to `capacity` items for slow receivers before they lag.
    pub fn new(capacity: usize) -> Self {
        OwnerFeed {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Publishes an event of `owner`'s session (nobody listening is fine).
    pub fn publish(&self, owner: &str, event: Arc<Event>) {
        let _ = self.tx.send(FeedItem {
            owner: owner.into(),
            event,
        });
    }

    /// A receiver of every owner's items; filter on [`FeedItem::owner`].
    pub fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.tx.subscribe()
    }
}
