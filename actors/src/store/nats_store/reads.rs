//! Reads: a key's value by direct get of its subject's last message; a family of keys (a
//! session's turns, an owner's usage) by a short-lived consumer over a subject filter.

use super::layout::{
    self, block_end, block_of, decode, decode_block, engine_err, last_token, second_last_token,
    untoken, EVENTS_PER_BLOCK,
};
use super::writer::Tail;
use super::Shared;
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::ProcessGroupRecord;
use crate::record::{SessionRecord, TurnRecord};
use crate::store::{StoreError, StoreStats};
use crate::usage::{OwnerDayUsage, Usage};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;

/// One stored message as a scan returns it.
pub(super) struct Stored {
    /// Its subject (the key).
    pub(super) subject: String,
    /// Its payload (the value).
    pub(super) payload: Bytes,
}

impl Shared {
    /// The last (only) message on `subject`, if any. A filter with wildcards names the last
    /// message on any matching subject.
    pub(super) async fn last(&self, subject: &str) -> Result<Option<StreamMessage>, StoreError> {
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(StoreError::Engine(format!("reading {subject}: {e}"))),
        }
    }

    /// The subjects that hold a message and match `filter`.
    pub(super) async fn subjects_matching(&self, filter: &str) -> Result<Vec<String>, StoreError> {
        let stream = self.stream.clone();
        let info = stream
            .info_with_subjects(filter)
            .await
            .map_err(engine_err)?;
        info.map_ok(|(subject, _)| subject)
            .try_collect()
            .await
            .map_err(engine_err)
    }

    /// Up to `limit` messages matching `filter`, in stream order, from stream sequence
    /// `start` on (from the beginning when `None`): through a consumer that lives for this
    /// read only.
    pub(super) async fn scan(
        &self,
        filter: &str,
        start: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let deliver_policy = match start {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => DeliverPolicy::All,
        };
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: filter.to_string(),
                deliver_policy,
                ack_policy: AckPolicy::None,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(engine_err)?;
        let want = limit.min(consumer.cached_info().num_pending as usize);
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let mut batch = consumer
                .fetch()
                .max_messages(want - out.len())
                .messages()
                .await
                .map_err(engine_err)?;
            let before = out.len();
            while let Some(message) = batch.next().await {
                let message = message.map_err(engine_err)?;
                out.push(Stored {
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                });
            }
            if out.len() == before {
                break;
            }
        }
        let (stream, name) = (self.stream.clone(), consumer.cached_info().name.clone());
        // The consumer is done with; its inactivity threshold removes it should this fail.
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        Ok(out)
    }

    pub(super) async fn lookup_key(
        &self,
        key: &ScopedKey,
    ) -> Result<Option<SessionId>, StoreError> {
        self.last(&self.subjects.key(key))
            .await?
            .map(|m| layout::session_id_from(&m.payload))
            .transpose()
    }

    pub(super) async fn get_session(
        &self,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.last(&self.subjects.record(id))
            .await?
            .map(|m| decode(&m.payload))
            .transpose()
    }

    pub(super) async fn list_sessions(
        &self,
        owner: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let subjects = self
            .subjects_matching(&self.subjects.owner_sessions(owner))
            .await?;
        let ids = subjects
            .iter()
            .map(|s| layout::session_id_from(last_token(s).as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let records: Vec<Option<SessionRecord>> = futures::stream::iter(ids)
            .map(|id| self.get_session(id))
            .buffered(64)
            .try_collect()
            .await?;
        let mut records: Vec<SessionRecord> = records.into_iter().flatten().collect();
        records.sort_by_key(|r| r.id);
        Ok(records)
    }

    pub(super) async fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut ids = self
            .subjects_matching(&self.subjects.record_all())
            .await?
            .iter()
            .map(|s| layout::session_id_from(last_token(s).as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        let ids: Vec<SessionId> = ids
            .into_iter()
            .filter(|id| after.is_none_or(|after| *id > after))
            .take(limit)
            .collect();
        let records: Vec<Option<SessionRecord>> = futures::stream::iter(ids)
            .map(|id| self.get_session(id))
            .buffered(64)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().collect())
    }

    pub(super) async fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        let markers = self
            .scan(&self.subjects.all_active(), None, usize::MAX)
            .await?;
        let mut ids = markers
            .iter()
            .filter(|m| !m.payload.is_empty())
            .map(|m| layout::session_id_from(last_token(&m.subject).as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    pub(super) async fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The block that holds the first wanted event; the session's later blocks follow it
        // in the stream (a block is rewritten only while it is the last).
        let Some(first) = self
            .last(&self.subjects.event_block(session, block_of(after_seq + 1)))
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut events: Vec<Event> = decode_block(&first.payload)?
            .into_iter()
            .filter(|e| e.seq > after_seq)
            .collect();
        let block = block_of(after_seq + 1);
        let full = block_end(block, &first.payload) == (block + 1) * EVENTS_PER_BLOCK;
        if events.len() < limit && full {
            let blocks = (limit - events.len()).div_ceil(EVENTS_PER_BLOCK as usize);
            let later = self
                .scan(
                    &self.subjects.events(session),
                    Some(first.sequence + 1),
                    blocks,
                )
                .await?;
            for stored in later {
                events.extend(decode_block(&stored.payload)?);
            }
        }
        events.truncate(limit);
        Ok(events)
    }

    /// Where a session's log ends: its last block, read.
    pub(super) async fn tail(&self, session: SessionId) -> Result<Tail, StoreError> {
        let Some(last) = self.last(&self.subjects.events(session)).await? else {
            return Ok(Tail::default());
        };
        let block: u64 = last_token(&last.subject)
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("event block subject {}", last.subject)))?;
        Ok(Tail {
            end: block_end(block, &last.payload),
            block: last.payload.to_vec(),
            revision: last.sequence,
        })
    }

    pub(super) async fn last_seq(&self, session: SessionId) -> Result<u64, StoreError> {
        Ok(self.tail(session).await?.end)
    }

    pub(super) async fn all_turns(
        &self,
        session: SessionId,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        let mut turns = self
            .scan(&self.subjects.turns(session), None, usize::MAX)
            .await?
            .iter()
            .map(|m| decode(&m.payload))
            .collect::<Result<Vec<TurnRecord>, _>>()?;
        turns.sort_by_key(|t| t.id);
        Ok(turns)
    }

    pub(super) async fn get_turn(
        &self,
        session: SessionId,
        turn: TurnId,
    ) -> Result<Option<TurnRecord>, StoreError> {
        self.last(&self.subjects.turn(session, turn))
            .await?
            .map(|m| decode(&m.payload))
            .transpose()
    }

    pub(super) async fn turn_for_client_id(
        &self,
        session: SessionId,
        client_id: &str,
    ) -> Result<Option<TurnId>, StoreError> {
        self.last(&self.subjects.client_id(session, client_id))
            .await?
            .map(|m| layout::turn_id_from(&m.payload))
            .transpose()
    }

    pub(super) async fn session_for_provider_id(
        &self,
        provider: &str,
        provider_id: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        self.last(&self.subjects.provider_id(provider, provider_id))
            .await?
            .map(|m| layout::session_id_from(&m.payload))
            .transpose()
    }

    pub(super) async fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<OwnerDayUsage>, StoreError> {
        let mut out = Vec::new();
        for m in self
            .scan(&self.subjects.usages(owner), None, usize::MAX)
            .await?
        {
            let day = last_token(&m.subject).to_string();
            if day.as_str() < from || day.as_str() > to {
                continue;
            }
            let owner = String::from_utf8(untoken(second_last_token(&m.subject))?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let usage: Usage = decode(&m.payload)?;
            out.push(OwnerDayUsage { owner, day, usage });
        }
        out.sort_by(|a, b| (&a.owner, &a.day).cmp(&(&b.owner, &b.day)));
        Ok(out)
    }

    pub(super) async fn process_groups(&self) -> Result<Vec<ProcessGroupRecord>, StoreError> {
        let mut groups = self
            .scan(&self.subjects.process_groups(), None, usize::MAX)
            .await?
            .iter()
            .map(|m| decode(&m.payload))
            .collect::<Result<Vec<ProcessGroupRecord>, _>>()?;
        groups.sort_by_key(|g| g.key());
        Ok(groups)
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            sessions: self
                .subjects_matching(&self.subjects.record_all())
                .await?
                .len() as u64,
            active_sessions: self.active_sessions().await?.len() as u64,
            bytes: self
                .stream
                .clone()
                .info()
                .await
                .map_err(engine_err)?
                .state
                .bytes,
        })
    }
}
