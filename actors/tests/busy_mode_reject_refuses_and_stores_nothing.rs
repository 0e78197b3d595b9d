//! `reject` refuses with `session_busy` while a turn runs or waits, and stores nothing: no turn,
//! no event, no idempotency key. On a free session it is an ordinary turn.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, EventBody, Outcome, RuntimeError, SendTurn, Store};

fn reject(content: &str, client_message_id: &str) -> SendTurn {
    SendTurn {
        content: content.into(),
        mode: BusyMode::Reject,
        client_message_id: Some(client_message_id.into()),
        ..SendTurn::default()
    }
}

async fn accepted_count(store: &Arc<dyn Store>, handle: &troupe_actors::SessionHandle) -> usize {
    stored_events(store, handle.id())
        .await
        .iter()
        .filter(|e| matches!(e.body, EventBody::TurnAccepted { .. }))
        .count()
}

#[actix_rt::test]
async fn reject_refuses_while_busy_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();

    // Free: reject runs like any turn.
    let first = handle.send(reject("free now", "r-1")).await.unwrap();
    until_completed(&mut sub, 1).await;

    // Running: refused.
    let long = handle
        .send(slow_turn("w", 30, 10, BusyMode::Enqueue))
        .await
        .unwrap();
    wait_for_kind(&mut sub, "message.delta").await;
    let err = handle.send(reject("not now", "r-2")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::SessionBusy), "{err:?}");
    assert_eq!(err.code(), "session_busy");

    // Running with a queued turn behind it, the queue paused: still refused.
    handle.pause().await.unwrap();
    let queued = handle.send_text("queued", BusyMode::Enqueue).await.unwrap();
    handle.abort().await.unwrap();
    let err = handle.send(reject("still not", "r-3")).await.unwrap_err();
    assert_eq!(
        err.code(),
        "session_busy",
        "a queued turn makes the session busy"
    );

    // Nothing of the refused turns is stored.
    let turns = store.all_turns(handle.id()).await.unwrap();
    let ids: Vec<_> = turns.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![first.turn_id, long.turn_id, queued.turn_id]);
    assert_eq!(accepted_count(&store, &handle).await, 3);
    assert!(stored_events(&store, handle.id())
        .await
        .iter()
        .all(|e| !matches!(&e.body, EventBody::Message { text, .. } if text.contains("not"))));
    for refused in ["r-2", "r-3"] {
        assert_eq!(
            store
                .turn_for_client_id(handle.id(), refused)
                .await
                .unwrap(),
            None
        );
    }

    // Once free, the refused client_message_id is a fresh turn, not a duplicate.
    handle.cancel_turn(queued.turn_id).await.unwrap();
    handle.resume().await.unwrap();
    let later = handle.send(reject("now it fits", "r-2")).await.unwrap();
    assert!(!later.duplicate);
    let events = until_completed(&mut sub, 3).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (long.turn_id, Outcome::Aborted),
            (queued.turn_id, Outcome::Cancelled),
            (later.turn_id, Outcome::Success),
        ]
    );
}
