//! `gemini-cli` against a fake `gemini` that prints what Gemini CLI 0.61.0 prints (lines, stderr
//! texts, exit codes), through the real process runner.

mod providers_support;

use providers_support::*;
use serde_json::json;
use troupe::providers::{CliProvider, GeminiCli, SandboxMode};
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
    assert_eq!(
        fake.last_argv(),
        vec!["--output-format", "stream-json", "--skip-trust"]
    );
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
        vec![
            "--output-format",
            "stream-json",
            "--resume",
            &id,
            "--skip-trust"
        ]
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
    // (prompt, class, code, exit code): API errors exit with the HTTP status mod 256.
    let cases = [
        ("toolong", FailureClass::Terminal, "prompt_too_long", 144),
        (
            "unauthorized",
            FailureClass::Terminal,
            "invalid_api_key",
            145,
        ),
        ("ratelimit", FailureClass::Transient, "rate_limited", 173),
        ("turnlimit", FailureClass::Terminal, "turn_limit", 53),
        (
            "noauth",
            FailureClass::Terminal,
            "provider_misconfigured",
            41,
        ),
        ("badinput", FailureClass::Terminal, "invalid_request", 1),
        ("untrusted", FailureClass::Terminal, "untrusted_project", 55),
    ];
    for (prompt, class, code, exit_code) in cases {
        let events = collect(provider.start(request(prompt))).await;
        let error = failure(&events);
        assert_eq!(
            (error.class, error.code.as_str(), error.exit_code),
            (class, code, Some(exit_code)),
            "{prompt}: {error:?}"
        );
        assert!(
            session_ids(&events).is_empty(),
            "{prompt}: a failed run's session id is not kept"
        );
    }
}

#[actix_rt::test]
async fn an_untrusted_folder_names_the_fix_without_colour_codes() {
    let fake = Fake::new();
    let error = failure(
        &collect(
            fake.provider(GeminiCli, "gemini")
                .start(request("untrusted")),
        )
        .await,
    );
    assert!(error.message.contains("trust_project"), "{}", error.message);
    assert!(error.message.contains("--skip-trust"), "{}", error.message);
    assert!(!error.message.contains('\u{1b}'), "{:?}", error.message);
}

#[actix_rt::test]
async fn warnings_become_status_events() {
    let fake = Fake::new();
    let events = collect(fake.provider(GeminiCli, "gemini").start(request("loop"))).await;
    assert!(events.contains(&ProviderEvent::Status(
        json!({"warning": "Loop detected, stopping execution"})
    )));
    done(&events);
}

#[actix_rt::test]
async fn an_unknown_or_removed_session_is_resume_lost_despite_exit_42() {
    let fake = Fake::new();
    for id in ["gone-9", "none-3"] {
        let mut req = request("hello");
        req.provider_session_id = Some(id.into());
        let error = failure(&collect(fake.provider(GeminiCli, "gemini").start(req)).await);
        assert_eq!(
            (error.class, error.code.as_str(), error.exit_code),
            (FailureClass::ResumeLost, "provider_session_lost", Some(42)),
            "{id}: {error:?}"
        );
    }
}

#[actix_rt::test]
async fn garbage_lines_are_skipped_and_a_2_mib_line_is_read_whole() {
    let fake = Fake::new();
    let events = collect(fake.provider(GeminiCli, "gemini").start(request("garbage"))).await;
    done(&events);
    assert_eq!(deltas(&events), format!("{}done after noise", big_text()));
}

#[actix_rt::test]
async fn trust_and_sandbox_settings_become_flags() {
    let fake = Fake::new();
    let mut settings = fake.settings("gemini");
    settings.trust_project = false;
    settings.sandbox = Some(SandboxMode::WorkspaceWrite);
    let provider = CliProvider::new(GeminiCli, settings);
    done(&collect(provider.start(request("hello"))).await);
    assert_eq!(
        fake.last_argv(),
        vec![
            "--output-format",
            "stream-json",
            "--approval-mode",
            "auto_edit"
        ]
    );
}
