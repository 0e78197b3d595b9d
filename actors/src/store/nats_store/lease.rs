//! Leases: which node may run a session. The lease is the message on `P.lease.<sid>`:
//! `{"node":"<node id>"}`, published with a `Nats-TTL` of the lease's time to live and with
//! `Nats-Expected-Last-Subject-Sequence` = the revision the node holds (0 to take a free one).
//! JetStream removes it when its TTL runs out unless the owner published it again (a renewal);
//! then the subject is empty and the next node takes it with expected sequence 0.
//!
//! Fencing: every commit of a session this node holds a lease on carries the lease message as
//! its last message, expecting the revision held, so a commit renews the lease and a commit of
//! a node whose lease expired (and was maybe taken by another node) is refused whole by the
//! server. The revision moves to the commit's acknowledged sequence (the lease message is the
//! last of the batch, so its sequence is the batch's). A refused fence marks the lease lost:
//! every later commit of the session from this node is refused without being tried, until
//! the session is activated here again.
//!
//! Measured on nats-server 2.15.1 (docs/OPERATIONS.md, "Several nodes"): the server counts a
//! message TTL in whole seconds (`1500ms` expires after 1 s), removes an expired message 0 to
//! 250 ms after its TTL, never before; once removed, expected sequence 0 succeeds and the old
//! revision is refused (`wrong last sequence: 0`). So lease TTLs are whole seconds.
//!
//! Every lease operation runs on the store's writer, in order with the writes: a release
//! lands after the session's last commit, an acquisition after a release submitted before it.

