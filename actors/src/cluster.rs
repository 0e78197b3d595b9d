//! Several nodes on one shared store: any node serves any session.
//!
//! A node runs a session only while it holds the session's lease; every other node is a
//! *forwarder* for it. A [`SessionHandle`](crate::SessionHandle) whose activation answers
//! [`RuntimeError::OwnedElsewhere`](crate::RuntimeError::OwnedElsewhere) sends the operation to
//! the owner by request/reply on the store's connection ([`forward`]); every node answers such
//! requests by running the same operation on a handle of its own that never forwards again
//! ([`serve`]). Following a session owned elsewhere reads the store: the replay, then the live
//! events from the stream ([`remote_follow`]), so events never travel through the owner.
//!
//! # Layout
//! - [`wire`]: the request (a session and a [`SessionOp`](wire::SessionOp)) and the reply, in
//!   JSON; errors keep their code.
//! - [`forward`]: the forwarder's side, with the resend rule for an owner that does not answer.
//! - [`serve`]: the owner's side, answering every node's requests.
//! - [`remote_follow`]: a [`Subscription`](crate::Subscription) fed from the store's stream.
//!
//! Only a store shared by several processes has a [`ClusterLink`] (NATS); with sled or memory
//! every session is local and none of this runs.

pub mod forward;
pub mod remote_follow;
pub mod serve;
pub mod wire;

use crate::event::Event;
use crate::ids::SessionId;
use crate::store::{StoreError, StoreRead};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How forwarding waits for owners.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// How long a forwarded request waits for the owner's answer. Past it, the outcome is
    /// unknown: a read is asked again, a change that must not happen twice fails `internal`.
    pub request_timeout: Duration,
    /// How long a request keeps trying while nobody answers for the owner (it died; its lease
    /// has to expire before this or another node takes the session over).
    pub owner_gone_wait: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            request_timeout: Duration::from_secs(10),
            owner_gone_wait: Duration::from_secs(15),
        }
    }
}

/// Why a request to another node got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Nobody listens for that node: it is gone, and nothing was done.
    #[error("no node answers as {0}")]
    NoResponders(String),
    /// Nothing came back in time: the request may or may not have been handled.
    #[error("node {0} did not answer in time")]
    TimedOut(String),
    /// The connection failed; the request may or may not have reached the node.
    #[error("request to node {node} failed: {reason}")]
    Failed {
        /// The node asked.
        node: String,
        /// What failed.
        reason: String,
    },
}

/// A request from another node, and where its answer goes.
pub struct Incoming {
    /// The request ([`wire::SessionCall`] in JSON).
    pub payload: Bytes,
    /// The answer ([`wire::Reply`] in JSON); dropping it sends no answer (the asker times out).
    pub reply: oneshot::Sender<Bytes>,
}

/// The live part of a session's events, from a shared store's stream.
pub struct EventTail {
    /// The session's last seq when the tail began; `events` starts right after it.
    pub last_seq: u64,
    /// Every event appended after `last_seq`, in order (a seq may come again after the
    /// stream's consumer was recreated: skip what was seen). An error, or the end, stops it.
    pub events: mpsc::Receiver<Result<Event, StoreError>>,
}

/// What a store shared by several nodes offers them besides storage: a way to talk to one
/// node, and the live events of any session.
pub trait ClusterLink: Send + Sync {
    /// Sends `payload` to `node` and waits up to `timeout` for its answer.
    fn request(
        &self,
        node: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, LinkError>>;

    /// Starts answering as `node`: every request to it comes out of the receiver.
    fn serve(&self, node: &str) -> StoreRead<mpsc::Receiver<Incoming>>;

    /// Follows the events of `session` appended from now on.
    fn tail_events(&self, session: SessionId) -> StoreRead<EventTail>;
}
