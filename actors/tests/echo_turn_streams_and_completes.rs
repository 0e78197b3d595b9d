//! A turn on the echo provider streams the prompt back and completes once.
mod common;

use common::*;
use std::sync::Arc;
use troupe_actors::{BusyMode, EventBody, MemoryStore, Outcome};

#[actix_rt::test]
async fn echo_turn_streams_and_completes() {
    let rt = runtime(Arc::new(MemoryStore::new()), fast_settings());
    let s = session(&rt).await;
    let mut sub = s.subscribe(0).await.unwrap();
    let receipt = s
        .send_text("hello there brave new world", BusyMode::Enqueue)
        .await
        .unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_gapless(&events, 1);
    assert_eq!(delta_text(&events), "hello there brave new world");
    assert_eq!(outcomes(&events), vec![Outcome::Success]);
    assert!(matches!(events[0].body, EventBody::SessionCreated { .. }));
    let completed = events.last().unwrap();
    assert_eq!(completed.turn_id, Some(receipt.turn_id));
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    println!("{kinds:?}");
}
