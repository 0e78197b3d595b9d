//! `claude-cli` against a fake `claude` that prints Claude Code 2.1's stream-json lines, through
//! the real process runner.

mod providers_support;

use providers_support::*;
use serde_json::json;
use troupe::providers::ClaudeCli;
use troupe_actors::{FailureClass, Provider, ProviderEvent};

fn one_shot(fake: &Fake) -> troupe::providers::CliProvider {
    let mut settings = fake.settings("claude");
    settings.steer = false;
    troupe::providers::CliProvider::new(ClaudeCli, settings)
}

#[actix_rt::test]
async fn tool_use_is_normalized_and_the_session_id_captured() {
    let fake = Fake::new();
    let events = collect(one_shot(&fake).start(request("tool please"))).await;
    let ids = session_ids(&events);
    assert_eq!(ids.len(), 1, "{events:#?}");
    assert!(events.contains(&ProviderEvent::Thinking("I should list files.".into())));
    assert!(events.contains(&ProviderEvent::ToolUse {
        tool_id: "toolu_01".into(),
        name: "Bash".into(),
        input: json!({"command": "ls", "description": "List files"}),
    }));
    assert!(events.contains(&ProviderEvent::ToolResult {
        tool_id: "toolu_01".into(),
        output: json!("Cargo.toml\nsrc"),
        is_error: false,
    }));
    assert_eq!(deltas(&events), "There are 2 files.");
    assert_eq!(messages(&events), vec!["There are 2 files."]);
    let completion = done(&events);
    assert_eq!(completion.cost_usd, Some(0.0123));
    assert_eq!(completion.usage.unwrap()["output_tokens"], 7);
    assert_eq!(completion.exit_code, Some(0));
    let argv = fake.last_argv();
    assert_eq!(
        &argv[..4],
        &["-p", "--output-format", "stream-json", "--verbose"]
    );
    assert!(!argv.contains(&"--input-format".to_string()));
}

#[actix_rt::test]
async fn the_next_turn_resumes_the_captured_session() {
    let fake = Fake::new();
    let provider = one_shot(&fake);
    let first = collect(provider.start(request("hello"))).await;
    done(&first);
    let id = session_ids(&first).pop().expect("a session id");
    let mut next = request("again");
    next.provider_session_id = Some(id.clone());
    next.model = Some("claude-opus-4-1".into());
    let second = collect(provider.start(next)).await;
    done(&second);
    assert_eq!(session_ids(&second), vec![id.clone()]);
    assert_eq!(deltas(&second), format!("resumed {id}: 5 bytes"));
    let argv = fake.last_argv();
    let at = argv.iter().position(|a| a == "--resume").expect("--resume");
    assert_eq!(argv[at + 1], id);
    let at = argv.iter().position(|a| a == "--model").expect("--model");
    assert_eq!(argv[at + 1], "claude-opus-4-1");
}

#[actix_rt::test]
async fn a_forked_session_resumes_with_fork_session_and_gets_its_own_id() {
    let fake = Fake::new();
    let provider = one_shot(&fake);
    let first = collect(provider.start(request("hello"))).await;
    let source = session_ids(&first).pop().expect("a session id");
    let mut fork = request("forked");
    fork.provider_session_id = Some(source.clone());
    fork.fork_session = true;
    let forked = collect(provider.start(fork)).await;
    done(&forked);
    assert_eq!(deltas(&forked), format!("resumed {source}: 6 bytes"));
    let argv = fake.last_argv();
    let at = argv.iter().position(|a| a == "--resume").expect("--resume");
    assert_eq!(argv[at + 1], source);
    assert_eq!(argv[at + 2], "--fork-session");
    let new_id = session_ids(&forked).pop().expect("the fork's session id");
    assert_ne!(new_id, source, "the fork has a conversation of its own");
    assert!(provider.capabilities().fork);
}

#[actix_rt::test]
async fn a_crash_mid_stream_is_transient_with_the_exit_code_and_stderr() {
    let fake = Fake::new();
    let events = collect(one_shot(&fake).start(request("crash now"))).await;
    assert_eq!(deltas(&events), "Starting to work");
    let error = failure(&events);
    assert_eq!(error.class, FailureClass::Transient);
    assert_eq!(error.code, "provider_crashed");
    assert_eq!(error.exit_code, Some(3));
    assert!(
        error.message.contains("something broke inside"),
        "{error:?}"
    );
}

#[actix_rt::test]
async fn prompt_too_long_reported_as_success_with_is_error_is_terminal() {
    let fake = Fake::new();
    let events = collect(one_shot(&fake).start(request("toolong"))).await;
    let error = failure(&events);
    assert_eq!(error.class, FailureClass::Terminal);
    assert_eq!(error.code, "prompt_too_long");
    assert_eq!(error.exit_code, Some(1));
    assert!(error.message.starts_with("Prompt is too long"));
}

