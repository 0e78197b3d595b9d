//! Real ACP agents driven by the `acp` provider, each against a mock model API on 127.0.0.1:
//! `@zed-industries/claude-agent-acp` over the real Claude Code CLI (Anthropic Messages mock).
//! Two turns that resume the ACP session (also in a fresh agent process, through `session/load`)
//! and report their usage, a lost ACP session (fresh once, announced), a tool call that asks for
//! permission answered allow (in process, and over REST through the real server), one rejected
//! over the real server's WebSocket, one rejected by the `deny` policy (the tool never runs, no
//! request is shown), one allowed by the `allow` policy without asking, one answered by the
//! timeout, and an abort mid-turn that leaves no process (the agent's process group recorded before
//! it got any message, the record cleared once the group is gone).
//! Skips loudly when the agent is missing, fails under CI.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe::providers::{AcpProvider, AcpSettings, Approvals};
use troupe_actors::{BusyMode, EventBody, Outcome, Provider, Runtime, SessionHandle};

/// The file the mock's tool call writes for "Please write approved.", in the session's project.
const WRITTEN: &str = "approved.txt";

/// The Anthropic Messages mock: answers `heard: <the user's messages>`; when the last user
/// message asks to write, it first calls the `Write` tool, then says what the tool answered.
#[derive(Clone, Default)]
struct AnthropicMock {
    /// Bodies of every `POST /v1/messages`.
    messages: Arc<Mutex<Vec<Value>>>,
    /// Where the tool call writes.
    project: Arc<Mutex<String>>,
}

impl AnthropicMock {
    async fn start(project: &Path) -> (AnthropicMock, String) {
        let mock = AnthropicMock::default();
        *mock.project.lock().unwrap() = project.display().to_string();
        let m = mock.clone();
        let url = serve_mock(move |request| m.reply(&request.path, &request.body)).await;
        (mock, url)
    }

    fn reply(&self, path: &str, body: &Value) -> MockReply {
        if path.starts_with("/v1/messages/count_tokens") {
            return json_reply(200, &json!({"input_tokens": 42}));
        }
        if !path.starts_with("/v1/messages") {
            return json_reply(
                404,
                &json!({"type": "error", "error": {"type": "not_found_error", "message": "no"}}),
            );
        }
        // Every answer has its own message and tool call ids: Claude Code joins the blocks of
        // answers that share a message id, and keeps one result per tool call id.
        let serial = {
            let mut messages = self.messages.lock().unwrap();
            messages.push(body.clone());
            messages.len()
        };
        let (message_id, tool_id) = (format!("msg_mock_{serial}"), format!("toolu_mock_{serial}"));
        let users = user_texts(body);
        let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5");
        let last_is_result = tool_result_text(body);
        let wants_tool = users.last().is_some_and(|t| t.contains("write"));
        let slowly = users.last().is_some_and(|t| t.contains("slowly"));
        let (block, delta, stop) = match (&last_is_result, wants_tool) {
            (None, true) => {
                // "Please write NAME." writes NAME.txt in the project.
                let name = users
                    .last()
                    .and_then(|t| t.split_whitespace().last())
                    .unwrap_or("file");
                let name = name.trim_end_matches('.');
                let input = json!({"file_path": format!("{}/{name}.txt", self.project.lock().unwrap()),
                    "content": "approved\n"});
                (
                    json!({"type": "tool_use", "id": tool_id, "name": "Write", "input": {}}),
                    json!({"type": "input_json_delta", "partial_json": input.to_string()}),
                    "tool_use",
                )
            }
            (Some(result), _) => (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": format!("tool said: {}", result.chars().take(40).collect::<String>())}),
                "end_turn",
            ),
            (None, false) => (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": format!("heard: {}", users.join(" | "))}),
                "end_turn",
            ),
        };
        if body["stream"] != true {
            return json_reply(
                200,
                &json!({"id": message_id, "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 3}}),
            );
        }
        let start = [
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": message_id,
                "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1,
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
            ),
        ];
        let middle = [(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        )];
        let end = [
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": stop,
                "stop_sequence": null}, "usage": {"output_tokens": 3}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ];
        if slowly {
            // Holds the answer open: the turn is still running when the test aborts it.
            return MockReply::Stall(sse_head() + &sse_frames(&start));
        }
        let all: Vec<_> = start.into_iter().chain(middle).chain(end).collect();
        sse_reply(&all)
    }
}

