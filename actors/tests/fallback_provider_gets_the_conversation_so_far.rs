//! When a session's provider exhausts its retries and a fallback is configured, the queued turns
//! run on the fallback (announced by `session.updated` with reason `provider_fallback`), and a
//! stateless fallback gets the conversation so far from the session's log.
mod common;

use common::*;
use serde_json::json;
use std::collections::HashMap;
use troupe_actors::{BusyMode, EchoProvider, EventBody, MemoryStore, Outcome, Runtime, Settings};

#[actix_rt::test]
async fn fallback_provider_gets_the_conversation_so_far() {
    let seen = Seen::default();
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .provider("flaky", EchoProvider::new())
        .provider(
            "steady",
            Recording {
                echo: EchoProvider::new(),
                seen: seen.clone(),
            },
        )
        .settings(Settings {
            fallbacks: HashMap::from([("flaky".to_string(), "steady".to_string())]),
            ..fast_settings()
        })
        .start();
    let handle = session_on(&rt, "flaky").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    handle.send_text("hello", BusyMode::Enqueue).await.unwrap();
    handle
        .send(scripted(
            "doomed",
            BusyMode::Enqueue,
            json!({"fail": "transient", "chunk_delay_ms": 2}),
        ))
        .await
        .unwrap();
    let after = handle.send_text("after", BusyMode::Enqueue).await.unwrap();
    let events = until_completed(&mut sub, 3).await;

    assert_eq!(
        outcomes(&events),
        vec![Outcome::Success, Outcome::Failed, Outcome::Success]
    );
    let fallback = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::SessionUpdated { session, reason } if reason == "provider_fallback" => {
                Some(session.provider.clone())
            }
            _ => None,
        })
        .expect("session.updated provider_fallback");
    assert_eq!(fallback, "steady");
    let started_on: Vec<String> = events
        .iter()
        .filter(|e| e.turn_id == Some(after.turn_id))
        .filter_map(|e| match &e.body {
            EventBody::TurnStarted { provider, .. } => Some(provider.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started_on, vec!["steady"]);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the queued turn ran on the fallback");
    let (prompt, history) = &seen[0];
    assert_eq!(prompt, "after");
    let said = |role: &str, text: &str| {
        history
            .iter()
            .any(|m| m.role == role && m.text.as_str() == text)
    };
    assert!(
        said("user", "hello") && said("assistant", "hello"),
        "{history:?}"
    );
    assert!(said("user", "doomed"), "{history:?}");
    assert!(!history.iter().any(|m| m.text == "after"), "{history:?}");
}
