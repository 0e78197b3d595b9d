//! The embedded default [`Store`]: one sled tree, records under prefixed keys.
//!
//! Key layout (`sid` = 16 raw bytes of the session id, `seq` = 8 bytes big-endian):
//!
//! ```text
//! m schema            schema version
//! s sid               session record (JSON)
//! o owner 0 sid       owner index
//! k owner 0 p 0 key   scoped key -> sid   (p = "-" without a project, "+project" with one)
//! e sid seq           event (JSON)
//! q sid turn          open (queued or running) turn (JSON)
//! t sid turn          completed turn (JSON)
//! c sid client_id     idempotency key -> turn id
//! p provider 0 id     provider session id -> sid
//! a sid               session has open turns
//! ```

use super::{Batch, CreateOutcome, Store, StoreError, StoreStats, SCHEMA_VERSION};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::record::{SessionRecord, TurnRecord, TurnStatus};
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A store in a sled database directory.
pub struct SledStore {
    /// The open database; kept so `flush` reaches the whole of it.
    db: sled::Db,
    /// The one tree all records live in, so a batch is one atomic transaction.
    tree: sled::Tree,
    /// The directory, for the readiness probe file.
    dir: PathBuf,
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data with string keys; serializing them cannot fail.
    serde_json::to_vec(value).expect("records serialize")
}

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn session_key(id: SessionId) -> Vec<u8> {
    key(b's', &[id.as_bytes()])
}

fn owner_key(owner: &str, id: SessionId) -> Vec<u8> {
    key(b'o', &[owner.as_bytes(), &[0], id.as_bytes()])
}

fn scoped_key(k: &ScopedKey) -> Vec<u8> {
    let project = match &k.project {
        Some(p) => format!("+{p}"),
        None => "-".to_string(),
    };
    key(
        b'k',
        &[
            k.owner.as_bytes(),
            &[0],
            project.as_bytes(),
            &[0],
            k.key.as_bytes(),
        ],
    )
}

fn event_key(id: SessionId, seq: u64) -> Vec<u8> {
    key(b'e', &[id.as_bytes(), &seq.to_be_bytes()])
}

fn turn_key(open: bool, id: SessionId, turn: TurnId) -> Vec<u8> {
    key(
        if open { b'q' } else { b't' },
        &[id.as_bytes(), turn.as_bytes()],
    )
}

fn client_key(id: SessionId, client_id: &str) -> Vec<u8> {
    key(b'c', &[id.as_bytes(), client_id.as_bytes()])
}

fn provider_key(provider: &str, provider_id: &str) -> Vec<u8> {
    key(b'p', &[provider.as_bytes(), &[0], provider_id.as_bytes()])
}

fn active_key(id: SessionId) -> Vec<u8> {
    key(b'a', &[id.as_bytes()])
}

fn session_id_from(bytes: &[u8]) -> Result<SessionId, StoreError> {
    Uuid::from_slice(bytes)
        .map(SessionId)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, checking the schema version.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&dir)
            .flush_every_ms(Some(200))
            .open()
            .map_err(engine)?;
        let tree = db.open_tree("troupe").map_err(engine)?;
        let schema_key = key(b'm', &[b"schema"]);
        match tree.get(&schema_key).map_err(engine)? {
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("schema version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew { found });
                }
            }
            None => {
                tree.insert(schema_key, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(engine)?;
                db.flush().map_err(engine)?;
            }
        }
        Ok(SledStore { db, tree, dir })
    }

    fn scan_prefix<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| kv.map_err(engine).and_then(|(_, v)| decode(&v)))
            .collect()
    }

    fn remove_prefix(&self, prefix: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.tree.scan_prefix(prefix).keys() {
            batch.remove(kv.map_err(engine)?);
        }
        self.tree.apply_batch(batch).map_err(engine)
    }
}

