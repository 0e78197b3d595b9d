//! Two real `troupe serve --store nats://…` nodes on one real `nats-server -js`, 2 s lease TTL.
//! The node running a turn is paused (`SIGSTOP`) past the TTL; the other node takes the session
//! over and runs the interrupted turn again; then the paused node resumes (`SIGCONT`) with its
//! attempt's output still on its way. It cannot append: it stops the session (counted in
//! `troupe_lease_renew_failures_total`), the store refuses any write it still makes, and it
//! forwards what it gets for the session to the new owner from then on. The log stays
//! gapless, nothing of the interrupted turn follows its `turn.completed`, and every turn
//! completes exactly once.
//!
//! And when NATS itself is away (paused) past the TTL, the owner stops its session on its own
//! (it cannot renew), and once NATS is back a node takes the session over with the usual
//! recovery.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use nodes::{start_named_node, words, Api, LEASE_TTL};
use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn signal(node: &ServerProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {name}");
}

fn deltas(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| e["kind"] == "message.delta")
        .count()
}

#[test]
fn a_paused_owner_resumes_after_a_takeover_and_cannot_append() {
    let Some(nats) = NatsServer::start("nats_paused_owner_cannot_append") else {
        return;
    };
    let (node_a, _data_a) = start_named_node(&nats, Some("node-a"));
    let (node_b, _data_b) = start_named_node(&nats, Some("node-b"));
    let (a, b) = (Api::of(&node_a), Api::of(&node_b));
    a.wait_ready(200);
    b.wait_ready(200);
    let (status, body) = a.post("/api/v1/sessions", json!({"provider": "echo"}));
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();
    let turns = format!("/api/v1/sessions/{session}/turns");

    // A long turn (100 chunks, 40 ms apart) and one queued behind it, running on A.
    let mut accepted = Vec::new();
    for body in [
        json!({"content": words(200, "long"), "options": {"script": {"chunk_delay_ms": 40}}}),
        json!({"content": words(10, "queued")}),
    ] {
        let (status, answer) = a.post(&turns, body);
        assert_eq!(status, 202, "{answer}");
        accepted.push(answer["turn_id"].as_str().expect("turn").to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while deltas(&a.events(&session)) < 10 {
        assert!(Instant::now() < deadline, "the long turn never ran");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Paused past the TTL: B takes over and runs the interrupted turn again.
    let seen: BTreeMap<u64, Value> = a
        .events(&session)
        .into_iter()
        .map(|e| (e["seq"].as_u64().expect("seq"), e))
        .collect();
    signal(&node_a, "-STOP");
    b.wait_owned(&session, LEASE_TTL + Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(20);
    while deltas(&b.events(&session)) < deltas(&seen.values().cloned().collect::<Vec<_>>()) + 10 {
        assert!(Instant::now() < deadline, "B never ran the turn again");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A resumes with its attempt's output on its way: it stops instead of appending.
    signal(&node_a, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = a
            .client()
            .get(format!("{}/metrics", node_a.base()))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        if metrics.contains("troupe_lease_renew_failures_total 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never stopped the session: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A now forwards what it gets for the session to B, which runs it.
    let (status, body) = a.post(&turns, json!({"content": "on a again"}));
    assert_eq!(status, 202, "{body}");
    accepted.push(body["turn_id"].as_str().expect("turn").to_string());

    b.wait_all_completed(&session, &accepted);
    let events = b.check_recovered(&session, &accepted, &seen);
    let long = &accepted[0];
    let ended = events
        .iter()
        .position(|e| e["kind"] == "turn.completed" && e["turn_id"] == long.as_str())
        .expect("the long turn completed");
    assert_eq!(events[ended]["data"]["outcome"], "interrupted");
    assert!(
        events[ended + 1..]
            .iter()
            .all(|e| e["turn_id"] != long.as_str()),
        "the paused node appended to a turn that had ended"
    );
}

#[test]
fn an_owner_that_cannot_reach_nats_stops_its_session_and_it_is_taken_over() {
    let Some(nats) = NatsServer::start("nats_paused_owner_cannot_append_nats") else {
        return;
    };
    let (node_a, _data_a) = start_named_node(&nats, Some("node-a"));
    let (node_b, _data_b) = start_named_node(&nats, Some("node-b"));
    let (a, b) = (Api::of(&node_a), Api::of(&node_b));
    a.wait_ready(200);
    b.wait_ready(200);
    let (status, body) = a.post("/api/v1/sessions", json!({"provider": "echo"}));
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();
    let (status, answer) = a.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": words(200, "long"), "options": {"script": {"chunk_delay_ms": 40}}}),
    );
    assert_eq!(status, 202, "{answer}");
    let accepted = vec![answer["turn_id"].as_str().expect("turn").to_string()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while deltas(&a.events(&session)) < 10 {
        assert!(Instant::now() < deadline, "the long turn never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen: BTreeMap<u64, Value> = a
        .events(&session)
        .into_iter()
        .map(|e| (e["seq"].as_u64().expect("seq"), e))
        .collect();

    nats.signal("-STOP");
    std::thread::sleep(LEASE_TTL + Duration::from_millis(500));
    nats.signal("-CONT");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = a
            .client()
            .get(format!("{}/metrics", node_a.base()))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        if metrics.contains("troupe_lease_renew_failures_total 1") {
            break;
        }
        assert!(Instant::now() < deadline, "A never stopped: {metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whichever node is first takes it over.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.runs(&session) || b.runs(&session)) {
        assert!(Instant::now() < deadline, "nobody took the session over");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.wait_all_completed(&session, &accepted);
    b.check_recovered(&session, &accepted, &seen);
}
