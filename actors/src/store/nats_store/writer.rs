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

use super::layout::{encode, Subjects};
use super::Shared;
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId};
use crate::process_groups::ProcessGroupChange;
use crate::record::SessionRecord;
use crate::store::{Batch, CreateOutcome, StoreError, Write, WriteDone, Written};
use crate::usage::Usage;
use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_MESSAGE_TTL,
};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The most writes taken into one group.
const MAX_GROUP: usize = 4096;

/// The most messages one merged batch may have (the server's atomic batch limit is 1,000).
const MAX_BATCH_MESSAGES: usize = 900;

/// How many writes of a wave are in flight at once (the server bounds in-flight atomic
/// batches per stream, 50 by default).
const IN_FLIGHT: usize = 32;

/// How often a write whose compare-and-set lost to another node is tried again.
const RETRIES: usize = 8;

/// Where each session's log ends, as this writer left it (spares a read per append). Only
/// the writer uses it; an entry is set after its write landed and dropped after a failure.
type Ends = Mutex<HashMap<SessionId, u64>>;

/// One message of a write.
struct Message {
    subject: String,
    payload: Vec<u8>,
    /// `Nats-Expected-Last-Subject-Sequence`: the revision the subject must be at.
    expect: Option<u64>,
    /// `Nats-TTL`: the message expires after this long.
    ttl: Option<&'static str>,
}

impl Message {
    fn put(subject: String, payload: Vec<u8>) -> Self {
        Message {
            subject,
            payload,
            expect: None,
            ttl: None,
        }
    }

    /// A message that lands only where nothing was written before.
    fn new_only(subject: String, payload: Vec<u8>) -> Self {
        Message {
            expect: Some(0),
            ..Message::put(subject, payload)
        }
    }
}

/// A unit of a wave: one write, or several commits of one session merged.
enum Unit {
    Commit {
        session: SessionId,
        batch: Batch,
        members: Vec<usize>,
    },
    Create {
        record: SessionRecord,
        first: Arc<Event>,
        key: Option<ScopedKey>,
        /// The rest of a fork's or an import's content, committed once the create landed.
        rest: Box<Batch>,
        member: usize,
    },
    Claim {
        key: ScopedKey,
        session: SessionId,
        member: usize,
    },
    Delete {
        session: SessionId,
        member: usize,
    },
    ProcessGroup {
        change: ProcessGroupChange,
        member: usize,
    },
}

impl Unit {
    fn members(&self) -> Vec<usize> {
        match self {
            Unit::Commit { members, .. } => members.clone(),
            Unit::Create { member, .. }
            | Unit::Claim { member, .. }
            | Unit::Delete { member, .. }
            | Unit::ProcessGroup { member, .. } => vec![*member],
        }
    }

    /// What the unit touches: two units of a wave never share any of it.
    fn targets(&self, subjects: &Subjects) -> Vec<String> {
        match self {
            Unit::Commit { session, batch, .. } => {
                let mut t = vec![format!("session {session}")];
                t.extend(batch.usage.iter().map(|u| subjects.usage(&u.owner, &u.day)));
                if let Some((provider, id)) = &batch.provider_mapping {
                    t.push(subjects.provider_id(provider, id));
                }
                t
            }
            Unit::Create { record, key, .. } => {
                let mut t = vec![format!("session {}", record.id)];
                t.extend(key.iter().map(|k| subjects.key(k)));
                t
            }
            Unit::Claim { key, .. } => vec![subjects.key(key)],
            Unit::Delete { session, .. } => vec![format!("session {session}")],
            Unit::ProcessGroup { change, .. } => vec![subjects.process_group(match change {
                ProcessGroupChange::Started(record) => record.key(),
                ProcessGroupChange::Ended(key) => *key,
            })],
        }
    }
}

