//! The embedded default [`Store`]: two sled trees, records under prefixed keys.
//!
//! Events live in a tree of their own (`events`), everything else in `troupe`. Apart, the leaf
//! that takes a session's newest events holds nothing but events, so a big record (a turn with
//! a long prompt) is not rewritten with every append.
//!
//! Key layout (`sid` = 16 raw bytes of the session id, `seq` = 8 bytes big-endian):
//!
//! ```text
//! tree `troupe`:
//! m schema            schema version
//! s sid               session record (JSON)
//! o owner 0 sid       owner index
//! k owner 0 p 0 key   scoped key -> sid   (p = "-" without a project, "+project" with one)
//! q sid turn          open (queued or running) turn (JSON)
//! t sid turn          completed turn (JSON)
//! c sid client_id     idempotency key -> turn id
//! p provider 0 id     provider session id -> sid
//! P sid provider 0 id the same mapping, found by session (for deletes)
//! a sid               session has open turns
//! u owner 0 day       the owner's usage that UTC day (JSON), added to inside commits
//! g pgid start        running agent process group (JSON); pgid 4 bytes, leader start 8 bytes,
//!                     both big-endian
//!
//! tree `events`:
//! e sid seq           a block of consecutive events starting at seq:
//!                     the last seq (8 bytes big-endian), then a JSON array of the events
//! ```
//!
//! Blocks: one sled key per event cost ~10 µs an append (sled splits a leaf every few
//! sequential inserts and rewrites pages); events appended together are stored as blocks of up
//! to [`BLOCK_BYTES`], so that cost is paid once a block. Blocks never overlap and are never
//! rewritten: the expected-seq check is "no block starts at the first new seq, and the block
//! before it ends right before it".
//!
//! Schema 1 kept one event per key in `troupe`; opening such a store moves them over once,
//! each as a block of one.

use super::group_commit::{Engine, GroupCommitter};
use super::{Batch, Durability, StoreError, Write, Written, SCHEMA_VERSION};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId};
use crate::record::SessionRecord;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A store in a sled database directory: reads go straight to sled, writes through the
/// group-committing writer.
pub struct SledStore {
    /// The database, shared with the writer thread.
    engine: Arc<SledEngine>,
    /// The writer: applies, flushes once per group, confirms.
    writer: GroupCommitter,
}

/// The open database and its trees.
struct SledEngine {
    /// The open database; kept so `flush` reaches the whole of it.
    db: sled::Db,
    /// The tree of every record but events.
    tree: sled::Tree,
    /// The tree of events; a batch spans both trees in one transaction.
    events: sled::Tree,
    /// The directory, for the readiness probe file.
    dir: PathBuf,
    /// Where each session's log ends (its last block's key and last seq), as the writer left
    /// it: spares a reverse range scan per append. Only the writer thread uses it (the lock is
    /// never contended); an entry is set only after its write landed.
    ends: std::sync::Mutex<group::Ends>,
}

mod group;
mod layout;
mod reads;
#[cfg(test)]
mod tests;
mod upgrade;

use layout::*;

impl SledStore {
    /// Opens (or creates) the store in `dir` with the safe default durability.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, Durability::Flushed)
    }

    /// Opens (or creates) the store in `dir`, checking the schema version, and starts its
    /// writer with `durability`.
    pub fn open_with(dir: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        // Flushed: the writer flushes every group itself, so sled's own timer has nothing to
        // add. Relaxed: the timer is what bounds the loss in a crash (~200 ms).
        let every = match durability {
            Durability::Flushed => None,
            Durability::Relaxed => Some(200),
        };
        let engine = Arc::new(SledEngine::open(dir, every)?);
        let writer = GroupCommitter::start(engine.clone(), durability).map_err(engine_err)?;
        Ok(SledStore { engine, writer })
    }

    /// How many writes and groups (flushes) the writer did.
    pub fn group_figures(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let f = &self.writer.figures;
        (f.writes.load(Relaxed), f.groups.load(Relaxed))
    }
}

/// How long an open waits for the directory's lock: a store of this process that was just
/// dropped releases it when sled's last I/O thread lets go of the file, a moment later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled in `dir`, waiting up to [`LOCK_WAIT`] for a lock another handle still holds.
fn open_db(dir: &Path, flush_every_ms: Option<u64>) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(flush_every_ms)
            .open()
        {
            Err(sled::Error::Io(e))
                // sled reports a held lock as an `Other` error with this text.
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened.map_err(engine_err),
        }
    }
}

