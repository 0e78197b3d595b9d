//! Two real `troupe serve --store nats://…` nodes on one real `nats-server -js`: a session
//! runs on the node that activated it, which holds its lease; the other node forwards what it
//! gets for the session to that node instead of activating it a second time. Operators see
//! the node id and the leases held in `/metrics` and the actor table. When the owner shuts
//! down gracefully it gives its leases up, and the other node runs the session at once,
//! without waiting for the lease to expire; so does a node whose session passivates.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use nodes::{start_named_node, start_node_with, Api, LEASE_TTL};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_session_runs_on_one_node_and_moves_when_its_owner_shuts_down() {
    let Some(nats) = NatsServer::start("nats_one_node_runs_a_session") else {
        return;
    };
    let (node_a, _data_a) = start_named_node(&nats, Some("node-a"));
    let (node_b, _data_b) = start_node_with(
        &nats,
        Some("node-b"),
        &[("TROUPE_RUNTIME__IDLE_PASSIVATE_SECS", "1")],
    );
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

    // B does not run it a second time: A holds the lease (renewed past its TTL), and B
    // forwards the send to A, which runs it.
    std::thread::sleep(LEASE_TTL + Duration::from_millis(500));
    let (status, body) = b.post(&turns, json!({"content": "via b"}));
    assert_eq!(status, 202, "{body}");
    let forwarded = body["turn_id"].as_str().expect("turn").to_string();
    a.wait_all_completed(&session, &[forwarded]);
    let (status, table) = b.get("/api/v1/admin/actors");
    assert_eq!(status, 200, "{table}");
    assert_eq!(table["actors"].as_array().map(Vec::len), Some(0), "{table}");
    assert_eq!(table["registry"]["forwarded_requests"], 1, "{table}");

    let metrics = metrics_of(&a, &node_a);
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

    // Idle on B, the session passivates and its lease goes with it: C runs it at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics_of(&b, &node_b).contains("troupe_leases_held 0") {
        assert!(Instant::now() < deadline, "B never passivated the session");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (node_c, _data_c) = start_named_node(&nats, Some("node-c"));
    let c = Api::of(&node_c);
    c.wait_ready(200);
    let moved = Instant::now();
    let (status, body) = c.post(&turns, json!({"content": "on c"}));
    assert_eq!(status, 202, "{body}");
    assert!(moved.elapsed() < LEASE_TTL, "C waited for the lease");
    let third = body["turn_id"].as_str().expect("turn").to_string();
    c.wait_all_completed(&session, &[third]);
    let events = c.events(&session);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
}

fn metrics_of(api: &Api, node: &server_process::ServerProcess) -> String {
    api.client()
        .get(format!("{}/metrics", node.base()))
        .send()
        .and_then(|r| r.text())
        .expect("metrics")
}

/// A node starting next to another on one machine reaps the agent processes a dead server left
/// behind, never those of a session another node runs: a fake `claude` that hangs keeps
/// running on A while B starts on the same NATS.
#[test]
fn a_starting_node_leaves_the_agents_of_another_nodes_sessions_alone() {
    let Some(nats) = NatsServer::start("nats_one_node_runs_a_session_agents") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids.json");
    let fake = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_clis/claude");
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.fake]\nkind = \"claude-cli\"\ncommand = \"{}\"\nenv = {{ FAKE_PIDS = \"{}\" }}\n",
            fake.display(),
            pids.display()
        ),
    )
    .expect("write config");
    let url = nats.url();
    let ttl = LEASE_TTL.as_millis().to_string();
    let start = |name: &str| {
        let data = tempfile::tempdir().expect("temp dir");
        let args = [
            "--config",
            config.to_str().expect("utf-8 path"),
            "--store",
            url.as_str(),
            "--node-id",
            name,
        ];
        let env = [("TROUPE_CLUSTER__LEASE_TTL_MS", ttl.as_str())];
        (
            server_process::ServerProcess::start(data.path(), &args, &env),
            data,
        )
    };
    let (node_a, _data_a) = start("node-a");
    let a = Api::of(&node_a);
    a.wait_ready(200);
    let (status, body) = a.post("/api/v1/sessions", json!({"provider": "fake"}));
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();
    let (status, body) = a.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": "spawn"}),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (agent, grandchild) = loop {
        if let Some(v) = std::fs::read_to_string(&pids)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        {
            let pid = |key: &str| v[key].as_i64().expect("pid") as i32;
            break (pid("pid"), pid("grandchild"));
        }
        assert!(Instant::now() < deadline, "the agent never started");
        std::thread::sleep(Duration::from_millis(20));
    };

    let (node_b, _data_b) = start("node-b");
    Api::of(&node_b).wait_ready(200);
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(
        alive(agent) && alive(grandchild),
        "node B's startup killed node A's agent"
    );
    assert!(a.runs(&session));
    let (_, table) = a.get("/api/v1/admin/actors");
    let row = table["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .find(|row| row["session_id"] == session.as_str())
        .cloned()
        .expect("A's row");
    assert_eq!(row["run"]["pid"], agent, "{row}");
    // The agent's group outlives nothing of the test.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    );
}
