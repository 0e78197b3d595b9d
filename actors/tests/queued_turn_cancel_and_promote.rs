//! A queued turn can be cancelled (it ends `cancelled` and never runs) or promoted to the front
//! (it runs next); the running turn can be neither.
mod common;

use common::*;
use troupe_actors::{BusyMode, Outcome, RuntimeError, TurnId, TurnStatus};

#[actix_rt::test]
async fn cancel_and_promote_queued_turns() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    let running = handle
        .send(slow_turn("a", 20, 5, BusyMode::Enqueue))
        .await
        .unwrap();
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(
            handle
                .send_text(&format!("queued {i}"), BusyMode::Enqueue)
                .await
                .unwrap()
                .turn_id,
        );
    }
    let [b, c, d, e] = queued[..] else {
        unreachable!()
    };

    assert!(matches!(
        handle.cancel_turn(running.turn_id).await,
        Err(RuntimeError::TurnRunning)
    ));
    assert!(matches!(
        handle.promote_turn(running.turn_id).await,
        Err(RuntimeError::TurnRunning)
    ));
    assert!(matches!(
        handle.cancel_turn(TurnId::new()).await,
        Err(RuntimeError::TurnNotFound)
    ));

    handle.cancel_turn(c).await.unwrap();
    handle.promote_turn(e).await.unwrap();
    let list = handle.turns().await.unwrap();
    let open: Vec<_> = list
        .turns
        .iter()
        .filter(|t| t.status == TurnStatus::Queued)
        .map(|t| (t.turn_id, t.position))
        .collect();
    let mut open_sorted = open.clone();
    open_sorted.sort_by_key(|t| t.1);
    assert_eq!(open_sorted, vec![(e, Some(1)), (b, Some(2)), (d, Some(3))]);
    // A cancelled turn cannot be cancelled twice.
    assert!(matches!(
        handle.cancel_turn(c).await,
        Err(RuntimeError::TurnNotFound)
    ));

    let events = until_completed(&mut sub, 5).await;
    assert_eq!(
        completed_order(&events),
        vec![
            (c, Outcome::Cancelled),
            (running.turn_id, Outcome::Success),
            (e, Outcome::Success),
            (b, Outcome::Success),
            (d, Outcome::Success),
        ]
    );
    assert!(
        !started_order(&events).contains(&c),
        "a cancelled turn never runs"
    );
    let stored = store.get_turn(handle.id(), c).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.outcome),
        (TurnStatus::Completed, Some(Outcome::Cancelled))
    );
}

#[test]
fn promoted_order_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (id, x, y) = in_system(|| async {
        let rt = runtime(sled_store(dir.path()), fast_settings());
        let handle = session(&rt).await;
        handle.pause().await.unwrap();
        let x = handle
            .send_text("x", BusyMode::Enqueue)
            .await
            .unwrap()
            .turn_id;
        let y = handle
            .send_text("y", BusyMode::Enqueue)
            .await
            .unwrap()
            .turn_id;
        handle.promote_turn(y).await.unwrap();
        (handle.id(), x, y)
    });
    in_system(|| async {
        let rt = runtime(sled_store(dir.path()), fast_settings());
        let handle = rt.handle(id);
        let list = handle.turns().await.unwrap();
        assert!(list.paused);
        let mut queued: Vec<_> = list.turns.iter().map(|t| (t.position, t.turn_id)).collect();
        queued.sort();
        assert_eq!(queued, vec![(Some(1), y), (Some(2), x)]);
        let mut sub = live_events(&handle).await;
        handle.resume().await.unwrap();
        let events = until_completed(&mut sub, 2).await;
        assert_eq!(
            completed_order(&events),
            vec![(y, Outcome::Success), (x, Outcome::Success)]
        );
    });
}
