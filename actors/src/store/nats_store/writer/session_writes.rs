//! The writes themselves: a session's commit, a create, a key's claim, a delete, each as
//! the messages of one atomic batch (or, beyond one batch, fenced batches of leading events
//! first), with the server's checks and the retries when a compare-and-set lost. A commit of a
//! session this node holds the lease of carries the lease as its last message
//! ([`super::super::lease`]).

use super::publish::{publish, purge, Failed, Message};
use super::{Ends, Tail, MAX_BATCH_MESSAGES};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId};
use crate::record::SessionRecord;
use crate::store::nats_store::layout::{block_of, encode, EVENTS_PER_BLOCK};
use crate::store::nats_store::Shared;
use crate::store::{Batch, CreateOutcome, StoreError, Written};
use crate::usage::Usage;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often a write whose compare-and-set lost to another node is tried again. Nodes that
/// add to one owner's usage total at once (every node's sessions of that owner) race for it:
/// each loser waits a little, at random, before it reads the total again ([`lost_race`]).
const RETRIES: u32 = 24;

/// A compare-and-set lost (the `attempt`th time): waits up to 2^attempt ms (at most 64 ms), at
/// random, so that the nodes racing for one key do not collide again in step.
async fn lost_race(attempt: u32) {
    let most = 1u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=most))).await;
}

/// A commit of one session: its messages as one atomic batch.
pub(super) async fn commit(
    shared: &Shared,
    ends: &Ends,
    session: SessionId,
    batch: &Batch,
) -> Result<(), StoreError> {
    // Refused before anything is tried when the lease is lost (or not held). An empty batch
    // is a lease renewal: the fence alone.
    let leased = shared.leases.fence(shared, session)?.is_some();
    if batch.is_empty() && !leased {
        return Ok(());
    }
    let s = &shared.subjects;
    let mut tail = Tail::default();
    if let Some(first) = batch.events.first().map(|e| e.seq) {
        tail = tail_of(shared, ends, session).await?;
        if first != tail.end + 1 {
            forget_end(ends, session);
            return Err(StoreError::SeqConflict {
                session,
                expected: first,
                actual: tail.end,
            });
        }
    }
    // A commit beyond one atomic batch (a long drain of provider output): its leading blocks
    // go first, in batches of their own, each fenced like any append; the last batch carries
    // the rest of the events with every other write. A failure on the way leaves a prefix of
    // the log that nobody was shown and none of the records.
    let others = message_count(batch) - blocks_touched(&batch.events);
    let events = leading_events(
        shared,
        ends,
        session,
        &mut tail,
        &batch.events,
        others,
        true,
    )
    .await?;
    for attempt in 0..RETRIES {
        let mut messages = Vec::new();
        if let Some(record) = &batch.record {
            messages.push(Message::put(s.record(session), encode(record)));
            messages.push(Message::put(s.owner(&record.owner, session), Vec::new()));
        }
        messages.extend(content(shared, session, batch));
        messages.extend(usage_totals(shared, &batch.usage).await?);
        let (blocks, next) = block_messages(shared, session, &tail, events);
        messages.extend(blocks);
        // Last, so its revision is the batch's acknowledged sequence (the last block's is the
        // one before).
        let fence = shared.leases.fence(shared, session)?;
        let fenced = fence.is_some();
        messages.extend(fence);
        match publish(shared, messages).await {
            Ok(sequence) => {
                if fenced {
                    shared.leases.landed(session, sequence);
                }
                if !events.is_empty() {
                    remember(ends, session, next, sequence - u64::from(fenced));
                }
                return Ok(());
            }
            Err(Failed::Expectation) => {
                forget_end(ends, session);
                if fenced && shared.leases.check_refused(shared, session).await? {
                    return Err(StoreError::LeaseLost { session });
                }
                if let Some(first) = events.first() {
                    let found = shared.tail(session).await?;
                    if found.end != tail.end {
                        return Err(StoreError::SeqConflict {
                            session,
                            expected: first.seq,
                            actual: found.end,
                        });
                    }
                    // The tail block is where it was read, at another revision: go on from it.
                    tail = found;
                }
                // Or a usage total moved under us (another node added to it): read it again.
                lost_race(attempt).await;
            }
            Err(e) => {
                forget_end(ends, session);
                return Err(e.into_store());
            }
        }
    }
    Err(StoreError::Engine(format!(
        "session {session}: usage totals kept changing under the commit"
    )))
}

