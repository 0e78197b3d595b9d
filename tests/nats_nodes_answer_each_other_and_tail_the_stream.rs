//! The cluster link of the NATS store, with two stores (two connections, as two nodes have)
//! on one real `nats-server -js`: a runtime answers the session operations another node sends
//! to its subject, errors keep their code, nobody listening is told apart from no answer in
//! time, and any node follows a session's live events from the stream, right after its last
//! event, in order, with no gap.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;

use bytes::Bytes;
use nats_server::NatsServer;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::cluster::wire::{Reply, SessionCall, SessionOp};
use troupe_actors::cluster::LinkError;
use troupe_actors::session::{TurnList, TurnReceipt};
use troupe_actors::{
    BusyMode, NatsOptions, NatsStore, NewSession, Runtime, SendTurn, SessionView, Settings, Store,
    TurnId,
};

/// How long the test waits for anything the nodes do.
const WAIT: Duration = Duration::from_secs(10);

fn call(session: troupe_actors::SessionId, op: SessionOp) -> Bytes {
    serde_json::to_vec(&SessionCall { session, op })
        .expect("encodes")
        .into()
}

fn reply<T: serde::de::DeserializeOwned>(bytes: Result<Bytes, LinkError>) -> Reply<T> {
    serde_json::from_slice(&bytes.expect("an answer")).expect("a reply")
}

#[actix_rt::test]
async fn a_node_answers_forwarded_operations_and_another_tails_the_stream() {
    let Some(nats) = NatsServer::start("nats_nodes_answer_each_other_and_tail_the_stream") else {
        return;
    };
    let options = NatsOptions {
        url: nats.url(),
        ..NatsOptions::default()
    };
    let store_a: Arc<dyn Store> = Arc::new(NatsStore::open(&options).expect("store a"));
    let store_b: Arc<dyn Store> = Arc::new(NatsStore::open(&options).expect("store b"));
    let a = Runtime::builder()
        .shared_store(store_a)
        .settings(Settings {
            node_id: "node-a".into(),
            workers: 0,
            ..Settings::default()
        })
        .start();
    let (handle, view, created) = a
        .get_or_create_view(NewSession {
            owner: "local".into(),
            provider: "echo".into(),
            ..NewSession::default()
        })
        .await
        .expect("session");
    assert!(created);
    let id = handle.id();
    let link = store_b.cluster().expect("the NATS store links nodes");

    // The tail starts right after the session's last event.
    let mut tail = link.tail_events(id).await.expect("tail");
    assert_eq!(tail.last_seq, view.last_seq);

    // Node A answers what node B forwards to it (its subject may take a moment to be served).
    let deadline = tokio::time::Instant::now() + WAIT;
    let info = loop {
        match link
            .request("node-a", call(id, SessionOp::Info), WAIT)
            .await
        {
            Err(LinkError::NoResponders(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answer => break reply::<SessionView>(answer),
        }
    };
    let Reply::Ok(info) = info else {
        panic!("info failed: {info:?}");
    };
    assert_eq!(info.id, id);
    let send = SessionOp::Send {
        turn: SendTurn {
            content: "forwarded hello".into(),
            mode: BusyMode::Enqueue,
            ..SendTurn::default()
        },
    };
    let Reply::Ok(receipt) =
        reply::<TurnReceipt>(link.request("node-a", call(id, send), WAIT).await)
    else {
        panic!("send failed");
    };
    // An error crosses with its code.
    let cancel = SessionOp::CancelTurn {
        turn: TurnId::new(),
    };
    match reply::<()>(link.request("node-a", call(id, cancel), WAIT).await) {
        Reply::Err(e) => assert_eq!(e.code, "turn_not_found"),
        Reply::Ok(()) => panic!("an unknown turn was cancelled"),
    }
    // Bad input is an error answer, never a crash of the answering node.
    match reply::<()>(
        link.request("node-a", Bytes::from_static(b"{\"op\":"), WAIT)
            .await,
    ) {
        Reply::Err(e) => assert_eq!(e.code, "invalid_request"),
        Reply::Ok(()) => panic!("garbage was accepted"),
    }

    // B sees the forwarded turn's events live, in order, no gap, until it completed.
    let mut expected = view.last_seq + 1;
    let mut kinds = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, tail.events.recv())
            .await
            .expect("an event in time")
            .expect("the tail goes on")
            .expect("a readable event");
        assert_eq!(event.seq, expected, "in order, no gap");
        expected += 1;
        kinds.push(event.kind());
        if event.kind() == "turn.completed" && event.turn_id == Some(receipt.turn_id) {
            break;
        }
    }
    assert!(kinds.contains(&"turn.accepted"), "{kinds:?}");
    let Reply::Ok(turns) = reply::<TurnList>(
        link.request("node-a", call(id, SessionOp::Turns), WAIT)
            .await,
    ) else {
        panic!("turns failed");
    };
    assert_eq!(turns.turns.len(), 1);
    assert_eq!(turns.turns[0].content, "forwarded hello");
    // Forwards served are counted by the node that ran them (info, send, cancel, turns).
    assert_eq!(
        troupe_actors::metrics::RuntimeMetrics::get(&a.metrics().forwards_served),
        4
    );

    // Nobody listening is not the same as no answer in time.
    match link
        .request("node-nobody", call(id, SessionOp::Info), WAIT)
        .await
    {
        Err(LinkError::NoResponders(node)) => assert_eq!(node, "node-nobody"),
        other => panic!("expected no responders, got {other:?}"),
    }
    let mut mute = link.serve("node-mute").await.expect("serve");
    let asked = link.request(
        "node-mute",
        call(id, SessionOp::Info),
        Duration::from_millis(300),
    );
    let unanswered = mute.recv().await.expect("the request arrives");
    match asked.await {
        Err(LinkError::TimedOut(node)) => assert_eq!(node, "node-mute"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(unanswered);
}
