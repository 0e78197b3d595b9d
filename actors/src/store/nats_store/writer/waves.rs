//! Grouping: what is waiting is cut into waves of units that touch different things, a
//! session's consecutive commits merged into one batch.

use super::session_writes::message_count;
use super::MAX_BATCH_MESSAGES;
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId};
use crate::process_groups::ProcessGroupChange;
use crate::record::SessionRecord;
use crate::store::nats_store::layout::Subjects;
use crate::store::{Batch, Write};
use std::collections::HashMap;
use std::sync::Arc;

/// A unit of a wave: one write, or several commits of one session merged.
pub(super) enum Unit {
    Commit {
        session: SessionId,
        batch: Batch,
        members: Vec<usize>,
    },
    Create {
        record: SessionRecord,
        first: Arc<Event>,
        key: Option<ScopedKey>,
        /// The rest of a fork's or an import's content, landing in the create's batch.
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
    /// The writes (by their place in the group) the unit answers.
    pub(super) fn members(&self) -> Vec<usize> {
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

/// Cuts a group into waves of units that touch different things, merging a session's
/// consecutive commits.
pub(super) fn waves(subjects: &Subjects, writes: Vec<Write>) -> Vec<Vec<Unit>> {
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
