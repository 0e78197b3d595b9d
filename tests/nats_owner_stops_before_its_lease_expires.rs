//! A runtime on a real `nats-server -js`, 2 s lease TTL, runs a turn; NATS stops answering
//! (paused with `SIGSTOP`). The session cannot renew its lease, so it stops itself (attempt
//! interrupted, nothing more written) before the server could let another node take the lease:
//! measured from the pause, well within the TTL of its last renewal, which was sent before it.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;

use nats_server::NatsServer;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use troupe_actors::{BusyMode, NatsOptions, NatsStore, NewSession, Runtime, SendTurn, Settings};

/// The lease TTL of the test.
const TTL: Duration = Duration::from_secs(2);

#[actix_rt::test]
async fn a_session_that_cannot_renew_its_lease_stops_before_it_expires() {
    let Some(nats) = NatsServer::start("nats_owner_stops_before_its_lease_expires") else {
        return;
    };
    let store = NatsStore::open(&NatsOptions {
        url: nats.url(),
        ..NatsOptions::default()
    })
    .expect("open the NATS store");
    let runtime = Runtime::builder()
        .store(store)
        .settings(Settings {
            node_id: "solo".into(),
            lease_ttl: TTL,
            workers: 0,
            ..Settings::default()
        })
        .start();
    assert_eq!(runtime.node_id(), "solo");
    let (session, _) = runtime
        .get_or_create(NewSession {
            owner: "alice".into(),
            provider: "echo".into(),
            ..NewSession::default()
        })
        .await
        .expect("create");
    let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    session
        .send(SendTurn {
            content: words.join(" "),
            mode: BusyMode::Enqueue,
            options: serde_json::json!({"script": {"chunk_delay_ms": 20}}),
            ..SendTurn::default()
        })
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runtime.actors().await.iter().any(|row| row.run.is_some()) {
        assert!(Instant::now() < deadline, "the turn never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Output flows: every commit renews the lease, so the last renewal went out just before.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runtime.store().leases_held(), 1);

    nats.signal("-STOP");
    let paused = Instant::now();
    while !runtime.actors().await.is_empty() {
        assert!(
            paused.elapsed() < TTL * 2,
            "the session kept running without its lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = paused.elapsed();
    nats.signal("-CONT");
    println!("NATS paused: the session stopped {stopped:?} later (lease TTL {TTL:?})");
    assert_eq!(runtime.metrics().leases_lost.load(Ordering::Relaxed), 1);
    // Its last renewal was sent before the pause: the server's TTL ran out no earlier than
    // the pause plus the TTL (less the ~20 ms between commits), and no later than 250 ms after.
    assert!(
        stopped < TTL - Duration::from_millis(250),
        "stopped {stopped:?} after the pause: too close to the TTL"
    );
}
