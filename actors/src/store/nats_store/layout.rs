//! The NATS store's subjects and encodings. Everything lives in ONE stream (atomic batches
//! cannot span streams) with at most one message per subject, so a subject is a key and its
//! message the key's value; the stream sequence of that message is the key's revision.
//!
//! ```text
//! P.rec.<sid>                 session record (JSON)
//! P.own.<owner>.<sid>         owner index (empty)
//! P.key.<scoped key>          scoped key -> sid; claimed with expected last subject seq 0
//! P.rkey.<sid>.<scoped key>   the keys a session claimed (empty), found again by a delete
//! P.turn.<sid>.<turn>         turn (JSON); open and completed told apart by its status
//! P.cid.<sid>.<client id>     idempotency key -> turn id
//! P.pid.<provider id>         (provider, provider session id) -> sid
//! P.rpid.<sid>.<provider id>  the provider ids a session mapped (empty)
//! P.act.<sid>                 the session has open turns ("1"); an empty message with a TTL
//!                             says it has none and then expires, so the index holds only
//!                             active sessions
//! P.lease.<sid>               the node that may run the session ({"node":"<id>"}), with a
//!                             TTL, renewed by the owner's commits; empty once released
//!                             (lease.rs)
//! P.use.<owner>.<day>         the owner's usage that UTC day (JSON); compare-and-set
//! P.evb.<sid>.<block>        a block of the log: events block*64+1 ..= block*64+64, their
//!                             wire JSONs one a line; written with the revision it was read
//!                             at (0 for a new block), rewritten whole while it fills
//! P.pg.<pgid>.<start>         a running agent process group (JSON)
//! P.meta.schema, P.meta.probe schema version, readiness probe
//! ```
//!
//! Not in the stream: `P-rpc.<node id>`, where each node answers the session operations other
//! nodes forward to it ([`crate::cluster`]).
//!
//! `<owner>`, `<scoped key>`, `<client id>` and `<provider id>` are free text: they are written
//! as `x` + URL-safe base64, a valid subject token whatever they hold.

use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::ProcessGroupKey;
use crate::store::StoreError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;

/// Free text as one subject token.
pub(super) fn token(text: &[u8]) -> String {
    format!("x{}", URL_SAFE_NO_PAD.encode(text))
}

/// The text a [`token`] holds.
pub(super) fn untoken(token: &str) -> Result<Vec<u8>, StoreError> {
    token
        .strip_prefix('x')
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("subject token {token:?}")))
}

/// The subjects of one store, under its prefix.
#[derive(Clone, Debug)]
pub(super) struct Subjects {
    /// The prefix every subject starts with (`troupe` unless configured).
    prefix: String,
}

