//! Clients of real `troupe serve --store nats://…` nodes for the multi-node tests: starting a
//! node, typed REST calls, a WebSocket follower. A test file includes it as `nodes`, next to
//! `external`, `nats_server` and `server_process`.
#![allow(dead_code)]

use super::nats_server::NatsServer;
use super::server_process::ServerProcess;
use serde_json::{json, Value};
use std::collections::BTreeMap;
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
    start_node_with(nats, node_id, &[])
}

/// [`start_named_node`] with more environment (configuration overrides).
pub fn start_node_with(
    nats: &NatsServer,
    node_id: Option<&str>,
    extra_env: &[(&str, &str)],
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
    env.extend_from_slice(extra_env);
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
                // Longer than a forwarded request's own timeout, so its answer is seen.
                .timeout(Duration::from_secs(30))
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
        self.events_after(session, 0)
    }

    /// Every event of `session` after `after_seq`, paging through the log (a client resuming).
    pub fn events_after(&self, session: &str, after_seq: u64) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out
                .last()
                .map_or(after_seq, |e| e["seq"].as_u64().expect("seq"));
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

    /// Whether this node runs `session` now (a live actor in its actor table).
    pub fn runs(&self, session: &str) -> bool {
        let (status, table) = self.get("/api/v1/admin/actors");
        assert_eq!(status, 200, "{table}");
        table["actors"]
            .as_array()
            .expect("actors")
            .iter()
            .any(|row| row["session_id"] == session)
    }

    /// Waits until this node runs `session` (its owner's lease expired and this node took it
    /// over).
    pub fn wait_owned(&self, session: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.runs(session) {
            assert!(Instant::now() < deadline, "never took {session} over");
            std::thread::sleep(Duration::from_millis(20));
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

    /// After a kill: the log of `session` is gapless; every event a client was shown
    /// (`seen`, by seq) is there unchanged; every accepted turn completed exactly once, the
    /// one that ran at the kill `interrupted` and then run again as a new turn with its
    /// content. Answers the log.
    pub fn check_recovered(
        &self,
        session: &str,
        accepted: &[String],
        seen: &BTreeMap<u64, Value>,
    ) -> Vec<Value> {
        let events = self.events(session);
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
        for (seq, shown) in seen {
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
        let turns = self.turns(session);
        let content_of = |id: &str| {
            turns
                .iter()
                .find(|t| t["turn_id"] == id)
                .map(|t| t["content"].clone())
                .expect("a listed turn")
        };
        let mut interrupted = 0;
        for turn in accepted {
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
        events
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

/// A long turn sent over a WebSocket that follows the session from seq 0, and two queued
/// turns sent over REST: what a client was told and shown until a node is killed.
pub struct TurnsInFlight {
    /// The WebSocket's frames.
    pub frames: mpsc::Receiver<Value>,
    /// The accepted turns, the long one first.
    pub accepted: Vec<String>,
    /// The events the client was shown, by seq.
    pub seen: BTreeMap<u64, Value>,
}

impl TurnsInFlight {
    /// Sends a turn of `words` words on `node` (echo: a chunk per two words, `chunk_delay_ms`
    /// apart) and two queued ones, and returns once `deltas` of its deltas were shown.
    pub fn start(
        node: &ServerProcess,
        api: &Api,
        session: &str,
        words_in_turn: usize,
        deltas: usize,
    ) -> TurnsInFlight {
        let frames = follow_over_websocket(node, session, &words(words_in_turn, "long"));
        let mut accepted = Vec::new();
        let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut queued_sent = false;
        while !queued_sent
            || seen
                .values()
                .filter(|e| e["kind"] == "message.delta")
                .count()
                < deltas
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
        TurnsInFlight {
            frames,
            accepted,
            seen,
        }
    }

    /// After the node was killed: whatever the socket still had on its way was shown to the
    /// client too.
    pub fn drain_after_kill(&mut self) {
        while let Ok(frame) = self.frames.recv_timeout(Duration::from_millis(200)) {
            if frame["type"] == "event" {
                self.seen.insert(frame["seq"].as_u64().expect("seq"), frame);
            }
        }
    }

    /// The highest seq the client was shown.
    pub fn last_seen(&self) -> u64 {
        self.seen.keys().next_back().copied().unwrap_or(0)
    }
}
