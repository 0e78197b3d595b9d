//! A small HTTP/1.1 server on 127.0.0.1 for the mocks of the model APIs the real agent CLIs call:
//! reads keep-alive requests with a `content-length` body, hands each to a handler, and writes
//! its reply whole, in timed chunks, or holds the connection open (a model that stalls).

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the handler sees it.
#[derive(Clone, Debug)]
pub struct MockRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The request line and headers, as sent.
    pub head: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

/// How the mock answers.
pub enum MockReply {
    /// A complete response, written at once.
    Whole(String),
    /// A response head and body written in pieces, each after its delay; the connection closes
    /// after the last.
    Paced(Vec<(Duration, String)>),
    /// `prefix` written, then the connection held open until the client goes away.
    Stall(String),
}

/// A JSON response with `status`.
pub fn json_reply(status: u16, value: &Value) -> MockReply {
    let text = value.to_string();
    MockReply::Whole(format!(
        "HTTP/1.1 {status} Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    ))
}

/// A complete `text/event-stream` response of `events` (each one `data:` frame, optionally
/// named).
pub fn sse_reply(events: &[(Option<&str>, Value)]) -> MockReply {
    let body = sse_frames(events);
    MockReply::Whole(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// The head of an event stream whose length is unknown: the body ends when the connection does.
pub fn sse_head() -> String {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
     connection: close\r\n\r\n"
        .to_string()
}

/// `events` as SSE frames.
pub fn sse_frames(events: &[(Option<&str>, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect()
}

/// Serves `handler` on a fresh 127.0.0.1 port; returns `http://127.0.0.1:PORT`.
pub async fn serve_mock<F>(handler: F) -> String
where
    F: Fn(MockRequest) -> MockReply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let address =
        super::serve_on_loopback(move |socket| serve_connection(socket, handler.clone())).await;
    format!("http://{address}")
}

/// Reads the next request from `socket`, with `buf` holding bytes read past the previous one;
/// `None` once the client closed the connection.
pub async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<MockRequest> {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    buf.drain(..head_end + length);
    let mut words = head.split_whitespace();
    Some(MockRequest {
        method: words.next().unwrap_or("").to_string(),
        path: words.next().unwrap_or("").to_string(),
        body,
        head,
    })
}

/// Serves requests on one connection until the client closes it.
async fn serve_connection<F>(mut socket: TcpStream, handler: Arc<F>)
where
    F: Fn(MockRequest) -> MockReply + Send + Sync + 'static,
{
    let mut buf: Vec<u8> = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buf).await {
        match handler(request) {
            MockReply::Whole(reply) => {
                if socket.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            MockReply::Paced(pieces) => {
                for (delay, piece) in pieces {
                    tokio::time::sleep(delay).await;
                    if socket.write_all(piece.as_bytes()).await.is_err() {
                        return;
                    }
                }
                return;
            }
            MockReply::Stall(prefix) => {
                if socket.write_all(prefix.as_bytes()).await.is_ok() {
                    // Until the client hangs up.
                    let mut sink = [0u8; 1024];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                }
                return;
            }
        }
    }
}
