//! `enqueue` appends to the persisted queue: turns sent while one runs wait in order, report
//! their positions, and run first in, first out.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, MemoryStore, Outcome, TurnStatus};

#[actix_rt::test]
async fn enqueue_runs_fifo() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let first = handle
        .send(slow_turn("a", 10, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    assert_eq!(
        (first.status, first.position),
        (TurnStatus::Running, Some(0))
    );
    let mut receipts = vec![first.turn_id];
    for i in 0..6 {
        let r = handle
            .send(slow_turn(&format!("q{i}-"), 3, 1, BusyMode::Enqueue))
            .await
            .unwrap();
        assert_eq!((r.status, r.position), (TurnStatus::Queued, Some(i + 1)));
        receipts.push(r.turn_id);
    }
    let list = handle.turns().await.unwrap();
    let positions: Vec<_> = list.turns.iter().map(|t| t.position).collect();
    assert_eq!(
        positions,
        vec![
            Some(0),
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(5),
            Some(6)
        ]
    );

    let events = until_completed(&mut sub, receipts.len()).await;
    assert_eq!(
        started_order(&events),
        receipts,
        "started in the order sent"
    );
    let done: Vec<_> = completed_order(&events);
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), receipts);
    assert!(done.iter().all(|d| d.1 == Outcome::Success));
    // Each answer is whole and in its turn's place.
    let expected: String = std::iter::once("a0 a1 a2 a3 a4 a5 a6 a7 a8 a9".to_string())
        .chain((0..6).map(|i| format!("q{i}-0 q{i}-1 q{i}-2")))
        .collect();
    assert_eq!(delta_text(&events), expected);
}
