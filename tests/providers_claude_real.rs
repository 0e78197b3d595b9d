//! The real Claude Code CLI (npm `@anthropic-ai/claude-code`) pointed by `ANTHROPIC_BASE_URL` at a
//! mock of the Anthropic Messages streaming API on 127.0.0.1: a two-turn session whose second
//! turn resumes the first's session id, a message steered into a running turn through
//! `--input-format stream-json`, a prompt-too-long answer classified terminal and attempted
//! once, the usage and cost of its `result` line recorded in the session's totals, and a fork
//! (at the latest turn: `--resume <id> --fork-session`; at an earlier one: a fresh conversation
//! seeded with a transcript). Skips loudly when `claude` is missing, fails under CI.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe::providers::{ClaudeCli, CliProvider, CliSettings};
use troupe_actors::transfer::CopySpec;
use troupe_actors::{BusyMode, FailureClass, Outcome, Provider, SessionHandle, TurnStatus};

/// How the mock answers `POST /v1/messages`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Streams `heard: <the user's messages>`; slowly (over about a second and a half) when the
    /// last one asks for it, so a steered message arrives mid-run.
    Answer,
    /// 400 `invalid_request_error`: prompt is too long.
    TooLong,
}

#[derive(Clone)]
struct AnthropicMock {
    mode: Mode,
    /// Bodies of every `POST /v1/messages` (count_tokens and others excluded).
    messages: Arc<Mutex<Vec<Value>>>,
}

impl AnthropicMock {
    async fn start(mode: Mode) -> (AnthropicMock, String) {
        let mock = AnthropicMock {
            mode,
            messages: Arc::default(),
        };
        let m = mock.clone();
        let url = serve_mock(move |request| m.reply(&request.path, &request.body)).await;
        (mock, url)
    }

    fn answered(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    fn reply(&self, path: &str, body: &Value) -> MockReply {
        if path.starts_with("/v1/messages/count_tokens") {
            return json_reply(200, &json!({"input_tokens": 42}));
        }
        if !path.starts_with("/v1/messages") {
            return json_reply(
                404,
                &json!({"type": "error", "error": {"type": "not_found_error", "message": "not here"}}),
            );
        }
        self.messages.lock().unwrap().push(body.clone());
        if self.mode == Mode::TooLong {
            return json_reply(
                400,
                &json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "prompt is too long: 212345 tokens > 200000 maximum"}}),
            );
        }
        let users = user_texts(body);
        let text = format!("heard: {}", users.join(" | "));
        let slowly = users.last().is_some_and(|t| t.contains("slowly"));
        let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5");
        if body["stream"] != true {
            return json_reply(
                200,
                &json!({"id": "msg_mock", "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 3}}),
            );
        }
        let start = [
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        let delta = [(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        )];
        let end = [
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                "stop_sequence": null}, "usage": {"output_tokens": 3}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ];
        if !slowly {
            let all: Vec<_> = start.into_iter().chain(delta).chain(end).collect();
            return sse_reply(&all);
        }
        let pause = Duration::from_millis(700);
        MockReply::Paced(vec![
            (Duration::ZERO, sse_head() + &sse_frames(&start)),
            (pause, sse_frames(&delta)),
            (pause, sse_frames(&end)),
        ])
    }
}

/// The user's own texts in a request (not the `<system-reminder>` blocks Claude Code adds).
fn user_texts(body: &Value) -> Vec<String> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let blocks = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| match &m["content"] {
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            _ => Vec::new(),
        });
    blocks
        .filter_map(|b| b["text"].as_str().map(str::trim).map(str::to_string))
        .filter(|t| !t.starts_with('<') && !t.is_empty())
        .collect()
}

/// `claude` on the search path, or a loud skip (a failure under CI).
fn real_claude(test: &str) -> Option<String> {
    let install = "npm install --prefix .ci/npm @anthropic-ai/claude-code (.ci/run does it)";
    external::require_program(test, "claude", install).map(|p| p.display().to_string())
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
    for (name, value) in loopback_only_env() {
        settings.env.insert(name.into(), value);
    }
    settings.model = Some("claude-sonnet-4-5".into());
    settings.args = vec!["--max-turns".into(), "1".into()];
    settings.kill_grace = Duration::from_millis(500);
    settings
}

