//! `seq` starts at 1, strictly increases and never skips or repeats: over many turns, across
//! passivation and reactivation, and across closing and reopening the sled store (also after a
//! stop in the middle of a turn).
mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, EventBody, Outcome, SessionId, Settings, Store};

const TURNS_PER_PHASE: usize = 12;

fn settings() -> Settings {
    Settings {
        idle_passivate: Duration::from_millis(80),
        ..fast_settings()
    }
}

/// Runs `n` echo turns of mixed shapes back to back and waits for each to complete.
async fn run_turns(rt: &troupe_actors::Runtime, id: SessionId, n: usize) {
    let handle = rt.handle(id);
    let mut sub = live_events(&handle).await;
    for i in 0..n {
        let script =
            json!({"tool_use": i % 3 == 0, "thinking": i % 2 == 0, "chunk_words": 1 + i % 3});
        handle
            .send(scripted(
                &format!("turn {i} says a few words"),
                BusyMode::Enqueue,
                script,
            ))
            .await
            .unwrap();
    }
    let events = until_completed(&mut sub, n).await;
    assert!(outcomes(&events).iter().all(|o| *o == Outcome::Success));
}

async fn assert_log_gapless(store: &Arc<dyn Store>, id: SessionId) -> u64 {
    let events = stored_events(store, id).await;
    assert_gapless(&events, 1);
    assert_eq!(store.last_seq(id).await.unwrap(), events.len() as u64);
    events.len() as u64
}

#[test]
fn seq_is_gapless_across_passivation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();

    // Phase 1: many turns, a passivation, more turns on the reactivated actor.
    let (id, last_1) = in_system(|| async {
        let store = sled_store(dir.path());
        let rt = runtime(store.clone(), settings());
        let id = session(&rt).await.id();
        run_turns(&rt, id, TURNS_PER_PHASE).await;
        let before = assert_log_gapless(&store, id).await;
        eventually(Duration::from_secs(5), "passivation", || async {
            rt.figures().await.unwrap().live == 0
        })
        .await;
        run_turns(&rt, id, TURNS_PER_PHASE).await;
        let last = assert_log_gapless(&store, id).await;
        assert!(last > before);
        // A subscriber from 0 replays the whole log, nothing more and nothing twice.
        let mut sub = rt.handle(id).subscribe(0).await.unwrap();
        assert_eq!(sub.replay_len() as u64, last);
        let replay = collect_until(&mut sub, |e| e.seq == last).await;
        assert_gapless(&replay, 1);
        (id, last)
    });

    // Phase 2: the store closed and reopened; the log goes on from where it was. The phase ends
    // with a turn still streaming when the system goes away (no graceful shutdown).
    let last_2 = in_system(|| async {
        let store = sled_store(dir.path());
        assert_eq!(assert_log_gapless(&store, id).await, last_1);
        let rt = runtime(store.clone(), settings());
        let handle = rt.handle(id);
        assert_eq!(handle.info().await.unwrap().last_seq, last_1);
        let mut sub = handle.subscribe(last_1).await.unwrap();
        run_turns(&rt, id, TURNS_PER_PHASE).await;
        let first_new = sub.next().await.unwrap();
        assert_eq!(
            first_new.seq,
            last_1 + 1,
            "the first new event follows the old log"
        );
        handle
            .send(scripted(
                "a long reply that the stop cuts short",
                BusyMode::Enqueue,
                json!({"chunk_delay_ms": 20, "chunk_words": 1}),
            ))
            .await
            .unwrap();
        collect_until(&mut sub, |e| {
            matches!(e.body, EventBody::MessageDelta { .. })
        })
        .await;
        assert_log_gapless(&store, id).await
    });
    assert!(last_2 > last_1);

    // Phase 3: recovery ends the cut turn `interrupted`, runs it again, and seq still holds.
    in_system(|| async {
        let store = sled_store(dir.path());
        assert_eq!(assert_log_gapless(&store, id).await, last_2);
        let rt = runtime(store.clone(), settings());
        let mut sub = rt.handle(id).subscribe(last_2).await.unwrap();
        let events = until_completed(&mut sub, 2).await;
        assert_gapless(&events, last_2 + 1);
        assert_eq!(
            outcomes(&events),
            vec![Outcome::Interrupted, Outcome::Success]
        );
        run_turns(&rt, id, 3).await;
        assert_log_gapless(&store, id).await;
    });
}
