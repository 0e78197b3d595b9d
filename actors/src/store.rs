//! The durable store: one trait, two implementations (sled on disk, memory for tests).
//!
//! The operations are kept to what a distributed engine (NATS JetStream) also offers:
//! compare-and-set on a key ([`Write::Create`], [`Write::ClaimKey`]), append with an expected
//! seq and an atomic batch within one session ([`Write::Commit`]), range reads by seq
//! ([`Store::read_events`]). The store, not an in-process lock, is what enforces them.
//!
//! Writes are submitted, not called: [`Store::submit`] hands a write to the store's writer and
//! returns; the writer applies writes in order, flushes once per group and confirms each write
//! when its group is on disk ([`group_commit`]). Nothing is delivered before it is confirmed.

pub mod group_commit;
mod memory;
mod nats_store;
mod sled_store;

pub use group_commit::GroupCommitter;
pub use memory::MemoryStore;
pub use nats_store::{NatsOptions, NatsStore};
pub use sled_store::SledStore;

use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use crate::record::{SessionRecord, TurnRecord};
use crate::usage::{OwnerDayUsage, UsageIncrement};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

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
    /// This node no longer holds the session's lease: another node may own it now, so the
    /// write was refused (fencing) and nothing of it landed.
    #[error("session {session}: this node no longer holds its lease")]
    LeaseLost {
        /// The session written to.
        session: SessionId,
    },
    /// The store was written by a newer schema.
    #[error("schema version {found} is newer than this build's {SCHEMA_VERSION}")]
    SchemaTooNew {
        /// The version found on disk.
        found: u32,
    },
}

/// The answer to [`Store::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// This node holds the lease now (or held it already): it may run the session.
    Granted,
    /// Another node holds it: the session runs there.
    HeldBy(String),
}

/// What a [`Write::Create`] did.
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
    /// Additions to owners' daily usage totals (read, added to, written back by the store
    /// within the batch's atomic write, since several sessions add to one owner's day).
    pub usage: Vec<UsageIncrement>,
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
            && self.usage.is_empty()
    }

    /// Merges a later batch of the same session into this one, as if both landed in order;
    /// hands back the later batch's events (now in this one). Refused (the batch handed back)
    /// when both map a provider id.
    pub fn absorb(&mut self, later: Batch) -> Result<Vec<Arc<Event>>, Box<Batch>> {
        if self.provider_mapping.is_some() && later.provider_mapping.is_some() {
            return Err(Box::new(later));
        }
        if later.record.is_some() {
            self.record = later.record;
        }
        self.turns.extend(later.turns);
        self.events.extend(later.events.iter().cloned());
        self.client_ids.extend(later.client_ids);
        if later.provider_mapping.is_some() {
            self.provider_mapping = later.provider_mapping;
        }
        if later.active.is_some() {
            self.active = later.active;
        }
        self.usage.extend(later.usage);
        Ok(later.events)
    }

    /// Whether the batch appends events and writes nothing else.
    pub fn is_events_only(&self) -> bool {
        !self.events.is_empty()
            && self.record.is_none()
            && self.turns.is_empty()
            && self.client_ids.is_empty()
            && self.provider_mapping.is_none()
            && self.active.is_none()
            && self.usage.is_empty()
    }
}

/// A write submitted to the store. Writes are applied in the order they are submitted and
/// confirmed in that order, each only once it is durable.
#[derive(Debug, Clone)]
pub enum Write {
    /// An atomic batch within one session; its events are appended with the expected-seq check.
    Commit {
        /// The session written to.
        session: SessionId,
        /// What lands together.
        batch: Batch,
    },
    /// A new session: its record and first event, and with a key the key's claim
    /// (compare-and-set from nothing), all or nothing. A taken key writes nothing.
    ///
    /// A hidden session without a key (a one-off session, such as a keyless OpenAI request's)
    /// is confirmed once applied, without a flush of its own: nobody can find it but its
    /// creator, and the flush of its first turn's acceptance, the first thing anyone is told
    /// about it, makes it durable with that turn. A crash before then loses a session nobody
    /// was told of ([`Write::rides_next_flush`]).
    Create {
        /// The new session's record.
        record: SessionRecord,
        /// Its `session.created` event (seq 1).
        first: Arc<Event>,
        /// The scoped key to claim, if any.
        key: Option<ScopedKey>,
        /// The rest of a session made from another (a fork, an import): its events after the
        /// first (seq 2, 3, …), its turns and the like, landing in the same transaction so a
        /// crash never leaves half a session. Empty for a new session; its `record` is unused.
        rest: Box<Batch>,
    },
    /// Maps `key` to `session` unless it maps to something already (compare-and-set).
    ClaimKey {
        /// The key.
        key: ScopedKey,
        /// The session it should name.
        session: SessionId,
    },
    /// Deletes a session with its keys, turns, idempotency keys and events.
    Delete(SessionId),
    /// Records a running agent process group, or forgets one that is gone
    /// ([`process_groups`](crate::process_groups)). Kept apart from the sessions: a group is
    /// cleared when it is dead, which can be after its session was deleted.
    ProcessGroup(ProcessGroupChange),
}

