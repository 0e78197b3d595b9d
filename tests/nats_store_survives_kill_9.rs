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
use nodes::{start_node, Api, TurnsInFlight, LEASE_TTL};
use serde_json::json;
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
    let mut turns = TurnsInFlight::start(&node, &api, &session, 300, 20);
    node.kill9();
    turns.drain_after_kill();
    let TurnsInFlight { accepted, seen, .. } = turns;

    // Another node on the same NATS, with a data directory of its own: it finds the session
    // at once (from the store) and runs it once the dead node's lease expired.
    let (node, _data2) = start_node(&nats);
    let api = Api::of(&node);
    api.wait_ready(200);
    let (status, body) = api.post(
        "/api/v1/sessions",
        json!({"provider": "echo", "key": "survivor"}),
    );
    assert_eq!(
        (status, body["session"]["id"].as_str()),
        (200, Some(session.as_str())),
        "{body}"
    );
    api.wait_owned(&session, LEASE_TTL + Duration::from_secs(5));
    api.wait_all_completed(&session, &accepted);

    let events = api.check_recovered(&session, &accepted, &seen);

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
