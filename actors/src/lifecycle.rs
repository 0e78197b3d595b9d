//! The notices a session actor sends the registry about its own end: stopped on purpose, or
//! died by a panic. Their own module, so the session does not depend on the registry.

use crate::ids::SessionId;
use actix::Message;

/// A session actor stopped (passivated, deleted, or shut down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionStopped {
    /// The session.
    pub id: SessionId,
    /// Which activation stopped; a newer one is left alone.
    pub generation: u64,
}

/// A session actor died by a panic; the registry restarts it from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionPanicked {
    /// The session.
    pub id: SessionId,
    /// Which activation panicked.
    pub generation: u64,
}
