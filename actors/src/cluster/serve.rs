//! The owner's side: every node answers the operations other nodes forward to it, by running
//! them on a handle of its own that never forwards again (a session that moved meanwhile
//! answers `owned_elsewhere`, and the asker looks for the owner again).

use super::wire::{Reply, SessionCall, SessionOp, WireError};
use crate::error::RuntimeError;
use crate::handle::SessionHandle;
use crate::metrics::RuntimeMetrics;
use crate::runtime::Runtime;
use bytes::Bytes;
use serde::Serialize;

/// Starts answering the requests sent to `node`, each in a task of its own on the current
/// arbiter. Nothing to do on a store of one process.
pub(crate) fn start(runtime: &Runtime, node: &str) {
    let Some(link) = runtime.store().cluster() else {
        return;
    };
    let listening = link.serve(node);
    let (runtime, node) = (runtime.clone(), node.to_string());
    actix::spawn(async move {
        let mut incoming = match listening.await {
            Ok(incoming) => incoming,
            Err(e) => {
                // Other nodes then find nobody answering for this one and fail their requests
                // for its sessions after `owner_gone_wait`; this node's own work goes on.
                log::error!("node {node}: cannot answer forwarded requests: {e}");
                return;
            }
        };
        log::info!("node {node}: answering requests forwarded by other nodes");
        while let Some(request) = incoming.recv().await {
            let runtime = runtime.clone();
            actix::spawn(async move {
                let reply = answer(&runtime, &request.payload).await;
                // The asker may have given up waiting; nothing to tell it then.
                let _ = request.reply.send(reply);
            });
        }
    });
}

/// Runs one forwarded operation here; its reply in JSON.
pub(crate) async fn answer(runtime: &Runtime, payload: &[u8]) -> Bytes {
    let call: SessionCall = match serde_json::from_slice(payload) {
        Ok(call) => call,
        Err(e) => {
            return encode::<()>(Err(RuntimeError::InvalidRequest(format!(
                "unreadable forwarded request: {e}"
            ))))
        }
    };
    RuntimeMetrics::bump(&runtime.metrics().forwards_served);
    let handle = SessionHandle::local_only(call.session, runtime.clone());
    match call.op {
        SessionOp::Send { turn } => encode(handle.send(turn).await),
        SessionOp::Abort => encode(handle.abort().await),
        SessionOp::AbortTurn { turn } => encode(handle.abort_turn(turn).await),
        SessionOp::CancelTurn { turn } => encode(handle.cancel_turn(turn).await),
        SessionOp::PromoteTurn { turn } => encode(handle.promote_turn(turn).await),
        SessionOp::Pause => encode(handle.pause().await),
        SessionOp::Resume => encode(handle.resume().await),
        SessionOp::Reset => encode(handle.reset().await),
        SessionOp::Info => encode(handle.info().await),
        SessionOp::Turns => encode(handle.turns().await),
        SessionOp::Events { after_seq, limit } => encode(handle.events(after_seq, limit).await),
        SessionOp::Update { update } => encode(handle.update(update).await),
        SessionOp::AnswerPermission { answer } => encode(
            handle
                .answer_permission(&answer.request_id, &answer.option_id, &answer.by)
                .await,
        ),
        SessionOp::Delete => encode(handle.delete().await),
        SessionOp::Snapshot => encode(handle.snapshot().await),
    }
}

/// A result as a [`Reply`] in JSON.
fn encode<T: Serialize>(result: Result<T, RuntimeError>) -> Bytes {
    let reply = match result {
        Ok(value) => Reply::Ok(value),
        Err(e) => Reply::Err(WireError::from(&e)),
    };
    match serde_json::to_vec(&reply) {
        Ok(bytes) => bytes.into(),
        Err(e) => {
            let failed = WireError::from(&RuntimeError::Internal(format!(
                "the answer could not be encoded: {e}"
            )));
            // A reply of an error alone is strings and numbers: it always encodes.
            serde_json::to_vec(&Reply::<()>::Err(failed))
                .expect("an error reply encodes")
                .into()
        }
    }
}
