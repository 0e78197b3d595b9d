//! An attempt that runs longer than `attempt_timeout`, even while producing output, ends the
//! turn `failed` with the terminal `turn_timeout`: no retry.
mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::{BusyMode, MemoryStore, SessionState, Settings};

const LIMIT: Duration = Duration::from_millis(150);

#[actix_rt::test]
async fn attempt_wall_clock_ends_turn() {
    let settings = Settings {
        attempt_timeout: LIMIT,
        ..fast_settings()
    };
    let rt = runtime(Arc::new(MemoryStore::new()), settings);
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let started = Instant::now();
    // 100 chunks, 10 ms apart: a second of steady output.
    let turn = handle
        .send(slow_turn("w", 100, 10, BusyMode::Enqueue))
        .await
        .unwrap();
    let next = handle.send_text("next", BusyMode::Enqueue).await.unwrap();
    let events = until_completed(&mut sub, 2).await;
    let took = started.elapsed();
    assert!(
        took >= LIMIT && took < Duration::from_millis(900),
        "{took:?}"
    );
    assert_failed_once_then_next_ran(&events, turn.turn_id, next.turn_id, "turn_timeout");
    let partial: Vec<_> = events
        .iter()
        .filter(|e| e.turn_id == Some(turn.turn_id))
        .cloned()
        .collect();
    assert!(
        !delta_text(&partial).is_empty(),
        "output streamed until the limit"
    );
    assert_eq!(handle.info().await.unwrap().state, SessionState::Idle);
}
