//! Sessions made from other sessions: a fork at a turn, and an import of an export.
//!
//! The source is only read, in one place ([`SessionCopy::read`]), and the new session lands in
//! ONE store write ([`crate::store::Write::Create`] with its `rest`): record, key claim, every
//! event and every turn, so a crash never leaves half a session.
//!
//! What is copied: the source's turns that had completed at the cut, and its events up to the
//! cut that belong to those turns or to no turn, renumbered from seq 2 (seq 1 is the new
//! session's own `session.created`, which names the origin). The provider's conversation
//! follows the provider's abilities: stateless providers read the copied log as their history;
//! a provider that forks (Claude's `--resume <id> --fork-session`) forks the source's
//! conversation when the cut is the source's latest turn; any other starts fresh with a
//! transcript of the copied turns, announced with `session.updated` reason
//! `transcript_seeded`.
//!
//! Usage: the copied turns keep their own usage (turn records, `turn.completed`), as history;
//! the new session's totals start at zero and its budget is the configured one. The spend
//! was the source's, already counted for it and for its owner's day.

use crate::error::RuntimeError;
use crate::event::{Event, EventBody};
use crate::ids::{validate_session_key, ScopedKey, SessionId, TurnId};
use crate::metrics::RuntimeMetrics;
use crate::record::{Handover, Origin, OriginKind, SessionRecord, SessionView, TurnRecord};
use crate::shared::RuntimeShared;
use crate::store::{Batch, CreateOutcome, Store, StoreError};
use crate::time::Timestamp;
use std::collections::HashSet;
use std::sync::Arc;

/// Events read from the store per call while copying a log.
const READ_PAGE: usize = 1000;

/// The `session.updated` reason of a copy whose provider starts fresh with a transcript.
pub const TRANSCRIPT_SEEDED: &str = "transcript_seeded";

/// A session as the store holds it: its record, turns and whole log.
#[derive(Clone, Debug)]
pub struct SessionCopy {
    /// The record.
    pub record: SessionRecord,
    /// Every turn, oldest first.
    pub turns: Vec<TurnRecord>,
    /// The log, in seq order.
    pub events: Vec<Event>,
}

impl SessionCopy {
    /// Reads a whole session: the one place a fork or an export reads the store.
    pub async fn read(store: &dyn Store, id: SessionId) -> Result<Option<SessionCopy>, StoreError> {
        let Some(record) = store.get_session(id).await? else {
            return Ok(None);
        };
        let turns = store.all_turns(id).await?;
        let mut events = Vec::new();
        loop {
            let after = events.last().map_or(0, |e: &Event| e.seq);
            let page = store.read_events(id, after, READ_PAGE).await?;
            let full = page.len() == READ_PAGE;
            events.extend(page);
            if !full {
                break;
            }
        }
        Ok(Some(SessionCopy {
            record,
            turns,
            events,
        }))
    }

    /// The copy up to the end of `at_turn` (default: the last turn that completed): the turns
    /// completed by then and the events up to there that belong to them or to no turn.
    /// `turn_not_found` when `at_turn` is not a completed turn of the session.
    pub fn cut(self, at_turn: Option<TurnId>) -> Result<Cut, RuntimeError> {
        self.cut_at(Some(at_turn))
    }

    /// The whole copy but for the turns that had not completed (and their events).
    pub fn completed_part(self) -> Cut {
        // Without a turn to find, the cut cannot fail.
        self.cut_at(None)
            .expect("a cut at the end of the log finds no turn")
    }

    /// `Some(turn)`: as [`SessionCopy::cut`]; `None`: up to the end of the log.
    fn cut_at(self, at_turn: Option<Option<TurnId>>) -> Result<Cut, RuntimeError> {
        let completed_at = |turn: TurnId| {
            self.events.iter().find_map(|e| {
                (e.turn_id == Some(turn) && matches!(e.body, EventBody::TurnCompleted { .. }))
                    .then_some(e.seq)
            })
        };
        let last_completed = self
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.body, EventBody::TurnCompleted { .. }))
            .map_or((1, None), |e| (e.seq, e.turn_id));
        let (end_seq, last_turn) = match at_turn {
            Some(Some(turn)) => (
                completed_at(turn).ok_or(RuntimeError::TurnNotFound)?,
                Some(turn),
            ),
            Some(None) => last_completed,
            None => (self.events.last().map_or(1, |e| e.seq), last_completed.1),
        };
        let kept: HashSet<TurnId> = self
            .events
            .iter()
            .filter(|e| e.seq <= end_seq && matches!(e.body, EventBody::TurnCompleted { .. }))
            .filter_map(|e| e.turn_id)
            .collect();
        // The provider's conversation holds everything that ran; it is the cut's own only
        // when no attempt started after the cut.
        let ran_after = self
            .events
            .iter()
            .any(|e| e.seq > end_seq && matches!(e.body, EventBody::TurnStarted { .. }));
        let events = self
            .events
            .into_iter()
            .filter(|e| e.seq > 1 && e.seq <= end_seq)
            .filter(|e| e.turn_id.is_none_or(|t| kept.contains(&t)))
            .collect();
        let turns = self
            .turns
            .into_iter()
            .filter(|t| kept.contains(&t.id))
            .collect();
        Ok(Cut {
            origin_session: self.record.id,
            end_seq,
            last_turn,
            provider_conversation_is_the_cut: !ran_after,
            record: self.record,
            turns,
            events,
        })
    }
}