impl Write {
    /// Whether the write is confirmed once applied and made durable by the next flush (a
    /// one-off session's create), rather than flushed before it is confirmed.
    pub fn rides_next_flush(&self) -> bool {
        matches!(self, Write::Create { record, key: None, .. } if record.hidden)
    }
}

/// What a confirmed [`Write`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// A commit or a delete landed.
    Done,
    /// What a create did.
    Created(CreateOutcome),
    /// The session the claimed key names now.
    Claimed(SessionId),
}

/// Called once with the outcome of a submitted write, after it is durable (or failed). It runs
/// on the store's writer: it must be quick and must not block (send on a channel, no more).
pub type WriteDone = Box<dyn FnOnce(Result<Written, StoreError>) + Send>;

/// How durable a confirmed write is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Confirmed once flushed to disk, together with the rest of its group (the default):
    /// nothing a crash can undo is ever confirmed, so nothing of it is ever delivered.
    #[default]
    Flushed,
    /// Confirmed once applied; the disk catches up on the engine's periodic flush. A crash
    /// can lose (and, on restart, rewrite) the last ~200 ms of what clients were shown.
    Relaxed,
}

/// A store read on its way: resolves to the answer or the store's error. `'static`, so it can
/// be awaited outside the actor (or the thread) that asked.
pub type StoreRead<T> = BoxFuture<'static, Result<T, StoreError>>;

/// The durable store of sessions, keys, turns and event logs.
///
/// Everything is asynchronous, so a networked store can implement it. Writes are pipelined:
/// [`Store::submit`] returns at once, the writer applies writes in submission order and
/// confirms each (in that order) when it is durable. A session assigns seqs and keeps working
/// while its appends are in flight, and delivers events when they are confirmed. Reads see what
/// was applied; callers that must not show undurable data (the session actor) bound them by
/// what was confirmed.
pub trait Store: Send + Sync + 'static {
    /// Submits a write; `done` is called once it is durable or has failed.
    fn submit(&self, write: Write, done: WriteDone);

    /// The session a scoped key names.
    fn lookup_key(&self, key: &ScopedKey) -> StoreRead<Option<SessionId>>;

    /// A session's record.
    fn get_session(&self, id: SessionId) -> StoreRead<Option<SessionRecord>>;

    /// Every session of an owner, hidden ones included, oldest first.
    fn list_sessions(&self, owner: &str) -> StoreRead<Vec<SessionRecord>>;

    /// Every session (hidden ones included) with an id after `after`, in id order (oldest
    /// first), at most `limit`: the retention sweeper's walk over the store.
    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> StoreRead<Vec<SessionRecord>>;

    /// Sessions with open (queued or running) turns, for startup recovery.
    fn active_sessions(&self) -> StoreRead<Vec<SessionId>>;

    /// Events with seq > `after_seq`, in order, at most `limit`.
    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> StoreRead<Vec<Event>>;

    /// The highest seq in the session's log, 0 when empty.
    fn last_seq(&self, session: SessionId) -> StoreRead<u64>;

    /// Queued and running turns of a session, in no particular order.
    fn open_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>>;

    /// Every turn of a session (open and completed), oldest first.
    fn all_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>>;

    /// One turn.
    fn get_turn(&self, session: SessionId, turn: TurnId) -> StoreRead<Option<TurnRecord>>;

    /// The turn a `client_message_id` was first sent as.
    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> StoreRead<Option<TurnId>>;

    /// The session a provider's own id is mapped to.
    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> StoreRead<Option<SessionId>>;

    /// Owners' daily usage totals for days `from..=to` (`YYYY-MM-DD`), of one owner or (`None`)
    /// of all, ordered by owner then day. The one read budgets and the usage route make.
    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> StoreRead<Vec<OwnerDayUsage>>;
    /// Every recorded agent process group, for the reaper at startup.
    fn process_groups(&self) -> StoreRead<Vec<ProcessGroupRecord>>;

    /// Counts of sessions and events, for operators and benchmarks.
    fn stats(&self) -> StoreRead<StoreStats>;

    /// Forces everything written so far to disk. It may block: call it off the actor threads.
    fn flush(&self) -> Result<(), StoreError>;

    /// Writes and flushes a probe, the readiness check. It may block: call it off the actor
    /// threads.
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Whether leases expire unless renewed and fence the writes of the session they cover
    /// (a store shared by several nodes). `false` for the embedded stores: one process owns
    /// everything, every lease is granted and nothing needs renewing.
    fn leases_expire(&self) -> bool {
        false
    }

    /// Takes the lease of `session` for `node` for `ttl` (or keeps it, when this node holds
    /// it already), unless another node holds it. From then on every commit of the session
    /// renews the lease and is refused ([`StoreError::LeaseLost`]) once another node took it;
    /// a [`Write::Commit`] of an empty batch renews it alone. The lease is taken when the call
    /// is made, in order with the writes submitted before it.
    fn acquire_lease(
        &self,
        session: SessionId,
        node: &str,
        ttl: Duration,
    ) -> StoreRead<LeaseGrant> {
        let _ = (session, node, ttl);
        ready(Ok(LeaseGrant::Granted))
    }

    /// Gives up the lease of `session`, after the writes submitted before this call, so
    /// another node can take it at once. Nothing when this node does not hold it.
    fn release_lease(&self, session: SessionId) -> StoreRead<()> {
        let _ = session;
        ready(Ok(()))
    }

    /// Gives up every lease this node holds (graceful shutdown), after the writes submitted
    /// before this call.
    fn release_all_leases(&self) -> StoreRead<()> {
        ready(Ok(()))
    }

    /// The node that holds the lease of `session`, if any (`None` on the embedded stores).
    fn lease_holder(&self, session: SessionId) -> StoreRead<Option<String>> {
        let _ = session;
        ready(Ok(None))
    }

    /// How many leases this node holds.
    fn leases_held(&self) -> usize {
        0
    }

    /// How nodes sharing this store reach each other and follow sessions they do not run
    /// ([`cluster`](crate::cluster)); `None` for a store of one process (sled, memory).
    fn cluster(&self) -> Option<&dyn crate::cluster::ClusterLink> {
        None
    }
}

