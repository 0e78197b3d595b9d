//! Subscribing with any `after_seq` from 0 to the last seq replays exactly the events after it,
//! then carries on with the live ones: no gap, no duplicate. Checked with the replay served from
//! the in-memory tail and from the store (a tail shorter than the log), on both stores.
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use troupe_actors::{BusyMode, MemoryStore, Runtime, Settings, Store};

async fn check_every_after_seq(store: Arc<dyn Store>, replay_tail: usize) {
    let settings = Settings {
        replay_tail,
        ..fast_settings()
    };
    let rt: Runtime = runtime(store.clone(), settings);
    let handle = session(&rt).await;
    let mut sub = handle.subscribe(0).await.unwrap();
    for i in 0..4 {
        handle
            .send(scripted(
                &format!("turn number {i} with some words in it"),
                BusyMode::Enqueue,
                json!({"chunk_words": 1, "tool_use": i == 1}),
            ))
            .await
            .unwrap();
    }
    until_completed(&mut sub, 4).await;
    let log = stored_events(&store, handle.id()).await;
    let last = log.len() as u64;
    assert!(last > 40, "a log long enough to be interesting");
    assert_gapless(&log, 1);

    let mut subs = Vec::new();
    for after in 0..=last + 3 {
        let mut sub = handle.subscribe(after).await.unwrap();
        let expected = log.len().saturating_sub(after as usize);
        assert_eq!(sub.replay_len(), expected, "replay length after {after}");
        let mut replay = Vec::new();
        for _ in 0..expected {
            replay.push(sub.next().await.unwrap());
        }
        assert_eq!(
            replay.as_slice(),
            &log[(after as usize).min(log.len())..],
            "replay after {after}"
        );
        subs.push((after, sub));
    }

    // One more turn: every subscriber goes on with exactly the new events.
    handle
        .send_text("and one more turn", BusyMode::Enqueue)
        .await
        .unwrap();
    let mut live = until_completed(&mut sub, 1).await;
    live.retain(|e| e.seq > last);
    assert_eq!(live[0].seq, last + 1);
    for (after, mut sub) in subs {
        let got = until_completed(&mut sub, 1).await;
        let expected: Vec<_> = live.iter().filter(|e| e.seq > after).cloned().collect();
        assert_eq!(got, expected, "live events after {after}");
    }
}

#[actix_rt::test]
async fn memory_store_replay_from_the_tail() {
    check_every_after_seq(Arc::new(MemoryStore::new()), 5000).await;
}

#[actix_rt::test]
async fn memory_store_replay_from_store_and_tail() {
    check_every_after_seq(Arc::new(MemoryStore::new()), 7).await;
}

#[actix_rt::test]
async fn sled_store_replay_from_store_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    check_every_after_seq(sled_store(dir.path()), 7).await;
}
