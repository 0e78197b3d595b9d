//! A WebSocket client of a running Troupe server: creates an echo session over REST, sends a
//! slow turn over the WebSocket, prints the stream, disconnects mid-stream, reconnects with
//! `after_seq` and shows that no event was missed or repeated.
//!
//! ```text
//! troupe serve &
//! cargo run --example ws_client -- http://127.0.0.1:7878
//! ```
//!
//! With authentication enabled, pass the token in `TROUPE_TOKEN`.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Error = Box<dyn std::error::Error>;

/// Deltas to print before the client drops its connection on purpose.
const DELTAS_BEFORE_DISCONNECT: usize = 4;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7878".into());
    let base = base.trim_end_matches('/').to_string();
    let token = std::env::var("TROUPE_TOKEN").ok();

    let session_id = create_session(&base, token.as_deref()).await?;
    println!("created session {session_id}");

    // First connection: subscribe from the start, send a slow turn, leave mid-stream.
    let mut socket = connect(&base, token.as_deref()).await?;
    let mut early = VecDeque::new();
    request(
        &mut socket,
        &mut early,
        json!({"type": "subscribe", "id": "sub-1", "session_id": session_id, "after_seq": 0}),
    )
    .await?;
    let content = "the quick brown fox jumps over the lazy dog and keeps on running through \
                   the field until the sun goes down behind the hills";
    let ack = request(
        &mut socket,
        &mut early,
        json!({"type": "send", "id": "send-1", "session_id": session_id, "content": content,
               "mode": "enqueue", "options": {"script": {"chunk_delay_ms": 150}}}),
    )
    .await?;
    println!("turn accepted: {}", ack["result"]);

    let mut seen: Vec<Value> = Vec::new();
    let mut deltas = 0;
    while deltas < DELTAS_BEFORE_DISCONNECT {
        let event = next_event(&mut socket, &mut early).await?;
        print_event(&event);
        deltas += usize::from(event["kind"] == "message.delta");
        let done = event["kind"] == "turn.completed";
        seen.push(event);
        if done {
            break;
        }
    }
    let last_seq = seen.last().map_or(0, |e| e["seq"].as_u64().unwrap_or(0));
    drop(socket);
    println!("-- disconnected after seq {last_seq}; the turn keeps running --");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Second connection: resume right after the last event seen.
    let mut socket = connect(&base, token.as_deref()).await?;
    let mut early = VecDeque::new();
    let subscribed = request(
        &mut socket,
        &mut early,
        json!({"type": "subscribe", "id": "sub-2", "session_id": session_id,
               "after_seq": last_seq}),
    )
    .await?;
    println!(
        "-- reconnected with after_seq {last_seq}; the session is at seq {} --",
        subscribed["last_seq"]
    );
    while seen.last().is_none_or(|e| e["kind"] != "turn.completed") {
        let event = next_event(&mut socket, &mut early).await?;
        print_event(&event);
        seen.push(event);
    }
    socket.close(None).await?;

    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let expected: Vec<u64> = (1..=seqs.last().copied().unwrap_or(0)).collect();
    let text: String = seen
        .iter()
        .filter(|e| e["kind"] == "message.delta")
        .filter_map(|e| e["data"]["text"].as_str())
        .collect();
    if seqs == expected && text == content {
        println!(
            "OK: {} events, seq 1..={} with no gap and no duplicate; the reply is whole",
            seqs.len(),
            seqs.len()
        );
        Ok(())
    } else {
        Err(format!("stream broken: seqs {seqs:?}, text {text:?}").into())
    }
}

/// `POST /api/v1/sessions {"provider": "echo"}` → the new session's id.
async fn create_session(base: &str, token: Option<&str>) -> Result<String, Error> {
    let mut post = reqwest::Client::new()
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"provider": "echo", "title": "ws_client example"}));
    if let Some(token) = token {
        post = post.bearer_auth(token);
    }
    let response = post.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    match body["session"]["id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_string()),
        _ => Err(format!("creating a session answered {status}: {body}").into()),
    }
}

/// Opens `ws://…/api/v1/ws`, with the token as `access_token` when there is one.
async fn connect(base: &str, token: Option<&str>) -> Result<Socket, Error> {
    let Some(rest) = base.strip_prefix("http://") else {
        return Err("give the server as http://HOST:PORT (this example speaks plain ws://)".into());
    };
    let mut url = format!("ws://{rest}/api/v1/ws");
    if let Some(token) = token {
        url.push_str(&format!("?access_token={token}"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(socket)
}

/// Sends a request frame and waits for the frame that answers it (same `id`). Events that
/// arrive meanwhile are kept in `early` for [`next_event`].
async fn request(
    socket: &mut Socket,
    early: &mut VecDeque<Value>,
    frame: Value,
) -> Result<Value, Error> {
    let id = frame["id"].clone();
    socket.send(Message::text(frame.to_string())).await?;
    loop {
        let answer = next_frame(socket).await?;
        if answer["type"] == "event" {
            early.push_back(answer);
        } else if answer["id"] == id {
            if answer["type"] == "error" {
                return Err(format!("request {id} failed: {answer}").into());
            }
            return Ok(answer);
        }
    }
}

/// The next event frame, first from `early` (other frames are printed and skipped).
async fn next_event(socket: &mut Socket, early: &mut VecDeque<Value>) -> Result<Value, Error> {
    if let Some(event) = early.pop_front() {
        return Ok(event);
    }
    loop {
        let frame = next_frame(socket).await?;
        match frame["type"].as_str() {
            Some("event") => return Ok(frame),
            Some("truncated") => println!("!! the server no longer has events before {frame}"),
            _ => println!("   {frame}"),
        }
    }
}

/// The next JSON frame; a close frame is an error that says why.
async fn next_frame(socket: &mut Socket) -> Result<Value, Error> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("server closed the connection: {frame:?}").into())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("connection ended".into()),
        }
    }
}

fn print_event(event: &Value) {
    let data = match event["kind"].as_str() {
        Some("message.delta") => event["data"]["text"].to_string(),
        _ => event["data"].to_string(),
    };
    let data: String = data.chars().take(100).collect();
    println!(
        "{:>4} {:<16} {data}",
        event["seq"].as_u64().unwrap_or(0),
        event["kind"].as_str().unwrap_or("?")
    );
}