#[actix_rt::test]
async fn real_claude_two_turns_resume_the_provider_session() {
    let Some(command) = real_claude("real_claude_two_turns_resume_the_provider_session") else {
        return;
    };
    let (_mock, url) = AnthropicMock::start(Mode::Answer).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    two_turns_resume(Arc::new(provider), project.path()).await;
}

#[actix_rt::test]
async fn real_claude_prompt_too_long_is_terminal_and_attempted_once() {
    let Some(command) = real_claude("real_claude_prompt_too_long_is_terminal_and_attempted_once")
    else {
        return;
    };
    let (mock, url) = AnthropicMock::start(Mode::TooLong).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    // Directly through the provider: the failure and its class.
    let events = collect(provider.start(request("Summarize everything."))).await;
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "prompt_too_long"),
        "{error:?}"
    );
    assert!(!mock.answered().is_empty());
    // Through a session: one attempt, no retry.
    fails_once(Arc::new(provider), project.path(), "prompt_too_long").await;
}

#[actix_rt::test]
async fn real_claude_takes_a_steered_message_into_the_running_turn() {
    let Some(command) = real_claude("real_claude_takes_a_steered_message_into_the_running_turn")
    else {
        return;
    };
    let (mock, url) = AnthropicMock::start(Mode::Answer).await;
    let home = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    assert!(provider.capabilities().steer);
    let rt = runtime_with("claude", provider);
    let session = open_session(&rt, "claude", None).await;
    let mut sub = session.subscribe(0).await.unwrap();
    let first = session
        .send_text("Answer slowly.", BusyMode::Enqueue)
        .await
        .unwrap();
    // Steer once the mock has the first request, while its answer is still streaming.
    wait_until("claude called the API", || !mock.answered().is_empty()).await;
    let steered = session
        .send_text("And this too.", BusyMode::Steer)
        .await
        .unwrap();
    assert_eq!(
        steered.status,
        TurnStatus::Running,
        "delivered into the running attempt"
    );
    let (first_events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first_events:#?}");
    assert_eq!(streamed_text(&first_events), "heard: Answer slowly.");
    let (second_events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{second_events:#?}");
    assert_eq!(
        streamed_text(&second_events),
        "heard: Answer slowly. | And this too.",
        "the steered message was answered in the same conversation"
    );
    assert_eq!(
        count_kind(&first_events, "turn.started") + count_kind(&second_events, "turn.started"),
        1,
        "one attempt served both messages"
    );
    let asked: Vec<String> = mock
        .answered()
        .iter()
        .map(|body| body["messages"].to_string())
        .collect();
    assert!(
        asked.iter().any(|m| m.contains("And this too.")),
        "the steered text reached the CLI: {asked:#?}"
    );
    let turns = session.turns().await.unwrap();
    assert!(turns
        .turns
        .iter()
        .any(|t| t.turn_id == first.turn_id && t.outcome == Some(Outcome::Success)));
}

#[actix_rt::test]
async fn real_claude_usage_from_its_result_line_is_recorded() {
    let Some(command) = real_claude("real_claude_usage_from_its_result_line_is_recorded") else {
        return;
    };
    let (_mock, url) = AnthropicMock::start(Mode::Answer).await;
    let home = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    // What the CLI's `result` line reports for one answer of the mock (10 tokens in, 3 out).
    // Claude Code keeps its process for steered messages: read up to the answer, then drop it.
    let mut run = provider.start(request("What did you hear?"));
    let events = until_end(&mut run).await;
    drop(run);
    let reported = done(&events);
    let expected = troupe_actors::Usage::from_provider(reported.usage.as_ref(), reported.cost_usd)
        .expect("the result line has usage");
    assert!(expected.input_tokens >= 10, "{reported:?}");
    assert!(expected.output_tokens >= 3, "{reported:?}");
    assert!(
        expected.cost_usd > 0.0,
        "Claude Code prices its usage: {reported:?}"
    );

    // The same answer through a session: the turn and the session's totals hold it.
    let rt = runtime_with("claude", provider);
    let session = open_session(&rt, "claude", None).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("What did you hear?", BusyMode::Enqueue)
        .await
        .unwrap();
    let (_, end) = completed(&mut sub).await;
    assert_eq!(ending(&end).0, Outcome::Success);
    let troupe_actors::EventBody::TurnCompleted {
        usage, cost_usd, ..
    } = &end
    else {
        unreachable!("a turn.completed");
    };
    let recorded: troupe_actors::Usage =
        serde_json::from_value(usage.clone().expect("usage recorded")).unwrap();
    assert_eq!(recorded, expected);
    assert_eq!(*cost_usd, Some(expected.cost_usd));
    let view = session.info().await.unwrap();
    assert_eq!(view.usage.total, expected);
    let day = troupe_actors::usage::utc_day();
    let owner_day = rt
        .store()
        .usage_days(Some("local"), &day, &day)
        .await
        .unwrap();
    assert_eq!(owner_day.len(), 1);
    assert_eq!(owner_day[0].usage, expected);
}

/// Sends `text` to `session` and waits for its turn's end; what it streamed.
async fn answer(session: &SessionHandle, text: &str) -> String {
    let after = session.info().await.unwrap().last_seq;
    let mut sub = session.subscribe(after).await.unwrap();
    session.send_text(text, BusyMode::Enqueue).await.unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    streamed_text(&events)
}

#[actix_rt::test]
async fn real_claude_fork_continues_a_copy_of_the_conversation() {
    let Some(command) = real_claude("real_claude_fork_continues_a_copy_of_the_conversation") else {
        return;
    };
    let (_mock, url) = AnthropicMock::start(Mode::Answer).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let provider = CliProvider::new(ClaudeCli, settings(command, &url, home.path()));
    assert!(provider.capabilities().fork);
    let rt = runtime_with("claude", provider);
    let source = open_session(&rt, "claude", Some(project.path())).await;
    assert_eq!(answer(&source, "One.").await, "heard: One.");
    assert_eq!(answer(&source, "Two.").await, "heard: One. | Two.");
    let turns = source.turns().await.unwrap().turns;
    let first_turn = turns[0].turn_id;
    let conversation = source.info().await.unwrap().provider_session_id.unwrap();
    let spec = || CopySpec {
        owner: "local".into(),
        ..CopySpec::default()
    };

    // At the latest turn: the CLI resumes the source's conversation as a fork of it.
    let fork = rt.fork(source.id(), None, spec()).await.unwrap();
    assert_eq!(
        fork.provider_session_id.as_deref(),
        Some(conversation.as_str())
    );
    let forked = rt.handle(fork.id);
    assert_eq!(
        answer(&forked, "Three.").await,
        "heard: One. | Two. | Three.",
        "the fork's CLI knows the copied turns"
    );
    let fork_conversation = forked.info().await.unwrap().provider_session_id.unwrap();
    assert_ne!(
        fork_conversation, conversation,
        "--fork-session gives the fork a conversation of its own"
    );
    assert_eq!(
        answer(&source, "Four.").await,
        "heard: One. | Two. | Four.",
        "the source's conversation never saw the fork's turn"
    );
    assert_eq!(
        source.info().await.unwrap().provider_session_id.as_deref(),
        Some(conversation.as_str())
    );

    // At an earlier turn: the CLI's conversation holds more than the cut, so the fork starts a
    // fresh one whose first prompt carries the transcript of the copied turn.
    let early = rt
        .fork(source.id(), Some(first_turn), spec())
        .await
        .unwrap();
    assert_eq!(early.provider_session_id, None);
    let early = rt.handle(early.id);
    let heard = answer(&early, "Five.").await;
    assert!(
        heard.starts_with("heard: The conversation so far:"),
        "{heard}"
    );
    assert!(
        heard.contains("user: One.") && heard.contains("assistant: heard: One."),
        "{heard}"
    );
    assert!(
        !heard.contains("Two."),
        "only the turns up to the cut: {heard}"
    );
    assert!(heard.ends_with("Five."), "{heard}");
    let early_conversation = early.info().await.unwrap().provider_session_id.unwrap();
    assert_ne!(early_conversation, conversation);
}