use super::layout::{decode, encode};
use super::writer::publish::{publish, Failed, Message};
use super::writer::Ends;
use super::Shared;
use crate::ids::SessionId;
use crate::store::{LeaseGrant, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How often an acquisition or a release is tried again when the subject moved under it (a
/// free marker expiring, another node racing for it).
const RETRIES: usize = 8;

/// How long a released lease's marker stays: the subject empties itself again.
const RELEASED_TTL: &str = "1s";

/// A lease operation, run by the writer in order with the writes.
pub(super) enum LeaseJob {
    /// Take (or keep) a session's lease.
    Acquire {
        /// The session to run.
        session: SessionId,
        /// This node's id: the lease's value.
        node: String,
        /// How long the lease lasts unless renewed.
        ttl: Duration,
        /// Who waits for the grant.
        answer: tokio::sync::oneshot::Sender<Result<LeaseGrant, StoreError>>,
    },
    /// Give up a session's lease, or (`None`) every lease this node holds.
    Release {
        /// The session, or every one.
        session: Option<SessionId>,
        /// Who waits for the release.
        answer: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The value of a lease message. A released lease is an empty message (no value).
#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseValue {
    /// The node id of the holder.
    node: String,
}

/// A lease this node holds.
#[derive(Clone, Debug)]
struct Held {
    /// This node's id, written as the lease's value.
    node: String,
    /// `Nats-TTL` of every publish of the lease (`<n>s`).
    ttl: String,
    /// The lease message's stream sequence as this node last published it.
    revision: u64,
    /// A fence was refused: another node may hold the lease; nothing more is tried.
    lost: bool,
}

/// The leases this node holds, by session; shared by the writer's commits and lease jobs.
#[derive(Default)]
pub(super) struct LeaseBook {
    /// Each held lease with the revision the next fence expects.
    held: Mutex<HashMap<SessionId, Held>>,
    /// This node has taken a lease: it runs sessions under leases, so a commit of a session
    /// it holds none of is refused (a store used without leases, as by the contract tests,
    /// commits unfenced).
    leasing: AtomicBool,
}

impl LeaseBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Held>> {
        // Plain data; a panic elsewhere leaves it usable.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node holds no (live) lease on `session`.
    fn fresh(&self, session: SessionId) -> bool {
        self.lock().get(&session).is_none_or(|h| h.lost)
    }

    /// The sessions this node holds leases on.
    fn sessions(&self) -> Vec<SessionId> {
        self.lock().keys().copied().collect()
    }

    /// Forgets `session`'s lease (its session was deleted).
    pub(super) fn forget(&self, session: SessionId) {
        self.lock().remove(&session);
    }

    /// How many leases this node holds (and has not lost).
    pub(super) fn count(&self) -> usize {
        self.lock().values().filter(|h| !h.lost).count()
    }

    /// The fence a commit of `session` carries as its last message: `None` on a store used
    /// without leases; an error when the lease was lost, or when this node takes leases and
    /// holds none on `session`.
    pub(super) fn fence(
        &self,
        shared: &Shared,
        session: SessionId,
    ) -> Result<Option<Message>, StoreError> {
        let book = self.lock();
        let Some(held) = book.get(&session) else {
            if self.leasing.load(Ordering::Relaxed) {
                return Err(StoreError::LeaseLost { session });
            }
            return Ok(None);
        };
        if held.lost {
            return Err(StoreError::LeaseLost { session });
        }
        Ok(Some(lease_message(shared, session, held)))
    }

    /// A fenced commit landed: the lease message is at `revision` now.
    pub(super) fn landed(&self, session: SessionId, revision: u64) {
        if let Some(held) = self.lock().get_mut(&session) {
            held.revision = revision;
        }
    }

    /// A fenced commit was refused: when the lease is not at the revision held any more,
    /// it is lost (and the commit's error is [`StoreError::LeaseLost`]); `false` when the
    /// lease still holds (something else of the batch was refused).
    pub(super) async fn check_refused(
        &self,
        shared: &Shared,
        session: SessionId,
    ) -> Result<bool, StoreError> {
        let Some(revision) = self.lock().get(&session).map(|h| h.revision) else {
            return Ok(false);
        };
        let now = shared
            .last(&shared.subjects.lease(session))
            .await?
            .map(|m| m.sequence);
        if now == Some(revision) {
            return Ok(false);
        }
        log::warn!(
            "session {session}: lease lost (held at revision {revision}, now at {now:?}); its \
             writes from this node are refused"
        );
        if let Some(held) = self.lock().get_mut(&session) {
            held.lost = true;
        }
        Ok(true)
    }
}

/// The lease message of `held`, expecting its revision.
fn lease_message(shared: &Shared, session: SessionId, held: &Held) -> Message {
    Message {
        expect: Some(held.revision),
        ttl: Some(held.ttl.clone()),
        ..Message::put(
            shared.subjects.lease(session),
            encode(&LeaseValue {
                node: held.node.clone(),
            }),
        )
    }
}

/// `Nats-TTL` of a lease: whole seconds (the server truncates to them), at least one.
fn ttl_header(ttl: Duration) -> String {
    format!("{}s", ttl.as_secs().max(1))
}

/// Runs a lease job on the writer.
pub(super) async fn run(shared: &Shared, ends: &Ends, job: LeaseJob) {
    match job {
        LeaseJob::Acquire {
            session,
            node,
            ttl,
            answer,
        } => {
            let _ = answer.send(acquire(shared, ends, session, node, ttl).await);
        }
        LeaseJob::Release { session, answer } => {
            let sessions = match session {
                Some(session) => vec![session],
                None => shared.leases.sessions(),
            };
            let mut result = Ok(());
            for session in sessions {
                if let Err(e) = release(shared, session).await {
                    result = Err(e);
                }
            }
            let _ = answer.send(result);
        }
    }
}

/// Takes the lease: from nothing (expected sequence 0), from a released marker (its
/// sequence), or this node's own (its sequence: a restarted actor, or a node that restarted
/// with the same id before its lease expired).
async fn acquire(
    shared: &Shared,
    ends: &Ends,
    session: SessionId,
    node: String,
    ttl: Duration,
) -> Result<LeaseGrant, StoreError> {
    let subject = shared.subjects.lease(session);
    for _ in 0..RETRIES {
        let current = shared.last(&subject).await?;
        let revision = match &current {
            None => 0,
            Some(m) if m.payload.is_empty() => m.sequence,
            Some(m) => {
                let value: LeaseValue = decode(&m.payload)?;
                if value.node != node {
                    return Ok(LeaseGrant::HeldBy(value.node));
                }
                m.sequence
            }
        };
        let held = Held {
            node: node.clone(),
            ttl: ttl_header(ttl),
            revision,
            lost: false,
        };
        match publish(shared, vec![lease_message(shared, session, &held)]).await {
            Ok(sequence) => {
                let fresh = shared.leases.fresh(session);
                if fresh {
                    // Another node may have written the log since this node last did.
                    ends.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&session);
                }
                shared.leases.leasing.store(true, Ordering::Relaxed);
                shared.leases.lock().insert(
                    session,
                    Held {
                        revision: sequence,
                        ..held
                    },
                );
                return Ok(LeaseGrant::Granted);
            }
            // The subject moved since it was read (taken, released, expired): read it again.
            Err(Failed::Expectation) => {}
            Err(e) => return Err(e.into_store()),
        }
    }
    Err(StoreError::Engine(format!(
        "session {session}: its lease kept changing under the acquisition"
    )))
}

/// Replaces this node's lease message by an empty one (expecting the revision held), so the
/// next node takes it at once; the marker expires by itself. A lease this node lost is just
/// forgotten.
async fn release(shared: &Shared, session: SessionId) -> Result<(), StoreError> {
    let Some(held) = shared.leases.lock().remove(&session) else {
        return Ok(());
    };
    if held.lost {
        return Ok(());
    }
    let marker = Message {
        expect: Some(held.revision),
        ttl: Some(RELEASED_TTL.to_string()),
        ..Message::put(shared.subjects.lease(session), Vec::new())
    };
    match publish(shared, vec![marker]).await {
        // Taken over already: nothing of this node's to release.
        Ok(_) | Err(Failed::Expectation) => Ok(()),
        Err(e) => Err(e.into_store()),
    }
}

/// The node holding `session`'s lease, if any.
pub(super) async fn holder(
    shared: &Shared,
    session: SessionId,
) -> Result<Option<String>, StoreError> {
    match shared.last(&shared.subjects.lease(session)).await? {
        Some(m) if !m.payload.is_empty() => Ok(Some(decode::<LeaseValue>(&m.payload)?.node)),
        _ => Ok(None),
    }
}
