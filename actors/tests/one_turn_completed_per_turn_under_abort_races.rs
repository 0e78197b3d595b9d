//! Every accepted turn ends with exactly one `turn.completed`, also when an abort races the
//! provider finishing (tiny replies, no or tiny chunk delays, aborts at varying moments), when
//! steered turns ride the aborted attempt, and when interrupts pile up.
mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, MemoryStore, Runtime, SessionHandle, Store, TurnStatus};

const ROUNDS: usize = 150;

/// Every stored turn is completed and has exactly one `turn.completed` in the log; the
/// counters agree.
async fn assert_one_completion_each(rt: &Runtime, store: &Arc<dyn Store>, handle: &SessionHandle) {
    // Wait until nothing is open any more.
    eventually(Duration::from_secs(10), "all turns done", || async {
        let info = handle.info().await.unwrap();
        info.queue_len == 0 && store.open_turns(handle.id()).await.unwrap().is_empty()
    })
    .await;
    let turns = store.all_turns(handle.id()).await.unwrap();
    let log = stored_events(store, handle.id()).await;
    assert_gapless(&log, 1);
    let completions = completions_per_turn(&log);
    for turn in &turns {
        assert_eq!(turn.status, TurnStatus::Completed, "turn {} open", turn.id);
        assert_eq!(
            completions.get(&turn.id),
            Some(&1),
            "turn {} has {:?} completions",
            turn.id,
            completions.get(&turn.id)
        );
    }
    let ids: HashSet<_> = turns.iter().map(|t| t.id).collect();
    assert!(completions.keys().all(|t| ids.contains(t)));
    let m = rt.metrics();
    let completed: u64 = m
        .turns_completed
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    assert_eq!(completed, m.turns_accepted.load(Ordering::Relaxed));
    assert_eq!(completed, turns.len() as u64);
    assert_eq!(m.running_attempts.load(Ordering::Relaxed), 0);
}

#[actix_rt::test]
async fn abort_racing_the_provider_finishing() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session(&rt).await;
    for round in 0..ROUNDS {
        let delay = (round % 3) as u64; // 0, 1, 2 ms between chunks
        handle
            .send(slow_turn("w", 1 + round % 4, delay, BusyMode::Enqueue))
            .await
            .unwrap();
        // Abort at varying moments: at once, after a few scheduler turns, after a short sleep.
        match round % 4 {
            0 => {}
            1 => tokio::task::yield_now().await,
            2 => {
                for _ in 0..(round % 7) {
                    tokio::task::yield_now().await;
                }
            }
            _ => tokio::time::sleep(Duration::from_micros(300 * (round % 5) as u64)).await,
        }
        handle.abort().await.unwrap();
    }
    assert_one_completion_each(&rt, &store, &handle).await;
}

#[actix_rt::test]
async fn abort_racing_steered_turns_and_interrupts() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session_on(&rt, "echo-steer").await;
    for round in 0..ROUNDS / 3 {
        handle
            .send(slow_turn("a", 2, (round % 2) as u64, BusyMode::Enqueue))
            .await
            .unwrap();
        let steer = handle.send_text("steered", BusyMode::Steer);
        let queued = handle.send_text("queued", BusyMode::Enqueue);
        let interrupt = handle.send_text("interrupting", BusyMode::Interrupt);
        let abort = handle.abort();
        let (s, q, i, a) = futures::join!(steer, queued, interrupt, abort);
        for r in [s, q, i] {
            r.unwrap();
        }
        a.unwrap();
        // Let the queue drain now and then so it stays under its cap.
        if round % 4 == 3 {
            eventually(Duration::from_secs(10), "the queue drains", || async {
                handle.info().await.unwrap().queue_len == 0
            })
            .await;
        }
    }
    assert_one_completion_each(&rt, &store, &handle).await;
}