/// Publishes the leading blocks of a write too big for one atomic batch (besides `others`
/// messages), in fenced batches of their own (each with the session's lease too when
/// `leased`: a commit, not a create), moving `tail` along, and hands back the events left
/// for the write's last batch (at least one, if there were any).
async fn leading_events<'a>(
    shared: &Shared,
    ends: &Ends,
    session: SessionId,
    tail: &mut Tail,
    events: &'a [Arc<Event>],
    others: usize,
    leased: bool,
) -> Result<&'a [Arc<Event>], StoreError> {
    let mut events = events;
    while others + blocks_touched(events) > MAX_BATCH_MESSAGES && events.len() > 1 {
        let beyond = block_of(events[0].seq) + MAX_BATCH_MESSAGES as u64;
        let cut = events
            .iter()
            .position(|e| block_of(e.seq) >= beyond)
            .unwrap_or(events.len())
            .min(events.len() - 1);
        let (chunk, rest) = events.split_at(cut);
        let (mut messages, next) = block_messages(shared, session, tail, chunk);
        let fence = match leased {
            true => shared.leases.fence(shared, session)?,
            false => None,
        };
        let fenced = fence.is_some();
        messages.extend(fence);
        match publish(shared, messages).await {
            Ok(sequence) => {
                if fenced {
                    shared.leases.landed(session, sequence);
                }
                let revision = sequence - u64::from(fenced);
                *tail = Tail { revision, ..next };
                remember(ends, session, tail.clone(), revision);
            }
            Err(Failed::Expectation) => {
                forget_end(ends, session);
                if fenced && shared.leases.check_refused(shared, session).await? {
                    return Err(StoreError::LeaseLost { session });
                }
                return Err(StoreError::SeqConflict {
                    session,
                    expected: chunk[0].seq,
                    actual: shared.tail(session).await?.end,
                });
            }
            Err(e) => {
                forget_end(ends, session);
                return Err(e.into_store());
            }
        }
        events = rest;
    }
    Ok(events)
}

/// Events appended after `tail` as block messages: the tail's block rewritten with them
/// (landing only if it is still at the revision it was read at), new blocks only where
/// nothing was written. They go last in a batch (the acknowledged sequence is then the
/// revision of the last block). Hands back the tail the log has once they land, its
/// revision still to be filled in from the acknowledgement.
fn block_messages(
    shared: &Shared,
    session: SessionId,
    tail: &Tail,
    events: &[Arc<Event>],
) -> (Vec<Message>, Tail) {
    let mut messages = Vec::new();
    let mut open: Option<(u64, Vec<u8>, u64)> = None;
    for event in events {
        let block = block_of(event.seq);
        if open.as_ref().map(|(b, ..)| *b) != Some(block) {
            messages
                .extend(open.take().map(|(b, content, expect)| {
                    block_message(shared, session, b, content, expect)
                }));
            open = Some(
                if !tail.end.is_multiple_of(EVENTS_PER_BLOCK) && block == block_of(tail.end) {
                    (block, tail.block.clone(), tail.revision)
                } else {
                    (block, Vec::new(), 0)
                },
            );
        }
        if let Some((_, content, _)) = open.as_mut() {
            if !content.is_empty() {
                content.push(b'\n');
            }
            content.extend_from_slice(event.json().as_bytes());
        }
    }
    let next = match (&open, events.last()) {
        (Some((_, content, _)), Some(last)) => Tail {
            end: last.seq,
            block: content.clone(),
            revision: 0,
        },
        _ => tail.clone(),
    };
    messages.extend(
        open.map(|(b, content, expect)| block_message(shared, session, b, content, expect)),
    );
    (messages, next)
}

fn block_message(
    shared: &Shared,
    session: SessionId,
    block: u64,
    content: Vec<u8>,
    expect: u64,
) -> Message {
    Message {
        expect: Some(expect),
        ..Message::put(shared.subjects.event_block(session, block), content)
    }
}

/// How many blocks consecutive events fill (in part or whole).
fn blocks_touched(events: &[Arc<Event>]) -> usize {
    match (events.first(), events.last()) {
        (Some(first), Some(last)) => (block_of(last.seq) - block_of(first.seq) + 1) as usize,
        _ => 0,
    }
}

/// The tail of a session's log: as this writer left it, else as the store has it.
async fn tail_of(shared: &Shared, ends: &Ends, session: SessionId) -> Result<Tail, StoreError> {
    let cached = ends
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&session)
        .cloned();
    match cached {
        Some(tail) => Ok(tail),
        None => shared.tail(session).await,
    }
}

