//! `interrupt` aborts the running attempt (it ends `aborted`) and the interrupting turn runs
//! next, ahead of turns that were queued before it.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, ErrorInfo, EventBody, MemoryStore, Outcome, TurnStatus};

#[actix_rt::test]
async fn interrupt_aborts_and_runs_next() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let running = handle
        .send(slow_turn("long", 200, 10, BusyMode::Enqueue))
        .await
        .unwrap();
    let waiting = handle
        .send_text("queued before", BusyMode::Enqueue)
        .await
        .unwrap();
    wait_for_kind(&mut sub, "message.delta").await;
    let interrupting = handle
        .send_text("stop that and do this", BusyMode::Interrupt)
        .await
        .unwrap();
    assert_eq!(interrupting.status, TurnStatus::Queued);
    assert_eq!(interrupting.position, Some(1), "front of the queue");

    let events = until_completed(&mut sub, 3).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (running.turn_id, Outcome::Aborted),
            (interrupting.turn_id, Outcome::Success),
            (waiting.turn_id, Outcome::Success),
        ]
    );
    assert_eq!(
        started_order(&events),
        vec![interrupting.turn_id, waiting.turn_id]
    );
    let aborted = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::TurnCompleted { error, .. } if e.turn_id == Some(running.turn_id) => {
                error.clone()
            }
            _ => None,
        })
        .expect("the aborted turn says why");
    assert!(matches!(aborted, ErrorInfo { ref code, .. } if code == "interrupted_by_user"));
    // Nothing of the aborted attempt arrives after its completion.
    let abort_seq = events
        .iter()
        .find(|e| e.turn_id == Some(running.turn_id) && e.kind() == "turn.completed")
        .unwrap()
        .seq;
    assert!(events
        .iter()
        .filter(|e| e.seq > abort_seq)
        .all(|e| e.turn_id != Some(running.turn_id)));
}

#[actix_rt::test]
async fn interrupt_on_a_free_session_just_runs() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let r = handle
        .send_text("hello", BusyMode::Interrupt)
        .await
        .unwrap();
    assert_eq!(r.status, TurnStatus::Running);
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(
        completed_order(&events),
        vec![(r.turn_id, Outcome::Success)]
    );
}
