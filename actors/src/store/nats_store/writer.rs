//! The writer: applies submitted writes in order, pipelined, and confirms each once JetStream
//! acknowledged it.
//!
//! What is waiting when the writer is free forms a group. The group is cut into *waves* of
//! writes that touch different things (sessions, keys, usage totals, process groups); a later
//! commit of a session already in the wave is merged into that session's batch
//! ([`Batch::absorb`]), so under load a session's events go out as one atomic batch per wave.
//! The writes of a wave are published together and their acknowledgements awaited together;
//! waves go one after another, so a session's batches land in order and a failed one is never
//! followed by a later one of the same session that was already on its way. Answers are
//! given in submission order.
//!
//! Each write is one JetStream atomic batch (or a single message): it lands whole or not at
//! all. The checks are the server's: an event subject is written with expected last subject
//! sequence 0 (nobody wrote that seq), a key the same (nobody claimed it), an owner's usage
//! total with the sequence it was read at (compare-and-set, retried when another node added
//! to it first).

pub(super) mod publish;
mod session_writes;
mod waves;

use super::layout::encode;
use super::lease;
use super::{Job, Shared};
use crate::ids::SessionId;
use crate::process_groups::ProcessGroupChange;
use crate::store::{StoreError, Write, WriteDone, Written};
use futures::StreamExt;
use publish::{publish, purge, Message};
use session_writes::{claim, commit, create, delete};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use waves::{waves, Unit};

/// The most writes taken into one group.
const MAX_GROUP: usize = 4096;

/// The most messages one merged batch may have (the server's atomic batch limit is 1,000).
const MAX_BATCH_MESSAGES: usize = 900;

/// How many writes of a wave are in flight at once (the server bounds in-flight atomic
/// batches per stream, 50 by default).
const IN_FLIGHT: usize = 32;

/// Where each session's log ends, as this writer left it (spares a read per append). Only
/// the writer uses it; an entry is set after its write landed and dropped after a failure.
pub(super) type Ends = Mutex<HashMap<SessionId, u64>>;

/// The writer's loop: take what is waiting, apply it wave by wave, answer in order. A lease
/// job cuts the group: the writes before it land first, the writes after it after it.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let ends: Ends = Mutex::new(HashMap::new());
    let mut next = rx.recv().await;
    while let Some(job) = next.take() {
        let mut group = match job {
            Job::Lease(job) => {
                lease::run(&shared, &ends, job).await;
                next = rx.recv().await;
                continue;
            }
            Job::Write(write, done) => vec![(write, done)],
        };
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Job::Write(write, done)) => group.push((write, done)),
                Ok(lease_job) => {
                    next = Some(lease_job);
                    break;
                }
                Err(_) => break,
            }
        }
        apply_group(&shared, &ends, group).await;
        if next.is_none() {
            next = rx.recv().await;
        }
    }
}

/// Applies a group of writes wave by wave and answers each, in submission order.
async fn apply_group(shared: &Arc<Shared>, ends: &Ends, group: Vec<(Write, WriteDone)>) {
    let (writes, dones): (Vec<Write>, Vec<WriteDone>) = group.into_iter().unzip();
    let mut answers: Vec<Option<Result<Written, StoreError>>> = vec![None; writes.len()];
    for wave in waves(&shared.subjects, writes) {
        let results: Vec<(Vec<usize>, Result<Written, StoreError>)> = futures::stream::iter(wave)
            .map(|unit| {
                let members = unit.members();
                async move { (members, apply(shared, ends, unit).await) }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        for (members, result) in results {
            for member in members {
                answers[member] = Some(result.clone());
            }
        }
    }
    for (done, answer) in dones.into_iter().zip(answers) {
        done(answer.unwrap_or_else(|| Err(StoreError::Engine("a write got no answer".into()))));
    }
}

/// Applies one unit, with its retries.
async fn apply(shared: &Shared, ends: &Ends, unit: Unit) -> Result<Written, StoreError> {
    match unit {
        Unit::Commit { session, batch, .. } => commit(shared, ends, session, &batch)
            .await
            .map(|()| Written::Done),
        Unit::Create {
            record,
            first,
            key,
            rest,
            ..
        } => create(shared, ends, &record, &first, key.as_ref(), &rest).await,
        Unit::Claim { key, session, .. } => claim(shared, &key, session).await,
        Unit::Delete { session, .. } => {
            ends.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session);
            shared.leases.forget(session);
            delete(shared, session).await.map(|()| Written::Done)
        }
        Unit::ProcessGroup { change, .. } => match change {
            ProcessGroupChange::Started(record) => publish(
                shared,
                vec![Message::put(
                    shared.subjects.process_group(record.key()),
                    encode(&record),
                )],
            )
            .await
            .map(|_| Written::Done)
            .map_err(|e| e.into_store()),
            ProcessGroupChange::Ended(key) => purge(shared, &shared.subjects.process_group(key))
                .await
                .map(|()| Written::Done),
        },
    }
}
