//! Writes made ready for a sled transaction, and a whole group of them applied in one.
//!
//! Every sled transaction pins the log and rolls its I/O buffer, so a transaction per write
//! costs as much as the write. The writer hands over a group at a time: its commits and creates
//! go into ONE transaction over both trees, with every write's own checks (the expected seq of
//! an append, the compare-and-set of a key) made inside it. A failed check aborts the whole
//! transaction, and the group is then applied write by write, so each write gets its own
//! answer exactly as if it had come alone.

use super::layout::*;
use super::SledEngine;
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId};
use crate::record::SessionRecord;
use crate::record::TurnStatus;
use crate::store::{Batch, CreateOutcome, StoreError, Write, Written};
use crate::usage::Usage;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::HashMap;
use std::sync::Arc;

/// A key and the value to put there (`None`: remove it).
type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A write made ready for a transaction.
pub(super) enum Prepared {
    /// A commit: plain writes, event blocks, and the append's expected seq with the key of the
    /// block it must follow.
    Commit {
        session: SessionId,
        writes: Vec<KeyWrite>,
        blocks: Vec<(Vec<u8>, Vec<u8>)>,
        append: Option<(u64, Option<Vec<u8>>)>,
        /// Additions to owners' day totals: read, added to and written in the transaction.
        increments: Vec<(Vec<u8>, Usage)>,
    },
    /// A create: the key to claim (if any), the record, the owner index, the first event.
    Create {
        id: SessionId,
        scoped: Option<Vec<u8>>,
        record: Vec<u8>,
        owner: Vec<u8>,
        writes: Vec<KeyWrite>,
        blocks: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Plain writes of records outside any session (a process group's record).
    Plain { writes: Vec<KeyWrite> },
}

/// What one prepared write did in a transaction: a commit landed (`None`), a create made the
/// session (`Some(None)`) or found the key taken by another (`Some(Some(winner))`).
type Landed = Option<Option<sled::IVec>>;

/// Why a transaction did not land.
pub(super) enum TxFailed {
    /// A write's append check failed: its first seq.
    Conflict { session: SessionId, expected: u64 },
    /// sled failed.
    Storage(StoreError),
}

/// Where each session's log ends within a group being prepared: the key of its last block and
/// its last seq, so a second commit of a session in one group follows the first.
pub(super) type Ends = HashMap<SessionId, (Vec<u8>, u64)>;

impl SledEngine {
    /// Makes a commit ready: its writes, blocks and append check.
    pub(super) fn prepare_commit(
        &self,
        session: SessionId,
        batch: &Batch,
        ends: &mut Ends,
    ) -> Result<Prepared, StoreError> {
        let mut writes: Vec<KeyWrite> = Vec::new();
        if let Some(record) = &batch.record {
            writes.push((session_key(session), Some(encode(record))));
            writes.push((owner_key(&record.owner, session), Some(Vec::new())));
        }
        writes.extend(batch_writes(session, batch));
        let blocks = encode_blocks(session, &batch.events);
        let first_seq = batch.events.first().map(|e| e.seq);
        // The block the new events follow: the end of this group's earlier commit of the
        // session, else looked up here; checked again in the transaction (blocks are never
        // rewritten, so "still there" means "still the end of the log").
        let previous = match first_seq {
            Some(first) if first > 1 => {
                let end = match ends.get(&session) {
                    Some((k, last)) => Some((k.clone(), *last)),
                    None => self.log_end_before(session, first)?,
                };
                match end {
                    Some((k, last)) if last == first - 1 => Some(k),
                    _ => return Err(self.conflict(session, first)),
                }
            }
            _ => None,
        };
        if let (Some(last), Some((k, _))) = (batch.events.last(), blocks.last()) {
            ends.insert(session, (k.clone(), last.seq));
        }
        let increments = batch
            .usage
            .iter()
            .map(|i| (usage_key(&i.owner, &i.day), i.usage))
            .collect();
        Ok(Prepared::Commit {
            session,
            writes,
            blocks,
            append: first_seq.map(|first| (first, previous)),
            increments,
        })
    }

    /// Makes a create ready: its key claim, record, owner index and first event.
    pub(super) fn prepare_create(
        &self,
        record: &SessionRecord,
        first: &Arc<Event>,
        key: Option<&ScopedKey>,
        rest: &Batch,
        ends: &mut Ends,
    ) -> Result<Prepared, StoreError> {
        if rest
            .events
            .first()
            .is_some_and(|next| next.seq != first.seq + 1)
        {
            return Err(self.conflict(record.id, first.seq + 1));
        }
        let events: Vec<Arc<Event>> = std::iter::once(first.clone())
            .chain(rest.events.iter().cloned())
            .collect();
        let blocks = encode_blocks(record.id, &events);
        if let (Some((k, _)), Some(last)) = (blocks.last(), events.last()) {
            ends.insert(record.id, (k.clone(), last.seq));
        }
        Ok(Prepared::Create {
            id: record.id,
            scoped: key.map(scoped_key),
            record: encode(record),
            owner: owner_key(&record.owner, record.id),
            writes: batch_writes(record.id, rest),
            blocks,
        })
    }

    /// Makes a write of the group ready; `None` for the kinds that go alone.
    fn prepare(&self, write: &Write, ends: &mut Ends) -> Option<Result<Prepared, StoreError>> {
        match write {
            Write::Commit { session, batch } => Some(self.prepare_commit(*session, batch, ends)),
            Write::Create {
                record,
                first,
                key,
                rest,
            } => Some(self.prepare_create(record, first, key.as_ref(), rest, ends)),
            Write::ProcessGroup(change) => Some(Ok(Prepared::Plain {
                writes: vec![process_group_write(change)],
            })),
            Write::ClaimKey { .. } | Write::Delete(_) => None,
        }
    }

    /// Applies prepared writes in one transaction over both trees, all or nothing.
    pub(super) fn transact(&self, prepared: &[Prepared]) -> Result<Vec<Landed>, TxFailed> {
        let result = (&self.tree, &self.events).transaction(|(tx, etx)| {
            let mut landed = Vec::with_capacity(prepared.len());
            for p in prepared {
                match p {
                    Prepared::Commit {
                        session,
                        writes,
                        blocks,
                        append,
                        increments,
                    } => {
                        if let Some((first, previous)) = append {
                            // Append with an expected seq: the slot is free and follows the
                            // last one (writes of this transaction included).
                            let taken = etx.get(event_key(*session, *first))?.is_some();
                            let previous_missing = match previous {
                                Some(k) => etx.get(k.as_slice())?.is_none(),
                                None => false,
                            };
                            if taken || previous_missing {
                                return Err(ConflictableTransactionError::Abort((
                                    *session, *first,
                                )));
                            }
                        }
                        for (k, v) in writes {
                            match v {
                                Some(v) => tx.insert(k.as_slice(), v.as_slice())?,
                                None => tx.remove(k.as_slice())?,
                            };
                        }
                        for (k, v) in blocks {
                            etx.insert(k.as_slice(), v.as_slice())?;
                        }
                        for (k, add) in increments {
                            // An unreadable total is replaced rather than failing every write
                            // of the owner: the session records still hold what was spent.
                            let day: Usage = match tx.get(k.as_slice())? {
                                Some(v) => decode(&v).unwrap_or_default(),
                                None => Usage::default(),
                            };
                            tx.insert(k.as_slice(), encode(&day.plus(add)))?;
                        }
                        landed.push(None);
                    }
                    Prepared::Create {
                        id,
                        scoped,
                        record,
                        owner,
                        writes,
                        blocks,
                    } => {
                        if let Some(k) = scoped {
                            if let Some(winner) = tx.get(k.as_slice())? {
                                landed.push(Some(Some(winner)));
                                continue;
                            }
                            tx.insert(k.as_slice(), id.as_bytes())?;
                        }
                        tx.insert(session_key(*id), record.as_slice())?;
                        tx.insert(owner.as_slice(), &[][..])?;
                        for (k, v) in writes {
                            match v {
                                Some(v) => tx.insert(k.as_slice(), v.as_slice())?,
                                None => tx.remove(k.as_slice())?,
                            };
                        }
                        for (k, v) in blocks {
                            etx.insert(k.as_slice(), v.as_slice())?;
                        }
                        landed.push(Some(None));
                    }
                    Prepared::Plain { writes } => {
                        for (k, v) in writes {
                            match v {
                                Some(v) => tx.insert(k.as_slice(), v.as_slice())?,
                                None => tx.remove(k.as_slice())?,
                            };
                        }
                        landed.push(None);
                    }
                }
            }
            Ok(landed)
        });
        result.map_err(|e| match e {
            TransactionError::Abort((session, expected)) => {
                TxFailed::Conflict { session, expected }
            }
            TransactionError::Storage(e) => TxFailed::Storage(engine_err(e)),
        })
    }

    /// Applies a group: its commits and creates in one transaction when there are several and
    /// none goes alone; else, or when the transaction does not land, write by write.
    pub(super) fn apply_group(&self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        if writes.len() > 1 {
            let mut ends = Ends::new();
            let prepared: Option<Result<Vec<_>, _>> =
                writes.iter().map(|w| self.prepare(w, &mut ends)).collect();
            if let Some(Ok(prepared)) = prepared {
                if let Ok(landed) = self.transact(&prepared) {
                    // A create that found its key taken wrote nothing: its session has no log.
                    for (p, l) in prepared.iter().zip(&landed) {
                        if let (Prepared::Create { id, .. }, Some(Some(_))) = (p, l) {
                            ends.remove(id);
                        }
                    }
                    self.set_log_ends(ends);
                    return landed.into_iter().map(written).collect();
                }
            }
        }
        writes.into_iter().map(|w| self.apply_one(w)).collect()
    }
}

/// The answer for a write that landed in a transaction.
pub(super) fn written(landed: Landed) -> Result<Written, StoreError> {
    Ok(match landed {
        None => Written::Done,
        Some(None) => Written::Created(CreateOutcome::Created),
        Some(Some(winner)) => Written::Created(CreateOutcome::Existing(session_id_from(&winner)?)),
    })
}

/// The plain writes of a batch but its record: turns, idempotency keys, the provider mapping,
/// the active mark.
fn batch_writes(session: SessionId, batch: &Batch) -> Vec<KeyWrite> {
    let mut writes: Vec<KeyWrite> = Vec::new();
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
        // Its reverse, so a delete finds the session's mappings without a scan of all.
        writes.push((
            provider_of_session_key(session, provider, provider_id),
            Some(Vec::new()),
        ));
    }
    match batch.active {
        Some(true) => writes.push((active_key(session), Some(Vec::new()))),
        Some(false) => writes.push((active_key(session), None)),
        None => {}
    }
    writes
}
