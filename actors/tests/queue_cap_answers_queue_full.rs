//! The queue takes at most `max_queue` turns; beyond it a send answers `queue_full` and stores
//! nothing. A steer into a running steer-capable attempt does not queue, so the cap spares it.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, MemoryStore, RuntimeError, Settings, TurnStatus};

const MAX_QUEUE: usize = 3;

fn settings() -> Settings {
    Settings {
        max_queue: MAX_QUEUE,
        ..fast_settings()
    }
}

#[actix_rt::test]
async fn queue_cap_answers_queue_full() {
    let rt = runtime(Arc::new(MemoryStore::new()), settings());
    let handle = session_on(&rt, "echo-steer").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    handle
        .send(slow_turn("a", 40, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    for _ in 0..MAX_QUEUE {
        handle.send_text("queued", BusyMode::Enqueue).await.unwrap();
    }
    let before = handle.turns().await.unwrap().turns.len();
    for mode in [BusyMode::Enqueue, BusyMode::Interrupt] {
        let err = handle.send_text("one too many", mode).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::QueueFull { max: MAX_QUEUE }),
            "{err:?}"
        );
        assert_eq!(err.code(), "queue_full");
    }
    assert_eq!(
        handle.turns().await.unwrap().turns.len(),
        before,
        "nothing stored"
    );

    wait_for_kind(&mut sub, "message.delta").await;
    let steered = handle
        .send_text("steered in", BusyMode::Steer)
        .await
        .unwrap();
    assert_eq!(steered.status, TurnStatus::Running);

    // Once the queue drains, sends fit again.
    until_completed(&mut sub, 2 + MAX_QUEUE).await;
    let fits = handle
        .send_text("fits now", BusyMode::Enqueue)
        .await
        .unwrap();
    assert_eq!(fits.status, TurnStatus::Running);
}

#[actix_rt::test]
async fn steer_into_a_provider_without_steering_counts_against_the_cap() {
    let rt = runtime(Arc::new(MemoryStore::new()), settings());
    let handle = session_on(&rt, "echo").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    handle
        .send(slow_turn("a", 40, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    for _ in 0..MAX_QUEUE {
        handle.send_text("queued", BusyMode::Enqueue).await.unwrap();
    }
    wait_for_kind(&mut sub, "message.delta").await;
    let err = handle
        .send_text("steer", BusyMode::Steer)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "queue_full");
    handle.abort().await.unwrap();
}