/// A store in this process whose reads answer at once (sled, memory): it implements its reads
/// synchronously and is a [`Store`] whose read futures are ready when made.
pub trait EmbeddedStore: Send + Sync + 'static {
    /// See [`Store::submit`].
    fn submit(&self, write: Write, done: WriteDone);
    /// See [`Store::lookup_key`].
    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError>;
    /// See [`Store::get_session`].
    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// See [`Store::list_sessions`].
    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// See [`Store::sessions_after`].
    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// See [`Store::active_sessions`].
    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError>;
    /// See [`Store::read_events`].
    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// See [`Store::last_seq`].
    fn last_seq(&self, session: SessionId) -> Result<u64, StoreError>;
    /// See [`Store::open_turns`].
    fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError>;
    /// See [`Store::all_turns`].
    fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError>;
    /// See [`Store::get_turn`].
    fn get_turn(&self, session: SessionId, turn: TurnId) -> Result<Option<TurnRecord>, StoreError>;
    /// See [`Store::turn_for_client_id`].
    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError>;
    /// See [`Store::session_for_provider_id`].
    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError>;
    /// See [`Store::usage_days`].
    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<OwnerDayUsage>, StoreError>;
    /// See [`Store::process_groups`].
    fn process_groups(&self) -> Result<Vec<ProcessGroupRecord>, StoreError>;
    /// See [`Store::flush`].
    fn flush(&self) -> Result<(), StoreError>;
    /// See [`Store::check_writable`].
    fn check_writable(&self) -> Result<(), StoreError>;
    /// See [`Store::stats`].
    fn stats(&self) -> Result<StoreStats, StoreError>;
}

/// An answer that is already there, as a [`StoreRead`].
fn ready<T: Send + 'static>(answer: Result<T, StoreError>) -> StoreRead<T> {
    Box::pin(std::future::ready(answer))
}