/// Keeps a session's tail for its next append. The cache is bounded (a tail holds up to a
/// block of events): past [`MAX_TAILS`] sessions, some other session's tail is dropped, to be
/// read again from the stream should that session append.
fn remember(ends: &Ends, session: SessionId, tail: Tail, revision: u64) {
    let mut ends = ends.lock().unwrap_or_else(|e| e.into_inner());
    if ends.len() >= MAX_TAILS && !ends.contains_key(&session) {
        if let Some(other) = ends.keys().next().copied() {
            ends.remove(&other);
        }
    }
    ends.insert(session, Tail { revision, ..tail });
}

/// How many sessions' tails the writer keeps.
const MAX_TAILS: usize = 4096;

/// A batch's turns, idempotency keys, provider-id mapping and active mark as messages (its
/// record, events and usage totals are written by the caller).
fn content(shared: &Shared, session: SessionId, batch: &Batch) -> Vec<Message> {
    let s = &shared.subjects;
    let mut messages = Vec::new();
    for turn in &batch.turns {
        messages.push(Message::put(s.turn(session, turn.id), encode(turn)));
    }
    for (client_id, turn) in &batch.client_ids {
        messages.push(Message::put(
            s.client_id(session, client_id),
            turn.0.to_string().into_bytes(),
        ));
    }
    if let Some((provider, id)) = &batch.provider_mapping {
        messages.push(Message::put(
            s.provider_id(provider, id),
            session.0.to_string().into_bytes(),
        ));
        messages.push(Message::put(
            s.provider_id_of_session(session, provider, id),
            Vec::new(),
        ));
    }
    match batch.active {
        Some(true) => messages.push(Message::put(s.active(session), b"1".to_vec())),
        Some(false) => messages.push(Message {
            ttl: Some("1s".into()),
            ..Message::put(s.active(session), Vec::new())
        }),
        None => {}
    }
    messages
}

pub(super) fn forget_end(ends: &Ends, session: SessionId) {
    ends.lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&session);
}

/// The new totals of the owners' days a commit adds to, each to land only if the total is
/// still the one read.
async fn usage_totals(
    shared: &Shared,
    increments: &[crate::usage::UsageIncrement],
) -> Result<Vec<Message>, StoreError> {
    let mut added: BTreeMap<String, Usage> = BTreeMap::new();
    for increment in increments {
        let subject = shared.subjects.usage(&increment.owner, &increment.day);
        let total = added.entry(subject).or_default();
        *total = total.plus(&increment.usage);
    }
    let mut messages = Vec::new();
    for (subject, increment) in added {
        let (revision, total) = match shared.last(&subject).await? {
            Some(m) => (
                m.sequence,
                crate::store::nats_store::layout::decode::<Usage>(&m.payload)?,
            ),
            None => (0, Usage::default()),
        };
        messages.push(Message {
            expect: Some(revision),
            ..Message::put(subject, encode(&total.plus(&increment)))
        });
    }
    Ok(messages)
}

