//! `pause` holds the queue (a running turn may finish, nothing new starts) until `resume`.
mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, MemoryStore, Outcome, SessionState, TurnStatus};

#[actix_rt::test]
async fn pause_holds_queue_until_resume() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let running = handle
        .send(slow_turn("a", 8, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    let queued = handle.send_text("held", BusyMode::Enqueue).await.unwrap();
    let view = handle.pause().await.unwrap();
    assert_eq!(view.state, SessionState::Paused);

    // The running turn finishes; the queued one stays held.
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(
        completed_order(&events),
        vec![(running.turn_id, Outcome::Success)]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let view = handle.info().await.unwrap();
    assert_eq!((view.state, view.queue_len), (SessionState::Paused, 1));
    let list = handle.turns().await.unwrap();
    assert!(list.paused);
    let held = list
        .turns
        .iter()
        .find(|t| t.turn_id == queued.turn_id)
        .unwrap();
    assert_eq!((held.status, held.position), (TurnStatus::Queued, Some(1)));

    // A turn sent while paused is queued, not started.
    let later = handle
        .send_text("also held", BusyMode::Enqueue)
        .await
        .unwrap();
    assert_eq!(
        (later.status, later.position),
        (TurnStatus::Queued, Some(2))
    );

    let view = handle.resume().await.unwrap();
    assert_ne!(view.state, SessionState::Paused);
    let events = until_completed(&mut sub, 2).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (queued.turn_id, Outcome::Success),
            (later.turn_id, Outcome::Success)
        ]
    );
    assert_eq!(started_order(&events), vec![queued.turn_id, later.turn_id]);
}