impl<S: EmbeddedStore> Store for S {
    fn submit(&self, write: Write, done: WriteDone) {
        EmbeddedStore::submit(self, write, done)
    }
    fn lookup_key(&self, key: &ScopedKey) -> StoreRead<Option<SessionId>> {
        ready(EmbeddedStore::lookup_key(self, key))
    }
    fn get_session(&self, id: SessionId) -> StoreRead<Option<SessionRecord>> {
        ready(EmbeddedStore::get_session(self, id))
    }
    fn list_sessions(&self, owner: &str) -> StoreRead<Vec<SessionRecord>> {
        ready(EmbeddedStore::list_sessions(self, owner))
    }
    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> StoreRead<Vec<SessionRecord>> {
        ready(EmbeddedStore::sessions_after(self, after, limit))
    }
    fn active_sessions(&self) -> StoreRead<Vec<SessionId>> {
        ready(EmbeddedStore::active_sessions(self))
    }
    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> StoreRead<Vec<Event>> {
        ready(EmbeddedStore::read_events(self, session, after_seq, limit))
    }
    fn last_seq(&self, session: SessionId) -> StoreRead<u64> {
        ready(EmbeddedStore::last_seq(self, session))
    }
    fn open_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>> {
        ready(EmbeddedStore::open_turns(self, session))
    }
    fn all_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>> {
        ready(EmbeddedStore::all_turns(self, session))
    }
    fn get_turn(&self, session: SessionId, turn: TurnId) -> StoreRead<Option<TurnRecord>> {
        ready(EmbeddedStore::get_turn(self, session, turn))
    }
    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> StoreRead<Option<TurnId>> {
        ready(EmbeddedStore::turn_for_client_id(
            self,
            session,
            client_message_id,
        ))
    }
    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> StoreRead<Option<SessionId>> {
        ready(EmbeddedStore::session_for_provider_id(
            self,
            provider,
            provider_session_id,
        ))
    }
    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> StoreRead<Vec<OwnerDayUsage>> {
        ready(EmbeddedStore::usage_days(self, owner, from, to))
    }
    fn process_groups(&self) -> StoreRead<Vec<ProcessGroupRecord>> {
        ready(EmbeddedStore::process_groups(self))
    }
    fn stats(&self) -> StoreRead<StoreStats> {
        ready(EmbeddedStore::stats(self))
    }
    fn flush(&self) -> Result<(), StoreError> {
        EmbeddedStore::flush(self)
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        EmbeddedStore::check_writable(self)
    }
}

impl dyn Store {
    /// Submits `write` and waits for its confirmation.
    pub fn write(
        &self,
        write: Write,
    ) -> impl std::future::Future<Output = Result<Written, StoreError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            write,
            Box::new(move |result| {
                // The waiter may have gone away; the write landed all the same.
                let _ = tx.send(result);
            }),
        );
        async move {
            rx.await
                .map_err(|_| StoreError::Engine("the store's writer stopped".into()))?
        }
    }

    /// Applies a batch atomically and waits until it is durable.
    pub async fn commit(&self, session: SessionId, batch: Batch) -> Result<(), StoreError> {
        self.write(Write::Commit { session, batch })
            .await
            .map(|_| ())
    }

    /// Creates a session (record, first event, key claim) and waits until it is durable.
    pub async fn create(
        &self,
        record: SessionRecord,
        first: Arc<Event>,
        key: Option<ScopedKey>,
    ) -> Result<CreateOutcome, StoreError> {
        self.create_with(record, first, key, Batch::default()).await
    }

    /// Creates a session with the rest of its content (events after the first, turns) in one
    /// atomic write, and waits until it is durable.
    pub async fn create_with(
        &self,
        record: SessionRecord,
        first: Arc<Event>,
        key: Option<ScopedKey>,
        rest: Batch,
    ) -> Result<CreateOutcome, StoreError> {
        let write = Write::Create {
            record,
            first,
            key,
            rest: Box::new(rest),
        };
        match self.write(write).await? {
            Written::Created(outcome) => Ok(outcome),
            other => Err(StoreError::Engine(format!("create answered {other:?}"))),
        }
    }

    /// Claims `key` for `session` unless taken; the session it names, once durable.
    pub async fn claim_key(
        &self,
        key: ScopedKey,
        session: SessionId,
    ) -> Result<SessionId, StoreError> {
        match self.write(Write::ClaimKey { key, session }).await? {
            Written::Claimed(id) => Ok(id),
            other => Err(StoreError::Engine(format!("claim answered {other:?}"))),
        }
    }

    /// Deletes a session and waits until that is durable.
    pub async fn delete(&self, session: SessionId) -> Result<(), StoreError> {
        self.write(Write::Delete(session)).await.map(|_| ())
    }
}

/// Sizes of what a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Session records.
    pub sessions: u64,
    /// Sessions with open turns.
    pub active_sessions: u64,
    /// Bytes the store takes: on disk for sled, the encoded events and records for memory.
    pub bytes: u64,
}
