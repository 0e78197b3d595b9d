//! `steer` delivers the message into the running attempt when the provider takes mid-run input
//! (the steer-capable echo answers it in the same attempt); otherwise the turn goes to the front
//! of the queue and runs next.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, EventBody, MemoryStore, Outcome, TurnStatus};

#[actix_rt::test]
async fn steer_is_delivered_to_a_steer_capable_provider() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session_on(&rt, "echo-steer").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let running = handle
        .send(slow_turn("a", 20, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    let queued = handle
        .send_text("queued behind", BusyMode::Enqueue)
        .await
        .unwrap();
    wait_for_kind(&mut sub, "message.delta").await;
    let steered = handle
        .send_text("and also this", BusyMode::Steer)
        .await
        .unwrap();
    assert_eq!(
        (steered.status, steered.position),
        (TurnStatus::Running, Some(0)),
        "delivered into the running attempt"
    );

    let events = until_completed(&mut sub, 3).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (running.turn_id, Outcome::Success),
            (steered.turn_id, Outcome::Success),
            (queued.turn_id, Outcome::Success),
        ]
    );
    // The steered message had no attempt of its own: it rode the running one.
    assert_eq!(started_order(&events), vec![queued.turn_id]);
    let answer: String = events
        .iter()
        .filter(|e| e.turn_id == Some(running.turn_id))
        .filter_map(|e| match &e.body {
            EventBody::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !answer.contains("also"),
        "the steered answer is not in the first turn's"
    );
    assert!(events.iter().any(|e| e.turn_id == Some(steered.turn_id)
        && matches!(&e.body, EventBody::Message { role, text } if role == "assistant" && text == "and also this")));
}

#[actix_rt::test]
async fn steer_goes_to_the_front_of_the_queue_otherwise() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session_on(&rt, "echo").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let running = handle
        .send(slow_turn("a", 20, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    let first_queued = handle.send_text("one", BusyMode::Enqueue).await.unwrap();
    let second_queued = handle.send_text("two", BusyMode::Enqueue).await.unwrap();
    wait_for_kind(&mut sub, "message.delta").await;
    let steered = handle
        .send_text("do this next", BusyMode::Steer)
        .await
        .unwrap();
    assert_eq!(
        (steered.status, steered.position),
        (TurnStatus::Queued, Some(1))
    );

    let events = until_completed(&mut sub, 4).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (running.turn_id, Outcome::Success),
            (steered.turn_id, Outcome::Success),
            (first_queued.turn_id, Outcome::Success),
            (second_queued.turn_id, Outcome::Success),
        ],
        "the running turn is not disturbed; the steered one runs next"
    );
}

#[actix_rt::test]
async fn steer_racing_the_end_of_the_attempt_is_answered_or_runs_next() {
    let store: Arc<dyn troupe_actors::Store> = Arc::new(MemoryStore::new());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session_on(&rt, "echo-steer").await;
    let mut sub = handle.subscribe(0).await.unwrap();
    for round in 0..100 {
        let first = handle
            .send(slow_turn("w", 1 + round % 3, 0, BusyMode::Enqueue))
            .await
            .unwrap();
        for _ in 0..round % 5 {
            tokio::task::yield_now().await;
        }
        let steered = handle
            .send_text("late steer", BusyMode::Steer)
            .await
            .unwrap();
        let events = collect_until(&mut sub, |e| {
            e.turn_id == Some(steered.turn_id) && e.kind() == "turn.completed"
        })
        .await;
        assert_eq!(
            completed_order(&events),
            vec![
                (first.turn_id, Outcome::Success),
                (steered.turn_id, Outcome::Success)
            ],
            "round {round}"
        );
        assert!(
            events.iter().all(|e| !matches!(
                e.body,
                EventBody::Error { .. } | EventBody::TurnRetrying { .. }
            )),
            "round {round}: a steer at the end of an attempt is no provider failure: {:?}",
            kinds(&events)
        );
    }
}