impl SledEngine {
    fn open(dir: impl AsRef<Path>, flush_every_ms: Option<u64>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let db = open_db(&dir, flush_every_ms)?;
        let tree = db.open_tree("troupe").map_err(engine_err)?;
        let events = db.open_tree("events").map_err(engine_err)?;
        let store = SledEngine {
            db,
            tree,
            events,
            dir,
            ends: Default::default(),
        };
        let schema_key = key(b'm', &[b"schema"]);
        let found = match store.tree.get(&schema_key).map_err(engine_err)? {
            Some(v) => u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?,
            ),
            None => SCHEMA_VERSION,
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found });
        }
        if found < 2 {
            store.move_events_to_their_tree()?;
        }
        store
            .tree
            .insert(schema_key, &SCHEMA_VERSION.to_be_bytes())
            .map_err(engine_err)?;
        store.db.flush().map_err(engine_err)?;
        Ok(store)
    }

    /// Appends events that come with no other write and need no flush (provider deltas), without
    /// a sled transaction: every atomic batch or transaction in sled rolls the log's I/O buffer
    /// (a `write` per commit), which capped one session at ~7,000 events/s.
    ///
    /// The expected-seq check stays in the store: the block before the first new seq must end
    /// right before it, and each block goes in with a compare-and-swap from nothing on its key,
    /// so an append racing another one at the same seq is a [`StoreError::SeqConflict`]. Blocks
    /// land in seq order and sled recovers a prefix of its log, so after a crash the session's
    /// log is still a gapless prefix.
    fn append_events(&self, session: SessionId, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let Some(first) = events.first().map(|e| e.seq) else {
            return Ok(());
        };
        if self
            .log_end_before(session, first)?
            .map_or(0, |(_, last)| last)
            != first - 1
        {
            return Err(self.conflict(session, first));
        }
        let blocks = encode_blocks(session, events);
        let end = blocks.last().map(|(k, _)| k.clone());
        for (k, v) in blocks {
            let block_first = u64::from_be_bytes(
                k[k.len() - 8..]
                    .try_into()
                    .expect("an event key ends with its seq"),
            );
            let swapped = self
                .events
                .compare_and_swap(k, None as Option<&[u8]>, Some(v))
                .map_err(engine_err)?;
            if swapped.is_err() {
                return Err(self.conflict(session, block_first));
            }
        }
        if let (Some(k), Some(last)) = (end, events.last()) {
            self.set_log_ends([(session, (k, last.seq))]);
        }
        Ok(())
    }

    /// The block a new append at `seq` must follow: the cached end of the log when it is right
    /// before `seq`, else the block that starts last before `seq` (a range scan).
    fn log_end_before(
        &self,
        session: SessionId,
        seq: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let cached = self
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .cloned();
        if let Some((k, last)) = cached {
            if last + 1 == seq {
                return Ok(Some((k, last)));
            }
        }
        Ok(self
            .block_before(session, seq)?
            .map(|(k, last)| (k.to_vec(), last)))
    }

    /// Records where logs end after writes that landed.
    fn set_log_ends(&self, ends: impl IntoIterator<Item = (SessionId, (Vec<u8>, u64))>) {
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ends);
    }

    /// The block that starts last before `seq` in a session's log: its key and last seq.
    fn block_before(
        &self,
        session: SessionId,
        seq: u64,
    ) -> Result<Option<(sled::IVec, u64)>, StoreError> {
        match self
            .events
            .range(event_key(session, 0)..event_key(session, seq))
            .next_back()
        {
            Some(kv) => {
                let (k, v) = kv.map_err(engine_err)?;
                Ok(Some((k, block_last_seq(&v)?)))
            }
            None => Ok(None),
        }
    }

    /// The error for an append whose first seq was `expected`.
    fn conflict(&self, session: SessionId, expected: u64) -> StoreError {
        match self.last_seq(session) {
            Ok(actual) => StoreError::SeqConflict {
                session,
                expected,
                actual,
            },
            Err(e) => e,
        }
    }

    fn scan_prefix<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| kv.map_err(engine_err).and_then(|(_, v)| decode(&v)))
            .collect()
    }

    fn remove_prefix(tree: &sled::Tree, prefix: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix(prefix).keys() {
            batch.remove(kv.map_err(engine_err)?);
        }
        tree.apply_batch(batch).map_err(engine_err)
    }
}

impl SledEngine {
    /// A new session's record, first event and key claim in one transaction.
    fn create(
        &self,
        record: &SessionRecord,
        first: &Arc<Event>,
        key: Option<&ScopedKey>,
        rest: &Batch,
    ) -> Result<Written, StoreError> {
        let mut ends = group::Ends::new();
        let prepared = self.prepare_create(record, first, key, rest, &mut ends)?;
        match self.transact(std::slice::from_ref(&prepared)) {
            // One prepared write, one answer.
            Ok(mut landed) => landed.pop().map_or_else(
                || {
                    Err(StoreError::Engine(
                        "a create landed without an answer".into(),
                    ))
                },
                group::written,
            ),
            Err(group::TxFailed::Conflict { session, expected }) => {
                Err(self.conflict(session, expected))
            }
            Err(group::TxFailed::Storage(e)) => Err(e),
        }
    }

