//! Three real `troupe serve --store nats://…` nodes on one real `nats-server -js`: 300
//! concurrent creates of one session key, spread over the nodes, converge on one session with
//! one `session.created`. The key's compare-and-set in the store decides, not any node.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Concurrent creates, and the threads that send them.
const CREATES: usize = 300;
const THREADS: usize = 30;

#[test]
fn three_nodes_300_creates_of_one_key_make_one_session() {
    let Some(nats) = NatsServer::start("nats_nodes_converge_on_one_session_per_key") else {
        return;
    };
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let url = nats.url();
    let nodes: Vec<ServerProcess> = dirs
        .iter()
        .map(|d| ServerProcess::start(d.path(), &["--store", &url], &[]))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base()).collect();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (client, bases, barrier) = (client.clone(), &bases, barrier.clone());
                scope.spawn(move || {
                    barrier.wait();
                    (0..CREATES / THREADS)
                        .map(|i| {
                            let base = &bases[(t + i) % bases.len()];
                            let resp = client
                                .post(format!("{base}/api/v1/sessions"))
                                .json(&json!({"provider": "echo", "key": "one-key"}))
                                .send()
                                .expect("POST /sessions");
                            let status = resp.status().as_u16();
                            (status, resp.json().unwrap_or(Value::Null))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let took = started.elapsed();
    // The figure docs/BENCHMARKS.md quotes (debug build, one NATS server, three nodes).
    eprintln!(
        "{CREATES} creates of one key over 3 nodes: {:.0} ms, {:.0} creates/s",
        took.as_secs_f64() * 1000.0,
        CREATES as f64 / took.as_secs_f64()
    );
    assert_eq!(answers.len(), CREATES);
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    let existing = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!((created, existing), (1, CREATES - 1), "{answers:?}");
    let ids: BTreeSet<&str> = answers
        .iter()
        .map(|(_, body)| body["session"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 1, "every create names one session: {ids:?}");
    let id = *ids.iter().next().expect("an id");
    for base in &bases {
        let events: Value = client
            .get(format!("{base}/api/v1/sessions/{id}/events?after_seq=0"))
            .send()
            .expect("GET events")
            .json()
            .expect("json");
        let created: Vec<_> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "session.created")
            .collect();
        assert_eq!(created.len(), 1, "{base}: one session.created");
        let listed: Value = client
            .get(format!("{base}/api/v1/sessions"))
            .send()
            .expect("GET sessions")
            .json()
            .expect("json");
        assert_eq!(
            listed["sessions"].as_array().map(Vec::len),
            Some(1),
            "{base}: {listed}"
        );
    }
}
