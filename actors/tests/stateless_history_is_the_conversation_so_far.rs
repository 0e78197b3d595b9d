//! A stateless provider gets the conversation so far (every earlier user and assistant message,
//! not the current turn's) with each attempt: after many turns, after a retry, and after the
//! session was passivated and reactivated.
mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use troupe_actors::provider::HistoryMessage;
use troupe_actors::{BusyMode, EchoProvider, MemoryStore, Runtime, Settings};

fn msg(role: &str, text: &str) -> HistoryMessage {
    HistoryMessage {
        role: role.into(),
        text: text.into(),
    }
}

#[actix_rt::test]
async fn stateless_history_is_the_conversation_so_far() {
    let seen = Seen::default();
    let idle = Duration::from_millis(60);
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .provider(
            "echo",
            Recording {
                echo: EchoProvider::new(),
                seen: seen.clone(),
            },
        )
        .settings(Settings {
            idle_passivate: idle,
            ..fast_settings()
        })
        .start();
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    handle.send_text("one", BusyMode::Enqueue).await.unwrap();
    handle
        .send(scripted(
            "two",
            BusyMode::Enqueue,
            json!({"fail": "transient", "fail_attempts": 1}),
        ))
        .await
        .unwrap();
    handle.send_text("three", BusyMode::Enqueue).await.unwrap();
    until_completed(&mut sub, 3).await;
    drop(sub);

    let after_one = vec![msg("user", "one"), msg("assistant", "one")];
    let mut after_two = after_one.clone();
    after_two.extend([msg("user", "two"), msg("assistant", "two")]);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("one".to_string(), vec![]),
            ("two".to_string(), after_one.clone()),
            ("two".to_string(), after_one.clone()),
            ("three".to_string(), after_two.clone()),
        ],
        "each attempt sees the earlier turns only; a retry sees the same"
    );

    // Passivated and reactivated: the history is read back from the log.
    eventually(Duration::from_secs(5), "passivation", || async {
        rt.figures().await.unwrap().live == 0
    })
    .await;
    let activations = rt
        .metrics()
        .activations
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut sub = live_events(&handle).await;
    handle.send_text("four", BusyMode::Enqueue).await.unwrap();
    until_completed(&mut sub, 1).await;
    assert_eq!(
        rt.metrics()
            .activations
            .load(std::sync::atomic::Ordering::Relaxed),
        activations + 1
    );
    let mut after_three = after_two;
    after_three.extend([msg("user", "three"), msg("assistant", "three")]);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &("four".to_string(), after_three)
    );
}
