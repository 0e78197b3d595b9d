//! The real Claude Code CLI (npm `@anthropic-ai/claude-code`) pointed by `ANTHROPIC_BASE_URL` at a
//! mock of the Anthropic Messages streaming API on 127.0.0.1: a two-turn session whose second
//! turn resumes the first's session id, and a prompt-too-long answer classified terminal and
//! attempted once. Skips loudly when `claude` is not on `PATH`.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use troupe::providers::process::resolve_program;
use troupe::providers::{ClaudeCli, CliProvider, CliSettings};
use troupe_actors::{BusyMode, EventBody, FailureClass, NewSession, Outcome, Provider};

/// How the mock answers `POST /v1/messages`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Streams "turn N" where N counts the user messages it was sent.
    Answer,
    /// 400 `invalid_request_error`: prompt is too long.
    TooLong,
}

#[derive(Clone)]
struct AnthropicMock {
    mode: Arc<Mutex<Mode>>,
    /// Bodies of every `POST /v1/messages` (count_tokens and others excluded).
    messages: Arc<Mutex<Vec<Value>>>,
}

impl AnthropicMock {
    async fn start(mode: Mode) -> (AnthropicMock, String) {
        let mock = AnthropicMock {
            mode: Arc::new(Mutex::new(mode)),
            messages: Arc::default(),
        };
        let m = mock.clone();
        let address = serve_on_loopback(move |socket| m.clone().serve(socket)).await;
        let url = format!("http://{address}");
        (mock, url)
    }

    fn answered(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    async fn serve(self, mut socket: TcpStream) {
        // Keep-alive: serve requests on this connection until the client closes it.
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let head_end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
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
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Value =
                serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
            buf.drain(..head_end + length);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let reply = self.reply(&path, &body);
            if socket.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn reply(&self, path: &str, body: &Value) -> String {
        let json_reply = |status: u16, value: Value| {
            let text = value.to_string();
            format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nrequest-id: req_mock\r\n\r\n{text}",
                text.len()
            )
        };
        if path.starts_with("/v1/messages/count_tokens") {
            return json_reply(200, json!({"input_tokens": 42}));
        }
        if !path.starts_with("/v1/messages") {
            return json_reply(
                404,
                json!({"type": "error", "error": {"type": "not_found_error", "message": "not here"}}),
            );
        }
        self.messages.lock().unwrap().push(body.clone());
        if *self.mode.lock().unwrap() == Mode::TooLong {
            return json_reply(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "prompt is too long: 212345 tokens > 200000 maximum"}}),
            );
        }
        let users = body["messages"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["role"] == "user").count())
            .unwrap_or(0);
        let text = format!("turn {users}");
        let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5");
        if body["stream"] != true {
            return json_reply(
                200,
                json!({"id": "msg_mock", "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 3}}),
            );
        }
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                "stop_sequence": null}, "usage": {"output_tokens": 3}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let sse: String = events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nrequest-id: req_mock\r\ncontent-length: {}\r\n\r\n{sse}",
            sse.len()
        )
    }
}

/// `claude` on PATH, or a loud skip.
fn real_claude() -> Option<String> {
    match resolve_program("claude", None) {
        Some(path) => Some(path.display().to_string()),
        None => {
            eprintln!(
                "SKIPPED: the real Claude Code CLI (`claude`) is not on PATH; \
                 install it with `npm install -g @anthropic-ai/claude-code` to run this test"
            );
            None
        }
    }
}

fn settings(command: String, url: &str, home: &std::path::Path) -> CliSettings {
    let mut settings = CliSettings::new(command);
    for (name, value) in [
        ("ANTHROPIC_BASE_URL", url.to_string()),
        (
            "ANTHROPIC_API_KEY",
            "sk-ant-test-mock-key-000000".to_string(),
        ),
        ("HOME", home.display().to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("DISABLE_TELEMETRY", "1".to_string()),
        ("DISABLE_ERROR_REPORTING", "1".to_string()),
    ] {
        settings.env.insert(name.into(), value);
    }
    settings.model = Some("claude-sonnet-4-5".into());
    settings.args = vec!["--max-turns".into(), "1".into()];
    settings.kill_grace = Duration::from_millis(500);
    settings
}

async fn completed(sub: &mut troupe_actors::Subscription) -> (Vec<EventBody>, EventBody) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(90), sub.next())
            .await
            .expect("the real CLI took too long")
            .expect("subscription closed");
        if matches!(event.body, EventBody::TurnCompleted { .. }) {
            return (seen, event.body.clone());
        }
        seen.push(event.body.clone());
    }
}

fn text_of(events: &[EventBody]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[actix_rt::test]
async fn real_claude_two_turns_resume_the_provider_session() {
    let Some(command) = real_claude() else { return };
    let (mock, url) = AnthropicMock::start(Mode::Answer).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let rt = runtime_with(
        "claude",
        CliProvider::new(ClaudeCli, settings(command, &url, home.path())),
    );
    let (session, _) = rt
        .get_or_create(NewSession {
            owner: "local".into(),
            provider: "claude".into(),
            project: Some(project.path().display().to_string()),
            ..NewSession::default()
        })
        .await
        .unwrap();
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Say hello.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert!(
        matches!(
            end,
            EventBody::TurnCompleted {
                outcome: Outcome::Success,
                ..
            }
        ),
        "{end:?} after {first:#?}"
    );
    assert_eq!(text_of(&first), "turn 1");
    let id = session
        .info()
        .await
        .unwrap()
        .provider_session_id
        .expect("session id mapped");
    session
        .send_text("Again.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (second, end) = completed(&mut sub).await;
    assert!(
        matches!(
            end,
            EventBody::TurnCompleted {
                outcome: Outcome::Success,
                ..
            }
        ),
        "{end:?} after {second:#?}"
    );
    assert_eq!(
        text_of(&second),
        "turn 2",
        "the resumed turn carries the first turn's conversation"
    );
    assert_eq!(session.info().await.unwrap().provider_session_id, Some(id));
    assert!(mock.answered().len() >= 2);
}

#[actix_rt::test]
async fn real_claude_prompt_too_long_is_terminal_and_attempted_once() {
    let Some(command) = real_claude() else { return };
    let (mock, url) = AnthropicMock::start(Mode::TooLong).await;
    let home = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    // Directly through the provider: the failure and its class.
    let events = collect(provider.start(request("Summarize everything."))).await;
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "prompt_too_long"),
        "{error:?}"
    );
    let direct_calls = mock.answered().len();
    assert!(direct_calls >= 1);
    // Through a session: one attempt, no retry.
    let rt = runtime_with("claude", provider);
    let (session, _) = rt
        .get_or_create(NewSession {
            owner: "local".into(),
            provider: "claude".into(),
            ..NewSession::default()
        })
        .await
        .unwrap();
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Summarize everything.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    let EventBody::TurnCompleted { outcome, error, .. } = end else {
        unreachable!()
    };
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(error.unwrap().code, "prompt_too_long");
    let starts = events
        .iter()
        .filter(|e| matches!(e, EventBody::TurnStarted { .. }))
        .count();
    assert_eq!(starts, 1, "attempted once: {events:#?}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, EventBody::TurnRetrying { .. })));
}
