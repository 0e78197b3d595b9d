//! Any node serves any session: three real `troupe` nodes on one real `nats-server -js`. A
//! session runs on the node that holds its lease; the others forward its commands there and
//! follow its events from the stream.
//!
//! - A WebSocket on node C follows a session running on node A: every event, in order, no gap;
//!   REST sends to node B run in the same session, and the WebSocket sees their turns too.
//! - OpenAI chat requests with one `X-Session-Key`, spread over the nodes (in turn, then
//!   concurrently), run in one session and each gets its own answer.
//! - SSE on a node that does not own the session resumes after `after_seq` and sees every
//!   event once, the live ones too.
//! - `/metrics` on the forwarding nodes counts what they forwarded.
//! - When the owner dies (`kill -9`), a command to another node waits until the lease expired
//!   and lands once on the new owner; a follower on a third node carries on with no gap.
//! - A command the owner does not answer in time (`SIGSTOP`) is never sent again unless it is
//!   idempotent (`client_message_id`): the other one answers `internal`, "may or may not".

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_cluster.rs"]
mod nats_cluster;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use nats_cluster::{words, Cluster, Node};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

/// How long a test waits for what it expects.
const WAIT: Duration = Duration::from_secs(30);

/// Creates a session on `node` and runs a first turn there, so that `node` activates it and
/// holds its lease. Returns the session id and the turn id.
fn session_owned_by(node: &Node, key: &str, content: &str) -> (String, String) {
    let (status, body) = node.post("/api/v1/sessions", json!({"provider": "echo", "key": key}));
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_string();
    let (status, body) = node.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": content, "options": {"script": {"chunk_delay_ms": 10}}}),
    );
    assert_eq!(status, 202, "{body}");
    (session, body["turn_id"].as_str().expect("turn").to_string())
}

/// The node whose actor table lists `session` (admin routes are open without tokens).
fn actor_nodes<'a>(cluster: &'a Cluster, session: &str) -> Vec<&'a str> {
    cluster
        .nodes
        .iter()
        .filter(|node| {
            let (status, body) = node.get("/api/v1/admin/actors");
            assert_eq!(status, 200, "{body}");
            body["actors"]
                .as_array()
                .expect("actors")
                .iter()
                .any(|a| a["session_id"] == session)
        })
        .map(|node| node.id.as_str())
        .collect()
}

/// A WebSocket client on its own thread, subscribed to `session` after `after_seq`: hands
/// every event frame to the test.
fn follow_over_websocket(node: &Node, session: &str, after_seq: u64) -> mpsc::Receiver<Value> {
    let (url, session) = (node.ws_url(), session.to_string());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = tungstenite::connect(url).expect("websocket");
        let subscribe =
            json!({"type": "subscribe", "id": "s", "session_id": session, "after_seq": after_seq});
        socket
            .send(tungstenite::Message::text(subscribe.to_string()))
            .expect("subscribe");
        while let Ok(message) = socket.read() {
            if let tungstenite::Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).expect("json frame");
                if frame["type"] == "error" {
                    // The subscription ended (the session was deleted, or it failed): the
                    // test sees the channel close.
                    eprintln!("websocket subscription ended: {frame}");
                    return;
                }
                if frame["type"] == "event" && tx.send(frame).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Takes events from `frames` until each of `turns` completed; every seq once, in order,
/// right after `after_seq`.
fn events_until_completed(
    frames: &mpsc::Receiver<Value>,
    after_seq: u64,
    turns: &BTreeSet<String>,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<Value> = Vec::new();
    let mut completed = BTreeSet::new();
    while !turns.is_subset(&completed) {
        let frame = frames
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("turns did not complete; completed {completed:?}"));
        let seq = frame["seq"].as_u64().expect("seq");
        assert_eq!(
            seq,
            after_seq + seen.len() as u64 + 1,
            "in order, no gap, no duplicate"
        );
        if frame["kind"] == "turn.completed" {
            completed.insert(frame["turn_id"].as_str().expect("turn").to_string());
        }
        seen.push(frame);
    }
    seen
}

