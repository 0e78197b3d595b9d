//! A subscriber that joins while turns stream, with any `after_seq`, sees every event after it
//! exactly once and in order, matching the stored log (property test over random interleavings
//! of turn shapes, chunk delays, join times and `after_seq`s).
mod common;

use common::*;
use futures::future::join_all;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, EventBody, MemoryStore, Store};

#[derive(Debug, Clone)]
struct TurnShape {
    words: usize,
    chunk_words: usize,
    chunk_delay_ms: u64,
    tool_use: bool,
}

#[derive(Debug, Clone)]
struct Joiner {
    /// When it joins, after the turns were sent.
    delay_ms: u64,
    /// Which fraction of the log so far it says it has seen (0 = nothing, 100 = all).
    seen_percent: u64,
}

fn turn_shape() -> impl Strategy<Value = TurnShape> {
    (1usize..40, 1usize..4, 0u64..3, any::<bool>()).prop_map(
        |(words, chunk_words, chunk_delay_ms, tool_use)| TurnShape {
            words,
            chunk_words,
            chunk_delay_ms,
            tool_use,
        },
    )
}

fn joiner() -> impl Strategy<Value = Joiner> {
    (0u64..40, 0u64..=100).prop_map(|(delay_ms, seen_percent)| Joiner {
        delay_ms,
        seen_percent,
    })
}

fn check(turns: Vec<TurnShape>, joiners: Vec<Joiner>) {
    in_system(|| async move {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let rt = runtime(store.clone(), fast_settings());
        let handle = session(&rt).await;
        let mut last_turn = None;
        for (i, shape) in turns.iter().enumerate() {
            let text = (0..shape.words)
                .map(|w| format!("t{i}w{w}"))
                .collect::<Vec<_>>()
                .join(" ");
            let script = json!({
                "chunk_words": shape.chunk_words,
                "chunk_delay_ms": shape.chunk_delay_ms,
                "tool_use": shape.tool_use,
            });
            let receipt = handle
                .send(scripted(&text, BusyMode::Enqueue, script))
                .await
                .unwrap();
            last_turn = Some(receipt.turn_id);
        }
        let last_turn = last_turn.unwrap();
        let mut all = handle.subscribe(0).await.unwrap();
        // The joiners subscribe while the turns stream; they read once everything is sent, which
        // a large enough buffer makes no different from reading as they go.
        let joins = joiners.into_iter().map(|joiner| {
            let handle = handle.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(joiner.delay_ms)).await;
                let now = handle.info().await.unwrap().last_seq;
                let after = now * joiner.seen_percent / 100;
                (after, handle.subscribe(after).await.unwrap())
            }
        });
        let subs = join_all(joins).await;
        let is_end_of = |turn| {
            move |e: &troupe_actors::Event| {
                e.turn_id == Some(turn) && matches!(e.body, EventBody::TurnCompleted { .. })
            }
        };
        collect_until(&mut all, is_end_of(last_turn)).await;
        // A last turn sent after every joiner subscribed marks where each stops reading.
        let sentinel = handle
            .send_text("sentinel", BusyMode::Enqueue)
            .await
            .unwrap()
            .turn_id;
        let mut seen = Vec::new();
        for (after, mut sub) in subs {
            seen.push((after, collect_until(&mut sub, is_end_of(sentinel)).await));
        }
        let log = stored_events(&store, handle.id()).await;
        assert_gapless(&log, 1);
        for (after, got) in seen {
            assert_gapless(&got, after + 1);
            assert_eq!(
                got.as_slice(),
                &log[after as usize..after as usize + got.len()]
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn subscriber_added_mid_turn_sees_no_gap(
        turns in prop::collection::vec(turn_shape(), 1..4),
        joiners in prop::collection::vec(joiner(), 1..6),
    ) {
        check(turns, joiners);
    }
}
