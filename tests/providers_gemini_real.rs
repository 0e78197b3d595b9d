//! The real Gemini CLI (npm `@google/gemini-cli`, pinned in `.ci/run`) driven through Troupe
//! against a mock of the Gemini API (`streamGenerateContent?alt=sse`) on 127.0.0.1, chosen by
//! `GOOGLE_GEMINI_BASE_URL` with `GEMINI_API_KEY` and a `settings.json` selecting the API-key
//! auth: two turns on one session, a tool call, a context-length 400 and bad credentials
//! (terminal, attempted once), a 429 and a 500 (retried, fresh: the failed run left nothing to
//! resume), a removed session (fresh once, announced), an untrusted folder (terminal, naming the
//! fix), an invalid auth method (exit 41, terminal), an interrupt mid-run, and the default
//! config in a folder Gemini CLI was never shown. Skips loudly when `gemini` is missing, fails
//! under CI.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use troupe::providers::{GeminiCli, ProviderKind};

/// The model asked for, so Gemini CLI does not route between models first.
const MODEL: &str = "gemini-2.5-pro";

/// What the mock does with one streamed request; an empty plan answers.
enum Step {
    /// An HTTP error with the API's JSON body.
    Fail(u16, Value),
    /// A `functionCall` of `list_directory`.
    Tool,
    /// Starts the stream, then never finishes it.
    Stall,
}

/// A mock of `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (and of the unstreamed
/// `generateContent` and `countTokens` Gemini CLI may call on the side).
#[derive(Clone, Default)]
struct GeminiMock {
    /// Steps for the next streamed requests, in order.
    plan: Arc<Mutex<VecDeque<Step>>>,
    /// Every streamed request body.
    requests: Arc<Mutex<Vec<Value>>>,
}

/// One streamed chunk with `parts`, finished.
fn chunk(parts: Value) -> Value {
    json!({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP",
        "index": 0}], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4,
        "totalTokenCount": 16}, "modelVersion": MODEL})
}

impl GeminiMock {
    async fn start(plan: Vec<Step>) -> (GeminiMock, String) {
        let mock = GeminiMock {
            plan: Arc::new(Mutex::new(plan.into())),
            ..GeminiMock::default()
        };
        let m = mock.clone();
        let url = serve_mock(move |request| m.reply(request)).await;
        (mock, url)
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    fn reply(&self, request: MockRequest) -> MockReply {
        if request.path.contains(":countTokens") {
            return json_reply(200, &json!({"totalTokens": 12}));
        }
        if request.path.contains(":generateContent") {
            let text = json!({"next_speaker": "user", "reasoning": "mock"}).to_string();
            return json_reply(200, &chunk(json!([{"text": text}])));
        }
        if !request.path.contains(":streamGenerateContent") {
            return json_reply(404, &json!({"error": {"code": 404, "message": "not here"}}));
        }
        self.requests.lock().unwrap().push(request.body.clone());
        let step = self.plan.lock().unwrap().pop_front();
        let parts = match step {
            Some(Step::Fail(status, body)) => return json_reply(status, &body),
            Some(Step::Stall) => {
                let first = chunk(json!([{"text": "thinking about it"}]));
                return MockReply::Stall(sse_head() + &sse_frames(&[(None, first)]));
            }
            Some(Step::Tool) => {
                json!([{"functionCall": {"name": "list_directory", "args": {"dir_path": "."}}}])
            }
            None => {
                json!([{"text": format!("heard: {}", user_texts(&request.body).join(" | "))}])
            }
        };
        sse_reply(&[(None, chunk(parts))])
    }
}

/// The user's own texts in a request (not the context Gemini CLI adds, not tool answers).
fn user_texts(body: &Value) -> Vec<String> {
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    contents
        .iter()
        .filter(|c| c["role"] == "user")
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::trim).map(str::to_string))
        .filter(|t| !t.starts_with('<') && !t.is_empty())
        .collect()
}

/// The real `gemini`, a mock with `plan` and a home whose settings point at it; `None` after
/// a skip.
async fn setup(test: &str, plan: Vec<Step>) -> Option<(GeminiMock, RealCli)> {
    let install = "npm install --prefix .ci/npm @google/gemini-cli@0.61.0 (.ci/run does it)";
    let command = external::require_program(test, "gemini", install)?;
    let (mock, url) = GeminiMock::start(plan).await;
    let mut gemini = RealCli::new(command, ProviderKind::GeminiCli, cli_provider::<GeminiCli>);
    std::fs::write(gemini.project().join("notes.txt"), "a file to list\n").unwrap();
    let dot = gemini.home.path().join(".gemini");
    std::fs::create_dir_all(&dot).unwrap();
    // One API attempt per run, so Troupe's retries are the ones exercised (Gemini CLI's own back
    // off for seconds to minutes).
    let settings_json = json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"maxAttempts": 1, "enableAutoUpdate": false,
            "enableAutoUpdateNotification": false},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
    });
    std::fs::write(dot.join("settings.json"), settings_json.to_string()).unwrap();
    for (name, value) in [
        ("GOOGLE_GEMINI_BASE_URL", url),
        ("GEMINI_API_KEY", "AIza-test-mock-key-0000".to_string()),
    ] {
        gemini.settings.env.insert(name.into(), value);
    }
    gemini.settings.model = Some(MODEL.into());
    Some((mock, gemini))
}

#[actix_rt::test]
async fn real_gemini_two_turns_resume_the_session() {
    let Some((_mock, gemini)) = setup("real_gemini_two_turns_resume_the_session", vec![]).await
    else {
        return;
    };
    two_turns_resume(gemini.provider(), gemini.project()).await;
}

