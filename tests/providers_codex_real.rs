//! The real Codex CLI (npm `@openai/codex`, pinned in `.ci/run`) driven through Troupe against a
//! mock of the OpenAI Responses streaming API on 127.0.0.1, chosen by a `CODEX_HOME` whose
//! `config.toml` names a `model_provider` with `wire_api = "responses"`: two turns on one thread,
//! a shell tool call, a context-length 400 and a 401 (terminal, attempted once), a 429 and a 500
//! (retried), an unset key variable (terminal, named), a lost thread (fresh once, announced),
//! an interrupt mid-run, an untrusted folder (terminal, naming the fix) and the default config in
//! a folder that is no Git repository. Skips loudly when `codex` is missing, fails under CI.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use troupe::providers::{CodexCli, ProviderKind, SandboxMode};

/// The variable the mock provider's key is read from.
const KEY_VAR: &str = "TROUPE_TEST_CODEX_KEY";

/// What the mock does with one request; an empty plan answers.
enum Step {
    /// An HTTP error with the API's JSON body.
    Fail(u16, Value),
    /// A `function_call` of the shell tool.
    Tool,
    /// Starts the response, then never finishes it.
    Stall,
}

/// A mock of `POST /v1/responses`.
#[derive(Clone, Default)]
struct ResponsesMock {
    /// Steps for the next requests, in order.
    plan: Arc<Mutex<VecDeque<Step>>>,
    /// Every request body.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl ResponsesMock {
    async fn start(plan: Vec<Step>) -> (ResponsesMock, String) {
        let mock = ResponsesMock {
            plan: Arc::new(Mutex::new(plan.into())),
            ..ResponsesMock::default()
        };
        let m = mock.clone();
        let url = serve_mock(move |request| m.reply(request)).await;
        (mock, url)
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    fn reply(&self, request: MockRequest) -> MockReply {
        if request.method != "POST" || !request.path.starts_with("/v1/responses") {
            return json_reply(404, &json!({"error": {"message": "not here"}}));
        }
        self.requests.lock().unwrap().push(request.body.clone());
        let step = self.plan.lock().unwrap().pop_front();
        let created = (
            Some("response.created"),
            json!({"type": "response.created", "response": {"id": "resp_mock"}}),
        );
        let item = match step {
            Some(Step::Fail(status, body)) => return json_reply(status, &body),
            Some(Step::Stall) => return MockReply::Stall(sse_head() + &sse_frames(&[created])),
            Some(Step::Tool) => json!({"type": "function_call", "id": "fc_1", "call_id": "call_1",
                "name": "exec_command", "arguments": json!({"cmd": "echo tool-ran"}).to_string(),
                "status": "completed"}),
            None => json!({"type": "message", "id": "msg_1", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text",
                "text": format!("heard: {}", user_texts(&request.body).join(" | ")),
                "annotations": []}]}),
        };
        sse_reply(&[
            created,
            (
                Some("response.output_item.done"),
                json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
            ),
            (
                Some("response.completed"),
                json!({"type": "response.completed", "response": {"id": "resp_mock", "usage": {
                "input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 16}}}),
            ),
        ])
    }
}

/// The user's own messages in a request (not the context blocks Codex adds as user messages).
fn user_texts(body: &Value) -> Vec<String> {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|i| i["type"] == "message" && i["role"] == "user")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::trim).map(str::to_string))
        .filter(|t| !t.starts_with('<'))
        .collect()
}

/// The real `codex`, a mock with `plan` and a `CODEX_HOME` pointed at it; `None` after a skip.
async fn setup(test: &str, plan: Vec<Step>) -> Option<(ResponsesMock, RealCli)> {
    let install = "npm install --prefix .ci/npm @openai/codex@0.171.0 (.ci/run does it)";
    let command = external::require_program(test, "codex", install)?;
    let (mock, url) = ResponsesMock::start(plan).await;
    let mut codex = RealCli::new(command, ProviderKind::CodexCli, cli_provider::<CodexCli>);
    let config = format!(
        "model = \"gpt-5\"\nmodel_provider = \"mock\"\ncheck_for_update_on_startup = false\n\
         \n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{url}/v1\"\n\
         wire_api = \"responses\"\nenv_key = \"{KEY_VAR}\"\nrequest_max_retries = 0\n\
         stream_max_retries = 0\n\n[analytics]\nenabled = false\n"
    );
    std::fs::write(codex.home.path().join("config.toml"), config).unwrap();
    let home = codex.home.path().display().to_string();
    codex.settings.env.insert("CODEX_HOME".into(), home);
    codex
        .settings
        .env
        .insert(KEY_VAR.into(), "sk-test-mock-key-0000".into());
    codex.settings.sandbox = Some(SandboxMode::ReadOnly);
    Some((mock, codex))
}

#[actix_rt::test]
async fn real_codex_two_turns_resume_the_thread() {
    let Some((_mock, codex)) = setup("real_codex_two_turns_resume_the_thread", vec![]).await else {
        return;
    };
    two_turns_resume(codex.provider(), codex.project()).await;
}

