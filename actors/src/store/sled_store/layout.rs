//! The sled store's key layout and encodings: record keys, event blocks, JSON records.

use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::{ProcessGroupChange, ProcessGroupKey};
use crate::store::StoreError;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use uuid::Uuid;

/// A block is closed once its encoded events reach this size. Small enough that a sled leaf of
/// blocks stays under sled's inline item size (a quarter of a 512 KiB segment), large enough
/// to share one key among a few dozen deltas.
pub(super) const BLOCK_BYTES: usize = 4096;

/// Bytes before a block's JSON array: its last seq.
pub(super) const BLOCK_HEADER: usize = 8;

pub(super) fn engine_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data with string keys; serializing them cannot fail.
    serde_json::to_vec(value).expect("records serialize")
}

pub(super) fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn session_key(id: SessionId) -> Vec<u8> {
    key(b's', &[id.as_bytes()])
}

pub(super) fn owner_key(owner: &str, id: SessionId) -> Vec<u8> {
    key(b'o', &[owner.as_bytes(), &[0], id.as_bytes()])
}

pub(super) fn scoped_key(k: &ScopedKey) -> Vec<u8> {
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

/// An owner's usage on a UTC day: `u owner 0 day`.
pub(super) fn usage_key(owner: &str, day: &str) -> Vec<u8> {
    key(b'u', &[owner.as_bytes(), &[0], day.as_bytes()])
}

pub(super) fn event_key(id: SessionId, seq: u64) -> Vec<u8> {
    key(b'e', &[id.as_bytes(), &seq.to_be_bytes()])
}

/// Encodes consecutive events as blocks: (key of the first seq, last seq + JSON array).
pub(super) fn encode_blocks(session: SessionId, events: &[Arc<Event>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(u64, Vec<u8>)> = None;
    for (i, event) in events.iter().enumerate() {
        let (_, buf) = current.get_or_insert_with(|| {
            let mut buf = Vec::with_capacity(BLOCK_BYTES + 512);
            buf.extend_from_slice(&[0; BLOCK_HEADER]);
            buf.push(b'[');
            (event.seq, buf)
        });
        if buf.len() > BLOCK_HEADER + 1 {
            buf.push(b',');
        }
        buf.extend_from_slice(event.json().as_bytes());
        if buf.len() >= BLOCK_BYTES || i + 1 == events.len() {
            if let Some((first, mut buf)) = current.take() {
                buf.push(b']');
                buf[..BLOCK_HEADER].copy_from_slice(&event.seq.to_be_bytes());
                blocks.push((event_key(session, first), buf));
            }
        }
    }
    blocks
}

/// The last seq a block holds.
pub(super) fn block_last_seq(value: &[u8]) -> Result<u64, StoreError> {
    value
        .get(..BLOCK_HEADER)
        .and_then(|h| h.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("event block header".into()))
}

/// The events of a block.
pub(super) fn decode_block(value: &[u8]) -> Result<Vec<Event>, StoreError> {
    decode(&value[BLOCK_HEADER.min(value.len())..])
}

pub(super) fn turn_key(open: bool, id: SessionId, turn: TurnId) -> Vec<u8> {
    key(
        if open { b'q' } else { b't' },
        &[id.as_bytes(), turn.as_bytes()],
    )
}

pub(super) fn client_key(id: SessionId, client_id: &str) -> Vec<u8> {
    key(b'c', &[id.as_bytes(), client_id.as_bytes()])
}

pub(super) fn provider_key(provider: &str, provider_id: &str) -> Vec<u8> {
    key(b'p', &[provider.as_bytes(), &[0], provider_id.as_bytes()])
}

/// The reverse of [`provider_key`]: `P sid provider 0 id`, found by the session's prefix.
pub(super) fn provider_of_session_key(id: SessionId, provider: &str, provider_id: &str) -> Vec<u8> {
    key(
        b'P',
        &[
            id.as_bytes(),
            provider.as_bytes(),
            &[0],
            provider_id.as_bytes(),
        ],
    )
}

pub(super) fn active_key(id: SessionId) -> Vec<u8> {
    key(b'a', &[id.as_bytes()])
}

pub(super) fn process_group_key(group: ProcessGroupKey) -> Vec<u8> {
    let (pgid, start) = (group.pgid.to_be_bytes(), group.leader_start.to_be_bytes());
    key(b'g', &[&pgid, &start])
}

/// The key and value (`None`: remove) a process group change writes.
pub(super) fn process_group_write(change: &ProcessGroupChange) -> (Vec<u8>, Option<Vec<u8>>) {
    match change {
        ProcessGroupChange::Started(record) => {
            (process_group_key(record.key()), Some(encode(record)))
        }
        ProcessGroupChange::Ended(key) => (process_group_key(*key), None),
    }
}

pub(super) fn session_id_from(bytes: &[u8]) -> Result<SessionId, StoreError> {
    Uuid::from_slice(bytes)
        .map(SessionId)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}