/// The part of a session that a new one is made from.
#[derive(Clone, Debug)]
pub struct Cut {
    /// The source's record.
    pub record: SessionRecord,
    /// The session it was cut from.
    pub origin_session: SessionId,
    /// The source seq the cut ends at.
    pub end_seq: u64,
    /// The last turn copied.
    pub last_turn: Option<TurnId>,
    /// No attempt ran after the cut, so the provider's own conversation ends there too.
    pub provider_conversation_is_the_cut: bool,
    /// The completed turns copied.
    pub turns: Vec<TurnRecord>,
    /// The events copied (without the source's `session.created`), in seq order.
    pub events: Vec<Event>,
}

impl Cut {
    /// The copied conversation as `role: text` paragraphs (the user's messages and the
    /// assistant's whole replies).
    pub fn transcript(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message { role, text } => Some(format!("{role}: {text}\n\n")),
                _ => None,
            })
            .collect()
    }
}

/// What the new session is, besides the copy.
#[derive(Clone, Debug, Default)]
pub struct CopySpec {
    /// Owner of the new session (the caller).
    pub owner: String,
    /// Its project.
    pub project: Option<String>,
    /// Its key in the caller's scope; `invalid_session_key` when it names a session already.
    pub key: Option<String>,
    /// Its title (default: the source's).
    pub title: Option<String>,
    /// Its provider (default: the source's).
    pub provider: Option<String>,
    /// Keep the source's provider session id (imports only; a fork decides by itself).
    pub keep_provider_session: bool,
}

/// Makes a new session from `cut`, atomically; its view. `kind` says whether it is a fork or
/// an import (an import never forks the provider's conversation: it happened elsewhere).
pub(crate) async fn plant(
    shared: &Arc<RuntimeShared>,
    cut: Cut,
    spec: CopySpec,
    kind: OriginKind,
) -> Result<SessionView, RuntimeError> {
    if let Some(key) = &spec.key {
        validate_session_key(key).map_err(RuntimeError::InvalidSessionKey)?;
    }
    let provider_name = spec.provider.unwrap_or_else(|| cut.record.provider.clone());
    let provider = shared
        .providers
        .get(&provider_name)
        .ok_or_else(|| RuntimeError::UnknownProvider(provider_name.clone()))?;
    let caps = provider.capabilities();
    let same_provider = provider_name == cut.record.provider;
    let source_conversation = cut
        .record
        .provider_session_id
        .clone()
        .filter(|_| same_provider);
    let transcript = cut.transcript();
    let (provider_session_id, handover) = if caps.stateless {
        (None, None)
    } else if kind == OriginKind::Import && spec.keep_provider_session {
        (source_conversation, None)
    } else if kind == OriginKind::Fork
        && caps.fork
        && cut.provider_conversation_is_the_cut
        && source_conversation.is_some()
    {
        (source_conversation, Some(Handover::Fork))
    } else if transcript.is_empty() {
        (None, None)
    } else {
        (None, Some(Handover::Transcript { text: transcript }))
    };
    let announce = matches!(handover, Some(Handover::Transcript { .. }));
    let now = Timestamp::now();
    let id = SessionId::new();
    let record = SessionRecord {
        id,
        owner: spec.owner,
        project: spec.project,
        provider: provider_name,
        key: spec.key,
        title: spec.title.or(cut.record.title.clone()),
        model: cut.record.model.clone().filter(|_| same_provider),
        provider_session_id,
        created_at: now,
        updated_at: now,
        hidden: false,
        paused: false,
        failed: false,
        archived: false,
        consecutive_failures: 0,
        running_since: None,
        handover,
        // The copied turns' spend was the source's, counted for it and its owner's day: the
        // new session starts with nothing spent, and under the configured budget (a budget
        // an admin raised for the source does not travel with a copy of it).
        usage: Default::default(),
        budget: None,
        budget_held: false,
    };
    let origin = Origin {
        kind,
        session_id: cut.origin_session,
        turn_id: cut.last_turn,
        seq: cut.end_seq,
    };
    let mut events: Vec<Arc<Event>> = Vec::with_capacity(cut.events.len() + 1);
    for (index, event) in cut.events.into_iter().enumerate() {
        events.push(Arc::new(Event {
            seq: index as u64 + 2,
            session_id: id,
            turn_id: event.turn_id,
            ts: event.ts,
            body: rehome(event.body, &record),
            encoded: Default::default(),
        }));
    }
    let last_seq = events.len() as u64 + 1 + u64::from(announce);
    let view = SessionView::new(&record, false, last_seq, 0);
    if announce {
        events.push(Arc::new(Event {
            seq: last_seq,
            session_id: id,
            turn_id: None,
            ts: now,
            body: EventBody::SessionUpdated {
                session: view.clone(),
                reason: TRANSCRIPT_SEEDED.into(),
            },
            encoded: Default::default(),
        }));
    }
    let created = Arc::new(Event {
        seq: 1,
        session_id: id,
        turn_id: None,
        ts: now,
        body: EventBody::SessionCreated {
            session: SessionView::new(&record, false, 1, 0),
            origin: Some(origin),
        },
        encoded: Default::default(),
    });
    let turns = cut
        .turns
        .into_iter()
        .map(|turn| TurnRecord {
            session_id: id,
            ..turn
        })
        .collect();
    let provider_mapping = match (&record.provider_session_id, &record.handover) {
        (Some(provider_id), None) => Some((record.provider.clone(), provider_id.clone())),
        _ => None,
    };
    let rest = Batch {
        turns,
        events,
        provider_mapping,
        ..Batch::default()
    };
    let key = record.key.clone().map(|key| ScopedKey {
        owner: record.owner.clone(),
        project: record.project.clone(),
        key,
    });
    match shared
        .store
        .create_with(record.clone(), created.clone(), key, rest)
        .await?
    {
        CreateOutcome::Created => {}
        CreateOutcome::Existing(_) => {
            return Err(RuntimeError::InvalidSessionKey(
                "the key names another session in this scope already".into(),
            ))
        }
    }
    RuntimeMetrics::bump(&shared.metrics.sessions_created);
    log::info!(
        "session {id}: {kind:?} of session {} up to seq {} for owner `{}`",
        origin_of(&created),
        last_seq,
        record.owner
    );
    shared.feed.publish(&record.owner, created);
    Ok(view)
}

