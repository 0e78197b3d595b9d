//! Putting a write on the wire: its messages as one JetStream atomic batch, the
//! acknowledgement awaited, a refused expectation told apart from any other failure.

use crate::store::nats_store::Shared;
use crate::store::StoreError;
use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_MESSAGE_TTL,
};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;

/// One message of a write.
pub(in crate::store::nats_store) struct Message {
    pub(in crate::store::nats_store) subject: String,
    pub(in crate::store::nats_store) payload: Vec<u8>,
    /// `Nats-Expected-Last-Subject-Sequence`: the revision the subject must be at.
    pub(in crate::store::nats_store) expect: Option<u64>,
    /// `Nats-TTL`: the message expires after this long.
    pub(in crate::store::nats_store) ttl: Option<String>,
}

impl Message {
    /// A message written whatever the subject holds.
    pub(in crate::store::nats_store) fn put(subject: String, payload: Vec<u8>) -> Self {
        Message {
            subject,
            payload,
            expect: None,
            ttl: None,
        }
    }

    /// A message that lands only where nothing was written before.
    pub(in crate::store::nats_store) fn new_only(subject: String, payload: Vec<u8>) -> Self {
        Message {
            expect: Some(0),
            ..Message::put(subject, payload)
        }
    }
}

/// Removes every message under `filter`.
pub(in crate::store::nats_store) async fn purge(
    shared: &Shared,
    filter: &str,
) -> Result<(), StoreError> {
    shared
        .stream
        .purge()
        .filter(filter)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Engine(format!("purging {filter}: {e}")))
}

/// Why a publish did not land.
pub(in crate::store::nats_store) enum Failed {
    /// An expected last subject sequence did not hold: nothing of the batch landed.
    Expectation,
    /// Anything else (connection, server): nothing of the batch landed either.
    Other(String),
}

impl Failed {
    pub(in crate::store::nats_store) fn into_store(self) -> StoreError {
        match self {
            Failed::Expectation => StoreError::Engine("wrong last sequence".into()),
            Failed::Other(e) => StoreError::Engine(e),
        }
    }
}

/// Publishes messages as one atomic batch (a single message plainly) and waits for the ack.
pub(in crate::store::nats_store) async fn publish(
    shared: &Shared,
    messages: Vec<Message>,
) -> Result<u64, Failed> {
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
            headers.insert(NATS_MESSAGE_TTL, ttl.as_str());
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
