//! The NATS store as a [`ClusterLink`]: requests between nodes on core NATS subjects outside
//! the stream (`P-rpc.<node>`), and a session's live events through an ordered consumer of the
//! stream filtered on the session's blocks `P.evb.<sid>.*`, started right after its last one.

use super::layout::{decode_block, engine_err};
use super::{NatsStore, Shared};
use crate::cluster::{ClusterLink, EventTail, Incoming, LinkError};
use crate::ids::SessionId;
use crate::store::{StoreError, StoreRead};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Forwarded requests received and not yet taken by the runtime.
const INCOMING_BUFFER: usize = 1024;

/// Events read from the stream and not yet taken by the follower's pump.
const TAIL_BUFFER: usize = 256;

impl ClusterLink for NatsStore {
    fn request(
        &self,
        node: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, LinkError>> {
        let subject = self.shared.subjects.rpc(node);
        let client = self.shared.client.clone();
        let node = node.to_string();
        let asked = node.clone();
        let running = self.handle.spawn(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            match client.send_request(subject, request).await {
                Ok(message) => Ok(message.payload),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::NoResponders => LinkError::NoResponders(node),
                    RequestErrorKind::TimedOut => LinkError::TimedOut(node),
                    _ => LinkError::Failed {
                        node,
                        reason: e.to_string(),
                    },
                }),
            }
        });
        Box::pin(async move {
            running.await.map_err(|e| LinkError::Failed {
                node: asked,
                reason: format!("the NATS store's thread stopped: {e}"),
            })?
        })
    }

    fn serve(&self, node: &str) -> StoreRead<mpsc::Receiver<Incoming>> {
        let subject = self.shared.subjects.rpc(node);
        self.read(move |shared| async move { shared.serve(subject).await })
    }

    fn tail_events(&self, session: SessionId) -> StoreRead<EventTail> {
        self.read(move |shared| async move { shared.tail_events(session).await })
    }
}

impl Shared {
    /// Subscribes to `subject` and hands each request over with a way to answer it.
    async fn serve(
        self: Arc<Self>,
        subject: String,
    ) -> Result<mpsc::Receiver<Incoming>, StoreError> {
        let mut requests = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(engine_err)?;
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply_to) = message.reply else {
                    log::warn!("a message on {subject} without a reply subject was ignored");
                    continue;
                };
                let (reply, answered) = oneshot::channel();
                let incoming = Incoming {
                    payload: message.payload,
                    reply,
                };
                if tx.send(incoming).await.is_err() {
                    // The runtime stopped taking requests: askers now get no responders.
                    return;
                }
                let client = self.client.clone();
                tokio::spawn(async move {
                    let Ok(answer) = answered.await else {
                        return;
                    };
                    if let Err(e) = client.publish(reply_to, answer).await {
                        log::warn!("an answer to a forwarded request was not sent: {e}");
                    }
                });
            }
        });
        Ok(rx)
    }

    /// The events of `session` after its last one now, live.
    async fn tail_events(self: Arc<Self>, session: SessionId) -> Result<EventTail, StoreError> {
        let filter = self.subjects.events(session);
        // Where the stream holds the session's last block: the live part starts right after
        // (the last block is written again as it fills: its events up to `last_seq` are
        // skipped). Without one (the session has no event, or no longer exists), the whole
        // stream is read for its events: whatever comes is new.
        let tail = self.tail(session).await?;
        let (last_seq, start_sequence) = match tail.end {
            0 => (0, 1),
            end => (end, tail.revision + 1),
        };
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
                ..Default::default()
            })
            .await
            .map_err(engine_err)?;
        let mut messages = consumer.messages().await.map_err(engine_err)?;
        let (tx, rx) = mpsc::channel(TAIL_BUFFER);
        tokio::spawn(async move {
            let mut sent = last_seq;
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = messages.next() => next,
                };
                let events = match next {
                    Some(Ok(message)) => decode_block(&message.payload),
                    Some(Err(e)) => Err(engine_err(e)),
                    None => return,
                };
                match events {
                    Ok(events) => {
                        for event in events {
                            if event.seq <= sent {
                                continue;
                            }
                            sent = event.seq;
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(EventTail {
            last_seq,
            events: rx,
        })
    }
}
