//! An in-memory [`Store`]: same semantics as sled, nothing on disk. For tests and benchmarks.

use super::{
    Batch, CreateOutcome, EmbeddedStore, StoreError, StoreStats, Write, WriteDone, Written,
};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::{ProcessGroupChange, ProcessGroupKey, ProcessGroupRecord};
use crate::record::{SessionRecord, TurnRecord, TurnStatus};
use crate::usage::{OwnerDayUsage, Usage};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// A store that lives in memory and is gone with the process.
#[derive(Default)]
pub struct MemoryStore {
    /// Everything, behind one lock: the store's own atomicity, not the actors'.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<SessionId, SessionRecord>,
    keys: HashMap<ScopedKey, SessionId>,
    events: HashMap<SessionId, Vec<Arc<Event>>>,
    turns: HashMap<SessionId, BTreeMap<TurnId, TurnRecord>>,
    client_ids: HashMap<SessionId, HashMap<String, TurnId>>,
    provider_ids: HashMap<(String, String), SessionId>,
    /// Each session's provider mappings, so a delete finds them without a scan of all.
    provider_ids_of: HashMap<SessionId, Vec<(String, String)>>,
    active: HashSet<SessionId>,
    /// (owner, day) → that day's usage; never removed with a session (the money was spent).
    usage: BTreeMap<(String, String), Usage>,
    process_groups: BTreeMap<ProcessGroupKey, ProcessGroupRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn create(
        &mut self,
        record: SessionRecord,
        first: Arc<Event>,
        key: Option<ScopedKey>,
        rest: Batch,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some(next) = rest.events.first() {
            if next.seq != first.seq + 1 {
                return Err(StoreError::SeqConflict {
                    session: record.id,
                    expected: next.seq,
                    actual: first.seq,
                });
            }
        }
        if let Some(key) = key {
            if let Some(existing) = self.keys.get(&key) {
                return Ok(CreateOutcome::Existing(*existing));
            }
            self.keys.insert(key, record.id);
        }
        let id = record.id;
        self.events.insert(id, vec![first]);
        self.sessions.insert(id, record);
        // The seq was checked above: the rest follows the first event.
        self.commit(
            id,
            Batch {
                record: None,
                ..rest
            },
        )?;
        Ok(CreateOutcome::Created)
    }

    fn claim_key(&mut self, key: ScopedKey, id: SessionId) -> SessionId {
        *self.keys.entry(key).or_insert(id)
    }

    fn apply(&mut self, write: Write) -> Result<Written, StoreError> {
        match write {
            Write::Commit { session, batch } => self.commit(session, batch).map(|()| Written::Done),
            Write::Create {
                record,
                first,
                key,
                rest,
            } => self.create(record, first, key, *rest).map(Written::Created),
            Write::ClaimKey { key, session } => Ok(Written::Claimed(self.claim_key(key, session))),
            Write::Delete(id) => {
                self.delete_session(id);
                Ok(Written::Done)
            }
            Write::ProcessGroup(ProcessGroupChange::Started(record)) => {
                self.process_groups.insert(record.key(), record);
                Ok(Written::Done)
            }
            Write::ProcessGroup(ProcessGroupChange::Ended(key)) => {
                self.process_groups.remove(&key);
                Ok(Written::Done)
            }
        }
    }

    fn commit(&mut self, session: SessionId, batch: Batch) -> Result<(), StoreError> {
        let inner = self;
        if let Some(first) = batch.events.first() {
            let actual = inner.events.get(&session).map_or(0, |e| e.len() as u64);
            if first.seq != actual + 1 {
                return Err(StoreError::SeqConflict {
                    session,
                    expected: first.seq,
                    actual,
                });
            }
        }
        if let Some(record) = batch.record {
            inner.sessions.insert(session, record);
        }
        let turns = inner.turns.entry(session).or_default();
        for turn in batch.turns {
            turns.insert(turn.id, turn);
        }
        if !batch.client_ids.is_empty() {
            inner
                .client_ids
                .entry(session)
                .or_default()
                .extend(batch.client_ids);
        }
        if let Some(mapping) = batch.provider_mapping {
            inner.provider_ids.insert(mapping.clone(), session);
            inner
                .provider_ids_of
                .entry(session)
                .or_default()
                .push(mapping);
        }
        match batch.active {
            Some(true) => {
                inner.active.insert(session);
            }
            Some(false) => {
                inner.active.remove(&session);
            }
            None => {}
        }
        for increment in batch.usage {
            let day = inner
                .usage
                .entry((increment.owner, increment.day))
                .or_default();
            *day = day.plus(&increment.usage);
        }
        if !batch.events.is_empty() {
            inner
                .events
                .entry(session)
                .or_default()
                .extend(batch.events);
        }
        Ok(())
    }

