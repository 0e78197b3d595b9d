//! A model switch sticks: `PATCH /sessions/{id} {model}` is announced, persisted across a
//! restart of the real binary and given to the next turn (the echo provider reports the model
//! it was given); a provider switch hands the history over; OpenAI requests naming another
//! model on an existing key switch the session the same way, unless configured to refuse.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use troupe::config::ModelSwitch;
use troupe::providers::{ProviderConfig, ProviderKind};

/// The `status` event that carries the model a turn's attempt was given.
fn model_of_turn(events: &[Value], turn: &str) -> Option<Value> {
    events
        .iter()
        .find(|e| e["kind"] == "status" && e["turn_id"] == turn && e["data"]["model"].is_string())
        .map(|e| e["data"]["model"].clone())
}

/// With the blocking client against a server process: sends a turn and waits for its end;
/// the session's whole log.
fn run_turn(
    client: &reqwest::blocking::Client,
    base: &str,
    id: &str,
    text: &str,
) -> (String, Vec<Value>) {
    let receipt: Value = client
        .post(format!("{base}/api/v1/sessions/{id}/turns"))
        .json(&json!({"content": text}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let turn = receipt["turn_id"].as_str().expect("turn id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = client
            .get(format!("{base}/api/v1/sessions/{id}/events?limit=1000"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events
            .iter()
            .any(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn.as_str())
        {
            return (turn, events);
        }
        assert!(
            Instant::now() < deadline,
            "the turn never ended: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_model_switch_is_persisted_across_a_restart_and_used_by_the_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let base = server.base();
    let created: Value = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"provider": "echo", "model": "m1"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["session"]["id"].as_str().unwrap().to_string();
    let (first, events) = run_turn(&client, &base, &id, "before");
    assert_eq!(model_of_turn(&events, &first), Some(json!("m1")));

    let resp = client
        .patch(format!("{base}/api/v1/sessions/{id}"))
        .json(&json!({"model": "m2"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let patched: Value = resp.json().unwrap();
    assert_eq!(patched["session"]["model"], "m2");
    assert!(server.terminate().success());

    let server = ServerProcess::start(dir.path(), &[], &[]);
    let base = server.base();
    let session: Value = client
        .get(format!("{base}/api/v1/sessions/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(session["session"]["model"], "m2", "{session}");
    let (second, events) = run_turn(&client, &base, &id, "after");
    assert_eq!(model_of_turn(&events, &second), Some(json!("m2")));
    let announced: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "session.updated" && e["data"]["reason"] == "model_changed")
        .collect();
    assert_eq!(announced.len(), 1, "{events:?}");
    assert_eq!(announced[0]["data"]["session"]["model"], "m2");
}

/// Providers `echo` and `other` (another echo: stateless, so it takes the history).
fn two_providers(config: &mut troupe::config::Config) {
    for name in ["echo", "other"] {
        config
            .providers
            .insert(name.into(), ProviderConfig::of_kind(ProviderKind::Echo));
    }
}

#[actix_rt::test]
async fn a_patch_switches_the_provider_and_refuses_bad_values() {
    let app = spawn_app_with(two_providers).await;
    let id = app.create_session().await;
    let path = format!("/api/v1/sessions/{id}");
    let (status, body) = app.patch(&path, json!({"provider": "other"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["provider"], "other");
    let reasons: Vec<_> = app
        .all_events(&id)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "session.updated")
        .map(|e| e["data"]["reason"].clone())
        .collect();
    assert_eq!(reasons, vec![json!("provider_changed")]);
    let (status, receipt) = app.send_turn(&id, json!({"content": "on other"})).await;
    assert_eq!(status, 202);
    let turn = receipt["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&id, turn).await, "success");
    let started = app
        .wait_for_event(&id, |e| e["kind"] == "turn.started" && e["turn_id"] == turn)
        .await;
    assert_eq!(started["data"]["provider"], "other");

    // One PATCH takes a model and a budget together; both stick.
    let (status, body) = app
        .patch(
            &path,
            json!({"model": "m3", "budget": {"max_tokens": 5000}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, session) = app.get(&path).await;
    assert_eq!(session["session"]["model"], "m3");
    assert_eq!(session["session"]["budget"]["max_tokens"], 5000);

    assert_error(
        &app.patch(&path, json!({"provider": "nope"})).await,
        400,
        "unknown_provider",
    );
    let answer = app.patch(&path, json!({"model": ""})).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "model");
    // Archived with a budget in the same update: both land; then no change is taken, and a
    // refused update changes nothing.
    let (status, body) = app
        .patch(
            &path,
            json!({"archived": true, "budget": {"max_tokens": 6000}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["state"], "archived");
    assert_eq!(body["session"]["budget"]["max_tokens"], 6000);
    for change in [
        json!({"model": "m9"}),
        json!({"budget": {"max_tokens": 7000}}),
        json!({"title": "t", "provider": "echo"}),
    ] {
        assert_error(&app.patch(&path, change).await, 409, "session_archived");
    }
    let (_, session) = app.get(&path).await;
    assert_eq!(session["session"]["model"], "m3");
    assert_eq!(session["session"]["provider"], "other");
    assert_eq!(session["session"]["budget"]["max_tokens"], 6000);
}

/// A chat completion on key `key` with `model`; the session id and the answer.
async fn chat(app: &TestApp, key: &str, model: &str, text: &str) -> (u16, String, Value) {
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("x-session-key", key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    let session = resp
        .headers()
        .get("x-session-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (status, body) = status_json(resp).await;
    (status, session, body)
}

#[actix_rt::test]
async fn an_openai_request_naming_another_model_switches_the_keyed_session() {
    let app = spawn_app_with(two_providers).await;
    let (status, id, _) = chat(&app, "switchy", "echo/m1", "one").await;
    assert_eq!(status, 200);
    let (status, again, body) = chat(&app, "switchy", "echo/m2", "two").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(again, id, "the same session, not a new one");
    assert_eq!(body["choices"][0]["message"]["content"], "two");
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["model"], "m2");
    let events = app.all_events(&id).await;
    let turns: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "turn.accepted")
        .map(|e| e["turn_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(model_of_turn(&events, &turns[0]), Some(json!("m1")));
    assert_eq!(model_of_turn(&events, &turns[1]), Some(json!("m2")));

    // Another provider switches too; the model goes with the provider's default.
    let (status, again, _) = chat(&app, "switchy", "other", "three").await;
    assert_eq!((status, again.as_str()), (200, id.as_str()));
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["provider"], "other");
    assert_eq!(session["session"]["model"], Value::Null);
    let reasons: Vec<_> = app
        .all_events(&id)
        .await
        .into_iter()
        .filter(|e| {
            e["kind"] == "session.updated"
                && !["provider_session_mapped", "usage"]
                    .contains(&e["data"]["reason"].as_str().unwrap())
        })
        .map(|e| e["data"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("model_changed"), json!("provider_changed")]
    );
}

#[actix_rt::test]
async fn configured_to_refuse_another_provider_is_400_and_the_model_stays() {
    let app = spawn_app_with(|config| {
        two_providers(config);
        config.openai.model_switch = ModelSwitch::Refuse;
    })
    .await;
    let (status, id, _) = chat(&app, "fixed", "echo/m1", "one").await;
    assert_eq!(status, 200);
    let (status, _, body) = chat(&app, "fixed", "other", "two").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "model");
    let (status, _, _) = chat(&app, "fixed", "echo/m2", "three").await;
    assert_eq!(status, 200);
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["model"], "m1");
    assert_eq!(session["session"]["provider"], "echo");
}
