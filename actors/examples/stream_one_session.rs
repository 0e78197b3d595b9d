//! Streams echo turns through one session and prints events/s: the loop to profile
//! (`perf record` or `valgrind --tool=callgrind`) when the runtime's per-event cost changes.
//!
//! `cargo run --release -p troupe-actors --example stream_one_session -- [memory|sled|nats://HOST:PORT] [words] [turns]`

use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::{
    BusyMode, EventBody, MemoryStore, NatsOptions, NatsStore, NewSession, Runtime, SendTurn,
    Settings, SledStore, Store,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "sled".into());
    let words: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = match kind.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        url if url.starts_with("nats://") => Arc::new(
            NatsStore::open(&NatsOptions {
                url: url.to_string(),
                ..NatsOptions::default()
            })
            .expect("open the NATS store"),
        ),
        _ => Arc::new(SledStore::open(dir.path()).expect("open sled")),
    };
    actix::System::new().block_on(async move {
        let rt = Runtime::builder()
            .shared_store(store)
            .settings(Settings {
                subscriber_buffer: words * 2 + 16,
                ..Settings::default()
            })
            .start();
        let handle = rt
            .get_or_create(NewSession {
                owner: "bench".into(),
                provider: "echo".into(),
                ..NewSession::default()
            })
            .await
            .expect("create session")
            .0;
        let text = vec!["word"; words].join(" ");
        for turn in 0..turns {
            let after = handle.info().await.expect("info").last_seq;
            let mut sub = handle.subscribe(after).await.expect("subscribe");
            let started = Instant::now();
            handle
                .send(SendTurn {
                    content: text.clone(),
                    mode: BusyMode::Enqueue,
                    options: serde_json::json!({"script": {"chunk_words": 1}}),
                    ..SendTurn::default()
                })
                .await
                .expect("send");
            let mut events = 0u64;
            while let Some(event) = sub.next().await {
                events += 1;
                if matches!(event.body, EventBody::TurnCompleted { .. }) {
                    break;
                }
            }
            let took = started.elapsed();
            println!(
                "{kind} turn {turn}: {events} events in {took:.2?} = {:.0} events/s",
                events as f64 / took.as_secs_f64()
            );
        }
        rt.shutdown(Duration::from_secs(1)).await;
    });
}