#[actix_rt::test]
async fn real_codex_runs_a_shell_tool() {
    let Some((mock, codex)) = setup("real_codex_runs_a_shell_tool", vec![Step::Tool]).await else {
        return;
    };
    let mut request = request("Run echo.");
    request.project = Some(codex.project().display().to_string());
    let events = collect(codex.provider().start(request)).await;
    done(&events);
    let ((name, input), (output, is_error)) = tool_round_trip(&events);
    assert_eq!(name, "shell");
    assert!(
        input["command"].to_string().contains("echo tool-ran"),
        "{input}"
    );
    assert!(!is_error, "{output}");
    assert!(
        output["output"].to_string().contains("tool-ran"),
        "{output}"
    );
    let sent_back = mock.requests().last().unwrap().to_string();
    assert!(sent_back.contains("function_call_output") && sent_back.contains("tool-ran"));
}

#[actix_rt::test]
async fn real_codex_context_length_and_401_are_terminal_and_attempted_once() {
    let too_long = json!({"error": {"message": "Your input exceeds the context window of this \
        model. Please adjust your input and try again.", "type": "invalid_request_error",
        "param": "input", "code": "context_length_exceeded"}});
    let unauthorized = json!({"error": {"message": "Incorrect API key provided: sk-test-****0000.",
        "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    for (status, body, code) in [
        (400, too_long, "prompt_too_long"),
        (401, unauthorized, "invalid_api_key"),
    ] {
        let test = "real_codex_context_length_and_401_are_terminal_and_attempted_once";
        let Some((mock, codex)) = setup(test, vec![Step::Fail(status, body)]).await else {
            return;
        };
        fails_once(codex.provider(), codex.project(), code).await;
        assert_eq!(
            mock.requests().len(),
            1,
            "{status}: codex did not retry either"
        );
    }
}

#[actix_rt::test]
async fn real_codex_429_and_500_are_retried_and_then_answer() {
    let rate = json!({"error": {"message": "Rate limit reached for gpt-5 on requests per min.",
        "type": "requests", "param": null, "code": "rate_limit_exceeded"}});
    let broken = json!({"error": {"message": "The server had an error while processing your \
        request. Sorry about that!", "type": "server_error", "param": null, "code": null}});
    for (status, body, reason) in [
        (429, rate, "rate_limited"),
        (500, broken, "provider_unavailable"),
    ] {
        let test = "real_codex_429_and_500_are_retried_and_then_answer";
        let Some((_mock, codex)) = setup(test, vec![Step::Fail(status, body)]).await else {
            return;
        };
        let text = retried_once(codex.provider(), codex.project(), reason).await;
        // Codex wrote the failed attempt's message into its thread before the API answered, and
        // the retry resumes that thread: the model sees the message twice.
        assert_eq!(text, "heard: Hello? | Hello?", "{status}");
    }
}

#[actix_rt::test]
async fn real_codex_without_its_key_variable_fails_once_naming_it() {
    let test = "real_codex_without_its_key_variable_fails_once_naming_it";
    let Some((mock, mut codex)) = setup(test, vec![]).await else {
        return;
    };
    codex.settings.env.remove(KEY_VAR);
    let events = fails_once(codex.provider(), codex.project(), "missing_api_key").await;
    let message = error_message(&events);
    assert!(message.contains(KEY_VAR), "{message}");
    assert!(mock.requests().is_empty(), "nothing was sent without a key");
}

#[actix_rt::test]
async fn real_codex_lost_thread_starts_fresh_once_and_says_so() {
    let test = "real_codex_lost_thread_starts_fresh_once_and_says_so";
    let Some((_mock, codex)) = setup(test, vec![]).await else {
        return;
    };
    // Codex keeps a thread as a rollout file under CODEX_HOME/sessions; without it, it is gone.
    let sessions = codex.home.path().join("sessions");
    lost_session_starts_fresh(codex.provider(), codex.project(), || {
        std::fs::remove_dir_all(&sessions).unwrap()
    })
    .await;
}

#[actix_rt::test]
async fn real_codex_is_interrupted_mid_run_and_the_next_turn_answers() {
    let test = "real_codex_is_interrupted_mid_run_and_the_next_turn_answers";
    let Some((mock, codex)) = setup(test, vec![Step::Stall]).await else {
        return;
    };
    let called = || !mock.requests().is_empty();
    let text = interrupted_mid_run(codex.provider(), codex.project(), called).await;
    // The aborted turn stays in the thread the interrupting turn resumes.
    assert!(text.ends_with("Do this instead."), "{text}");
}

#[actix_rt::test]
async fn real_codex_default_config_runs_in_a_folder_that_is_no_git_repository() {
    let test = "real_codex_default_config_runs_in_a_folder_that_is_no_git_repository";
    let Some((_mock, codex)) = setup(test, vec![]).await else {
        return;
    };
    default_config_answers(&codex).await;
}

#[actix_rt::test]
async fn real_codex_untrusted_folder_fails_once_naming_the_fix() {
    let test = "real_codex_untrusted_folder_fails_once_naming_the_fix";
    let Some((mock, mut codex)) = setup(test, vec![]).await else {
        return;
    };
    untrusted_folder_fails_naming_the_fix(&mut codex, "Not inside a trusted directory").await;
    assert!(mock.requests().is_empty());
}