/// The user's own texts in a request (not Claude Code's `<system-reminder>` blocks).
fn user_texts(body: &Value) -> Vec<String> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| match &m["content"] {
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            _ => Vec::new(),
        })
        .filter_map(|b| b["text"].as_str().map(str::trim).map(str::to_string))
        .filter(|t| !t.starts_with('<') && !t.is_empty())
        .collect()
}

/// The text of the last `tool_result` when it answers the call made for the last prompt that
/// asked to write: it comes after that prompt (Claude Code sends a later turn's prompt in the
/// same message as the tool result before it, and may add notes of its own after a result).
fn tool_result_text(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let blocks = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default());
    let (mut result, mut asked) = (None, None);
    for (at, block) in blocks.enumerate() {
        if block["type"] == "tool_result" {
            let text = match &block["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            result = Some((at, text));
        } else if block["text"].as_str().is_some_and(|t| t.contains("write")) {
            asked = Some(at);
        }
    }
    match (result, asked) {
        (Some((at, text)), Some(prompt)) if at > prompt => Some(text),
        _ => None,
    }
}

/// `claude-agent-acp` and the Claude CLI it drives, or a loud skip (a failure under CI).
fn real_agent(test: &str) -> Option<(String, String)> {
    let install = "npm install --prefix .ci/npm @zed-industries/claude-agent-acp @anthropic-ai/claude-code (.ci/run does it)";
    let agent = external::require_program(test, "claude-agent-acp", install)?;
    let claude = external::require_program(test, "claude", install)?;
    Some((agent.display().to_string(), claude.display().to_string()))
}

