//! The sled store's reads: records, keys, turns, event ranges and usage, and the
//! [`EmbeddedStore`] face that forwards to them (synchronous: sled answers at once).

use super::layout::*;
use super::{SledEngine, SledStore};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::ProcessGroupRecord;
use crate::record::{SessionRecord, TurnRecord};
use crate::store::{EmbeddedStore, StoreError, StoreStats, Write, WriteDone};
use crate::usage::OwnerDayUsage;
use uuid::Uuid;

impl SledEngine {
    pub(super) fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        self.tree
            .get(scoped_key(key))
            .map_err(engine_err)?
            .map(|v| session_id_from(&v))
            .transpose()
    }

    pub(super) fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.tree
            .get(session_key(id))
            .map_err(engine_err)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let prefix = key(b'o', &[owner.as_bytes(), &[0]]);
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(&prefix).keys() {
            let k = k.map_err(engine_err)?;
            let id = session_id_from(&k[prefix.len()..])?;
            if let Some(record) = self.get_session(id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub(super) fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let start = match after {
            // Right after `s sid`: the same key with a zero byte appended.
            Some(id) => {
                let mut k = session_key(id);
                k.push(0);
                k
            }
            None => vec![b's'],
        };
        let mut out = Vec::new();
        for kv in self.tree.range(start..vec![b's' + 1]) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv.map_err(engine_err)?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub(super) fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        self.tree
            .scan_prefix([b'a'])
            .keys()
            .map(|k| k.map_err(engine_err).and_then(|k| session_id_from(&k[1..])))
            .collect()
    }

    pub(super) fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let first = after_seq.saturating_add(1);
        // Start with the block that holds `first`, when one began before it.
        let start = match self.block_before(session, first)? {
            Some((k, last)) if last >= first => k.to_vec(),
            _ => event_key(session, first),
        };
        let end = key(b'e', &[session.as_bytes(), &u64::MAX.to_be_bytes()]);
        let mut out = Vec::new();
        for kv in self.events.range(start..=end) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv.map_err(engine_err)?;
            let wanted = limit - out.len();
            out.extend(
                decode_block(&v)?
                    .into_iter()
                    .filter(|e| e.seq > after_seq)
                    .take(wanted),
            );
        }
        Ok(out)
    }

    pub(super) fn last_seq(&self, session: SessionId) -> Result<u64, StoreError> {
        let prefix = key(b'e', &[session.as_bytes()]);
        match self.events.scan_prefix(&prefix).next_back() {
            Some(kv) => block_last_seq(&kv.map_err(engine_err)?.1),
            None => Ok(0),
        }
    }

    pub(super) fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        self.scan_prefix(key(b'q', &[session.as_bytes()]))
    }

    pub(super) fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        // Open turns first: a turn that completes between the two scans moves from the open
        // prefix to the completed one, so it is seen twice (the completed copy kept), never
        // missed.
        let open = self.open_turns(session)?;
        let mut turns: Vec<TurnRecord> = self.scan_prefix(key(b't', &[session.as_bytes()]))?;
        let completed: std::collections::HashSet<_> = turns.iter().map(|t| t.id).collect();
        turns.extend(open.into_iter().filter(|t| !completed.contains(&t.id)));
        turns.sort_by_key(|t| t.id);
        Ok(turns)
    }

    pub(super) fn get_turn(
        &self,
        session: SessionId,
        turn: TurnId,
    ) -> Result<Option<TurnRecord>, StoreError> {
        for open in [true, false] {
            if let Some(v) = self
                .tree
                .get(turn_key(open, session, turn))
                .map_err(engine_err)?
            {
                return decode(&v).map(Some);
            }
        }
        Ok(None)
    }

    pub(super) fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError> {
        self.tree
            .get(client_key(session, client_message_id))
            .map_err(engine_err)?
            .map(|v| {
                Uuid::from_slice(&v)
                    .map(TurnId)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    pub(super) fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        self.tree
            .get(provider_key(provider, provider_session_id))
            .map_err(engine_err)?
            .map(|v| session_id_from(&v))
            .transpose()
    }

    pub(super) fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<OwnerDayUsage>, StoreError> {
        let prefix = match owner {
            Some(owner) => key(b'u', &[owner.as_bytes(), &[0]]),
            None => vec![b'u'],
        };
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv.map_err(engine_err)?;
            let rest = &k[1..];
            let Some(split) = rest.iter().position(|b| *b == 0) else {
                return Err(StoreError::Corrupt("usage key without a day".into()));
            };
            let owner = String::from_utf8_lossy(&rest[..split]).into_owned();
            let day = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
            if day.as_str() >= from && day.as_str() <= to {
                out.push(OwnerDayUsage {
                    owner,
                    day,
                    usage: decode(&v)?,
                });
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            sessions: self.tree.scan_prefix([b's']).count() as u64,
            active_sessions: self.tree.scan_prefix([b'a']).count() as u64,
            bytes: self.db.size_on_disk().map_err(engine_err)?,
        })
    }
}

impl EmbeddedStore for SledStore {
    fn submit(&self, write: Write, done: WriteDone) {
        self.writer.submit(write, done);
    }

    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        self.engine.lookup_key(key)
    }

    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.engine.get_session(id)
    }

    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.engine.list_sessions(owner)
    }

    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.engine.sessions_after(after, limit)
    }

    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        self.engine.active_sessions()
    }

    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.engine.read_events(session, after_seq, limit)
    }

    fn last_seq(&self, session: SessionId) -> Result<u64, StoreError> {
        self.engine.last_seq(session)
    }

    fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        self.engine.open_turns(session)
    }

    fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        self.engine.all_turns(session)
    }

    fn get_turn(&self, session: SessionId, turn: TurnId) -> Result<Option<TurnRecord>, StoreError> {
        self.engine.get_turn(session, turn)
    }

    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError> {
        self.engine.turn_for_client_id(session, client_message_id)
    }

    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        self.engine
            .session_for_provider_id(provider, provider_session_id)
    }

    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<OwnerDayUsage>, StoreError> {
        self.engine.usage_days(owner, from, to)
    }
    fn process_groups(&self) -> Result<Vec<ProcessGroupRecord>, StoreError> {
        self.engine.scan_prefix(vec![b'g'])
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.engine.flush()
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.engine.check_writable()
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.engine.stats()
    }
}