#[actix_rt::test]
async fn real_gemini_default_config_runs_in_a_project_it_was_never_shown() {
    let test = "real_gemini_default_config_runs_in_a_project_it_was_never_shown";
    let Some((_mock, gemini)) = setup(test, vec![]).await else {
        return;
    };
    default_config_answers(&gemini).await;
}

#[actix_rt::test]
async fn real_gemini_runs_a_tool() {
    let Some((mock, gemini)) = setup("real_gemini_runs_a_tool", vec![Step::Tool]).await else {
        return;
    };
    let mut request = request("List the files.");
    request.project = Some(gemini.project().display().to_string());
    let events = collect(gemini.provider().start(request)).await;
    done(&events);
    let ((name, input), (_, is_error)) = tool_round_trip(&events);
    assert_eq!(
        (name.as_str(), &input),
        ("list_directory", &json!({"dir_path": "."}))
    );
    assert!(!is_error, "{events:#?}");
    assert_eq!(deltas(&events), "heard: List the files.");
    let answered = mock.requests().last().unwrap().to_string();
    assert!(
        answered.contains("functionResponse") && answered.contains("notes.txt"),
        "the listing went back to the model: {answered}"
    );
}

#[actix_rt::test]
async fn real_gemini_context_length_and_bad_credentials_are_terminal_and_attempted_once() {
    let too_long = json!({"error": {"code": 400, "message": "The input token count (1234567) \
        exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}});
    let unauthenticated = json!({"error": {"code": 401, "message": "Request had invalid \
        authentication credentials.", "status": "UNAUTHENTICATED"}});
    let bad_key = json!({"error": {"code": 400, "message": "API key not valid. Please pass a \
        valid API key.", "status": "INVALID_ARGUMENT"}});
    for (status, body, code) in [
        (400, too_long, "prompt_too_long"),
        (401, unauthenticated, "invalid_api_key"),
        (400, bad_key, "invalid_api_key"),
    ] {
        let test = "real_gemini_context_length_and_bad_credentials_are_terminal_and_attempted_once";
        let Some((mock, gemini)) = setup(test, vec![Step::Fail(status, body)]).await else {
            return;
        };
        fails_once(gemini.provider(), gemini.project(), code).await;
        assert_eq!(mock.requests().len(), 1, "{status} {code}: one request");
    }
}

#[actix_rt::test]
async fn real_gemini_429_and_500_are_retried_fresh_and_then_answer() {
    let exhausted = json!({"error": {"code": 429, "message": "Resource has been exhausted \
        (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}});
    let internal = json!({"error": {"code": 500, "message": "An internal error has occurred. \
        Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        "status": "INTERNAL"}});
    for (status, body, reason) in [
        (429, exhausted, "rate_limited"),
        (500, internal, "provider_unavailable"),
    ] {
        let test = "real_gemini_429_and_500_are_retried_fresh_and_then_answer";
        let Some((_mock, gemini)) = setup(test, vec![Step::Fail(status, body)]).await else {
            return;
        };
        let text = retried_once(gemini.provider(), gemini.project(), reason).await;
        // The retry ran fresh (a `--resume` of the failed run would exit 42), so the prompt is
        // in the conversation once.
        assert_eq!(text, "heard: Hello?", "{status}");
    }
}

#[actix_rt::test]
async fn real_gemini_removed_session_starts_fresh_once_and_says_so() {
    let test = "real_gemini_removed_session_starts_fresh_once_and_says_so";
    let Some((_mock, gemini)) = setup(test, vec![]).await else {
        return;
    };
    // Gemini CLI keeps sessions under ~/.gemini/tmp/<project>/chats and deletes them on its own
    // (session retention); remove them as it would.
    let sessions = gemini.home.path().join(".gemini/tmp");
    lost_session_starts_fresh(gemini.provider(), gemini.project(), || {
        std::fs::remove_dir_all(&sessions).unwrap()
    })
    .await;
}

#[actix_rt::test]
async fn real_gemini_untrusted_folder_fails_once_naming_the_fix() {
    let test = "real_gemini_untrusted_folder_fails_once_naming_the_fix";
    let Some((mock, mut gemini)) = setup(test, vec![]).await else {
        return;
    };
    untrusted_folder_fails_naming_the_fix(&mut gemini, "not running in a trusted directory").await;
    assert!(mock.requests().is_empty());
}

#[actix_rt::test]
async fn real_gemini_is_interrupted_mid_run_and_the_next_turn_answers() {
    let test = "real_gemini_is_interrupted_mid_run_and_the_next_turn_answers";
    let Some((mock, gemini)) = setup(test, vec![Step::Stall]).await else {
        return;
    };
    let called = || !mock.requests().is_empty();
    let text = interrupted_mid_run(gemini.provider(), gemini.project(), called).await;
    // The aborted run's session id was never kept, so the next turn starts fresh.
    assert_eq!(text, "heard: Do this instead.");
}

#[actix_rt::test]
async fn real_gemini_invalid_auth_method_is_a_configuration_error_attempted_once() {
    let test = "real_gemini_invalid_auth_method_is_a_configuration_error_attempted_once";
    let Some((mock, gemini)) = setup(test, vec![]).await else {
        return;
    };
    let settings = json!({"security": {"auth": {"selectedType": "no-such-method"}}});
    let path = gemini.home.path().join(".gemini/settings.json");
    std::fs::write(path, settings.to_string()).unwrap();
    let events = fails_once(
        gemini.provider(),
        gemini.project(),
        "provider_misconfigured",
    )
    .await;
    let message = error_message(&events);
    assert!(
        message.contains("Invalid auth method selected."),
        "{message}"
    );
    assert!(mock.requests().is_empty());
}
