//! `GET /api/v1/ws` over real sockets: subscriptions with replay and resume, the owner feed,
//! lagging consumers, bad frames, size limit, heartbeat, auth, and a fuzz of text frames.

use crate::helpers::*;
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use troupe::actors::{NewSession, SendTurn, SessionHandle};
use troupe::config::{Secret, TokenConfig};
use troupe::routes::ws::WsMetrics;

/// How long a test waits for one frame before it calls the server stuck.
const FRAME_WAIT: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test's WebSocket client: JSON frames in and out; events that arrive while it waits for an
/// answer are kept for [`Client::next_event`].
struct Client {
    socket: Socket,
    events: VecDeque<Value>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
enum Ended {
    /// A close frame with this code and reason.
    Closed(u16, String),
    /// The stream ended (or failed) without a close frame.
    Dropped,
}

impl Client {
    async fn connect(app: &TestApp) -> Client {
        Client::connect_to(&ws_url(app, "")).await
    }

    async fn connect_to(url: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client {
            socket,
            events: VecDeque::new(),
        }
    }

    /// Connects over a socket with a tiny receive buffer, so a client that stops reading
    /// pushes back on the server after a few kilobytes.
    async fn connect_small_buffer(app: &TestApp) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(app.address).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            ws_url(app, ""),
            MaybeTlsStream::Plain(stream),
            None,
        )
        .await
        .expect("websocket connects");
        Client {
            socket,
            events: VecDeque::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("send frame");
    }

    /// The next JSON frame; pings and pongs are skipped (tungstenite answers pings itself).
    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame reads");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends a request and returns its answer (the frame echoing `id`); events in between are
    /// kept.
    async fn request(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        self.send(frame).await;
        loop {
            let answer = self.recv().await;
            if answer["type"] == "event" {
                self.events.push_back(answer);
            } else if answer["id"] == id {
                return answer;
            } else {
                panic!("unexpected frame {answer} while waiting for {id}");
            }
        }
    }

    /// The next event frame.
    async fn next_event(&mut self) -> Value {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        let frame = self.recv().await;
        assert_eq!(frame["type"], "event", "expected an event, got {frame}");
        frame
    }