/// The provider's settings: loopback only, a fake key, its own `HOME`, a short kill grace.
fn settings(
    agent: &str,
    claude: &str,
    url: &str,
    home: &Path,
    approvals: Approvals,
) -> AcpSettings {
    let mut settings = AcpSettings::new(agent);
    for (name, value) in [
        ("ANTHROPIC_BASE_URL", url.to_string()),
        (
            "ANTHROPIC_API_KEY",
            "sk-ant-test-mock-key-000000".to_string(),
        ),
        ("ANTHROPIC_MODEL", "claude-sonnet-4-5".to_string()),
        ("CLAUDE_CODE_EXECUTABLE", claude.to_string()),
        // Claude Code refuses `--allow-dangerously-skip-permissions` (which the adapter passes)
        // as root unless it is told it runs in a sandbox; CI runs as root.
        ("IS_SANDBOX", "1".to_string()),
        ("HOME", home.display().to_string()),
        ("TMPDIR", home.display().to_string()),
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
    settings.kill_grace = Duration::from_millis(500);
    settings.approvals.mode = approvals;
    settings
}

/// One test's world: mock, home, project, the provider and a runtime with it.
struct World {
    mock: AnthropicMock,
    home: tempfile::TempDir,
    project: tempfile::TempDir,
    provider: Arc<AcpProvider>,
    rt: Runtime,
}

async fn world(test: &str, approvals: Approvals, timeout: Option<Duration>) -> Option<World> {
    let (agent, claude) = real_agent(test)?;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let (mock, url) = AnthropicMock::start(project.path()).await;
    let mut settings = settings(&agent, &claude, &url, home.path(), approvals);
    if let Some(timeout) = timeout {
        settings.approvals.timeout = timeout;
    }
    let provider = Arc::new(AcpProvider::new(settings));
    let rt = runtime_with_shared("claude-acp", provider.clone() as Arc<dyn Provider>);
    Some(World {
        mock,
        home,
        project,
        provider,
        rt,
    })
}

impl World {
    async fn session(&self) -> SessionHandle {
        open_session(&self.rt, "claude-acp", Some(self.project.path())).await
    }

    fn written(&self) -> bool {
        self.project.path().join(WRITTEN).exists()
    }
}

/// Waits for the next `permission.requested`; returns its request id and option ids.
async fn next_request(sub: &mut troupe_actors::Subscription) -> (String, Vec<(String, String)>) {
    loop {
        let event = tokio::time::timeout(REAL_TURN_LIMIT, sub.next())
            .await
            .expect("no permission request in time")
            .expect("subscription closed");
        match &event.body {
            EventBody::PermissionRequested {
                request_id,
                options,
                ..
            } => {
                let options = options
                    .iter()
                    .map(|o| (o.id.clone(), o.kind.clone()))
                    .collect();
                return (request_id.clone(), options);
            }
            EventBody::TurnCompleted { .. } => panic!("the turn ended without asking: {event:?}"),
            _ => {}
        }
    }
}

#[actix_rt::test]
async fn claude_acp_two_turns_resume_also_in_a_fresh_agent_process() {
    let Some(w) = world(
        "claude_acp_two_turns_resume_also_in_a_fresh_agent_process",
        Approvals::Ask,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Say hello.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first:#?}");
    assert_eq!(streamed_text(&first), "heard: Say hello.");
    // claude-agent-acp reports the prompt's tokens with its result, and its cost.
    let EventBody::TurnCompleted {
        usage, cost_usd, ..
    } = &end
    else {
        unreachable!("completed() ends with a turn.completed")
    };
    let usage = usage.as_ref().expect("the turn's usage");
    assert!(usage["input_tokens"].as_u64() >= Some(10), "{usage}");
    assert!(usage["output_tokens"].as_u64() >= Some(3), "{usage}");
    assert!(
        cost_usd.is_some_and(|c| c > 0.0),
        "the cost of its usage_update: {cost_usd:?}"
    );
    let first_cost = cost_usd.unwrap_or_default();
    let acp_session = session.info().await.unwrap().provider_session_id;
    assert!(
        acp_session.is_some(),
        "the ACP session id is the provider session id"
    );
    session
        .send_text("Again.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (second, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{second:#?}");
    assert_eq!(
        streamed_text(&second),
        "heard: Say hello. | Again.",
        "same agent, same conversation"
    );
    // The agent reports the session's cumulative cost: the second turn counts only its own.
    let EventBody::TurnCompleted { cost_usd, .. } = &end else {
        unreachable!("completed() ends with a turn.completed")
    };
    let second_cost = cost_usd.expect("the second turn's cost");
    assert!(
        second_cost > 0.0 && second_cost < first_cost * 1.5,
        "{second_cost} after {first_cost}"
    );
    // The agent process goes (as on passivation); the next turn loads the session in a new one.
    let pid = session.snapshot().await.unwrap().run.map(|r| r.pid);
    assert!(pid.is_none(), "nothing runs between turns");
    w.provider.end_session(session.id());
    session
        .send_text("Third.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (third, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{third:#?}");
    assert_eq!(
        streamed_text(&third),
        "heard: Say hello. | Again. | Third.",
        "session/load resumed the conversation in a fresh agent"
    );
    assert_eq!(
        session.info().await.unwrap().provider_session_id,
        acp_session
    );
}

#[actix_rt::test]
async fn claude_acp_asks_before_writing_and_an_allow_runs_the_tool() {
    let Some(w) = world(
        "claude_acp_asks_before_writing_and_an_allow_runs_the_tool",
        Approvals::Ask,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Please write approved.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (request_id, options) = next_request(&mut sub).await;
    assert!(!w.written(), "nothing is written before the answer");
    let allow = options
        .iter()
        .find(|(_, kind)| kind == "allow_once")
        .expect("an allow option");
    let answer = session
        .answer_permission(&request_id, &allow.0, "local")
        .await
        .unwrap();
    assert_eq!(answer.by, "local");
    let second = session
        .answer_permission(&request_id, &allow.0, "local")
        .await;
    assert_eq!(
        second.unwrap_err().code(),
        "permission_resolved",
        "a second answer is refused"
    );
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert!(w.written(), "the allowed tool ran");
    assert!(events.iter().any(
        |e| matches!(e, EventBody::PermissionResolved { option_id: Some(o), .. } if *o == allow.0)
    ));
    assert!(
        events.iter().any(|e| matches!(
            e,
            EventBody::ToolResult {
                is_error: false,
                ..
            }
        )),
        "{events:#?}"
    );
    assert!(streamed_text(&events).contains("tool said"), "{events:#?}");
}

#[actix_rt::test]
async fn claude_acp_policy_deny_never_runs_the_tool_and_never_asks() {
    let Some(w) = world(
        "claude_acp_policy_deny_never_runs_the_tool_and_never_asks",
        Approvals::Deny,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Please write approved.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert_eq!(
        count_kind(&events, "permission.requested"),
        0,
        "the policy answered"
    );
    assert!(!w.written(), "the denied tool never ran");
    assert!(
        w.mock.messages.lock().unwrap().len() >= 2,
        "the model heard the refusal"
    );
}

#[actix_rt::test]
async fn claude_acp_policy_allow_runs_the_tool_without_asking() {
    let Some(w) = world(
        "claude_acp_policy_allow_runs_the_tool_without_asking",
        Approvals::Allow,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Please write approved.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert_eq!(
        count_kind(&events, "permission.requested"),
        0,
        "allowed without asking"
    );
    assert!(w.written(), "the allowed tool ran");
}

#[actix_rt::test]
async fn claude_acp_unanswered_request_times_out_as_a_rejection() {
    let Some(w) = world(
        "claude_acp_unanswered_request_times_out_as_a_rejection",
        Approvals::Ask,
        Some(Duration::from_millis(300)),
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Please write approved.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    let timed_out = events.iter().any(|e| {
        matches!(e, EventBody::PermissionResolved { by, option_id: Some(_), .. } if by == "timeout")
    });
    assert!(
        timed_out,
        "the timeout answered with the reject option: {events:#?}"
    );
    assert!(!w.written(), "the rejected tool never ran");
}

#[actix_rt::test]
async fn claude_acp_abort_mid_turn_leaves_no_process() {
    let Some(w) = world(
        "claude_acp_abort_mid_turn_leaves_no_process",
        Approvals::Ask,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Answer slowly.", BusyMode::Enqueue)
        .await
        .unwrap();
    wait_until("the agent called the model", || {
        !w.mock.messages.lock().unwrap().is_empty()
    })
    .await;
    let pid = session
        .snapshot()
        .await
        .unwrap()
        .run
        .and_then(|r| r.pid)
        .expect("a pid") as i32;
    // The agent's process group was recorded before it got any message, so a crashed server's
    // successor would reap it.
    let recorded = w.rt.store().process_groups().await.unwrap();
    assert_eq!(
        recorded.iter().map(|r| r.leader_pid).collect::<Vec<_>>(),
        vec![pid],
        "{recorded:?}"
    );
    let aborted = session.abort().await.unwrap();
    assert!(aborted.aborted);
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end).0, Outcome::Aborted, "{events:#?}");
    assert!(
        wait_gone(pid).await,
        "the agent's process is gone after the abort"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !w.rt.store().process_groups().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the record stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session goes on in a fresh agent.
    session
        .send_text("Hello again.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
}

#[actix_rt::test]
async fn claude_acp_lost_session_starts_fresh_once() {
    let Some(w) = world(
        "claude_acp_lost_session_starts_fresh_once",
        Approvals::Ask,
        None,
    )
    .await
    else {
        return;
    };
    let session = w.session().await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("First.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first:#?}");
    let lost = session.info().await.unwrap().provider_session_id;
    // The agent goes, and so does the transcript Claude Code kept of the conversation: the
    // next agent's `session/load` finds nothing to load.
    w.provider.end_session(session.id());
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::fs::remove_dir_all(w.home.path().join(".claude/projects")).unwrap();
    session
        .send_text("Second.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert!(
        events.iter().any(|e| matches!(e,
            EventBody::SessionUpdated { reason, .. } if reason == "provider_session_reset")),
        "the reset is announced: {events:#?}"
    );
    assert_eq!(count_kind(&events, "turn.started"), 2, "fresh once");
    assert_eq!(streamed_text(&events), "heard: Second.");
    let fresh = session.info().await.unwrap().provider_session_id;
    assert!(fresh.is_some() && fresh != lost, "{fresh:?} after {lost:?}");
}

#[actix_rt::test]
async fn claude_acp_permissions_answered_over_rest_and_the_websocket() {
    use troupe::providers::{ProviderConfig, ProviderKind};
    let test = "claude_acp_permissions_answered_over_rest_and_the_websocket";
    let Some((agent, claude)) = real_agent(test) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let (_mock, url) = AnthropicMock::start(project.path()).await;
    // The real server, configured as an operator would: `[providers.claude-acp] kind = "acp"`.
    let acp = settings(&agent, &claude, &url, home.path(), Approvals::Ask);
    let mut provider = ProviderConfig::of_kind(ProviderKind::Acp);
    provider.command = Some(agent);
    provider.env = acp.env;
    provider.timeouts.kill_grace_ms = Some(500);
    let mut server = acp_server::AcpServer::start("claude-acp", provider).await;
    let _ = env_logger::builder().is_test(true).try_init();
    acp_server::permissions_over_rest_and_the_websocket(&mut server, "claude-acp", project.path())
        .await;
    server.stop().await;
}
