//! When the provider no longer knows its session id, the id is cleared and announced with
//! `session.updated` (`provider_session_reset`) and the turn starts fresh, once: a second
//! resume-lost in the same turn fails it.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use troupe_actors::{BusyMode, Event, EventBody, MemoryStore, Outcome};

fn resets(events: &[Arc<Event>]) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::SessionUpdated { session, reason } if reason == "provider_session_reset" => {
                Some(session.provider_session_id.clone())
            }
            _ => None,
        })
        .collect()
}

#[actix_rt::test]
async fn resume_lost_clears_the_id_and_runs_fresh_once() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    handle
        .send(scripted(
            "first",
            BusyMode::Enqueue,
            json!({"provider_session_id": "conv-1"}),
        ))
        .await
        .unwrap();
    until_completed(&mut sub, 1).await;
    assert_eq!(
        handle.info().await.unwrap().provider_session_id.as_deref(),
        Some("conv-1")
    );

    // The provider forgot conv-1.
    let turn = handle
        .send(scripted(
            "second",
            BusyMode::Enqueue,
            json!({"lost_session": "conv-1"}),
        ))
        .await
        .unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(resets(&events), vec![None], "cleared and announced");
    assert_eq!(attempts_of(&events, turn.turn_id), vec![1, 2]);
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
    assert_eq!(delta_text(&events), "second");
    assert!(!events
        .iter()
        .any(|e| matches!(e.body, EventBody::TurnRetrying { .. })));
    let now = handle.info().await.unwrap().provider_session_id;
    assert_ne!(now.as_deref(), Some("conv-1"), "the lost id is gone");
}

#[actix_rt::test]
async fn a_second_resume_lost_fails_the_turn() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    // The echo provider is stateless: each fresh start gets the synthetic id again, and this
    // script makes the provider forget exactly that one.
    let synthetic = format!("echo-{}", handle.id());
    handle.send_text("first", BusyMode::Enqueue).await.unwrap();
    until_completed(&mut sub, 1).await;
    assert_eq!(
        handle.info().await.unwrap().provider_session_id,
        Some(synthetic.clone())
    );
    let turn = handle
        .send(scripted(
            "second",
            BusyMode::Enqueue,
            json!({"lost_session": synthetic}),
        ))
        .await
        .unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(resets(&events).len(), 1, "one fresh start only");
    assert_eq!(attempts_of(&events, turn.turn_id), vec![1, 2]);
    assert_eq!(outcomes(&events), vec![Outcome::Failed]);
    assert_eq!(
        completion_error(&events, turn.turn_id).unwrap().code,
        "provider_session_lost"
    );
}