    /// Events up to and including the `turn.completed` of the turn.
    async fn events_until_completed(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = event["kind"] == "turn.completed";
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Reads until the connection ends and says how.
    async fn ended(&mut self) -> Ended {
        loop {
            let next = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("the connection ends in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ended::Closed(u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return Ended::Closed(1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }

    async fn subscribe(&mut self, session: &SessionHandle, after_seq: u64) -> Value {
        let answer = self
            .request(
                json!({"type": "subscribe", "id": "sub", "session_id": session.id(),
                            "after_seq": after_seq}),
            )
            .await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
        answer
    }
}

/// `ws://…/api/v1/ws` with `query` appended.
fn ws_url(app: &TestApp, query: &str) -> String {
    format!("ws://{}/api/v1/ws{query}", app.address)
}

/// A fresh echo session of `owner`, made through the runtime.
async fn session_of(app: &TestApp, owner: &str) -> SessionHandle {
    let (handle, created) = app
        .runtime
        .get_or_create(NewSession {
            owner: owner.into(),
            provider: "echo".into(),
            ..Default::default()
        })
        .await
        .expect("session");
    assert!(created);
    handle
}

/// `n` words of text.
fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seqs of event frames.
fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// A config with two token owners: `alice` (token `ta`) and `bob` (token `tb`).
fn two_owners(config: &mut troupe::config::Config) {
    config.auth.tokens = vec![
        TokenConfig {
            token: Secret("ta".into()),
            owner: "alice".into(),
            admin: false,
        },
        TokenConfig {
            token: Secret("tb".into()),
            owner: "bob".into(),
            admin: false,
        },
    ];
}

#[actix_rt::test]
async fn reconnect_with_after_seq_misses_and_repeats_nothing() {
    let app = spawn_app().await;
    let session = session_of(&app, "local").await;
    let mut first = Client::connect(&app).await;
    let subscribed = first.subscribe(&session, 0).await;
    assert_eq!(subscribed["last_seq"], 1, "session.created is seq 1");
    assert_eq!(subscribed["state"], "idle");
    assert_eq!(subscribed["session_id"], session.id().to_string());

    let ack = first
        .request(
            json!({"type": "send", "id": "s1", "session_id": session.id(),
                        "content": words(40), "mode": "enqueue", "client_message_id": "c1",
                        "options": {"script": {"chunk_delay_ms": 20}}}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["status"], "running");
    assert_eq!(ack["result"]["position"], 0);
    let turn_id = ack["result"]["turn_id"].as_str().unwrap().to_string();

    // Take events until a few deltas arrived, then drop the socket mid-stream.
    let mut seen = Vec::new();
    let mut deltas = 0;
    while deltas < 3 {
        let event = first.next_event().await;
        deltas += usize::from(event["kind"] == "message.delta");
        seen.push(event);
    }
    drop(first);
    let last_seen = *seqs(&seen).last().unwrap();

    let mut second = Client::connect(&app).await;
    second.subscribe(&session, last_seen).await;
    let rest = second.events_until_completed().await;
    assert_eq!(
        rest[0]["seq"].as_u64().unwrap(),
        last_seen + 1,
        "resumes right after"
    );
    seen.extend(rest);

    let got = seqs(&seen);
    let expected: Vec<u64> = (1..=*got.last().unwrap()).collect();
    assert_eq!(got, expected, "every seq once, in order");
    let log = session.events(0, 10_000).await.unwrap();
    let logged: Vec<Value> = log
        .events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e.as_ref()).unwrap();
            v["type"] = json!("event");
            v
        })
        .collect();
    assert!(
        seen.len() <= logged.len() && seen[..] == logged[..seen.len()],
        "the frames are the stored events"
    );
    let completed = seen.last().unwrap();
    assert_eq!(completed["turn_id"], turn_id);
    assert_eq!(completed["data"]["outcome"], "success");
    let text: String = seen
        .iter()
        .filter(|e| e["kind"] == "message.delta")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text.split_whitespace().count(), 40, "{text}");
}

#[actix_rt::test]
async fn two_clients_on_one_session_both_see_every_event_in_order() {
    let app = spawn_app().await;
    let session = session_of(&app, "local").await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe(&session, 0).await;
    b.subscribe(&session, 0).await;
    let ack = a
        .request(
            json!({"type": "send", "id": 1, "session_id": session.id(), "content": words(20),
                        "options": {"script": {"chunk_delay_ms": 5}}}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let from_a = a.events_until_completed().await;
    let from_b = b.events_until_completed().await;
    assert_eq!(from_a, from_b);
    let got = seqs(&from_a);
    assert_eq!(got, (1..=*got.last().unwrap()).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn owner_feed_sees_session_created_of_own_sessions_only() {
    let app = spawn_app_with(two_owners).await;
    let mut alice = Client::connect_to(&ws_url(&app, "?access_token=ta")).await;
    let answer = alice
        .request(json!({"type": "subscribe", "id": "feed", "session_id": "*"}))
        .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["session_id"], "*");

    let bobs = session_of(&app, "bob").await;
    let alices = session_of(&app, "alice").await;
    let event = alice.next_event().await;
    assert_eq!(event["kind"], "session.created", "{event}");
    assert_eq!(event["session_id"], alices.id().to_string());
    assert_eq!(event["data"]["session"]["owner"], "alice");
    assert_ne!(event["session_id"], bobs.id().to_string());

    // Lifecycle events of a turn reach the feed too (and only those): running, then idle.
    alices.send_text("hello", Default::default()).await.unwrap();
    let mut states = Vec::new();
    while states.last().is_none_or(|s| s != "idle") {
        let event = alice.next_event().await;
        let kind = event["kind"].as_str().unwrap();
        assert!(kind.starts_with("session."), "{event}");
        assert_eq!(event["session_id"], alices.id().to_string());
        if kind == "session.state" {
            states.push(event["data"]["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states, ["running", "idle"]);

    let answer = alice
        .request(json!({"type": "unsubscribe", "id": "u", "session_id": "*"}))
        .await;
    assert_eq!(answer["result"]["unsubscribed"], true, "{answer}");
    session_of(&app, "alice").await;
    let pong = alice.request(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(pong["type"], "pong");
    assert!(alice.events.is_empty(), "nothing after unsubscribe");
}

#[actix_rt::test]
async fn non_reading_client_is_dropped_lagged_while_reading_client_is_unaffected() {
    let app = spawn_app_with(|c| {
        // Small, but with room for a reading client on a busy 2-core test machine.
        c.limits.ws_outbound_buffer = 64;
        c.runtime.subscriber_buffer = 256;
    })
    .await;
    let lagged_before = WsMetrics::get(&WsMetrics::global().lagged);
    let session = session_of(&app, "local").await;
    let mut reader = Client::connect(&app).await;
    reader.subscribe(&session, 0).await;
    let mut sleeper = Client::connect_small_buffer(&app).await;
    sleeper
        .send(json!({"type": "subscribe", "id": "s", "session_id": session.id()}))
        .await;
    // Let the subscription land before the burst starts.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // About 6 MB of deltas: more than the socket buffers between server and sleeper can hold
    // (the server's send buffer grows up to `tcp_wmem` max, 4 MB by default).
    session
        .send(SendTurn {
            content: "go".into(),
            options: json!({"script": {"reply": words(800_000), "chunk_words": 1000,
                                       "chunk_delay_ms": 2}}),
            ..SendTurn::default()
        })
        .await
        .unwrap();
    let events = reader.events_until_completed().await;
    let got = seqs(&events);
    assert!(
        got == (1..=*got.last().unwrap()).collect::<Vec<_>>(),
        "no gap"
    );
    assert_eq!(events.last().unwrap()["data"]["outcome"], "success");
    assert!(got.len() > 400, "a burst of {} events", got.len());

    // The sleeper wakes up: what it was sent, in order, then close 1013 `lagged`.
    let mut last = 0;
    let ended = loop {
        match tokio::time::timeout(FRAME_WAIT, sleeper.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "event" {
                    let seq = frame["seq"].as_u64().unwrap();
                    assert!(last == 0 || seq == last + 1, "in order: {last} then {seq}");
                    last = seq;
                }
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "expected close 1013 after seq {last}, got {other:?}; lagged {}",
                WsMetrics::get(&WsMetrics::global().lagged) - lagged_before
            ),
        }
    };
    assert_eq!(ended, (1013, "lagged".to_string()));
    assert!(last < *got.last().unwrap(), "the sleeper missed the end");
    assert!(WsMetrics::get(&WsMetrics::global().lagged) > lagged_before);

    // The reader is still connected and served.
    let pong = reader.request(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(pong["type"], "pong");
}

#[actix_rt::test]
async fn invalid_frames_get_error_frames_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let session = session_of(&app, "local").await;
    let mut client = Client::connect(&app).await;
    let cases = [
        ("{not json", Value::Null, "invalid_json"),
        ("", Value::Null, "invalid_json"),
        ("[1, 2]", Value::Null, "invalid_request"),
        (r#"{"id": "a"}"#, json!("a"), "invalid_request"),
        (
            r#"{"type": "dance", "id": "b"}"#,
            json!("b"),
            "invalid_request",
        ),
        (
            r#"{"type": "send", "id": "c"}"#,
            json!("c"),
            "invalid_request",
        ),
        (
            r#"{"type": "subscribe", "id": "d", "session_id": 5}"#,
            json!("d"),
            "invalid_request",
        ),
        (
            r#"{"type": "subscribe", "id": "e", "session_id": "not-a-uuid"}"#,
            json!("e"),
            "invalid_request",
        ),
        (
            r#"{"type": "abort", "id": "f", "session_id": "*"}"#,
            json!("f"),
            "invalid_request",
        ),
        (
            r#"{"type": "queue.cancel", "id": "g", "session_id": "00000000-0000-0000-0000-000000000000", "turn_id": "x"}"#,
            json!("g"),
            "invalid_request",
        ),
        (
            r#"{"type": "abort", "id": "h", "session_id": "00000000-0000-0000-0000-000000000000"}"#,
            json!("h"),
            "session_not_found",
        ),
    ];
    for (text, id, code) in cases {
        client.send_raw(Message::text(text)).await;
        let answer = client.recv().await;
        assert_eq!(answer["type"], "error", "{text} → {answer}");
        assert_eq!(answer["code"], code, "{text} → {answer}");
        assert_eq!(answer["id"], id, "{text} → {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let missing = client
        .request(json!({"type": "send", "id": "m", "session_id": session.id()}))
        .await;
    assert_eq!(missing["field"], "content", "names the field: {missing}");

    client
        .send_raw(Message::binary(b"\x00\x01binary".to_vec()))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "invalid_request");

    // Still open, and real requests still work.
    let pong = client.request(json!({"type": "ping", "id": 42})).await;
    assert_eq!(pong, json!({"type": "pong", "id": 42}));
    let ack = client
        .request(json!({"type": "queue.pause", "id": "p", "session_id": session.id()}))
        .await;
    assert_eq!(ack["result"]["session"]["state"], "paused", "{ack}");
    let ack = client
        .request(json!({"type": "send", "id": "q", "session_id": session.id(), "content": "hi"}))
        .await;
    assert_eq!(ack["result"]["status"], "queued", "{ack}");
    assert_eq!(ack["result"]["position"], 1);
    let turn = ack["result"]["turn_id"].clone();
    let ack = client
        .request(
            json!({"type": "queue.promote", "id": "pr", "session_id": session.id(),
                        "turn_id": turn}),
        )
        .await;
    assert_eq!(ack["result"]["promoted"], true, "{ack}");
    let ack = client
        .request(
            json!({"type": "queue.cancel", "id": "c", "session_id": session.id(),
                        "turn_id": turn}),
        )
        .await;
    assert_eq!(ack["result"]["cancelled"], true, "{ack}");
    let again = client
        .request(
            json!({"type": "queue.cancel", "id": "c2", "session_id": session.id(),
                        "turn_id": turn}),
        )
        .await;
    assert_eq!(again["type"], "error", "{again}");
    let ack = client
        .request(json!({"type": "queue.resume", "id": "r", "session_id": session.id()}))
        .await;
    assert_eq!(ack["result"]["session"]["state"], "idle", "{ack}");
    let ack = client
        .request(json!({"type": "abort", "id": "a", "session_id": session.id()}))
        .await;
    assert_eq!(ack["result"]["aborted"], false, "{ack}");
    let busy = client
        .request(json!({"type": "unsubscribe", "id": "u", "session_id": session.id()}))
        .await;
    assert_eq!(busy["result"]["unsubscribed"], false, "{busy}");
}

#[actix_rt::test]
async fn oversized_frame_closes_1009() {
    let app = spawn_app_with(|c| c.limits.ws_frame_bytes = 1024).await;
    let oversized_before = WsMetrics::get(&WsMetrics::global().oversized);
    let mut client = Client::connect(&app).await;
    let padding = "x".repeat(900);
    let near = client
        .request(json!({"type": "ping", "id": "near", "pad": padding}))
        .await;
    assert_eq!(near["type"], "pong", "a frame under the limit is fine");
    client
        .send_raw(Message::text(
            json!({"type": "ping", "id": "big", "pad": "x".repeat(4096)}).to_string(),
        ))
        .await;
    match client.ended().await {
        Ended::Closed(code, _) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert!(WsMetrics::get(&WsMetrics::global().oversized) > oversized_before);
}

#[actix_rt::test]
async fn fragmented_messages_are_joined_and_limited_as_a_whole() {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let app = spawn_app_with(|c| c.limits.ws_frame_bytes = 1024).await;
    let mut client = Client::connect(&app).await;
    let text = json!({"type": "ping", "id": "frag"}).to_string();
    let (head, tail) = text.split_at(10);
    let first = Frame::message(head.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(tail.as_bytes().to_vec(), OpCode::Data(Data::Continue), true);
    client.send_raw(Message::Frame(first)).await;
    client.send_raw(Message::Frame(last)).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "frag"}));

    // Three fragments of 600 bytes: each under the limit, the message over it.
    let chunk = vec![b' '; 600];
    let frames = [
        Frame::message(chunk.clone(), OpCode::Data(Data::Text), false),
        Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false),
        Frame::message(chunk, OpCode::Data(Data::Continue), true),
    ];
    for frame in frames {
        // The server may close before the last fragment; a failed send is fine here.
        let _ = client.socket.send(Message::Frame(frame)).await;
    }
    match client.ended().await {
        Ended::Closed(code, _) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[actix_rt::test]
async fn silent_peer_is_dropped_and_a_responsive_one_is_kept() {
    let app = spawn_app_with(|c| {
        c.websocket.heartbeat_interval_ms = 100;
        c.websocket.client_timeout_ms = 400;
    })
    .await;
    let timeouts_before = WsMetrics::get(&WsMetrics::global().timeouts);
    let mut silent = Client::connect(&app).await;
    let mut responsive = Client::connect(&app).await;

    // The responsive client reads (tungstenite answers each ping with a pong) for well over
    // the timeout; the silent one neither reads nor writes.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(frame) = tokio::time::timeout_at(until, responsive.socket.next()).await {
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "the server pings every 100 ms: {pings}");
    let pong = responsive
        .request(json!({"type": "ping", "id": "alive"}))
        .await;
    assert_eq!(pong["type"], "pong");

    match silent.ended().await {
        Ended::Closed(code, reason) => {
            assert_eq!(code, 1001);
            assert_eq!(reason, "heartbeat timeout");
        }
        Ended::Dropped => {}
    }
    assert!(WsMetrics::get(&WsMetrics::global().timeouts) > timeouts_before);
}

#[actix_rt::test]
async fn upgrade_needs_a_valid_token_when_tokens_are_configured() {
    let app = spawn_app_with(two_owners).await;
    for url in [ws_url(&app, ""), ws_url(&app, "?access_token=nope")] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap())
                    .expect("JSON error body");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }

    // A bearer header works as well as the query parameter.
    let mut request = ws_url(&app, "").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer tb".parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut bob = Client {
        socket,
        events: VecDeque::new(),
    };
    let mut alice = Client::connect_to(&ws_url(&app, "?access_token=ta")).await;

    // Another owner's session does not exist, whatever the frame.
    let alices = session_of(&app, "alice").await;
    let sid = alices.id();
    for frame in [
        json!({"type": "subscribe", "id": "x1", "session_id": sid, "after_seq": 0}),
        json!({"type": "send", "id": "x2", "session_id": sid, "content": "hi"}),
        json!({"type": "abort", "id": "x3", "session_id": sid}),
        json!({"type": "queue.pause", "id": "x4", "session_id": sid}),
    ] {
        let answer = bob.request(frame.clone()).await;
        assert_eq!(answer["type"], "error", "{frame} → {answer}");
        assert_eq!(answer["code"], "session_not_found", "{frame} → {answer}");
    }
    let mine = alice.subscribe(&alices, 0).await;
    assert_eq!(mine["last_seq"], 1);
    assert_eq!(alices.info().await.unwrap().state.as_str(), "idle");
}

#[actix_rt::test]
async fn not_an_upgrade_is_a_json_error() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/ws").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
}

/// A text frame a fuzzing client might send: arbitrary text, or a JSON object with a known or
/// unknown `type`, a random id and random fields.
fn fuzz_frame() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!("*")),
        Just(json!("00000000-0000-7000-8000-000000000000")),
    ];
    let value = scalar.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let kind = prop_oneof![
        Just("subscribe"),
        Just("unsubscribe"),
        Just("send"),
        Just("abort"),
        Just("queue.pause"),
        Just("queue.resume"),
        Just("queue.cancel"),
        Just("queue.promote"),
        Just("ping"),
        Just("bogus"),
    ];
    let field = prop_oneof![
        Just("session_id"),
        Just("after_seq"),
        Just("content"),
        Just("mode"),
        Just("turn_id"),
        Just("options"),
        Just("client_message_id"),
        Just("extra"),
    ];
    let object = (
        kind,
        ".{0,8}",
        prop::collection::vec((field, value.clone()), 0..5),
    )
        .prop_map(|(kind, id, fields)| {
            let mut frame = json!({"type": kind, "id": id});
            for (field, value) in fields {
                frame[field] = value;
            }
            frame.to_string()
        });
    prop_oneof![
        ".{0,64}",
        value.prop_map(|v| v.to_string()),
        object.clone(),
        object,
    ]
}

#[actix_rt::test]
async fn fuzzed_text_frames_each_get_one_answer_and_never_close_the_connection() {
    let app = spawn_app().await;
    let mut client = Client::connect(&app).await;
    let mut runner = TestRunner::deterministic();
    let strategy = fuzz_frame();
    for case in 0..64 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        client.send_raw(Message::text(text.clone())).await;
        let answer = client.recv().await;
        let kind = answer["type"].as_str().unwrap_or_default();
        assert!(
            ["error", "ack", "pong", "subscribed"].contains(&kind),
            "case {case}: {text} → {answer}"
        );
        if kind == "error" {
            let code = answer["code"].as_str().unwrap();
            assert!(
                ["invalid_json", "invalid_request", "session_not_found"].contains(&code),
                "case {case}: {text} → {answer}"
            );
        }
        if let Ok(Value::Object(sent)) = serde_json::from_str::<Value>(&text) {
            assert_eq!(
                answer["id"],
                sent.get("id").cloned().unwrap_or(Value::Null),
                "case {case}: {text} → {answer}"
            );
        }
    }
    let pong = client.request(json!({"type": "ping", "id": "end"})).await;
    assert_eq!(pong["type"], "pong");
}
