//! A transient failure is retried: a turn failing every time makes exactly
//! 1 + `max_consecutive_restarts` attempts, then ends `failed` with `retries_exhausted` and the
//! session goes `failed`, holding its queued turns until `reset`. A success resets the count.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{
    BusyMode, EventBody, MemoryStore, Outcome, RuntimeError, SessionState, Settings, TurnStatus,
};

const RESTARTS: u32 = 3;

fn settings() -> Settings {
    Settings {
        max_consecutive_restarts: RESTARTS,
        retry_base: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        ..fast_settings()
    }
}

#[actix_rt::test]
async fn transient_failures_exhaust_retries_and_hold_queue() {
    let rt = runtime(Arc::new(MemoryStore::new()), settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let failing = handle
        .send(scripted(
            "this always breaks",
            BusyMode::Enqueue,
            json!({"fail": "transient", "chunk_delay_ms": 2}),
        ))
        .await
        .unwrap();
    let b = handle
        .send_text("queued b", BusyMode::Enqueue)
        .await
        .unwrap();
    let c = handle
        .send_text("queued c", BusyMode::Enqueue)
        .await
        .unwrap();

    let events = collect_until(&mut sub, |e| {
        e.turn_id == Some(failing.turn_id) && e.kind() == "turn.completed"
    })
    .await;
    let expected_attempts: Vec<u32> = (1..=RESTARTS + 1).collect();
    assert_eq!(attempts_of(&events, failing.turn_id), expected_attempts);
    let retrying: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TurnRetrying {
                attempt, reason, ..
            } => Some((*attempt, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        retrying,
        (2..=RESTARTS + 1)
            .map(|a| (a, "provider_crashed".to_string()))
            .collect::<Vec<_>>()
    );
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Error { retryable, .. } => Some(retryable),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![true, true, true, false]);
    assert_eq!(
        completed_order(&events),
        vec![(failing.turn_id, Outcome::Failed)]
    );
    assert_eq!(
        completion_error(&events, failing.turn_id).unwrap().code,
        "retries_exhausted"
    );

    // The session failed; its queue is held, and new turns are refused.
    let info = handle.info().await.unwrap();
    assert_eq!((info.state, info.queue_len), (SessionState::Failed, 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let list = handle.turns().await.unwrap();
    for held in [b.turn_id, c.turn_id] {
        let t = list.turns.iter().find(|t| t.turn_id == held).unwrap();
        assert_eq!(t.status, TurnStatus::Queued, "held, not run");
    }
    let err = handle
        .send_text("more", BusyMode::Enqueue)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::SessionFailed));

    // Reset: the held turns run, in order.
    let view = handle.reset().await.unwrap();
    assert_ne!(view.state, SessionState::Failed);
    let events = until_completed(&mut sub, 2).await;
    assert_eq!(
        completed_order(&events),
        vec![(b.turn_id, Outcome::Success), (c.turn_id, Outcome::Success)]
    );
    assert_eq!(handle.info().await.unwrap().state, SessionState::Idle);
}

#[actix_rt::test]
async fn a_success_resets_the_restart_count() {
    let rt = runtime(Arc::new(MemoryStore::new()), settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    // Each turn fails RESTARTS times, then succeeds: within the cap every time, because the
    // success in between starts the count again.
    let mut turns = Vec::new();
    for i in 0..3 {
        turns.push(
            handle
                .send(scripted(
                    &format!("flaky {i}"),
                    BusyMode::Enqueue,
                    json!({"fail": "transient", "fail_attempts": RESTARTS}),
                ))
                .await
                .unwrap()
                .turn_id,
        );
    }
    let events = until_completed(&mut sub, 3).await;
    for turn in &turns {
        assert_eq!(
            attempts_of(&events, *turn),
            (1..=RESTARTS + 1).collect::<Vec<_>>()
        );
    }
    assert!(outcomes(&events).iter().all(|o| *o == Outcome::Success));
    assert_eq!(handle.info().await.unwrap().state, SessionState::Idle);
}
