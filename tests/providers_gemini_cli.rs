//! `gemini-cli` against a fake `gemini` that prints `--output-format stream-json` lines, through
//! the real process runner, including its exit-code meanings.

mod providers_support;

use providers_support::*;
use serde_json::json;
use troupe::providers::GeminiCli;
use troupe_actors::{FailureClass, Provider, ProviderEvent};

#[actix_rt::test]
async fn tool_use_and_deltas_are_normalized() {
    let fake = Fake::new();
    let events = collect(fake.provider(GeminiCli, "gemini").start(request("tool"))).await;
    assert_eq!(session_ids(&events).len(), 1);
    assert!(events.contains(&ProviderEvent::ToolUse {
        tool_id: "ls-1".into(),
        name: "list_directory".into(),
        input: json!({"dir_path": "."}),
    }));
    assert!(events.contains(&ProviderEvent::ToolResult {
        tool_id: "ls-1".into(),
        output: json!("Listed 2 item(s)."),
        is_error: false,
    }));
    assert_eq!(deltas(&events), "Let me look.There are 2 files.");
    assert_eq!(
        messages(&events),
        vec!["Let me look.", "There are 2 files."]
    );
    let completion = done(&events);
    assert_eq!(completion.usage.unwrap()["total_tokens"], 120);
    assert_eq!(fake.last_argv(), vec!["--output-format", "stream-json"]);
}

#[actix_rt::test]
async fn the_next_turn_resumes_the_session() {
    let fake = Fake::new();
    let provider = fake.provider(GeminiCli, "gemini");
    let id = session_ids(&collect(provider.start(request("hello"))).await)
        .pop()
        .expect("a session id");
    let mut next = request("again");
    next.provider_session_id = Some(id.clone());
    let second = collect(provider.start(next)).await;
    done(&second);
    assert_eq!(deltas(&second), format!("resumed {id}: 5 bytes"));
    assert_eq!(
        fake.last_argv(),
        vec!["--output-format", "stream-json", "--resume", &id]
    );
}

#[actix_rt::test]
async fn a_crash_mid_stream_is_transient() {
    let fake = Fake::new();
    let events = collect(fake.provider(GeminiCli, "gemini").start(request("crash"))).await;
    assert_eq!(deltas(&events), "Start");
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "provider_crashed")
    );
    assert_eq!(error.exit_code, Some(134));
}

#[actix_rt::test]
async fn error_results_and_exit_codes_are_classified() {
    let fake = Fake::new();
    let provider = fake.provider(GeminiCli, "gemini");
    let error = failure(&collect(provider.start(request("toolong"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "prompt_too_long")
    );
    let events = collect(provider.start(request("turnlimit"))).await;
    assert!(events.contains(&ProviderEvent::Status(
        json!({"warning": "Loop detected, stopping"})
    )));
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "turn_limit")
    );
    assert_eq!(error.exit_code, Some(53));
    let error = failure(&collect(provider.start(request("badinput"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "invalid_request")
    );
    assert_eq!(error.exit_code, Some(42));
}

#[actix_rt::test]
async fn an_unknown_session_is_resume_lost() {
    let fake = Fake::new();
    let mut req = request("hello");
    req.provider_session_id = Some("gone-9".into());
    let error = failure(&collect(fake.provider(GeminiCli, "gemini").start(req)).await);
    assert_eq!(error.class, FailureClass::ResumeLost);
}

#[actix_rt::test]
async fn garbage_lines_are_skipped_and_a_2_mib_line_is_read_whole() {
    let fake = Fake::new();
    let events = collect(fake.provider(GeminiCli, "gemini").start(request("garbage"))).await;
    done(&events);
    assert_eq!(deltas(&events), format!("{}done after noise", big_text()));
}
