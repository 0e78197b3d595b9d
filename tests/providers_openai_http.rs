//! `openai-http` against a mock chat-completions server on 127.0.0.1:0: streamed text, usage,
//! history, status classification with `Retry-After`, a connection dropped mid-stream, a timeout.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use troupe::providers::{OpenAiHttp, OpenAiHttpSettings};
use troupe_actors::provider::HistoryMessage;
use troupe_actors::{BusyMode, EventBody, FailureClass, NewSession, Outcome, Provider};

/// The key the tests put in the environment; it must never show up in an error.
const KEY: &str = "test-key-0123456789";

/// What the mock answers to one request.
#[derive(Clone)]
enum Reply {
    /// 200 with these SSE `data:` payloads, then a clean end.
    Stream(Vec<String>),
    /// 200 with these payloads, then the connection is cut mid-body.
    StreamThenDrop(Vec<String>),
    /// A status with extra headers and a body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Silence,
}

/// One request the mock received.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Value,
}

#[derive(Clone, Default)]
struct Mock {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    async fn start(replies: Vec<Reply>) -> (Mock, String) {
        let mock = Mock {
            replies: Arc::new(Mutex::new(replies.into())),
            ..Mock::default()
        };
        let m = mock.clone();
        let address = serve_on_loopback(move |socket| m.clone().serve(socket)).await;
        let url = format!("http://{address}/v1");
        (mock, url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn serve(self, mut socket: TcpStream) {
        let Some(request) = read_request(&mut socket, &mut Vec::new()).await else {
            return;
        };
        self.seen.lock().unwrap().push(Seen {
            head: request.head,
            body: request.body,
        });
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("an unexpected request");
        let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let frame = |data: &str| {
            let event = format!("data: {data}\n\n");
            format!("{:x}\r\n{event}\r\n", event.len())
        };
        match reply {
            Reply::Stream(events) => {
                let _ = socket.write_all(sse_head.as_bytes()).await;
                for e in events {
                    let _ = socket.write_all(frame(&e).as_bytes()).await;
                    let _ = socket.flush().await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            }
            Reply::StreamThenDrop(events) => {
                let _ = socket.write_all(sse_head.as_bytes()).await;
                for e in events {
                    let _ = socket.write_all(frame(&e).as_bytes()).await;
                    let _ = socket.flush().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Dropping the socket without the last chunk cuts the body mid-stream.
            }
            Reply::Status(status, headers, body) => {
                let mut out = format!(
                    "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = socket.write_all(out.as_bytes()).await;
            }
            Reply::Silence => tokio::time::sleep(Duration::from_secs(30)).await,
        }
    }
}

fn chunk(content: &str) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    .to_string()
}

fn finish() -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    .to_string()
}

fn usage() -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
           "usage": {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23, "cost": 0.0004}})
    .to_string()
}

fn hello() -> Reply {
    Reply::Stream(vec![
        chunk("Hel"),
        chunk("lo"),
        finish(),
        usage(),
        "[DONE]".into(),
    ])
}

fn provider(url: &str) -> OpenAiHttp {
    // Set for this test binary; every test uses the same value.
    std::env::set_var("TROUPE_TEST_OPENAI_KEY", KEY);
    let mut settings = OpenAiHttpSettings::new("local", url);
    settings.api_key_env = Some("TROUPE_TEST_OPENAI_KEY".into());
    settings.model = Some("qwen2.5:7b".into());
    settings.system_prompt = Some("Be brief.".into());
    settings.request_timeout = Duration::from_millis(500);
    settings.stream_idle_timeout = Duration::from_secs(2);
    OpenAiHttp::new(settings).unwrap()
}

#[actix_rt::test]
async fn streams_text_and_usage_and_sends_the_history() {
    let (mock, url) = Mock::start(vec![hello()]).await;
    let mut req = request("and now?");
    req.history = vec![
        HistoryMessage {
            role: "user".into(),
            text: "earlier question".into(),
        },
        HistoryMessage {
            role: "assistant".into(),
            text: "earlier answer".into(),
        },
    ];
    let session = req.session_id;
    let events = collect(provider(&url).start(req)).await;
    assert_eq!(session_ids(&events), vec![format!("local-{session}")]);
    assert_eq!(deltas(&events), "Hello");
    assert_eq!(messages(&events), vec!["Hello"]);
    let completion = done(&events);
    assert_eq!(completion.usage.unwrap()["total_tokens"], 23);
    assert_eq!(completion.cost_usd, Some(0.0004));
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].head.starts_with("POST /v1/chat/completions "));
    assert!(seen[0]
        .head
        .to_lowercase()
        .contains(&format!("authorization: bearer {}", KEY.to_lowercase())));
    assert_eq!(seen[0].body["model"], "qwen2.5:7b");
    assert_eq!(seen[0].body["stream"], true);
    assert_eq!(
        seen[0].body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "and now?"},
        ])
    );
}