/// The writer's loop: take what is waiting, apply it wave by wave, answer in order.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(Write, WriteDone)>) {
    let ends: Ends = Mutex::new(HashMap::new());
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (writes, dones): (Vec<Write>, Vec<WriteDone>) = group.into_iter().unzip();
        let mut answers: Vec<Option<Result<Written, StoreError>>> = vec![None; writes.len()];
        for wave in waves(&shared.subjects, writes) {
            let results: Vec<(Vec<usize>, Result<Written, StoreError>)> =
                futures::stream::iter(wave)
                    .map(|unit| {
                        let members = unit.members();
                        let shared = &shared;
                        let ends = &ends;
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
}

/// Cuts a group into waves of units that touch different things, merging a session's
/// consecutive commits.
fn waves(subjects: &Subjects, writes: Vec<Write>) -> Vec<Vec<Unit>> {
    let mut waves = Vec::new();
    let mut wave: Vec<Unit> = Vec::new();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for (member, write) in writes.into_iter().enumerate() {
        let mut unit = match write {
            Write::Commit { session, batch } => Unit::Commit {
                session,
                batch,
                members: vec![member],
            },
            Write::Create {
                record,
                first,
                key,
                rest,
            } => Unit::Create {
                record,
                first,
                key,
                rest,
                member,
            },
            Write::ClaimKey { key, session } => Unit::Claim {
                key,
                session,
                member,
            },
            Write::Delete(session) => Unit::Delete { session, member },
            Write::ProcessGroup(change) => Unit::ProcessGroup { change, member },
        };
        let targets = unit.targets(subjects);
        // A later commit of a session whose commit is in the wave joins that commit.
        if let Unit::Commit { session, .. } = &unit {
            if let Some(&at) = taken.get(&format!("session {session}")) {
                let others_clear = targets
                    .iter()
                    .all(|t| taken.get(t).is_none_or(|&u| u == at));
                if let (true, Unit::Commit { batch, members, .. }) = (others_clear, &mut wave[at]) {
                    let Unit::Commit {
                        batch: later,
                        members: later_members,
                        ..
                    } = unit
                    else {
                        unreachable!("matched as a commit above")
                    };
                    if message_count(batch) + message_count(&later) <= MAX_BATCH_MESSAGES {
                        match batch.absorb(later) {
                            Ok(_) => {
                                members.extend(later_members);
                                for t in targets {
                                    taken.insert(t, at);
                                }
                                continue;
                            }
                            Err(later) => {
                                unit = Unit::Commit {
                                    session: *session_of(&wave[at]),
                                    batch: *later,
                                    members: later_members,
                                };
                            }
                        }
                    } else {
                        unit = Unit::Commit {
                            session: *session_of(&wave[at]),
                            batch: later,
                            members: later_members,
                        };
                    }
                }
            }
        }
        let clash = targets.iter().any(|t| taken.contains_key(t));
        if clash || matches!(unit, Unit::Delete { .. }) {
            if !wave.is_empty() {
                waves.push(std::mem::take(&mut wave));
            }
            taken.clear();
        }
        let alone = matches!(unit, Unit::Delete { .. });
        for t in targets {
            taken.insert(t, wave.len());
        }
        wave.push(unit);
        if alone {
            waves.push(std::mem::take(&mut wave));
            taken.clear();
        }
    }
    if !wave.is_empty() {
        waves.push(wave);
    }
    waves
}

fn session_of(unit: &Unit) -> &SessionId {
    match unit {
        Unit::Commit { session, .. } => session,
        _ => unreachable!("only commits are merged"),
    }
}

/// How many messages a commit becomes.
fn message_count(batch: &Batch) -> usize {
    usize::from(batch.record.is_some()) * 2
        + batch.turns.len()
        + batch.events.len()
        + batch.client_ids.len()
        + usize::from(batch.provider_mapping.is_some()) * 2
        + usize::from(batch.active.is_some())
        + batch.usage.len()
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
        } => {
            let created = create(shared, ends, &record, &first, key.as_ref()).await?;
            if created == Written::Created(CreateOutcome::Created) && !rest.is_empty() {
                commit(shared, ends, record.id, &rest).await?;
            }
            Ok(created)
        }
        Unit::Claim { key, session, .. } => claim(shared, &key, session).await,
        Unit::Delete { session, .. } => {
            ends.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session);
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

/// A commit of one session: its messages as one atomic batch.
async fn commit(
    shared: &Shared,
    ends: &Ends,
    session: SessionId,
    batch: &Batch,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let s = &shared.subjects;
    let first_seq = batch.events.first().map(|e| e.seq);
    if let Some(first) = first_seq {
        let cached = ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .copied();
        let end = match cached {
            Some(end) => end,
            None => shared.last_seq(session).await?,
        };
        if first != end + 1 {
            forget_end(ends, session);
            return Err(StoreError::SeqConflict {
                session,
                expected: first,
                actual: end,
            });
        }
    }
    // A commit beyond one atomic batch (a long drain of provider output): its leading events
    // go first, in batches of their own, each fenced like any append; the last batch carries
    // the rest of the events with every other write. A failure on the way leaves a prefix of
    // the log that nobody was shown and none of the records.
    let others = message_count(batch) - batch.events.len();
    let mut events: &[Arc<Event>] = &batch.events;
    while others + events.len() > MAX_BATCH_MESSAGES && events.len() > 1 {
        let (chunk, rest) = events.split_at(MAX_BATCH_MESSAGES.min(events.len() - 1));
        let messages = chunk
            .iter()
            .map(|e| Message::new_only(s.event(session, e.seq), e.json().as_bytes().to_vec()))
            .collect();
        match publish(shared, messages).await {
            Ok(_) => {
                if let Some(last) = chunk.last() {
                    ends.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(session, last.seq);
                }
            }
            Err(Failed::Expectation) => {
                forget_end(ends, session);
                return Err(StoreError::SeqConflict {
                    session,
                    expected: chunk[0].seq,
                    actual: shared.last_seq(session).await?,
                });
            }
            Err(e) => {
                forget_end(ends, session);
                return Err(e.into_store());
            }
        }
        events = rest;
    }
    let first_seq = events.first().map(|e| e.seq);
    for _ in 0..RETRIES {
        let mut messages = Vec::new();
        if let Some(record) = &batch.record {
            messages.push(Message::put(s.record(session), encode(record)));
            messages.push(Message::put(s.owner(&record.owner, session), Vec::new()));
        }
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
                ttl: Some("1s"),
                ..Message::put(s.active(session), Vec::new())
            }),
            None => {}
        }
        messages.extend(usage_totals(shared, &batch.usage).await?);
        messages.extend(
            events
                .iter()
                .map(|e| Message::new_only(s.event(session, e.seq), e.json().as_bytes().to_vec())),
        );
        match publish(shared, messages).await {
            Ok(_) => {
                if let Some(last) = batch.events.last() {
                    ends.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(session, last.seq);
                }
                return Ok(());
            }
            Err(Failed::Expectation) => {
                forget_end(ends, session);
                if let Some(first) = first_seq {
                    if shared.last(&s.event(session, first)).await?.is_some() {
                        return Err(StoreError::SeqConflict {
                            session,
                            expected: first,
                            actual: shared.last_seq(session).await?,
                        });
                    }
                }
                // A usage total moved under us (another node added to it): read it again.
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

fn forget_end(ends: &Ends, session: SessionId) {
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
            Some(m) => (m.sequence, super::layout::decode::<Usage>(&m.payload)?),
            None => (0, Usage::default()),
        };
        messages.push(Message {
            expect: Some(revision),
            ..Message::put(subject, encode(&total.plus(&increment)))
        });
    }
    Ok(messages)
}

/// A new session: record, owner index, first event and the key's claim, all or nothing.
async fn create(
    shared: &Shared,
    ends: &Ends,
    record: &SessionRecord,
    first: &Arc<Event>,
    key: Option<&ScopedKey>,
) -> Result<Written, StoreError> {
    let s = &shared.subjects;
    for _ in 0..RETRIES {
        let mut messages = vec![
            Message::put(s.record(record.id), encode(record)),
            Message::put(s.owner(&record.owner, record.id), Vec::new()),
            Message::new_only(
                s.event(record.id, first.seq),
                first.json().as_bytes().to_vec(),
            ),
        ];
        if let Some(key) = key {
            messages.push(Message::new_only(
                s.key(key),
                record.id.0.to_string().into_bytes(),
            ));
            messages.push(Message::put(s.key_of_session(record.id, key), Vec::new()));
        }
        match publish(shared, messages).await {
            Ok(_) => {
                ends.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(record.id, first.seq);
                return Ok(Written::Created(CreateOutcome::Created));
            }
            Err(Failed::Expectation) => {
                if let Some(key) = key {
                    if let Some(winner) = shared.lookup_key(key).await? {
                        return Ok(Written::Created(CreateOutcome::Existing(winner)));
                    }
                    // The key was deleted in between: try again.
                    continue;
                }
                return Err(StoreError::SeqConflict {
                    session: record.id,
                    expected: first.seq,
                    actual: shared.last_seq(record.id).await?,
                });
            }
            Err(e) => return Err(e.into_store()),
        }
    }
    Err(StoreError::Engine(
        "a key kept changing under a create".into(),
    ))
}

/// Maps `key` to `session` unless it names a session already.
async fn claim(
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
async fn delete(shared: &Shared, session: SessionId) -> Result<(), StoreError> {
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
            let token = super::layout::last_token(&subject);
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
    for filter in [
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

async fn purge(shared: &Shared, filter: &str) -> Result<(), StoreError> {
    shared
        .stream
        .purge()
        .filter(filter)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Engine(format!("purging {filter}: {e}")))
}

/// Why a publish did not land.
enum Failed {
    /// An expected last subject sequence did not hold: nothing of the batch landed.
    Expectation,
    /// Anything else (connection, server): nothing of the batch landed either.
    Other(String),
}

impl Failed {
    fn into_store(self) -> StoreError {
        match self {
            Failed::Expectation => StoreError::Engine("wrong last sequence".into()),
            Failed::Other(e) => StoreError::Engine(e),
        }
    }
}

/// Publishes messages as one atomic batch (a single message plainly) and waits for the ack.
async fn publish(shared: &Shared, messages: Vec<Message>) -> Result<u64, Failed> {
    let n = messages.len();
    let batch_id = (n > 1).then(|| uuid::Uuid::now_v7().simple().to_string());
    let mut ack = None;
    for (i, message) in messages.into_iter().enumerate() {
        let mut headers = HeaderMap::new();
        if let Some(expect) = message.expect {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expect.to_string().as_str(),
            );
        }
        if let Some(ttl) = message.ttl {
            headers.insert(NATS_MESSAGE_TTL, ttl);
        }
        if let Some(id) = &batch_id {
            headers.insert(NATS_BATCH_ID, id.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        }
        if i + 1 < n {
            // Before the commit: stored by the server with the batch, acknowledged with it.
            shared
                .client
                .publish_with_headers(message.subject, headers, message.payload.into())
                .await
                .map_err(|e| Failed::Other(format!("publishing to NATS: {e}")))?;
        } else {
            if batch_id.is_some() {
                headers.insert(NATS_BATCH_COMMIT, "1");
            }
            ack = Some(
                shared
                    .js
                    .send_publish(
                        message.subject,
                        PublishMessage::build()
                            .payload(message.payload.into())
                            .headers(headers),
                    )
                    .await
                    .map_err(|e| Failed::Other(format!("publishing to NATS: {e}")))?,
            );
        }
    }
    let Some(ack) = ack else {
        return Ok(0);
    };
    match ack.await {
        Ok(ack) => Ok(ack.sequence),
        Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
            Err(Failed::Expectation)
        }
        Err(e) if e.to_string().contains("wrong last sequence") => Err(Failed::Expectation),
        Err(e) => Err(Failed::Other(format!("JetStream refused a write: {e}"))),
    }
}
