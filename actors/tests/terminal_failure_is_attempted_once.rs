//! A terminal failure is never retried: one attempt, the turn ends `failed` with the provider's
//! code, the session stays usable and the next queued turn runs.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use troupe_actors::{BusyMode, EventBody, MemoryStore, SessionState};

#[actix_rt::test]
async fn terminal_failure_is_attempted_once() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let failing = handle
        .send(scripted(
            "far too long a prompt",
            BusyMode::Enqueue,
            json!({"fail": "terminal", "fail_code": "prompt_too_long", "exit_code": 1}),
        ))
        .await
        .unwrap();
    let next = handle
        .send_text("next one", BusyMode::Enqueue)
        .await
        .unwrap();
    let events = until_completed(&mut sub, 2).await;
    assert_failed_once_then_next_ran(&events, failing.turn_id, next.turn_id, "prompt_too_long");
    let exit_code = events.iter().find_map(|e| match e.body {
        EventBody::TurnCompleted { exit_code, .. } if e.turn_id == Some(failing.turn_id) => {
            exit_code
        }
        _ => None,
    });
    assert_eq!(exit_code, Some(1));
    assert!(events.iter().any(|e| matches!(
        &e.body,
        EventBody::Error { code, retryable: false, .. } if code == "prompt_too_long"
    )));
    assert_eq!(handle.info().await.unwrap().state, SessionState::Idle);
    assert_eq!(
        rt.metrics()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
