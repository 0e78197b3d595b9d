//! Two real `troupe serve --store nats://…` nodes on one real `nats-server -js`: a session
//! runs on the node that activated it, which holds its lease; the other node refuses to run it
//! (`owned_elsewhere`, naming the owner) instead of activating it a second time. Operators see
//! the node id and the leases held in `/metrics` and the actor table. When the owner shuts
//! down gracefully it gives its leases up, and the other node runs the session at once,
//! without waiting for the lease to expire.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use nodes::{start_named_node, Api, LEASE_TTL};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_session_runs_on_one_node_and_moves_when_its_owner_shuts_down() {
    let Some(nats) = NatsServer::start("nats_one_node_runs_a_session") else {
        return;
    };
    let (node_a, _data_a) = start_named_node(&nats, Some("node-a"));
    let (node_b, _data_b) = start_named_node(&nats, Some("node-b"));
    let (a, b) = (Api::of(&node_a), Api::of(&node_b));
    a.wait_ready(200);
    b.wait_ready(200);

    let (status, body) = a.post("/api/v1/sessions", json!({"provider": "echo", "key": "k"}));
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();
    let turns = format!("/api/v1/sessions/{session}/turns");
    let (status, body) = a.post(&turns, json!({"content": "on a"}));
    assert_eq!(status, 202, "{body}");
    let first = body["turn_id"].as_str().expect("turn").to_string();
    a.wait_all_completed(&session, &[first]);

    // B does not run it a second time: A holds the lease (renewed past its TTL).
    std::thread::sleep(LEASE_TTL + Duration::from_millis(500));
    let (status, body) = b.post(&turns, json!({"content": "on b"}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "owned_elsewhere", "{body}");
    assert_eq!(body["error"]["node"], "node-a", "{body}");

    let metrics = a
        .client()
        .get(format!("{}/metrics", node_a.base()))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        metrics.contains("troupe_node_info{node=\"node-a\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("troupe_leases_held 1"), "{metrics}");
    let (status, table) = a.get("/api/v1/admin/actors");
    assert_eq!(status, 200, "{table}");
    assert_eq!(table["registry"]["node_id"], "node-a", "{table}");
    assert_eq!(table["registry"]["leases_held"], 1, "{table}");

    // A shuts down gracefully and gives the lease up: B runs the session at once.
    assert!(node_a.terminate().success());
    let moved = Instant::now();
    let (status, body) = b.post(&turns, json!({"content": "on b"}));
    assert_eq!(status, 202, "{body}");
    assert!(
        moved.elapsed() < LEASE_TTL,
        "B waited for the lease to expire"
    );
    let second = body["turn_id"].as_str().expect("turn").to_string();
    b.wait_all_completed(&session, &[second]);
    let events = b.events(&session);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
}
