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
#[path = "support/server_process.rs"]
mod server_process;

use nats_server::NatsServer;
use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

/// Short retries and no grace: the test never waits on production durations.
const ENV: &[(&str, &str)] = &[
    ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
    ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
    ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
];

fn start_node(nats: &NatsServer) -> (ServerProcess, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let url = nats.url();
    let node = ServerProcess::start(data.path(), &["--store", &url], ENV);
    (node, data)
}

/// Typed REST calls against one node.
struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn of(node: &ServerProcess) -> Api {
        Api {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: node.base(),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn ready(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.base))
            .send()
            .map_or(0, |r| r.status().as_u16())
    }

    /// Every event of `session`, paging through the log.
    fn events(&self, session: &str) -> Vec<Value> {
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

    fn turns(&self, session: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/v1/sessions/{session}/turns"));
        assert_eq!(status, 200, "{body}");
        body["turns"].as_array().expect("turns").clone()
    }

    /// Waits until each of `turns` has a `turn.completed` in the log and every turn of the
    /// session completed (an interrupted one is re-queued as a new turn and runs again).
    fn wait_all_completed(&self, session: &str, turns: &[String]) {
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

    fn wait_ready(&self, want: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ready() != want {
            assert!(Instant::now() < deadline, "/readyz never answered {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A WebSocket client on its own thread: subscribes to `session` and sends one turn, then
/// hands every frame it receives to the test.
fn follow_over_websocket(
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

fn words(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

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

    // Another node on the same NATS, with a data directory of its own.
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
