//! A provider that goes silent for `output_idle_timeout` fails the attempt as transient
//! `provider_stalled`: it is retried, and counts toward the restart cap.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::{BusyMode, EventBody, MemoryStore, Outcome, SessionState, Settings};

const IDLE: Duration = Duration::from_millis(60);

#[actix_rt::test]
async fn stalled_provider_is_retried() {
    let settings = Settings {
        output_idle_timeout: IDLE,
        max_consecutive_restarts: 1,
        ..fast_settings()
    };
    let rt = runtime(Arc::new(MemoryStore::new()), settings);
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let started = Instant::now();
    let turn = handle
        .send(scripted(
            "one two three four",
            BusyMode::Enqueue,
            json!({"stall_after": 1, "chunk_words": 1}),
        ))
        .await
        .unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert!(
        started.elapsed() >= IDLE * 2,
        "each attempt waits out the idle time"
    );
    assert_eq!(attempts_of(&events, turn.turn_id), vec![1, 2]);
    let stalls = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Error { code, .. } if code == "provider_stalled"))
        .count();
    assert_eq!(stalls, 2);
    assert!(events.iter().any(|e| matches!(
        &e.body,
        EventBody::TurnRetrying { attempt: 2, reason, .. } if reason == "provider_stalled"
    )));
    // What came before the stall was delivered, each attempt.
    assert_eq!(delta_text(&events), "one one ");
    assert_eq!(outcomes(&events), vec![Outcome::Failed]);
    assert_eq!(
        completion_error(&events, turn.turn_id).unwrap().code,
        "retries_exhausted"
    );
    assert_eq!(handle.info().await.unwrap().state, SessionState::Failed);
}