    fn claim_key(&self, key: &ScopedKey, id: SessionId) -> Result<SessionId, StoreError> {
        let cas = self
            .tree
            .compare_and_swap(scoped_key(key), None as Option<&[u8]>, Some(id.as_bytes()))
            .map_err(engine_err)?;
        match cas {
            Ok(()) => Ok(id),
            Err(current) => session_id_from(
                &current
                    .current
                    .ok_or_else(|| StoreError::Corrupt("key vanished".into()))?,
            ),
        }
    }

    fn commit(&self, session: SessionId, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.is_events_only() {
            return self.append_events(session, &batch.events);
        }
        let mut ends = group::Ends::new();
        let prepared = self.prepare_commit(session, &batch, &mut ends)?;
        match self.transact(std::slice::from_ref(&prepared)) {
            Ok(_) => {
                self.set_log_ends(ends);
                Ok(())
            }
            Err(group::TxFailed::Conflict { session, expected }) => {
                Err(self.conflict(session, expected))
            }
            Err(group::TxFailed::Storage(e)) => Err(e),
        }
    }

    /// Removes everything of a session: its record and owner index, the keys that name it,
    /// its provider mappings, turns, idempotency keys, open-turn mark and events. Everything
    /// is found from the session (its record, its prefixes), never by scanning other
    /// sessions', so a delete costs what the session holds. The record goes last: a delete cut
    /// short by a crash leaves a record that names what is left, and the next delete (or
    /// retention sweep) finishes it.
    fn delete_session(&self, id: SessionId) -> Result<(), StoreError> {
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let Some(record) = self.get_session(id)? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        if let Some(name) = &record.key {
            // The key as made, and without the project (a key made before its project was
            // backfilled names the session both ways).
            for project in [record.project.clone(), None] {
                let k = scoped_key(&ScopedKey {
                    owner: record.owner.clone(),
                    project,
                    key: name.clone(),
                });
                if self.tree.get(&k).map_err(engine_err)?.as_deref() == Some(id.as_bytes()) {
                    batch.remove(k);
                }
            }
        }
        let reverse = key(b'P', &[id.as_bytes()]);
        let mut mappings = Vec::new();
        for k in self.tree.scan_prefix(&reverse).keys() {
            let k = k.map_err(engine_err)?;
            let rest = &k[reverse.len()..];
            let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let provider = String::from_utf8_lossy(&rest[..split]).into_owned();
            let provider_id = String::from_utf8_lossy(rest.get(split + 1..).unwrap_or(&[]));
            mappings.push((provider, provider_id.into_owned()));
            batch.remove(k);
        }
        // A store written before the reverse index: the record's current mapping.
        if let Some(current) = &record.provider_session_id {
            mappings.push((record.provider.clone(), current.clone()));
        }
        for (provider, provider_id) in mappings {
            let k = provider_key(&provider, &provider_id);
            if self.tree.get(&k).map_err(engine_err)?.as_deref() == Some(id.as_bytes()) {
                batch.remove(k);
            }
        }
        self.tree.apply_batch(batch).map_err(engine_err)?;
        Self::remove_prefix(&self.events, key(b'e', &[id.as_bytes()]))?;
        for tag in [b'q', b't', b'c'] {
            Self::remove_prefix(&self.tree, key(tag, &[id.as_bytes()]))?;
        }
        let mut batch = sled::Batch::default();
        batch.remove(active_key(id));
        batch.remove(owner_key(&record.owner, id));
        batch.remove(session_key(id));
        self.tree.apply_batch(batch).map_err(engine_err)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine_err)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        let probe = self.dir.join(".troupe-ready-probe");
        std::fs::write(&probe, b"probe").map_err(engine_err)?;
        std::fs::remove_file(&probe).map_err(engine_err)?;
        self.tree
            .insert(
                key(b'm', &[b"probe"]),
                &chrono::Utc::now().timestamp_millis().to_be_bytes(),
            )
            .map_err(engine_err)?;
        self.flush()
    }
}

impl SledEngine {
    /// Applies one write on its own.
    fn apply_one(&self, write: Write) -> Result<Written, StoreError> {
        match write {
            Write::Commit { session, batch } => self.commit(session, batch).map(|()| Written::Done),
            Write::Create {
                record,
                first,
                key,
                rest,
            } => self.create(&record, &first, key.as_ref(), &rest),
            Write::ClaimKey { key, session } => self.claim_key(&key, session).map(Written::Claimed),
            Write::Delete(id) => self.delete_session(id).map(|()| Written::Done),
            Write::ProcessGroup(change) => {
                let (k, v) = process_group_write(&change);
                let result = match v {
                    Some(v) => self.tree.insert(k, v).map(|_| ()),
                    None => self.tree.remove(k).map(|_| ()),
                };
                result.map(|()| Written::Done).map_err(engine_err)
            }
        }
    }
}

impl Engine for SledEngine {
    fn apply(&self, write: Write) -> Result<Written, StoreError> {
        self.apply_one(write)
    }

    fn apply_group(&self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        SledEngine::apply_group(self, writes)
    }

    fn flush(&self) -> Result<(), StoreError> {
        SledEngine::flush(self)
    }
}
