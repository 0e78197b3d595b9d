//! A subscriber that never reads is dropped with `lagged` once its buffer is full, while another
//! subscriber that keeps reading gets every event and the session runs on undisturbed.
mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{BusyMode, CloseReason, MemoryStore, Outcome, Settings, Store};

const BUFFER: usize = 16;

#[actix_rt::test]
async fn lagging_subscriber_is_dropped_alone() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let settings = Settings {
        subscriber_buffer: BUFFER,
        ..fast_settings()
    };
    let rt = runtime(store.clone(), settings);
    let handle = session(&rt).await;
    let mut reader = handle.subscribe(0).await.unwrap();
    let mut sleeper = handle.subscribe(0).await.unwrap();
    let words = 120;
    let text = (0..words)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let turn = handle
        .send(scripted(
            &text,
            BusyMode::Enqueue,
            json!({"chunk_words": 1, "chunk_delay_ms": 1}),
        ))
        .await
        .unwrap();

    let events = until_completed(&mut reader, 1).await;
    assert_gapless(&events, 1);
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
    assert_eq!(delta_text(&events), text);
    assert_eq!(events.last().unwrap().turn_id, Some(turn.turn_id));
    assert!(
        events.len() > 4 * BUFFER,
        "far more events than the buffer holds"
    );

    // The sleeper gets what its buffer held when it was dropped, then the end.
    let mut got = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = sleeper.next().await {
            got.push(e);
        }
    })
    .await;
    assert!(drained.is_ok(), "a dropped subscription ends");
    assert_eq!(sleeper.close_reason(), Some(CloseReason::Lagged));
    assert!(got.len() <= BUFFER + 1, "got {} events", got.len());
    assert_gapless(&got, 1);
    assert_eq!(rt.metrics().lagged_drops.load(Ordering::Relaxed), 1);

    // The reader is still subscribed and sees the next turn too; the log is whole.
    handle
        .send_text("after the drop", BusyMode::Enqueue)
        .await
        .unwrap();
    let more = until_completed(&mut reader, 1).await;
    assert_eq!(delta_text(&more), "after the drop");
    assert_eq!(reader.close_reason(), None);
    assert_gapless(&stored_events(&store, handle.id()).await, 1);

    // Resuming with after_seq gives the dropped subscriber the rest, without a gap.
    let resume_from = got.last().map_or(0, |e| e.seq);
    let mut resumed = handle.subscribe(resume_from).await.unwrap();
    let rest = until_completed(&mut resumed, 2).await;
    assert_gapless(&rest, resume_from + 1);
}