impl Store for SledStore {
    fn create_session(
        &self,
        record: &SessionRecord,
        key: Option<&ScopedKey>,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some(k) = key {
            let cas = self
                .tree
                .compare_and_swap(
                    scoped_key(k),
                    None as Option<&[u8]>,
                    Some(record.id.as_bytes()),
                )
                .map_err(engine)?;
            if let Err(current) = cas {
                let winner = current
                    .current
                    .ok_or_else(|| StoreError::Corrupt("key vanished".into()))?;
                return Ok(CreateOutcome::Existing(session_id_from(&winner)?));
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(session_key(record.id), encode(record));
        batch.insert(owner_key(&record.owner, record.id), &[][..]);
        self.tree.apply_batch(batch).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(CreateOutcome::Created)
    }

    fn claim_key(&self, key: &ScopedKey, id: SessionId) -> Result<SessionId, StoreError> {
        let cas = self
            .tree
            .compare_and_swap(scoped_key(key), None as Option<&[u8]>, Some(id.as_bytes()))
            .map_err(engine)?;
        match cas {
            Ok(()) => Ok(id),
            Err(current) => session_id_from(
                &current
                    .current
                    .ok_or_else(|| StoreError::Corrupt("key vanished".into()))?,
            ),
        }
    }

    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        self.tree
            .get(scoped_key(key))
            .map_err(engine)?
            .map(|v| session_id_from(&v))
            .transpose()
    }

    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.tree
            .get(session_key(id))
            .map_err(engine)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let prefix = key(b'o', &[owner.as_bytes(), &[0]]);
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(&prefix).keys() {
            let k = k.map_err(engine)?;
            let id = session_id_from(&k[prefix.len()..])?;
            if let Some(record) = self.get_session(id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        self.tree
            .scan_prefix([b'a'])
            .keys()
            .map(|k| k.map_err(engine).and_then(|k| session_id_from(&k[1..])))
            .collect()
    }

    fn commit(&self, session: SessionId, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let durable = batch.durable;
        let first_seq = batch.events.first().map(|e| e.seq);
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        if let Some(record) = &batch.record {
            writes.push((session_key(session), Some(encode(record))));
            writes.push((owner_key(&record.owner, session), Some(Vec::new())));
        }
        for turn in &batch.turns {
            let open = turn.status != TurnStatus::Completed;
            writes.push((turn_key(open, session, turn.id), Some(encode(turn))));
            writes.push((turn_key(!open, session, turn.id), None));
        }
        for (client_id, turn) in &batch.client_ids {
            writes.push((
                client_key(session, client_id),
                Some(turn.as_bytes().to_vec()),
            ));
        }
        if let Some((provider, provider_id)) = &batch.provider_mapping {
            writes.push((
                provider_key(provider, provider_id),
                Some(session.as_bytes().to_vec()),
            ));
        }
        match batch.active {
            Some(true) => writes.push((active_key(session), Some(Vec::new()))),
            Some(false) => writes.push((active_key(session), None)),
            None => {}
        }
        for event in &batch.events {
            writes.push((event_key(session, event.seq), Some(encode(&**event))));
        }
        let result = self.tree.transaction(|tx| {
            if let Some(first) = first_seq {
                // Append with an expected seq: the slot must be free and follow the last one.
                let taken = tx.get(event_key(session, first))?.is_some();
                let previous_missing =
                    first > 1 && tx.get(event_key(session, first - 1))?.is_none();
                if taken || previous_missing {
                    return Err(ConflictableTransactionError::Abort(first));
                }
            }
            for (k, v) in &writes {
                match v {
                    Some(v) => tx.insert(k.as_slice(), v.as_slice())?,
                    None => tx.remove(k.as_slice())?,
                };
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(expected)) => {
                return Err(StoreError::SeqConflict {
                    session,
                    expected,
                    actual: self.last_seq(session)?,
                })
            }
            Err(TransactionError::Storage(e)) => return Err(engine(e)),
        }
        if durable {
            self.db.flush().map_err(engine)?;
        }
        Ok(())
    }

    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let start = event_key(session, after_seq.saturating_add(1));
        let end = key(b'e', &[session.as_bytes(), &u64::MAX.to_be_bytes()]);
        self.tree
            .range(start..=end)
            .take(limit)
            .map(|kv| kv.map_err(engine).and_then(|(_, v)| decode(&v)))
            .collect()
    }

    fn last_seq(&self, session: SessionId) -> Result<u64, StoreError> {
        let prefix = key(b'e', &[session.as_bytes()]);
        match self.tree.scan_prefix(&prefix).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(engine)?;
                let seq: [u8; 8] = k[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("event key".into()))?;
                Ok(u64::from_be_bytes(seq))
            }
            None => Ok(0),
        }
    }

    fn open_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        self.scan_prefix(key(b'q', &[session.as_bytes()]))
    }

    fn all_turns(&self, session: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        let mut turns: Vec<TurnRecord> = self.scan_prefix(key(b't', &[session.as_bytes()]))?;
        turns.extend(self.open_turns(session)?);
        turns.sort_by_key(|t| t.id);
        Ok(turns)
    }

    fn get_turn(&self, session: SessionId, turn: TurnId) -> Result<Option<TurnRecord>, StoreError> {
        for open in [true, false] {
            if let Some(v) = self
                .tree
                .get(turn_key(open, session, turn))
                .map_err(engine)?
            {
                return decode(&v).map(Some);
            }
        }
        Ok(None)
    }

    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> Result<Option<TurnId>, StoreError> {
        self.tree
            .get(client_key(session, client_message_id))
            .map_err(engine)?
            .map(|v| {
                Uuid::from_slice(&v)
                    .map(TurnId)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        self.tree
            .get(provider_key(provider, provider_session_id))
            .map_err(engine)?
            .map(|v| session_id_from(&v))
            .transpose()
    }

    fn delete_session(&self, id: SessionId) -> Result<(), StoreError> {
        let Some(record) = self.get_session(id)? else {
            return Ok(());
        };
        // Keys and provider mappings pointing at the session, found by their values.
        for prefix in [b'k', b'p'] {
            let mut batch = sled::Batch::default();
            for kv in self.tree.scan_prefix([prefix]) {
                let (k, v) = kv.map_err(engine)?;
                if v.as_ref() == id.as_bytes() {
                    batch.remove(k);
                }
            }
            self.tree.apply_batch(batch).map_err(engine)?;
        }
        for tag in [b'e', b'q', b't', b'c'] {
            self.remove_prefix(key(tag, &[id.as_bytes()]))?;
        }
        let mut batch = sled::Batch::default();
        batch.remove(active_key(id));
        batch.remove(owner_key(&record.owner, id));
        batch.remove(session_key(id));
        self.tree.apply_batch(batch).map_err(engine)?;
        self.flush()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        let probe = self.dir.join(".troupe-ready-probe");
        std::fs::write(&probe, b"probe").map_err(engine)?;
        std::fs::remove_file(&probe).map_err(engine)?;
        self.tree
            .insert(
                key(b'm', &[b"probe"]),
                &chrono::Utc::now().timestamp_millis().to_be_bytes(),
            )
            .map_err(engine)?;
        self.flush()
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            sessions: self.tree.scan_prefix([b's']).count() as u64,
            active_sessions: self.tree.scan_prefix([b'a']).count() as u64,
        })
    }
}
