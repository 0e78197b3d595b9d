//! A provider's permission request (the echo script's `ask_permission`) is a durable event; the
//! first answer wins and reaches the provider, a second one is refused, an option the request did
//! not offer is refused, waiting for a person is not a stall, an unanswered request is answered
//! by its timeout with the reject option, and a restart ends the waiting turn `interrupted` with
//! no request left open.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use troupe_actors::{BusyMode, EventBody, Outcome, Settings};

fn asking(timeout_ms: Option<u64>) -> troupe_actors::SendTurn {
    scripted(
        "echo me",
        BusyMode::Enqueue,
        json!({"ask_permission": true, "permission_timeout_ms": timeout_ms}),
    )
}

fn request_id(events: &[std::sync::Arc<troupe_actors::Event>]) -> String {
    events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::PermissionRequested { request_id, .. } => Some(request_id.clone()),
            _ => None,
        })
        .expect("a permission.requested")
}

#[actix_rt::test]
async fn the_first_answer_wins_and_waiting_is_not_a_stall() {
    let settings = Settings {
        output_idle_timeout: Duration::from_millis(100),
        ..fast_settings()
    };
    let rt = runtime(
        std::sync::Arc::new(troupe_actors::MemoryStore::new()),
        settings,
    );
    let handle = session(&rt).await;
    let mut sub = live_events(&handle).await;
    handle.send(asking(None)).await.unwrap();
    let id = request_id(&wait_for_kind(&mut sub, "permission.requested").await);
    // Longer than the output-idle limit: a person may take their time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wrong = handle
        .answer_permission(&id, "maybe", "ann")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), "invalid_request");
    let unknown = handle
        .answer_permission("nope", "allow", "ann")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), "permission_not_found");
    let answer = handle.answer_permission(&id, "allow", "ann").await.unwrap();
    assert_eq!(
        (answer.option_id.as_str(), answer.by.as_str()),
        ("allow", "ann")
    );
    let again = handle
        .answer_permission(&id, "reject", "bob")
        .await
        .unwrap_err();
    assert_eq!(again.code(), "permission_resolved");
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
    assert!(kinds(&events).contains(&"permission.resolved"));
    assert!(
        !kinds(&events).contains(&"turn.retrying"),
        "no stall: {:?}",
        kinds(&events)
    );
    assert!(
        events.iter().any(|e| matches!(
            &e.body,
            EventBody::ToolResult {
                is_error: false,
                ..
            }
        )),
        "the allowed tool ran"
    );
}

#[actix_rt::test]
async fn an_unanswered_request_times_out_with_the_reject_option() {
    let rt = runtime(
        std::sync::Arc::new(troupe_actors::MemoryStore::new()),
        fast_settings(),
    );
    let handle = session(&rt).await;
    let mut sub = live_events(&handle).await;
    handle.send(asking(Some(50))).await.unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
    let resolved = events.iter().find_map(|e| match &e.body {
        EventBody::PermissionResolved { option_id, by, .. } => {
            Some((option_id.clone(), by.clone()))
        }
        _ => None,
    });
    assert_eq!(resolved, Some((Some("reject".into()), "timeout".into())));
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::ToolResult { is_error: true, .. })));
}

#[test]
fn a_restart_ends_the_waiting_turn_interrupted_with_no_request_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let (id, request) = in_system(|| async {
        let rt = runtime(sled_store(dir.path()), fast_settings());
        let handle = session(&rt).await;
        let mut sub = live_events(&handle).await;
        handle.send(asking(None)).await.unwrap();
        let request = request_id(&wait_for_kind(&mut sub, "permission.requested").await);
        // The system goes away with the request open (no graceful shutdown).
        (handle.id(), request)
    });
    in_system(|| async {
        let store = sled_store(dir.path());
        let rt = runtime(store.clone(), fast_settings());
        let handle = rt.handle(id);
        let mut sub = handle.subscribe(0).await.unwrap();
        let events = collect_until(&mut sub, |e| {
            matches!(
                e.body,
                EventBody::TurnCompleted {
                    outcome: Outcome::Interrupted,
                    ..
                }
            )
        })
        .await;
        let resolved = events.iter().position(|e| {
            matches!(&e.body, EventBody::PermissionResolved { request_id, option_id: None, by }
                if *request_id == request && by == "interrupted")
        });
        let completed = events.len() - 1;
        assert!(
            resolved.is_some_and(|at| at < completed),
            "the open request ends before its turn: {:?}",
            kinds(&events)
        );
        let late = handle
            .answer_permission(&request, "allow", "ann")
            .await
            .unwrap_err();
        assert_eq!(
            late.code(),
            "permission_resolved",
            "nobody waits for it any more"
        );
    });
}
