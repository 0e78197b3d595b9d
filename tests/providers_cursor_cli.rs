//! `cursor-cli` against a fake `cursor-agent` that prints `-p --output-format stream-json` lines,
//! through the real process runner, including a non-zero exit without a result.

mod providers_support;

use providers_support::*;
use serde_json::json;
use troupe::providers::CursorCli;
use troupe_actors::{FailureClass, Provider, ProviderEvent};

#[actix_rt::test]
async fn tool_calls_and_text_are_normalized() {
    let fake = Fake::new();
    let events = collect(
        fake.provider(CursorCli, "cursor-agent")
            .start(request("tool")),
    )
    .await;
    assert_eq!(session_ids(&events).len(), 1);
    assert!(events.contains(&ProviderEvent::ToolUse {
        tool_id: "call_1".into(),
        name: "read".into(),
        input: json!({"path": "README.md"}),
    }));
    assert!(events.contains(&ProviderEvent::ToolResult {
        tool_id: "call_1".into(),
        output: json!({"success": {"content": "# Troupe", "totalLines": 1}}),
        is_error: false,
    }));
    assert_eq!(messages(&events), vec!["Let me read it.", "It is a title."]);
    assert_eq!(done(&events).exit_code, Some(0));
    assert_eq!(
        fake.last_argv(),
        vec!["-p", "--output-format", "stream-json"]
    );
}

#[actix_rt::test]
async fn the_next_turn_resumes_the_session() {
    let fake = Fake::new();
    let provider = fake.provider(CursorCli, "cursor-agent");
    let id = session_ids(&collect(provider.start(request("hello"))).await)
        .pop()
        .expect("a session id");
    let mut next = request("again");
    next.provider_session_id = Some(id.clone());
    next.model = Some("gpt-5".into());
    let second = collect(provider.start(next)).await;
    assert_eq!(deltas(&second), format!("resumed {id}: 5 bytes"));
    assert_eq!(
        fake.last_argv(),
        vec![
            "-p".to_string(),
            "--output-format".into(),
            "stream-json".into(),
            format!("--resume={id}"),
            "--model".into(),
            "gpt-5".into()
        ]
    );
}

#[actix_rt::test]
async fn a_non_zero_exit_without_a_result_is_transient() {
    let fake = Fake::new();
    let events = collect(
        fake.provider(CursorCli, "cursor-agent")
            .start(request("crash")),
    )
    .await;
    assert_eq!(deltas(&events), "Start");
    let error = failure(&events);
    assert_eq!(error.class, FailureClass::Transient);
    assert_eq!(error.exit_code, Some(1));
    assert!(error.message.contains("connection closed"), "{error:?}");
}

#[actix_rt::test]
async fn error_results_and_missing_login_are_terminal() {
    let fake = Fake::new();
    let provider = fake.provider(CursorCli, "cursor-agent");
    let error = failure(&collect(provider.start(request("error"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "invalid_request")
    );
    let error = failure(&collect(provider.start(request("noauth"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "invalid_api_key")
    );
}

#[actix_rt::test]
async fn an_unknown_session_is_resume_lost() {
    let fake = Fake::new();
    let mut req = request("hello");
    req.provider_session_id = Some("gone-5".into());
    let error = failure(&collect(fake.provider(CursorCli, "cursor-agent").start(req)).await);
    assert_eq!(error.class, FailureClass::ResumeLost);
}

#[actix_rt::test]
async fn garbage_lines_are_skipped_and_a_2_mib_line_is_read_whole() {
    let fake = Fake::new();
    let events = collect(
        fake.provider(CursorCli, "cursor-agent")
            .start(request("garbage")),
    )
    .await;
    done(&events);
    assert_eq!(
        messages(&events),
        vec![format!("{}done after noise", big_text())]
    );
}
