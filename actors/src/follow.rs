//! Following a session: the one way to read a session's events from `after_seq` on, replayed
//! and then live, that every front end (WebSocket, SSE, the OpenAI streams) adapts.
//!
//! Invariant: the events come in seq order with no gap and no duplicate, each durable. A
//! session actor that stops (passivation, a restart after a panic, a store failure) is
//! subscribed to again after the last seq handed out: the one resubscribe policy. The follow
//! ends only when the follower lagged (its buffer filled; resume with `after_seq`), the session
//! was deleted, or the session keeps stopping.

use crate::error::RuntimeError;
use crate::event::Event;
use crate::handle::SessionHandle;
use crate::ids::SessionId;
use crate::subscription::{CloseReason, Subscription};
use std::sync::Arc;
use std::time::Duration;

/// Subscriptions in a row that end without an event before the follow gives up.
pub const MAX_RESUBSCRIBES: u32 = 8;

/// Why a follow ended.
#[derive(Debug, Clone)]
pub enum FollowEnd {
    /// The follower fell `subscriber_buffer` events behind; resume with `after_seq`.
    Lagged,
    /// The session was deleted.
    Deleted,
    /// The session could not be subscribed to again (it kept stopping, or is gone).
    Failed(RuntimeError),
}

impl FollowEnd {
    /// The wire name of the reason (`lagged`, `deleted`, `stopped`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FollowEnd::Lagged => CloseReason::Lagged.as_str(),
            FollowEnd::Deleted => CloseReason::Deleted.as_str(),
            FollowEnd::Failed(_) => CloseReason::Stopped.as_str(),
        }
    }
}

/// A session's events after a seq: replay, then live, across actor restarts.
pub struct Follow {
    /// Where to subscribe again.
    handle: SessionHandle,
    /// The current subscription.
    subscription: Subscription,
    /// The last seq handed out (or the starting `after_seq`).
    last_seq: u64,
    /// Subscriptions since the last event.
    resubscribes: u32,
    /// Why it ended, once it has.
    ended: Option<FollowEnd>,
}

impl Follow {
    /// Follows `handle`'s session after `after_seq`.
    pub async fn start(handle: SessionHandle, after_seq: u64) -> Result<Follow, RuntimeError> {
        let subscription = handle.subscribe(after_seq).await?;
        Ok(Follow {
            handle,
            subscription,
            last_seq: after_seq,
            resubscribes: 0,
            ended: None,
        })
    }

    /// The session followed.
    pub fn session_id(&self) -> SessionId {
        self.subscription.session_id
    }

    /// The session's durable last seq when the follow (or its latest resubscription) began.
    pub fn last_seq_at_start(&self) -> u64 {
        self.subscription.last_seq
    }

    /// The session's state when the follow (or its latest resubscription) began.
    pub fn state_at_start(&self) -> crate::record::SessionState {
        self.subscription.state
    }

    /// The last seq handed out.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Why the follow ended; `None` while it goes on.
    pub fn end(&self) -> Option<&FollowEnd> {
        self.ended.as_ref()
    }

    /// The next event; `None` once the follow ended (see [`Follow::end`]). Cancel-safe: a
    /// dropped call loses no event.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if self.ended.is_some() {
                return None;
            }
            if let Some(event) = self.subscription.next().await {
                if event.seq <= self.last_seq {
                    continue;
                }
                self.last_seq = event.seq;
                self.resubscribes = 0;
                return Some(event);
            }
            match self.subscription.close_reason() {
                Some(CloseReason::Lagged) => self.ended = Some(FollowEnd::Lagged),
                Some(CloseReason::Deleted) => self.ended = Some(FollowEnd::Deleted),
                Some(CloseReason::Stopped) | None => self.resubscribe().await,
            }
        }
    }

    /// The actor stopped: subscribe again after the last seq handed out, with a short backoff.
    async fn resubscribe(&mut self) {
        self.resubscribes += 1;
        if self.resubscribes > MAX_RESUBSCRIBES {
            self.ended = Some(FollowEnd::Failed(RuntimeError::Internal(format!(
                "session {} keeps stopping",
                self.session_id()
            ))));
            return;
        }
        if self.resubscribes > 1 {
            tokio::time::sleep(Duration::from_millis(20 * u64::from(self.resubscribes))).await;
        }
        log::debug!(
            "session {}: follower resubscribes after seq {}",
            self.session_id(),
            self.last_seq
        );
        match self.handle.subscribe(self.last_seq).await {
            Ok(subscription) => self.subscription = subscription,
            Err(RuntimeError::SessionNotFound) => self.ended = Some(FollowEnd::Deleted),
            Err(e) => self.ended = Some(FollowEnd::Failed(e)),
        }
    }
}

impl SessionHandle {
    /// Follows the session's events after `after_seq`: replay, then live ([`Follow`]).
    pub async fn follow(&self, after_seq: u64) -> Result<Follow, RuntimeError> {
        Follow::start(self.clone(), after_seq).await
    }
}
