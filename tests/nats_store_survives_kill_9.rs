//! The real `troupe serve --store nats://…` against a real `nats-server -js`: a session runs
//! echo turns over REST and WebSocket, the node is killed with `kill -9` mid-turn, and a new
//! node on the same NATS (another data directory: nothing of it is local) carries on. Nothing
//! acknowledged is lost, every event a client saw is there with the same content at the same
//! seq, every accepted turn ends with exactly one `turn.completed`, and the interrupted turn
//! runs again. Then NATS itself restarts: readiness is 503 while it is away and 200 after, and
//! everything is still there.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use nodes::{follow_over_websocket, start_node, words, Api, LEASE_TTL};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn a_node_killed_mid_turn_loses_nothing_and_another_node_carries_on() {
    let Some(mut nats) = NatsServer::start("nats_store_survives_kill_9") else {
        return;
    };
    let (node, _data) = start_node(&nats);
    let api = Api::of(&node);
    api.wait_ready(200);
    let (status, body) = api.post(
        "/api/v1/sessions",
        json!({"provider": "echo", "key": "survivor"}),
    );
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();

    // A long turn over the WebSocket (150 chunks, 20 ms apart) and two queued over REST.
    let frames = follow_over_websocket(&node, &session, &words(300, "long"));
    let mut accepted = Vec::new();
    let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut queued_sent = false;
    while seen
        .values()
        .filter(|e| e["kind"] == "message.delta")
        .count()
        < 20
    {
        let frame = frames
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("events over the WebSocket");
        match frame["type"].as_str() {
            Some("ack") => accepted.push(
                frame["result"]["turn_id"]
                    .as_str()
                    .expect("turn")
                    .to_string(),
            ),
            Some("event") => {
                let seq = frame["seq"].as_u64().expect("seq");
                assert!(
                    seen.insert(seq, frame).is_none(),
                    "seq {seq} delivered twice"
                );
            }
            _ => {}
        }
        if !queued_sent && !accepted.is_empty() {
            for n in 0..2 {
                let (status, body) = api.post(
                    &format!("/api/v1/sessions/{session}/turns"),
                    json!({"content": words(10, &format!("queued{n}-"))}),
                );
                assert_eq!(status, 202, "{body}");
                accepted.push(body["turn_id"].as_str().expect("turn").to_string());
            }
            queued_sent = true;
        }
    }
    node.kill9();
    // Whatever the socket still had on its way was shown to the client too.
    while let Ok(frame) = frames.recv_timeout(Duration::from_millis(200)) {
        if frame["type"] == "event" {
            seen.insert(frame["seq"].as_u64().expect("seq"), frame);
        }
    }

    // Another node on the same NATS, with a data directory of its own. Until the dead node's
    // lease expires the session is its own; then the new node takes it over.
    let (node, _data2) = start_node(&nats);
    let api = Api::of(&node);
    api.wait_ready(200);
    let deadline = Instant::now() + LEASE_TTL + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = api.post(
            "/api/v1/sessions",
            json!({"provider": "echo", "key": "survivor"}),
        );
        if body["error"]["code"] != "owned_elsewhere" || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (status, body["session"]["id"].as_str()),
        (200, Some(session.as_str())),
        "{body}"
    );
    api.wait_all_completed(&session, &accepted);

    let events = api.events(&session);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the log is gapless"
    );
    let by_seq: BTreeMap<u64, &Value> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap_or(0), e))
        .collect();
    for (seq, shown) in &seen {
        let stored = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("seq {seq} was shown, then lost"));
        for field in ["kind", "data", "turn_id", "ts"] {
            assert_eq!(
                stored[field], shown[field],
                "seq {seq}: {field} changed after the kill"
            );
        }
    }
    // Exactly one completion per accepted turn; the interrupted one was re-queued as a new
    // turn with the same content, which ran to the end.
    let turns = api.turns(&session);
    let content_of = |id: &str| {
        turns
            .iter()
            .find(|t| t["turn_id"] == id)
            .map(|t| t["content"].clone())
            .expect("a listed turn")
    };
    let mut interrupted = 0;
    for turn in &accepted {
        let outcomes: Vec<&str> = events
            .iter()
            .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn.as_str())
            .map(|e| e["data"]["outcome"].as_str().unwrap_or("?"))
            .collect();
        match outcomes.as_slice() {
            ["success"] => {}
            ["interrupted"] => {
                interrupted += 1;
                let content = content_of(turn);
                assert!(
                    turns.iter().any(|t| t["turn_id"] != turn.as_str()
                        && t["content"] == content
                        && t["outcome"] == "success"),
                    "turn {turn} was interrupted and never ran again"
                );
            }
            other => panic!("turn {turn}: completions {other:?}"),
        }
    }
    assert_eq!(
        interrupted, 1,
        "the turn running at the kill ended interrupted"
    );
    let completions = events
        .iter()
        .filter(|e| e["kind"] == "turn.completed")
        .count();
    assert_eq!(completions, turns.len(), "one turn.completed per turn");

    // NATS restarts: readiness follows it, and everything is still there after.
    nats.kill();
    api.wait_ready(503);
    nats.restart();
    api.wait_ready(200);
    assert_eq!(
        api.events(&session),
        events,
        "the log survived the NATS restart"
    );
    let (status, body) = api.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": "after the restart"}),
    );
    assert_eq!(status, 202, "{body}");
    let last = body["turn_id"].as_str().expect("turn").to_string();
    api.wait_all_completed(&session, &[last]);
    let after = api.events(&session);
    assert!(after.len() > events.len());
    assert_eq!(&after[..events.len()], &events[..]);
}

/// `--store` that names no store, or a NATS server that is not there: the node refuses to
/// start and says why, instead of serving without its store.
#[test]
fn a_node_without_its_store_refuses_to_start_and_says_why() {
    let data = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = format!("nats://127.0.0.1:{port}");
    for (store, says) in [
        ("bogus", "expected sled, memory or a NATS URL"),
        (nowhere.as_str(), "connecting to NATS"),
    ] {
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .args(["serve", "--bind", "127.0.0.1:0", "--store", store, "--data"])
            .arg(data.path())
            .output()
            .expect("run troupe");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{store}: the node must not start");
        assert!(stderr.contains(says), "{store}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{store}: refused in time"
        );
    }
}