    /// Removes everything of a session, found from the session itself (never by scanning
    /// the others'), as the sled store does.
    fn delete_session(&mut self, id: SessionId) {
        let Some(record) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(name) = &record.key {
            for project in [record.project.clone(), None] {
                let key = ScopedKey {
                    owner: record.owner.clone(),
                    project,
                    key: name.clone(),
                };
                if self.keys.get(&key) == Some(&id) {
                    self.keys.remove(&key);
                }
            }
        }
        for mapping in self.provider_ids_of.remove(&id).unwrap_or_default() {
            if self.provider_ids.get(&mapping) == Some(&id) {
                self.provider_ids.remove(&mapping);
            }
        }
        self.events.remove(&id);
        self.turns.remove(&id);
        self.client_ids.remove(&id);
        self.active.remove(&id);
    }
}

impl EmbeddedStore for MemoryStore {
    /// Applied and confirmed at once: nothing here outlives the process anyway.
    fn submit(&self, write: Write, done: WriteDone) {
        let result = self.lock().apply(write);
        done(result);
    }

    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        Ok(self.lock().keys.get(key).copied())
    }

    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(&id).cloned())
    }

    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.owner == owner)
            .cloned()
            .collect())
    }

    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .lock()
            .sessions
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        let mut ids: Vec<_> = self.lock().active.iter().copied().collect();
        ids.sort();
        Ok(ids)
    }

    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.events.get(&session) else {
            return Ok(Vec::new());
        };
        let start = (after_seq as usize).min(events.len());
        Ok(events[start..]
            .iter()
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    fn last_seq(&self, session: SessionId) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .events
            .get(&session)
            .map_or(0, |e| e.len() as u64))
    }

    fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        Ok(self.lock().turns.get(&session).map_or_else(Vec::new, |t| {
            t.values()
                .filter(|t| t.status != TurnStatus::Completed)
                .cloned()
                .collect()
        }))
    }

    fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        Ok(self
            .lock()
            .turns
            .get(&session)
            .map_or_else(Vec::new, |t| t.values().cloned().collect()))
    }

    fn get_turn(&self, session: SessionId, turn: TurnId) -> Result<Option<TurnRecord>, StoreError> {
        Ok(self
            .lock()
            .turns
            .get(&session)
            .and_then(|t| t.get(&turn).cloned()))
    }

    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError> {
        Ok(self
            .lock()
            .client_ids
            .get(&session)
            .and_then(|ids| ids.get(client_message_id))
            .copied())
    }

    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        Ok(self
            .lock()
            .provider_ids
            .get(&(provider.to_string(), provider_session_id.to_string()))
            .copied())
    }

    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<OwnerDayUsage>, StoreError> {
        Ok(self
            .lock()
            .usage
            .iter()
            .filter(|((o, day), _)| {
                owner.is_none_or(|owner| owner == o) && day.as_str() >= from && day.as_str() <= to
            })
            .map(|((owner, day), usage)| OwnerDayUsage {
                owner: owner.clone(),
                day: day.clone(),
                usage: *usage,
            })
            .collect())
    }
    fn process_groups(&self) -> Result<Vec<ProcessGroupRecord>, StoreError> {
        Ok(self.lock().process_groups.values().cloned().collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = self.lock();
        // What the data would take encoded: events as stored, plus a rough record size.
        let events: usize = inner
            .events
            .values()
            .flatten()
            .map(|e| e.json().len())
            .sum();
        let records =
            (inner.sessions.len() + inner.turns.values().map(|t| t.len()).sum::<usize>()) * 512;
        Ok(StoreStats {
            sessions: inner.sessions.len() as u64,
            active_sessions: inner.active.len() as u64,
            bytes: (events + records) as u64,
        })
    }
}