#[actix_rt::test]
async fn a_429_is_transient_with_retry_after() {
    let (_mock, url) = Mock::start(vec![Reply::Status(
        429,
        vec![("retry-after", "7".into())],
        r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#.into(),
    )])
    .await;
    let error = failure(&collect(provider(&url).start(request("hi"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "rate_limited")
    );
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
}

#[actix_rt::test]
async fn a_401_is_terminal_and_the_key_never_shows() {
    let body = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
    );
    let (mock, url) = Mock::start(vec![Reply::Status(401, vec![], body)]).await;
    let error = failure(&collect(provider(&url).start(request("hi"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "invalid_api_key")
    );
    assert!(!error.message.contains(KEY), "{error:?}");
    assert!(error.message.contains("[redacted]"));
    assert_eq!(mock.seen().len(), 1);
}

#[actix_rt::test]
async fn other_statuses_are_classified() {
    let cases = [
        (
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
            FailureClass::Terminal,
            "prompt_too_long",
        ),
        (
            404,
            r#"{"error":{"message":"The model `nope` does not exist"}}"#,
            FailureClass::Terminal,
            "model_not_found",
        ),
        (403, "forbidden", FailureClass::Terminal, "forbidden"),
        (
            503,
            "upstream unavailable",
            FailureClass::Transient,
            "provider_unavailable",
        ),
    ];
    for (status, body, class, code) in cases {
        let (_mock, url) = Mock::start(vec![Reply::Status(status, vec![], body.into())]).await;
        let error = failure(&collect(provider(&url).start(request("hi"))).await);
        assert_eq!(
            (error.class, error.code.as_str()),
            (class, code),
            "status {status}"
        );
    }
}

#[actix_rt::test]
async fn a_connection_dropped_mid_stream_is_transient() {
    let (_mock, url) = Mock::start(vec![Reply::StreamThenDrop(vec![chunk("Hel")])]).await;
    let events = collect(provider(&url).start(request("hi"))).await;
    assert_eq!(deltas(&events), "Hel");
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "connection_lost")
    );
}

#[actix_rt::test]
async fn a_silent_server_times_out_transiently() {
    let (_mock, url) = Mock::start(vec![Reply::Silence]).await;
    let error = failure(&collect(provider(&url).start(request("hi"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "request_timeout")
    );
}

#[actix_rt::test]
async fn a_missing_key_is_unavailable_and_terminal() {
    let mut settings = OpenAiHttpSettings::new("openrouter", "http://127.0.0.1:9/v1");
    settings.api_key_env = Some("TROUPE_TEST_KEY_THAT_IS_NOT_SET".into());
    settings.model = Some("m".into());
    let provider = OpenAiHttp::new(settings).unwrap();
    assert!(!provider.available());
    let error = failure(&collect(provider.start(request("hi"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "missing_api_key")
    );
}

#[actix_rt::test]
async fn a_session_retries_a_429_and_sends_its_history_on_the_next_turn() {
    let limited = Reply::Status(429, vec![("retry-after", "0".into())], "slow down".into());
    let second = Reply::Stream(vec![chunk("Sure"), finish(), "[DONE]".into()]);
    let (mock, url) = Mock::start(vec![limited, hello(), second]).await;
    let rt = runtime_with("local", provider(&url));
    let (session, _) = rt
        .get_or_create(NewSession {
            owner: "local".into(),
            provider: "local".into(),
            ..NewSession::default()
        })
        .await
        .unwrap();
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("first question", BusyMode::Enqueue)
        .await
        .unwrap();
    session
        .send_text("second question", BusyMode::Enqueue)
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    let mut retries = 0;
    while outcomes.len() < 2 {
        let event = tokio::time::timeout(ATTEMPT_LIMIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        match &event.body {
            EventBody::TurnCompleted { outcome, .. } => outcomes.push(*outcome),
            EventBody::TurnRetrying { .. } => retries += 1,
            _ => {}
        }
    }
    assert_eq!(outcomes, vec![Outcome::Success, Outcome::Success]);
    assert_eq!(retries, 1);
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    let last = seen[2].body["messages"].as_array().unwrap().clone();
    let texts: Vec<_> = last
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("system", "Be brief."),
            ("user", "first question"),
            ("assistant", "Hello"),
            ("user", "second question"),
        ]
    );
}