/// The same events, as the log has them: `seq`, `kind`, `turn_id` and `data` agree.
fn assert_same_as_log(seen: &[Value], log: &[Value]) {
    let by_seq: BTreeMap<u64, &Value> = log
        .iter()
        .map(|e| (e["seq"].as_u64().expect("seq"), e))
        .collect();
    for event in seen {
        let seq = event["seq"].as_u64().expect("seq");
        let stored = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("seq {seq} not in the log"));
        for field in ["kind", "turn_id", "data"] {
            assert_eq!(event[field], stored[field], "seq {seq}: {field}");
        }
    }
}

#[test]
fn a_websocket_on_node_c_follows_a_session_on_node_a_while_rest_on_node_b_sends_to_it() {
    let Some(cluster) = Cluster::start("nats_any_node_serves_any_session_ws", 3) else {
        return;
    };
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (session, first) = session_owned_by(a, "followed", &words(30, "first"));
    assert_eq!(actor_nodes(&cluster, &session), vec![a.id.as_str()]);

    let frames = follow_over_websocket(c, &session, 0);
    let mut turns = BTreeSet::from([first]);
    for n in 0..3 {
        let (status, body) = b.post(
            &format!("/api/v1/sessions/{session}/turns"),
            json!({"content": words(5, &format!("from-b{n}-"))}),
        );
        assert_eq!(status, 202, "{body}");
        turns.insert(body["turn_id"].as_str().expect("turn").to_string());
    }
    let seen = events_until_completed(&frames, 0, &turns);
    assert_eq!(seen[0]["kind"], "session.created");
    // The WebSocket saw B's turns run, with their content, in A's session.
    for n in 0..3 {
        let tag = format!("from-b{n}-0");
        assert!(
            seen.iter()
                .any(|e| e["kind"] == "message.delta" && e["data"].to_string().contains(&tag)),
            "B's turn {n} ran in the session"
        );
    }
    assert_same_as_log(&seen, &a.events(&session));
    // Reads forwarded from B and C answer what A has.
    let (_, on_a) = a.get(&format!("/api/v1/sessions/{session}/turns"));
    for node in [b, c] {
        let (status, turns) = node.get(&format!("/api/v1/sessions/{session}/turns"));
        assert_eq!(status, 200, "{turns}");
        assert_eq!(turns["turns"], on_a["turns"], "{}", node.id);
    }
    // Only A runs the session; B counted the sends it forwarded, A the ones it served.
    assert_eq!(actor_nodes(&cluster, &session), vec![a.id.as_str()]);
    assert!(b.metric("troupe_forwarded_requests_total{op=\"send\"}") >= 3.0);
    assert!(c.metric("troupe_remote_follows_total") >= 1.0);
    assert!(a.metric("troupe_forwards_served_total") >= 3.0);
    assert_eq!(
        a.metric("troupe_forwarded_requests_total{op=\"send\"}"),
        0.0
    );
}

