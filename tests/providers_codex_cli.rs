//! `codex-cli` against a fake `codex` that prints what Codex 0.171.0 prints for `codex exec --json`
//! (lines, stderr texts, exit codes), through the real process runner.

mod providers_support;

use providers_support::*;
use serde_json::json;
use troupe::providers::{CliProvider, CodexCli, SandboxMode};
use troupe_actors::{FailureClass, Provider, ProviderEvent};

#[actix_rt::test]
async fn items_become_tool_events_and_messages_and_the_thread_is_captured() {
    let fake = Fake::new();
    let events = collect(
        fake.provider(CodexCli, "codex")
            .start(request("tool please")),
    )
    .await;
    assert_eq!(session_ids(&events).len(), 1);
    assert!(events.contains(&ProviderEvent::Thinking("**Listing files**".into())));
    let uses: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ProviderEvent::ToolUse { .. }))
        .collect();
    assert_eq!(
        uses.len(),
        2,
        "a command announced once, then a file change: {events:#?}"
    );
    assert_eq!(
        uses[0],
        &ProviderEvent::ToolUse {
            tool_id: "item_1".into(),
            name: "shell".into(),
            input: json!({"command": "bash -lc ls"}),
        }
    );
    assert!(events.contains(&ProviderEvent::ToolResult {
        tool_id: "item_1".into(),
        output: json!({"output": "Cargo.toml\nsrc\n", "exit_code": 0}),
        is_error: false,
    }));
    assert_eq!(deltas(&events), "There are 2 files.");
    let completion = done(&events);
    assert_eq!(completion.usage.unwrap()["output_tokens"], 122);
    assert_eq!(completion.exit_code, Some(0));
    assert_eq!(
        fake.last_argv(),
        vec!["exec", "--json", "--skip-git-repo-check", "-"]
    );
}

#[actix_rt::test]
async fn the_next_turn_resumes_the_thread() {
    let fake = Fake::new();
    let provider = fake.provider(CodexCli, "codex");
    let first = collect(provider.start(request("hello"))).await;
    let thread = session_ids(&first).pop().expect("a thread id");
    let mut next = request("again");
    next.provider_session_id = Some(thread.clone());
    let second = collect(provider.start(next)).await;
    done(&second);
    assert_eq!(deltas(&second), format!("resumed {thread}: 5 bytes"));
    assert_eq!(
        fake.last_argv(),
        vec![
            "exec",
            "--json",
            "--skip-git-repo-check",
            "resume",
            &thread,
            "-"
        ]
    );
}

#[actix_rt::test]
async fn a_crash_mid_stream_is_transient() {
    let fake = Fake::new();
    let events = collect(fake.provider(CodexCli, "codex").start(request("crash"))).await;
    assert_eq!(deltas(&events), "Starting");
    let error = failure(&events);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "provider_crashed")
    );
    assert_eq!(error.exit_code, Some(101));
    assert!(error.message.contains("panicked"));
}

#[actix_rt::test]
async fn turn_failed_is_classified() {
    let fake = Fake::new();
    let provider = fake.provider(CodexCli, "codex");
    let cases = [
        ("toolong", FailureClass::Terminal, "prompt_too_long"),
        ("ratelimit", FailureClass::Transient, "rate_limited"),
        ("busy", FailureClass::Transient, "provider_unavailable"),
        ("unauthorized", FailureClass::Terminal, "invalid_api_key"),
        ("nokey", FailureClass::Terminal, "missing_api_key"),
    ];
    for (prompt, class, code) in cases {
        let error = failure(&collect(provider.start(request(prompt))).await);
        assert_eq!(
            (error.class, error.code.as_str(), error.exit_code),
            (class, code, Some(1)),
            "{prompt}: {error:?}"
        );
    }
    let error = failure(&collect(provider.start(request("nokey"))).await);
    assert!(
        error.message.contains("`OPENAI_API_KEY`") && error.message.contains("api_key_env"),
        "{}",
        error.message
    );
}

#[actix_rt::test]
async fn an_unknown_thread_is_resume_lost() {
    let fake = Fake::new();
    let mut req = request("hello");
    req.provider_session_id = Some("gone-77".into());
    let error = failure(&collect(fake.provider(CodexCli, "codex").start(req)).await);
    assert_eq!(
        (error.class, error.code.as_str(), error.exit_code),
        (FailureClass::ResumeLost, "provider_session_lost", Some(1))
    );
    assert!(error
        .message
        .contains("no rollout found for thread id gone-77"));
}

#[actix_rt::test]
async fn garbage_lines_are_skipped_and_a_2_mib_line_is_read_whole() {
    let fake = Fake::new();
    let events = collect(fake.provider(CodexCli, "codex").start(request("garbage"))).await;
    done(&events);
    assert_eq!(
        messages(&events),
        vec![big_text(), "done after noise".to_string()]
    );
}

#[actix_rt::test]
async fn prompts_reach_stdin_intact() {
    let fake = Fake::new();
    let prompt = format!("a'b\"c$(d)`e`|f;g&h>i<j\n{}", "z".repeat(100 * 1024));
    done(&collect(fake.provider(CodexCli, "codex").start(request(&prompt))).await);
    assert_eq!(fake.records()[0]["stdin"].as_str().unwrap(), prompt);
}

#[actix_rt::test]
async fn trust_and_sandbox_settings_become_flags() {
    let fake = Fake::new();
    let mut settings = fake.settings("codex");
    settings.trust_project = false;
    settings.sandbox = Some(SandboxMode::FullAccess);
    let provider = CliProvider::new(CodexCli, settings);
    done(&collect(provider.start(request("hello"))).await);
    assert_eq!(
        fake.last_argv(),
        vec!["exec", "--json", "--sandbox", "danger-full-access", "-"]
    );
}
