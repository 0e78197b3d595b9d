//! The durable store: one trait, two implementations (sled on disk, memory for tests).
//!
//! The operations are kept to what a distributed engine (NATS JetStream) also offers:
//! compare-and-set on a key ([`Store::create_session`], [`Store::claim_key`]), append with an
//! expected seq and an atomic batch within one session ([`Store::commit`]), range reads by seq
//! ([`Store::read_events`]). The store, not an in-process lock, is what enforces them.

mod memory;
mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::SledStore;

use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::record::{SessionRecord, TurnRecord};
use std::sync::Arc;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 2;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The underlying engine failed (I/O, corruption, read-only disk).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// An append did not start right after the session's last seq: another writer got there first.
    #[error("append conflict in session {session}: expected seq {expected}, log ends at {actual}")]
    SeqConflict {
        /// The session whose log was appended to.
        session: SessionId,
        /// The seq the batch's first event had.
        expected: u64,
        /// The seq the log really ends at.
        actual: u64,
    },
    /// The store was written by a newer schema.
    #[error("schema version {found} is newer than this build's {SCHEMA_VERSION}")]
    SchemaTooNew {
        /// The version found on disk.
        found: u32,
    },
}

/// What [`Store::create_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The record was written and the key (if any) now maps to it.
    Created,
    /// The key was taken already; nothing was written.
    Existing(SessionId),
}

/// Writes that belong to one session and land together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The session record's new value.
    pub record: Option<SessionRecord>,
    /// Turns to write (open ones and completed ones are kept apart by the store).
    pub turns: Vec<TurnRecord>,
    /// Events to append; the first must follow the log's last seq, the rest consecutively.
    pub events: Vec<Arc<Event>>,
    /// New idempotency keys: (`client_message_id`, turn).
    pub client_ids: Vec<(String, TurnId)>,
    /// A provider-id mapping: (provider, provider session id).
    pub provider_mapping: Option<(String, String)>,
    /// Marks the session as having open turns (`Some(true)`) or none (`Some(false)`).
    pub active: Option<bool>,
    /// Flush to disk before returning.
    pub durable: bool,
}

impl Batch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.record.is_none()
            && self.turns.is_empty()
            && self.events.is_empty()
            && self.client_ids.is_empty()
            && self.provider_mapping.is_none()
            && self.active.is_none()
    }

    /// Whether the batch appends events and writes nothing else.
    pub fn is_events_only(&self) -> bool {
        !self.events.is_empty()
            && self.record.is_none()
            && self.turns.is_empty()
            && self.client_ids.is_empty()
            && self.provider_mapping.is_none()
            && self.active.is_none()
    }
}

/// The durable store of sessions, keys, turns and event logs.
pub trait Store: Send + Sync + 'static {
    /// Writes a new session record and, with a key, claims the key for it (compare-and-set).
    /// When the key is taken, nothing is written and the owner of the key is returned.
    fn create_session(
        &self,
        record: &SessionRecord,
        key: Option<&ScopedKey>,
    ) -> Result<CreateOutcome, StoreError>;

    /// Maps `key` to `id` unless it maps to something already; returns the id it maps to.
    fn claim_key(&self, key: &ScopedKey, id: SessionId) -> Result<SessionId, StoreError>;

    /// The session a scoped key names.
    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError>;

    /// A session's record.
    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Every session of an owner, hidden ones included, oldest first.
    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Sessions with open (queued or running) turns, for startup recovery.
    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError>;

    /// Applies a batch atomically; events are appended with the expected-seq check.
    fn commit(&self, session: SessionId, batch: Batch) -> Result<(), StoreError>;

    /// Events with seq > `after_seq`, in order, at most `limit`.
    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// The highest seq in the session's log, 0 when empty.
    fn last_seq(&self, session: SessionId) -> Result<u64, StoreError>;

    /// Queued and running turns of a session, in no particular order.
    fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError>;

    /// Every turn of a session (open and completed), oldest first.
    fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError>;

    /// One turn.
    fn get_turn(&self, session: SessionId, turn: TurnId) -> Result<Option<TurnRecord>, StoreError>;

    /// The turn a `client_message_id` was first sent as.
    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError>;

    /// The session a provider's own id is mapped to.
    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError>;

    /// Deletes a session with its keys, turns, idempotency keys and events.
    fn delete_session(&self, id: SessionId) -> Result<(), StoreError>;

    /// Forces everything written so far to disk.
    fn flush(&self) -> Result<(), StoreError>;

    /// Writes and flushes a probe: the readiness check.
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Counts of sessions and events, for operators and benchmarks.
    fn stats(&self) -> Result<StoreStats, StoreError>;
}

/// Sizes of what a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Session records.
    pub sessions: u64,
    /// Sessions with open turns.
    pub active_sessions: u64,
}
