//! `@zed-industries/codex-acp` (Codex as an ACP agent) driven by the `acp` provider against a
//! mock of the OpenAI Responses streaming API on 127.0.0.1, chosen by a `CODEX_HOME` whose
//! `config.toml` names a `model_provider` with `wire_api = "responses"`; the agent is
//! authenticated with `auth_method = "openai-api-key"`. Two turns in one ACP session hear both
//! messages; a third, in a fresh agent process, loads the session and hears all three. Skips
//! loudly when `codex-acp` is missing, fails under CI.

mod providers_support;

use providers_support::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe::providers::{AcpProvider, AcpSettings};
use troupe_actors::{BusyMode, Outcome, Provider};

/// A mock of `POST /v1/responses` answering `heard: <the user's messages>`.
#[derive(Clone, Default)]
struct ResponsesMock {
    /// Every request body.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl ResponsesMock {
    fn reply(&self, request: MockRequest) -> MockReply {
        if request.method != "POST" || !request.path.starts_with("/v1/responses") {
            return json_reply(404, &json!({"error": {"message": "not here"}}));
        }
        self.requests.lock().unwrap().push(request.body.clone());
        let created = (
            Some("response.created"),
            json!({"type": "response.created", "response": {"id": "resp_mock"}}),
        );
        let item = json!({"type": "message", "id": "msg_1", "role": "assistant",
            "status": "completed", "content": [{"type": "output_text",
            "text": format!("heard: {}", user_texts(&request.body).join(" | ")),
            "annotations": []}]});
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

#[actix_rt::test]
async fn codex_acp_two_turns_then_a_fresh_agent_loads_the_session() {
    let test = "codex_acp_two_turns_then_a_fresh_agent_loads_the_session";
    let install = "npm install --prefix .ci/npm @zed-industries/codex-acp (.ci/run does it)";
    let Some(agent) = external::require_program(test, "codex-acp", install) else {
        return;
    };
    let mock = ResponsesMock::default();
    let m = mock.clone();
    let url = serve_mock(move |request| m.reply(request)).await;
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let config = format!(
        "model = \"gpt-5\"\nmodel_provider = \"mock\"\ncheck_for_update_on_startup = false\n\
         \n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{url}/v1\"\n\
         wire_api = \"responses\"\nenv_key = \"OPENAI_API_KEY\"\nrequest_max_retries = 0\n\
         stream_max_retries = 0\n\n[analytics]\nenabled = false\n"
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let mut settings = AcpSettings::new(agent.display().to_string());
    for (name, value) in [
        ("CODEX_HOME", home.path().display().to_string()),
        ("HOME", home.path().display().to_string()),
        ("OPENAI_API_KEY", "sk-test-mock-key-0000".to_string()),
    ] {
        settings.env.insert(name.into(), value);
    }
    for (name, value) in loopback_only_env() {
        settings.env.insert(name.into(), value);
    }
    settings.kill_grace = Duration::from_millis(500);
    settings.auth_method = Some("openai-api-key".into());
    let provider = Arc::new(AcpProvider::new(settings));
    let rt = runtime_with_shared("codex-acp", provider.clone() as Arc<dyn Provider>);
    let session = open_session(&rt, "codex-acp", Some(project.path())).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Say hello.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first:#?}");
    // codex-acp streams Codex's own warnings as agent text first (a model it has no metadata
    // for); the model's answer ends the message.
    let text = streamed_text(&first);
    assert!(text.ends_with("heard: Say hello."), "{text}");
    session
        .send_text("Again.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (second, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{second:#?}");
    let text = streamed_text(&second);
    assert!(
        text.ends_with("heard: Say hello. | Again."),
        "the second turn carries the first: {text}"
    );
    // A fresh agent process loads the session (`session/load`) and goes on with it.
    let id = session.info().await.unwrap().provider_session_id;
    provider.end_session(session.id());
    session
        .send_text("Third.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (third, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{third:#?}");
    let text = streamed_text(&third);
    assert!(
        text.ends_with("heard: Say hello. | Again. | Third."),
        "session/load resumed the conversation: {text}"
    );
    assert_eq!(session.info().await.unwrap().provider_session_id, id);
}
