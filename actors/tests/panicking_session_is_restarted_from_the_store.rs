//! A session actor that panics is restarted from the store: its running turn ends `interrupted`
//! and runs again, the session keeps working; more than `max_panics` in the window mark it failed.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, EventBody, MemoryStore, Outcome, SendTurn, SessionState};

async fn wait_for_state(s: &troupe_actors::SessionHandle, state: SessionState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if s.info().await.is_ok_and(|v| v.state == state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn a_panic_interrupts_the_running_turn_which_runs_again() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let s = session(&rt).await;
    let mut sub = s.subscribe(0).await.unwrap();
    let slow = s
        .send(SendTurn {
            content: "one two three four five six".into(),
            mode: BusyMode::Enqueue,
            options: json!({"script": {"chunk_delay_ms": 30}}),
            ..SendTurn::default()
        })
        .await
        .unwrap();
    collect_until(&mut sub, |e| {
        matches!(e.body, EventBody::MessageDelta { .. })
    })
    .await;
    s.inject_panic().await.unwrap();

    // The old subscription ends with the actor; a new one replays and follows the restart.
    let mut sub = s.subscribe(0).await.unwrap();
    let events = until_completed(&mut sub, 2).await;
    assert_gapless(&events, 1);
    let completed: Vec<_> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::TurnCompleted { outcome, .. } => Some((e.turn_id.unwrap(), outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(completed[0], (slow.turn_id, Outcome::Interrupted));
    assert_eq!(completed[1].1, Outcome::Success, "the re-queued copy ran");
    assert_ne!(completed[1].0, slow.turn_id);
    assert_eq!(
        rt.metrics()
            .panics
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let row = s.snapshot().await.unwrap();
    assert_eq!(row.restarts, 1);

    // The session keeps working.
    s.send_text("still here", BusyMode::Enqueue).await.unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
}

#[actix_rt::test]
async fn six_panics_in_the_window_mark_the_session_failed() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let s = session(&rt).await;
    for _ in 0..5 {
        s.inject_panic().await.unwrap();
        wait_for_state(&s, SessionState::Idle).await;
    }
    s.inject_panic().await.unwrap();
    wait_for_state(&s, SessionState::Failed).await;
    let err = s.send_text("refused", BusyMode::Enqueue).await.unwrap_err();
    assert_eq!(err.code(), "session_failed");
    // Reset clears the failure.
    s.reset().await.unwrap();
    let mut sub = s.subscribe(s.info().await.unwrap().last_seq).await.unwrap();
    s.send_text("after reset", BusyMode::Enqueue).await.unwrap();
    assert_eq!(
        outcomes(&until_completed(&mut sub, 1).await),
        vec![Outcome::Success]
    );
}