/// One chat completion on `node` in the session `key` names: its session id and answer.
fn chat(node: &Node, key: &str, content: &str) -> (String, String) {
    let resp = node
        .client()
        .post(format!("{}/v1/chat/completions", node.base))
        .header("X-Session-Key", key)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": content}]}))
        .send()
        .expect("POST /v1/chat/completions");
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("X-Session-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = resp.json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "{}: {body}", node.id);
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    (session, answer)
}

#[test]
fn openai_requests_with_one_session_key_over_three_nodes_run_in_one_session() {
    let Some(cluster) = Cluster::start("nats_any_node_serves_any_session_openai", 3) else {
        return;
    };
    let key = "shared-chat";
    let mut sessions = BTreeSet::new();
    // In turn over the nodes…
    for n in 0..6 {
        let node = &cluster.nodes[n % 3];
        let content = format!("in turn {n} via {}", node.id);
        let (session, answer) = chat(node, key, &content);
        assert_eq!(answer, content, "each request gets its own answer");
        sessions.insert(session);
    }
    // …then concurrently, two requests per node.
    let answers: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|n| {
                let node = &cluster.nodes[n % 3];
                scope.spawn(move || {
                    let content = format!("at once {n} via {}", node.id);
                    let (session, answer) = chat(node, key, &content);
                    (session, answer, content)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    for (session, answer, content) in answers {
        assert_eq!(answer, content, "each request gets its own answer");
        sessions.insert(session);
    }
    assert_eq!(sessions.len(), 1, "one session: {sessions:?}");
    let session = sessions.into_iter().next().expect("a session");
    assert_eq!(actor_nodes(&cluster, &session).len(), 1, "one node runs it");
    // Every request was one turn of that session, each completed once.
    let events = cluster.nodes[0].events(&session);
    let accepted = events
        .iter()
        .filter(|e| e["kind"] == "turn.accepted")
        .count();
    let completed = events
        .iter()
        .filter(|e| e["kind"] == "turn.completed")
        .count();
    assert_eq!((accepted, completed), (12, 12));
    let forwarded: f64 = cluster
        .nodes
        .iter()
        .map(|n| n.metric("troupe_forwarded_requests_total{op=\"send\"}"))
        .sum();
    assert!(
        forwarded >= 8.0,
        "the two nodes that do not own it forwarded their sends"
    );
}

/// An SSE stream of `session` on `node` after `after_seq`, read on its own thread: each event
/// frame's `(seq, data)`, and the closing frame's data with seq 0.
fn follow_over_sse(node: &Node, session: &str, after_seq: u64) -> mpsc::Receiver<(u64, Value)> {
    let url = format!(
        "{}/api/v1/sessions/{session}/events/stream?after_seq={after_seq}",
        node.base
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(url)
            .send()
            .expect("GET stream");
        assert_eq!(resp.status().as_u16(), 200);
        let mut seq = None;
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { return };
            if let Some(id) = line.strip_prefix("id: ") {
                seq = id.trim().parse().ok();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let Ok(data) = serde_json::from_str(data) else {
                    continue;
                };
                let seq = seq.take().unwrap_or(0);
                if tx.send((seq, data)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn sse_on_a_node_that_does_not_own_the_session_resumes_after_seq_and_sees_every_event_once() {
    let Some(cluster) = Cluster::start("nats_any_node_serves_any_session_sse", 3) else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (session, first) = session_owned_by(a, "streamed", &words(20, "first"));
    let frames = follow_over_websocket(a, &session, 0);
    let before = events_until_completed(&frames, 0, &BTreeSet::from([first]));
    let resume_after = before.len() as u64 / 2;

    let stream = follow_over_sse(b, &session, resume_after);
    let (status, body) = a.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": words(20, "live"), "options": {"script": {"chunk_delay_ms": 10}}}),
    );
    assert_eq!(status, 202, "{body}");
    let live_turn = body["turn_id"].as_str().expect("turn").to_string();
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let (seq, event) = stream
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the live turn's events over SSE");
        assert_eq!(
            seq,
            resume_after + seen.len() as u64 + 1,
            "every event once"
        );
        assert_eq!(event["seq"], seq);
        let done = event["kind"] == "turn.completed" && event["turn_id"] == live_turn.as_str();
        seen.push(event);
        if done {
            break;
        }
    }
    assert!(
        seen.len() as u64 > before.len() as u64 - resume_after,
        "replay and live"
    );
    assert_same_as_log(&seen, &a.events(&session));
    assert_eq!(actor_nodes(&cluster, &session), vec![a.id.as_str()]);
    assert!(b.metric("troupe_remote_follows_total") >= 1.0);

    // Deleted through a third node (forwarded to A): B's stream ends `deleted`, as on A.
    let c = &cluster.nodes[2];
    let resp = c
        .client()
        .delete(format!("{}/api/v1/sessions/{session}", c.base))
        .send()
        .expect("DELETE");
    assert!(resp.status().is_success(), "{}", resp.status());
    // The events after the turn's completion (its usage update) come first.
    let closed = loop {
        let (seq, frame) = stream.recv_timeout(WAIT).expect("the stream closes");
        if seq == 0 {
            break frame;
        }
        assert_eq!(
            seq,
            resume_after + seen.len() as u64 + 1,
            "every event once"
        );
        seen.push(frame);
    };
    assert_eq!(closed["reason"], "deleted", "{closed}");
    assert!(c.metric("troupe_forwarded_requests_total{op=\"delete\"}") >= 1.0);
}

#[test]
fn when_the_owner_dies_commands_wait_for_its_lease_and_followers_carry_on() {
    let Some(mut cluster) = Cluster::start("nats_any_node_serves_any_session_owner_dies", 3) else {
        return;
    };
    let (session, first) = session_owned_by(&cluster.nodes[0], "orphaned", &words(10, "first"));
    let frames = follow_over_websocket(&cluster.nodes[2], &session, 0);
    let before = events_until_completed(&frames, 0, &BTreeSet::from([first]));
    let owner = cluster.nodes.remove(0);
    let nats_cluster::Node { process, .. } = owner;
    process.kill9();

    // B's send finds A's lease, nobody answering for A, and waits until the lease expired
    // and the session is B's (or C's): the send is accepted once, not refused.
    let (b, c) = (&cluster.nodes[0], &cluster.nodes[1]);
    let started = Instant::now();
    let (status, body) = b.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": words(5, "after-death")}),
    );
    let waited = started.elapsed();
    assert_eq!(status, 202, "{body}");
    let ttl = nodes::LEASE_TTL;
    assert!(waited <= ttl + Duration::from_secs(2), "waited {waited:?}");
    let turn = body["turn_id"].as_str().expect("turn").to_string();

    // The WebSocket on C never stopped: the new owner's events follow the old owner's.
    let after = events_until_completed(&frames, before.len() as u64, &BTreeSet::from([turn]));
    assert_same_as_log(&after, &c.events(&session));
    let runs = actor_nodes(&cluster, &session);
    assert_eq!(runs.len(), 1, "one node runs it now: {runs:?}");
    let accepted = c
        .events(&session)
        .iter()
        .filter(|e| e["kind"] == "turn.accepted")
        .count();
    assert_eq!(accepted, 2, "the send was accepted once");
}

/// Sends SIGSTOP or SIGCONT to `node`.
fn signal(node: &Node, signal: &str) {
    let pid = node.process.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn a_send_the_owner_does_not_answer_in_time_is_never_sent_twice_unless_it_is_idempotent() {
    let env = [("TROUPE_CLUSTER__REQUEST_TIMEOUT_SECS", "1")];
    let Some(cluster) = Cluster::start_with("nats_any_node_serves_any_session_stalled", 2, &env)
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (session, first) = session_owned_by(a, "stalled", &words(5, "first"));
    let frames = follow_over_websocket(b, &session, 0);
    let before = events_until_completed(&frames, 0, &BTreeSet::from([first]));
    signal(a, "-STOP");

    // No answer in time: a send without a client_message_id may have been applied; it is
    // not sent again, and the client is told so.
    let turns = format!("/api/v1/sessions/{session}/turns");
    let started = Instant::now();
    let (status, body) = b.post(&turns, json!({"content": "maybe"}));
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("may or may not")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "one timeout, no resend"
    );

    // With a client_message_id it is sent again until it lands: A's lease expires while it is
    // stopped, and B takes the session over.
    let (status, body) = b.post(
        &turns,
        json!({"content": "surely", "client_message_id": "once"}),
    );
    assert_eq!(status, 202, "{body}");
    let surely = body["turn_id"].as_str().expect("turn").to_string();
    signal(a, "-CONT");
    let seen = events_until_completed(
        &frames,
        before.len() as u64,
        &BTreeSet::from([surely.clone()]),
    );
    let log = b.events(&session);
    assert_same_as_log(&seen, &log);
    let accepted: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "turn.accepted")
        .collect();
    // The first send never ran (A was stopped, then fenced): only `first` and `surely`.
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(accepted[1]["turn_id"], surely.as_str());
    assert_eq!(actor_nodes(&cluster, &session), vec![b.id.as_str()]);
}
