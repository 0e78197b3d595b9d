//! A repeated `client_message_id` returns the original turn instead of accepting a new one:
//! while it waits, runs, after it completed, in any busy mode, and after reopening the store.
mod common;

use common::*;
use troupe_actors::{BusyMode, EventBody, SendTurn, TurnStatus};

fn with_id(content: &str, mode: BusyMode, client_message_id: &str) -> SendTurn {
    SendTurn {
        content: content.into(),
        mode,
        client_message_id: Some(client_message_id.into()),
        ..SendTurn::default()
    }
}

#[test]
fn client_message_id_returns_original_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (id, running, queued) = in_system(|| async {
        let store = sled_store(dir.path());
        let rt = runtime(store.clone(), fast_settings());
        let handle = session(&rt).await;
        let mut sub = handle.subscribe(0).await.unwrap();
        let mut long = slow_turn("a", 30, 5, BusyMode::Enqueue);
        long.client_message_id = Some("m-1".into());
        let running = handle.send(long.clone()).await.unwrap();
        assert!(!running.duplicate);
        let queued = handle
            .send(with_id("second", BusyMode::Enqueue, "m-2"))
            .await
            .unwrap();

        // Repeats while running and while queued, in every mode, even with other content.
        for mode in [
            BusyMode::Enqueue,
            BusyMode::Reject,
            BusyMode::Steer,
            BusyMode::Interrupt,
        ] {
            let again = handle
                .send(with_id("other text", mode, "m-1"))
                .await
                .unwrap();
            assert_eq!(
                (again.turn_id, again.status, again.position, again.duplicate),
                (running.turn_id, TurnStatus::Running, Some(0), true),
                "{mode:?}"
            );
            let again = handle
                .send(with_id("other text", mode, "m-2"))
                .await
                .unwrap();
            assert_eq!(
                (again.turn_id, again.status, again.position, again.duplicate),
                (queued.turn_id, TurnStatus::Queued, Some(1), true),
                "{mode:?}"
            );
        }
        let events = until_completed(&mut sub, 2).await;
        let accepted = events
            .iter()
            .filter(|e| matches!(e.body, EventBody::TurnAccepted { .. }))
            .count();
        assert_eq!(accepted, 2, "repeats accept nothing");
        assert_eq!(store.all_turns(handle.id()).await.unwrap().len(), 2);

        // After completion: the original, completed.
        let again = handle
            .send(with_id("x", BusyMode::Enqueue, "m-1"))
            .await
            .unwrap();
        assert_eq!(
            (again.turn_id, again.status, again.position, again.duplicate),
            (running.turn_id, TurnStatus::Completed, None, true)
        );
        (handle.id(), running.turn_id, queued.turn_id)
    });

    in_system(|| async {
        let store = sled_store(dir.path());
        let rt = runtime(store.clone(), fast_settings());
        let handle = rt.handle(id);
        for (cid, original) in [("m-1", running), ("m-2", queued)] {
            let again = handle
                .send(with_id("retry after restart", BusyMode::Enqueue, cid))
                .await
                .unwrap();
            assert_eq!(
                (again.turn_id, again.status, again.duplicate),
                (original, TurnStatus::Completed, true)
            );
        }
        assert_eq!(store.all_turns(id).await.unwrap().len(), 2);
        // A new id is a new turn.
        let fresh = handle
            .send(with_id("new", BusyMode::Enqueue, "m-3"))
            .await
            .unwrap();
        assert!(!fresh.duplicate);
        assert_eq!(store.all_turns(id).await.unwrap().len(), 3);
    });
}
