//! Clients of real `troupe serve --store nats://…` nodes for the multi-node tests: starting a
//! node, typed REST calls, a WebSocket follower. A test file includes it as `nodes`, next to
//! `external`, `nats_server` and `server_process`.
#![allow(dead_code)]

use super::nats_server::NatsServer;
use super::server_process::ServerProcess;
use serde_json::{json, Value};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

/// Short retries and no grace: the test never waits on production durations.
pub const ENV: &[(&str, &str)] = &[
    ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
    ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
    ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
];

/// The lease TTL the multi-node tests run with (whole seconds, as NATS counts them).
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// A node on `nats` with a data directory of its own, [`ENV`] and the test lease TTL.
pub fn start_node(nats: &NatsServer) -> (ServerProcess, tempfile::TempDir) {
    start_named_node(nats, None)
}

/// [`start_node`] with `--node-id`, when given.
pub fn start_named_node(
    nats: &NatsServer,
    node_id: Option<&str>,
) -> (ServerProcess, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let url = nats.url();
    let mut args = vec!["--store", url.as_str()];
    if let Some(id) = node_id {
        args.extend(["--node-id", id]);
    }
    let ttl = LEASE_TTL.as_millis().to_string();
    let mut env = ENV.to_vec();
    env.push(("TROUPE_CLUSTER__LEASE_TTL_MS", ttl.as_str()));
    let node = ServerProcess::start(data.path(), &args, &env);
    (node, data)
}

/// Typed REST calls against one node.
pub struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    pub fn of(node: &ServerProcess) -> Api {
        Api {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: node.base(),
        }
    }

    /// The HTTP client, for calls the helpers do not cover.
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn ready(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.base))
            .send()
            .map_or(0, |r| r.status().as_u16())
    }

    /// Every event of `session`, paging through the log.
    pub fn events(&self, session: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().expect("seq"));
            let (status, body) = self.get(&format!(
                "/api/v1/sessions/{session}/events?after_seq={after}&limit=500"
            ));
            assert_eq!(status, 200, "{body}");
            let page = body["events"].as_array().expect("events").clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    pub fn turns(&self, session: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/v1/sessions/{session}/turns"));
        assert_eq!(status, 200, "{body}");
        body["turns"].as_array().expect("turns").clone()
    }

    /// Waits until each of `turns` has a `turn.completed` in the log and every turn of the
    /// session completed (an interrupted one is re-queued as a new turn and runs again).
    pub fn wait_all_completed(&self, session: &str, turns: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events(session);
            let completed = |turn: &String| {
                events
                    .iter()
                    .any(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn.as_str())
            };
            let all_done = self
                .turns(session)
                .iter()
                .all(|t| t["status"] == "completed");
            if all_done && turns.iter().all(completed) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "turns did not complete: {:?}",
                self.turns(session)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready(&self, want: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ready() != want {
            assert!(Instant::now() < deadline, "/readyz never answered {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A WebSocket client on its own thread: subscribes to `session` and sends one turn, then
/// hands every frame it receives to the test.
pub fn follow_over_websocket(
    node: &ServerProcess,
    session: &str,
    content: &str,
) -> mpsc::Receiver<Value> {
    let url = format!("ws://{}/api/v1/ws", node.address);
    let (tx, rx) = mpsc::channel();
    let (session, content) = (session.to_string(), content.to_string());
    std::thread::spawn(move || {
        let (mut socket, _) = tungstenite::connect(url).expect("websocket");
        let frames = [
            json!({"type": "subscribe", "id": "s", "session_id": session, "after_seq": 0}),
            json!({"type": "send", "id": "t", "session_id": session, "content": content,
                   "options": {"script": {"chunk_delay_ms": 20}}}),
        ];
        for frame in frames {
            socket
                .send(tungstenite::Message::text(frame.to_string()))
                .expect("send frame");
        }
        // Ends when the node is killed (the socket errors) or the test hangs up.
        while let Ok(message) = socket.read() {
            if let tungstenite::Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).expect("json frame");
                if tx.send(frame).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

pub fn words(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}
