//! Criterion benchmarks of the runtime core (no HTTP): events through one session with fan-out,
//! `get_or_create` under contention, activation from the store, and replay.
//!
//! ```sh
//! cargo bench -p troupe-actors --bench runtime
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::{
    BusyMode, EchoProvider, EventBody, MemoryStore, NewSession, Runtime, SendTurn, SessionHandle,
    Settings, SledStore, Store,
};

/// Events per measured turn: one `message.delta` per word of the reply.
const WORDS: usize = 20_000;

fn runtime(store: Arc<dyn Store>, settings: Settings) -> Runtime {
    Runtime::builder()
        .shared_store(store)
        .provider("echo", EchoProvider::new())
        .settings(settings)
        .start()
}

fn new_session(owner: &str, key: Option<String>) -> NewSession {
    NewSession {
        owner: owner.into(),
        key,
        provider: "echo".into(),
        ..NewSession::default()
    }
}

/// Sends one turn whose reply is `WORDS` one-word deltas and waits until `subscribers` readers
/// have all seen its `turn.completed`.
async fn stream_turn(session: &SessionHandle, subscribers: usize, text: &Arc<String>) -> Duration {
    let after = session.info().await.expect("info").last_seq;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut sub = session.subscribe(after).await.expect("subscribe");
        readers.push(actix::spawn(async move {
            while let Some(event) = sub.next().await {
                if matches!(event.body, EventBody::TurnCompleted { .. }) {
                    return true;
                }
            }
            false
        }));
    }
    let start = Instant::now();
    session
        .send(SendTurn {
            content: text.as_str().to_string(),
            mode: BusyMode::Enqueue,
            options: json!({"script": {"chunk_words": 1}}),
            ..SendTurn::default()
        })
        .await
        .expect("send");
    for reader in readers {
        assert!(reader.await.expect("reader"), "a reader was dropped");
    }
    start.elapsed()
}

fn events_through_one_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("events_through_one_session");
    group.sample_size(10);
    group.throughput(Throughput::Elements(WORDS as u64));
    let text = Arc::new(vec!["word"; WORDS].join(" "));
    for store_kind in ["memory", "sled"] {
        for subscribers in [1usize, 100] {
            let system = actix::System::new();
            let dir = tempfile::tempdir().expect("temp dir");
            let (rt, session) = system.block_on(async {
                let store: Arc<dyn Store> = match store_kind {
                    "memory" => Arc::new(MemoryStore::new()),
                    _ => Arc::new(SledStore::open(dir.path()).expect("sled")),
                };
                let settings = Settings {
                    subscriber_buffer: WORDS * 2,
                    ..Settings::default()
                };
                let rt = runtime(store, settings);
                let session = rt
                    .get_or_create(new_session("bench", None))
                    .await
                    .expect("session")
                    .0;
                (rt, session)
            });
            group.bench_with_input(
                BenchmarkId::new(store_kind, format!("{subscribers}_subscribers")),
                &subscribers,
                |b, &subscribers| {
                    b.iter_custom(|iters| {
                        system.block_on(async {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += stream_turn(&session, subscribers, &text).await;
                            }
                            total
                        })
                    })
                },
            );
            drop(rt);
        }
    }
    group.finish();
}

fn get_or_create_contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_or_create_1000_concurrent");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1000));
    let system = actix::System::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = system.block_on(async {
        runtime(
            Arc::new(SledStore::open(dir.path()).expect("sled")),
            Settings::default(),
        )
    });
    let mut round = 0u64;
    for distinct in [false, true] {
        let name = if distinct { "distinct_keys" } else { "one_key" };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        let calls = (0..1000).map(|i| {
                            let key = if distinct {
                                format!("k-{round}-{i}")
                            } else {
                                format!("k-{round}")
                            };
                            rt.get_or_create(new_session("bench", Some(key)))
                        });
                        let start = Instant::now();
                        let results = join_all(calls).await;
                        total += start.elapsed();
                        let created = results.iter().filter(|r| r.as_ref().expect("ok").1).count();
                        assert_eq!(created, if distinct { 1000 } else { 1 });
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn activation_and_replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("activation_and_replay");
    group.sample_size(10);
    let system = actix::System::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("sled"));
    let text = Arc::new(vec!["word"; 10_000].join(" "));
    let id = system.block_on(async {
        let rt = runtime(store.clone(), Settings::default());
        let session = rt
            .get_or_create(new_session("bench", None))
            .await
            .expect("session")
            .0;
        stream_turn(&session, 1, &text).await;
        let id = session.id();
        rt.shutdown(Duration::from_secs(1)).await;
        id
    });
    let events = system.block_on(store.last_seq(id)).expect("last seq");
    group.bench_function("activate_session_from_store", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh runtime has no live actor: the first call activates from the store.
                    let rt = runtime(store.clone(), Settings::default());
                    let start = Instant::now();
                    rt.handle(id).info().await.expect("info");
                    total += start.elapsed();
                    rt.shutdown(Duration::ZERO).await;
                }
                total
            })
        })
    });
    group.throughput(Throughput::Elements(events));
    for (name, tail) in [("replay_from_tail", 20_000usize), ("replay_from_store", 10)] {
        let rt = system.block_on(async {
            let rt = runtime(
                store.clone(),
                Settings {
                    replay_tail: tail,
                    ..Settings::default()
                },
            );
            rt.handle(id).info().await.expect("activate");
            rt
        });
        group.bench_function(BenchmarkId::new(name, events), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut sub = rt.handle(id).subscribe(0).await.expect("subscribe");
                        let mut seen = 0;
                        while seen < events {
                            sub.next().await.expect("event");
                            seen += 1;
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        system.block_on(rt.shutdown(Duration::ZERO));
    }
    group.finish();
}

criterion_group!(
    benches,
    events_through_one_session,
    get_or_create_contention,
    activation_and_replay
);
criterion_main!(benches);