/// A new session: record, owner index, first event and the key's claim, with the rest of a
/// fork's or an import's content (its later events, turns and the like; its record unused),
/// all in one atomic batch: a crash never leaves half a session.
///
/// Beyond one atomic batch, the leading events go first in fenced batches of their own, as
/// for a big commit. That is safe for a new session: nobody knows its id until the last
/// batch lands with its record (reads start from the record) and its key, so events without
/// them are found by no one; if the key turns out taken, they are purged again.
pub(super) async fn create(
    shared: &Shared,
    ends: &Ends,
    record: &SessionRecord,
    first: &Arc<Event>,
    key: Option<&ScopedKey>,
    rest: &Batch,
) -> Result<Written, StoreError> {
    let s = &shared.subjects;
    let id = record.id;
    if let Some(next) = rest.events.first() {
        if next.seq != first.seq + 1 {
            return Err(StoreError::SeqConflict {
                session: id,
                expected: next.seq,
                actual: first.seq,
            });
        }
    }
    let all: Vec<Arc<Event>> = std::iter::once(first.clone())
        .chain(rest.events.iter().cloned())
        .collect();
    let others = 2 + usize::from(key.is_some()) * 2 + message_count(rest)
        - usize::from(rest.record.is_some()) * 2
        - blocks_touched(&rest.events);
    let mut tail = Tail::default();
    let events = leading_events(shared, ends, id, &mut tail, &all, others, false).await?;
    let led = events.len() < all.len();
    for attempt in 0..RETRIES {
        let mut messages = vec![
            Message::put(s.record(id), encode(record)),
            Message::put(s.owner(&record.owner, id), Vec::new()),
        ];
        if let Some(key) = key {
            messages.push(Message::new_only(s.key(key), id.0.to_string().into_bytes()));
            messages.push(Message::put(s.key_of_session(id, key), Vec::new()));
        }
        messages.extend(content(shared, id, rest));
        messages.extend(usage_totals(shared, &rest.usage).await?);
        let (blocks, next) = block_messages(shared, id, &tail, events);
        messages.extend(blocks);
        match publish(shared, messages).await {
            Ok(revision) => {
                remember(ends, id, next, revision);
                return Ok(Written::Created(CreateOutcome::Created));
            }
            Err(Failed::Expectation) => {
                if let Some(key) = key {
                    if let Some(winner) = shared.lookup_key(key).await? {
                        forget_end(ends, id);
                        if led {
                            // The leading events of a session that will never be.
                            purge(shared, &s.events(id)).await?;
                        }
                        return Ok(Written::Created(CreateOutcome::Existing(winner)));
                    }
                }
                let found = shared.tail(id).await?;
                if found.end != tail.end {
                    forget_end(ends, id);
                    return Err(StoreError::SeqConflict {
                        session: id,
                        expected: events.first().map_or(first.seq, |e| e.seq),
                        actual: found.end,
                    });
                }
                tail = found;
                // The key was deleted in between, or a usage total moved: try again.
                lost_race(attempt).await;
            }
            Err(e) => {
                forget_end(ends, id);
                return Err(e.into_store());
            }
        }
    }
    forget_end(ends, id);
    Err(StoreError::Engine(format!(
        "session {id}: a key or a usage total kept changing under the create"
    )))
}

/// Maps `key` to `session` unless it names a session already.
pub(super) async fn claim(
    shared: &Shared,
    key: &ScopedKey,
    session: SessionId,
) -> Result<Written, StoreError> {
    let s = &shared.subjects;
    for _ in 0..RETRIES {
        let messages = vec![
            Message::new_only(s.key(key), session.0.to_string().into_bytes()),
            Message::put(s.key_of_session(session, key), Vec::new()),
        ];
        match publish(shared, messages).await {
            Ok(_) => return Ok(Written::Claimed(session)),
            Err(Failed::Expectation) => {
                if let Some(winner) = shared.lookup_key(key).await? {
                    return Ok(Written::Claimed(winner));
                }
            }
            Err(e) => return Err(e.into_store()),
        }
    }
    Err(StoreError::Engine(
        "a key kept changing under a claim".into(),
    ))
}

/// Deletes a session: its keys and provider ids (those that still name it), then everything
/// under its id, the record last.
pub(super) async fn delete(shared: &Shared, session: SessionId) -> Result<(), StoreError> {
    let s = &shared.subjects;
    let Some(record) = shared.get_session(session).await? else {
        return Ok(());
    };
    let named = session.0.to_string();
    for (index, target) in [
        (s.keys_of_session(session), true),
        (s.provider_ids_of_session(session), false),
    ] {
        for subject in shared.subjects_matching(&index).await? {
            let token = crate::store::nats_store::layout::last_token(&subject);
            let target_subject = if target {
                s.key_from_token(token)
            } else {
                s.provider_id_from_token(token)
            };
            if let Some(current) = shared.last(&target_subject).await? {
                if current.payload.as_ref() == named.as_bytes() {
                    purge(shared, &target_subject).await?;
                }
            }
        }
    }
    // The lease first: a node still running the session has its next commit refused instead
    // of writing into a half-deleted session.
    for filter in [
        s.lease(session),
        s.keys_of_session(session),
        s.provider_ids_of_session(session),
        s.events(session),
        s.turns(session),
        s.client_ids(session),
        s.active(session),
        s.owner(&record.owner, session),
        s.record(session),
    ] {
        purge(shared, &filter).await?;
    }
    Ok(())
}

/// How many messages a commit becomes.
pub(super) fn message_count(batch: &Batch) -> usize {
    usize::from(batch.record.is_some()) * 2
        + batch.turns.len()
        + blocks_touched(&batch.events)
        + batch.client_ids.len()
        + usize::from(batch.provider_mapping.is_some()) * 2
        + usize::from(batch.active.is_some())
        + batch.usage.len()
}
