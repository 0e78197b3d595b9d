//! The forwarder's side: one session operation sent to the node that owns the session, and
//! what its answer (or the lack of one) means for sending it again.

use super::wire::{Reply, SessionCall, SessionOp};
use super::LinkError;
use crate::error::RuntimeError;
use crate::ids::SessionId;
use crate::metrics::RuntimeMetrics;
use crate::runtime::Runtime;
use serde::de::DeserializeOwned;

/// What became of a forwarded operation.
pub(crate) enum Forwarded<R> {
    /// The owner ran it: its result, or its error.
    Answered(Result<R, RuntimeError>),
    /// Nothing was done: nobody answers for that node (it is gone), or it no longer holds the
    /// lease. Activating again finds the owner now (or makes the session local); the
    /// operation may be sent again whatever it is.
    NotDone(RuntimeError),
    /// The outcome is unknown (no answer in time, the connection failed): only an operation
    /// that is harmless twice may be sent again.
    Unknown(RuntimeError),
}

/// Sends `op` on `session` to `node` and reads its answer.
pub(crate) async fn forward<R: DeserializeOwned>(
    runtime: &Runtime,
    node: &str,
    session: SessionId,
    op: SessionOp,
) -> Forwarded<R> {
    let Some(link) = runtime.store().cluster() else {
        return Forwarded::Answered(Err(RuntimeError::Internal(format!(
            "session {session} is owned by node {node}, and this store cannot reach it"
        ))));
    };
    let index = op.index();
    let payload = match serde_json::to_vec(&SessionCall { session, op }) {
        Ok(payload) => payload,
        Err(e) => {
            return Forwarded::Answered(Err(RuntimeError::InvalidRequest(format!(
                "the request cannot be forwarded: {e}"
            ))))
        }
    };
    RuntimeMetrics::bump(&runtime.metrics().forwarded[index]);
    let timeout = runtime.settings().forwarding.request_timeout;
    let answer = link.request(node, payload.into(), timeout).await;
    log::debug!(
        "session {session}: {} forwarded to node {node}: {}",
        SessionOp::NAMES[index],
        if answer.is_ok() {
            "answered"
        } else {
            "no answer"
        }
    );
    match answer {
        Ok(bytes) => match serde_json::from_slice::<Reply<R>>(&bytes) {
            Ok(Reply::Ok(result)) => Forwarded::Answered(Ok(result)),
            Ok(Reply::Err(wire)) => match RuntimeError::from(wire) {
                e @ RuntimeError::OwnedElsewhere { .. } => Forwarded::NotDone(e),
                e => Forwarded::Answered(Err(e)),
            },
            Err(e) => Forwarded::Unknown(RuntimeError::Internal(format!(
                "node {node} answered something unreadable: {e}"
            ))),
        },
        Err(e @ LinkError::NoResponders(_)) => {
            Forwarded::NotDone(RuntimeError::Internal(e.to_string()))
        }
        Err(e) => Forwarded::Unknown(RuntimeError::Internal(format!(
            "{e}; the request may or may not have been applied"
        ))),
    }
}