#[actix_rt::test]
async fn invalid_key_is_terminal_and_overloaded_transient() {
    let fake = Fake::new();
    let provider = one_shot(&fake);
    let error = failure(&collect(provider.start(request("badkey"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "invalid_api_key")
    );
    let error = failure(&collect(provider.start(request("overloaded"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Transient, "overloaded")
    );
}

#[actix_rt::test]
async fn a_forgotten_session_is_resume_lost() {
    let fake = Fake::new();
    let mut req = request("hello");
    req.provider_session_id = Some("gone-1234".into());
    let error = failure(&collect(one_shot(&fake).start(req)).await);
    assert_eq!(error.class, FailureClass::ResumeLost);
    assert!(error.message.contains("No conversation found"), "{error:?}");
}

#[actix_rt::test]
async fn garbage_lines_are_skipped_and_a_2_mib_line_is_read_whole() {
    let fake = Fake::new();
    let events = collect(one_shot(&fake).start(request("garbage"))).await;
    done(&events);
    assert_eq!(
        messages(&events),
        vec![big_text(), "done after noise".to_string()]
    );
}

#[actix_rt::test]
async fn a_missing_executable_is_terminal_and_unavailable() {
    let mut settings = Fake::new().settings("claude");
    settings.command = "/nonexistent/claude".into();
    let provider = troupe::providers::CliProvider::new(ClaudeCli, settings);
    assert!(!provider.available());
    let error = failure(&collect(provider.start(request("hi"))).await);
    assert_eq!(
        (error.class, error.code.as_str()),
        (FailureClass::Terminal, "executable_not_found")
    );
}

#[actix_rt::test]
async fn prompts_reach_stdin_intact_and_never_argv() {
    let fake = Fake::new();
    let provider = one_shot(&fake);
    let nasty = "hi $(touch /tmp/pwned) `id` ; rm -rf / && echo \"$HOME\" | cat > x 'q' \\ * ? ~ \n€ 日本 \u{0}";
    let big: String = "0123456789abcdef".repeat(100 * 1024 / 16);
    for prompt in [nasty.to_string(), big] {
        let events = collect(provider.start(request(&prompt))).await;
        done(&events);
        let records = fake.records();
        let last = records.last().unwrap();
        assert_eq!(last["stdin"].as_str().unwrap(), prompt);
        assert_eq!(deltas(&events), format!("received {} bytes", prompt.len()));
        let argv = fake.last_argv();
        assert!(
            argv.iter().all(|a| !a.contains("touch") && a.len() < 100),
            "{argv:?}"
        );
    }
}

#[actix_rt::test]
async fn the_environment_is_allow_listed_and_the_project_is_the_working_directory() {
    let fake = Fake::new();
    let project = tempfile::tempdir().unwrap();
    // Set once for this test binary; other tests never read these names.
    std::env::set_var("FAKE_SECRET_LEAK", "sk-should-not-pass");
    std::env::set_var("FAKE_PASSED", "passed-through");
    let mut settings = fake.settings("claude");
    settings.steer = false;
    settings.pass_env = vec!["FAKE_PASSED".into()];
    settings
        .env
        .insert("FAKE_CONFIGURED".into(), "configured".into());
    let provider = troupe::providers::CliProvider::new(ClaudeCli, settings);
    let mut req = request("hello");
    req.project = Some(project.path().display().to_string());
    done(&collect(provider.start(req)).await);
    let record = fake.records().pop().unwrap();
    assert_eq!(record["env"]["FAKE_SECRET_LEAK"], serde_json::Value::Null);
    assert_eq!(record["env"]["FAKE_PASSED"], "passed-through");
    assert_eq!(record["env"]["FAKE_CONFIGURED"], "configured");
    assert!(record["env"]["PATH"].is_string());
    let cwd = std::fs::canonicalize(record["cwd"].as_str().unwrap()).unwrap();
    assert_eq!(cwd, std::fs::canonicalize(project.path()).unwrap());
    assert_eq!(
        record["pgid"], record["pid"],
        "the child leads its own process group"
    );
}

#[actix_rt::test]
async fn steering_feeds_more_user_lines_into_the_same_process() {
    let fake = Fake::new();
    let provider = fake.provider(ClaudeCli, "claude");
    assert!(provider.capabilities().steer);
    let mut run = provider.start(request("first message"));
    let pid = run.pid.expect("a pid");
    let first = until_end(&mut run).await;
    assert_eq!(deltas(&first), "received 13 bytes");
    let steer = run.steer.clone().expect("a steer channel");
    steer.send("second".into()).unwrap();
    let second = until_end(&mut run).await;
    assert!(
        matches!(second.last(), Some(ProviderEvent::Done(_))),
        "{second:#?}"
    );
    assert_eq!(deltas(&second), "received 6 bytes");
    let records = fake.records();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r["pid"] == pid && r["streaming"] == true));
    assert!(fake
        .last_argv()
        .windows(2)
        .any(|w| w == ["--input-format", "stream-json"]));
    drop(run);
    assert!(
        wait_gone(pid as i32).await,
        "the steered process outlived its run"
    );
}