/// The origin session named by a `session.created`, for the log line.
fn origin_of(created: &Event) -> String {
    match &created.body {
        EventBody::SessionCreated {
            origin: Some(origin),
            ..
        } => origin.session_id.to_string(),
        _ => "?".into(),
    }
}

/// A copied event's body, with the session objects it carries naming the new session: its id,
/// owner, usage and budget (nothing in the copy's log claims the source's spend).
fn rehome(body: EventBody, record: &SessionRecord) -> EventBody {
    let rehomed = |mut session: SessionView| {
        session.id = record.id;
        session.owner = record.owner.clone();
        session.usage = record.usage.clone();
        session.budget = record.budget;
        session
    };
    match body {
        EventBody::SessionUpdated { session, reason } => EventBody::SessionUpdated {
            session: rehomed(session),
            reason,
        },
        EventBody::SessionCreated { session, origin } => EventBody::SessionCreated {
            session: rehomed(session),
            origin,
        },
        other => other,
    }
}

impl crate::runtime::Runtime {
    /// The caller's session `id` as the store holds it (for an export); `session_not_found`
    /// when it is not theirs.
    pub async fn copy_of(&self, owner: &str, id: SessionId) -> Result<SessionCopy, RuntimeError> {
        match SessionCopy::read(self.store().as_ref(), id).await? {
            Some(copy) if copy.record.owner == owner => Ok(copy),
            _ => Err(RuntimeError::SessionNotFound),
        }
    }

    /// Forks the caller's session `id` at the end of `at_turn` (default: its last completed
    /// turn) into a new session; the source is untouched.
    pub async fn fork(
        &self,
        id: SessionId,
        at_turn: Option<TurnId>,
        spec: CopySpec,
    ) -> Result<SessionView, RuntimeError> {
        let copy = self.copy_of(&spec.owner, id).await?;
        let spec = CopySpec {
            project: spec.project.or(copy.record.project.clone()),
            ..spec
        };
        plant(self.shared(), copy.cut(at_turn)?, spec, OriginKind::Fork).await
    }

    /// Makes a new session of `spec.owner` from an exported one: its whole log but the turns
    /// that had not completed.
    pub async fn import(
        &self,
        copy: SessionCopy,
        spec: CopySpec,
    ) -> Result<SessionView, RuntimeError> {
        plant(
            self.shared(),
            copy.completed_part(),
            spec,
            OriginKind::Import,
        )
        .await
    }
}