impl Subjects {
    pub(super) fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_string(),
        }
    }

    /// Every subject of the store: the stream's subject filter.
    pub(super) fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    pub(super) fn record(&self, id: SessionId) -> String {
        format!("{}.rec.{}", self.prefix, id.0)
    }

    pub(super) fn record_all(&self) -> String {
        format!("{}.rec.*", self.prefix)
    }

    pub(super) fn owner(&self, owner: &str, id: SessionId) -> String {
        format!("{}.own.{}.{}", self.prefix, token(owner.as_bytes()), id.0)
    }

    pub(super) fn owner_sessions(&self, owner: &str) -> String {
        format!("{}.own.{}.*", self.prefix, token(owner.as_bytes()))
    }

    pub(super) fn key(&self, key: &ScopedKey) -> String {
        format!("{}.key.{}", self.prefix, scoped_token(key))
    }

    pub(super) fn key_of_session(&self, id: SessionId, key: &ScopedKey) -> String {
        format!("{}.rkey.{}.{}", self.prefix, id.0, scoped_token(key))
    }

    pub(super) fn keys_of_session(&self, id: SessionId) -> String {
        format!("{}.rkey.{}.*", self.prefix, id.0)
    }

    /// The key subject a `rkey` subject names.
    pub(super) fn key_from_token(&self, token: &str) -> String {
        format!("{}.key.{}", self.prefix, token)
    }

    pub(super) fn turn(&self, id: SessionId, turn: TurnId) -> String {
        format!("{}.turn.{}.{}", self.prefix, id.0, turn.0)
    }

    pub(super) fn turns(&self, id: SessionId) -> String {
        format!("{}.turn.{}.*", self.prefix, id.0)
    }

    pub(super) fn client_id(&self, id: SessionId, client_id: &str) -> String {
        format!(
            "{}.cid.{}.{}",
            self.prefix,
            id.0,
            token(client_id.as_bytes())
        )
    }

    pub(super) fn client_ids(&self, id: SessionId) -> String {
        format!("{}.cid.{}.*", self.prefix, id.0)
    }

    pub(super) fn provider_id(&self, provider: &str, provider_id: &str) -> String {
        format!(
            "{}.pid.{}",
            self.prefix,
            provider_token(provider, provider_id)
        )
    }

    pub(super) fn provider_id_of_session(
        &self,
        id: SessionId,
        provider: &str,
        provider_id: &str,
    ) -> String {
        format!(
            "{}.rpid.{}.{}",
            self.prefix,
            id.0,
            provider_token(provider, provider_id)
        )
    }

    pub(super) fn provider_ids_of_session(&self, id: SessionId) -> String {
        format!("{}.rpid.{}.*", self.prefix, id.0)
    }

    /// The provider-id subject a `rpid` subject names.
    pub(super) fn provider_id_from_token(&self, token: &str) -> String {
        format!("{}.pid.{}", self.prefix, token)
    }

    pub(super) fn active(&self, id: SessionId) -> String {
        format!("{}.act.{}", self.prefix, id.0)
    }

    pub(super) fn all_active(&self) -> String {
        format!("{}.act.*", self.prefix)
    }

    pub(super) fn lease(&self, id: SessionId) -> String {
        format!("{}.lease.{}", self.prefix, id.0)
    }

    pub(super) fn usage(&self, owner: &str, day: &str) -> String {
        format!("{}.use.{}.{}", self.prefix, token(owner.as_bytes()), day)
    }

    /// Usage subjects of one owner, or of all.
    pub(super) fn usages(&self, owner: Option<&str>) -> String {
        match owner {
            Some(owner) => format!("{}.use.{}.*", self.prefix, token(owner.as_bytes())),
            None => format!("{}.use.*.*", self.prefix),
        }
    }

    /// The block of the log that holds events `block * EVENTS_PER_BLOCK + 1 ..`.
    pub(super) fn event_block(&self, id: SessionId, block: u64) -> String {
        format!("{}.evb.{}.{}", self.prefix, id.0, block)
    }

    /// Every block of a session's log.
    pub(super) fn events(&self, id: SessionId) -> String {
        format!("{}.evb.{}.*", self.prefix, id.0)
    }

    /// Events of the layout before blocks (one message each), which this build cannot read.
    pub(super) fn unblocked_events(&self) -> String {
        format!("{}.ev.>", self.prefix)
    }

    pub(super) fn process_group(&self, key: ProcessGroupKey) -> String {
        format!("{}.pg.{}.{}", self.prefix, key.pgid, key.leader_start)
    }

    pub(super) fn process_groups(&self) -> String {
        format!("{}.pg.*.*", self.prefix)
    }

    /// Where node `node` answers forwarded requests: OUTSIDE the stream's subjects (nothing
    /// of it is stored). A node id other than letters, digits, `-` and `_` is a [`token`].
    pub(super) fn rpc(&self, node: &str) -> String {
        let plain = !node.is_empty()
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if plain {
            format!("{}-rpc.{}", self.prefix, node)
        } else {
            format!("{}-rpc.{}", self.prefix, token(node.as_bytes()))
        }
    }

    pub(super) fn schema(&self) -> String {
        format!("{}.meta.schema", self.prefix)
    }

    pub(super) fn probe(&self) -> String {
        format!("{}.meta.probe", self.prefix)
    }
}

fn scoped_token(key: &ScopedKey) -> String {
    token(&encode(key))
}

fn provider_token(provider: &str, provider_id: &str) -> String {
    token(&encode(&(provider, provider_id)))
}

/// How many events one block of a session's log holds: a block is one message, so a busy
/// session writes a message per block instead of one per event.
pub(super) const EVENTS_PER_BLOCK: u64 = 64;

/// The block that holds event `seq` (seqs start at 1).
pub(super) fn block_of(seq: u64) -> u64 {
    seq.saturating_sub(1) / EVENTS_PER_BLOCK
}

/// The events of a block, in seq order.
pub(super) fn decode_block(payload: &[u8]) -> Result<Vec<Event>, StoreError> {
    payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(decode)
        .collect()
}

/// The seq of the last event in a block (its lines are consecutive from the block's start).
pub(super) fn block_end(block: u64, payload: &[u8]) -> u64 {
    let lines = payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .count() as u64;
    block * EVENTS_PER_BLOCK + lines
}

/// The last token of a subject.
pub(super) fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// The token before the last of a subject.
pub(super) fn second_last_token(subject: &str) -> &str {
    subject.rsplit('.').nth(1).unwrap_or(subject)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data with string keys; serializing them cannot fail.
    serde_json::to_vec(value).expect("records serialize")
}

pub(super) fn session_id_from(text: &[u8]) -> Result<SessionId, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| uuid::Uuid::parse_str(t).ok())
        .map(SessionId)
        .ok_or_else(|| StoreError::Corrupt(format!("session id {:?}", text)))
}

pub(super) fn turn_id_from(text: &[u8]) -> Result<TurnId, StoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| uuid::Uuid::parse_str(t).ok())
        .map(TurnId)
        .ok_or_else(|| StoreError::Corrupt(format!("turn id {:?}", text)))
}

pub(super) fn engine_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}
