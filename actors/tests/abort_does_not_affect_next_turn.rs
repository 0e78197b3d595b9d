//! Aborting a turn and sending a new one at once: the new turn runs whole, on a fresh attempt,
//! untouched by the old abort (its cancellation token and its late output belong to the old one).
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, EventBody, MemoryStore, Outcome};

#[actix_rt::test]
async fn abort_then_new_turn_runs_whole() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    for round in 0..20 {
        let old = handle
            .send(slow_turn("old", 50, 1 + round % 3, BusyMode::Enqueue))
            .await
            .unwrap();
        if round % 2 == 0 {
            wait_for_kind(&mut sub, "message.delta").await;
        }
        // Both messages in the mailbox back to back, or one after the other.
        let new_text = format!("fresh turn number {round} runs to the end");
        let (aborted, new) = if round % 4 < 2 {
            futures::join!(
                handle.abort(),
                handle.send_text(&new_text, BusyMode::Enqueue)
            )
        } else {
            let aborted = handle.abort().await;
            (
                aborted,
                handle.send_text(&new_text, BusyMode::Enqueue).await,
            )
        };
        let aborted = aborted.unwrap();
        let new = new.unwrap();
        assert!(
            aborted.aborted && aborted.turn_id == Some(old.turn_id),
            "round {round}"
        );

        let events = collect_until(&mut sub, |e| {
            e.turn_id == Some(new.turn_id) && e.kind() == "turn.completed"
        })
        .await;
        let done = completed_order(&events);
        assert_eq!(
            done,
            vec![
                (old.turn_id, Outcome::Aborted),
                (new.turn_id, Outcome::Success)
            ],
            "round {round}"
        );
        let new_events: Vec<_> = events
            .iter()
            .filter(|e| e.turn_id == Some(new.turn_id))
            .cloned()
            .collect();
        assert_eq!(
            delta_text(&new_events),
            new_text,
            "round {round}: whole answer"
        );
        assert!(
            new_events.iter().all(|e| !matches!(
                e.body,
                EventBody::Error { .. } | EventBody::TurnRetrying { .. }
            )),
            "round {round}: the new turn saw no failure"
        );
        let attempts: Vec<_> = new_events
            .iter()
            .filter_map(|e| match e.body {
                EventBody::TurnStarted { attempt, .. } => Some(attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, vec![1], "round {round}: one attempt");
        let after_abort = events
            .iter()
            .skip_while(|e| !(e.turn_id == Some(old.turn_id) && e.kind() == "turn.completed"))
            .skip(1);
        assert!(
            after_abort.clone().all(|e| e.turn_id != Some(old.turn_id)),
            "round {round}: no output of the aborted attempt after its completion"
        );
    }
}
