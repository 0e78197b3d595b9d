//! The history window of a stateless provider: a keyed OpenAI session on `openai-http` with
//! more turns than its window; the upstream (a mock chat-completions server on 127.0.0.1:0)
//! gets at most the window, always with the system prompt and the current message.

use crate::helpers::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use troupe::actors::provider::HistoryWindow;
use troupe::actors::{EventBody, SessionId};
use troupe::providers::{ProviderConfig, ProviderKind};

/// The request bodies the mock upstream received, in order.
type Seen = Arc<Mutex<Vec<Value>>>;

/// Answers every chat completion with `answer N` (N counts requests), streamed.
async fn upstream(seen: Seen) -> String {
    let server = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/v1/chat/completions",
            web::post().to(move |body: web::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(body.into_inner());
                        seen.len()
                    };
                    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                        "model": "m", "choices": [{"index": 0,
                        "delta": {"content": format!("answer {n}")}, "finish_reason": "stop"}]});
                    HttpResponse::Ok()
                        .content_type("text/event-stream")
                        .body(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind the mock upstream");
    let address = server.addrs()[0];
    actix_rt::spawn(server.run());
    format!("http://{address}/v1")
}

#[actix_rt::test]
async fn a_stateless_session_sends_at_most_its_window_with_the_system_prompt_and_the_new_message() {
    let seen = Seen::default();
    let base_url = upstream(seen.clone()).await;
    let app = spawn_app_with(move |config| {
        let mut provider = ProviderConfig::of_kind(ProviderKind::OpenaiHttp);
        provider.base_url = Some(base_url);
        provider.model = Some("m".into());
        provider.system_prompt = Some("Be brief.".into());
        provider.history = HistoryWindow {
            max_messages: Some(4),
            max_chars: None,
        };
        config.providers.insert("local".into(), provider);
    })
    .await;

    const TURNS: usize = 7;
    let mut session = None;
    for i in 1..=TURNS {
        let resp = app
            .client
            .post(app.url("/v1/chat/completions"))
            .header("X-Session-Key", "windowed")
            .json(&json!({"model": "local",
                          "messages": [{"role": "user", "content": format!("question {i}")}]}))
            .send()
            .await
            .expect("chat");
        assert_eq!(resp.status(), 200);
        session = Some(resp.headers()["x-session-id"].to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("answer {i}")
        );
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), TURNS);
    for (i, body) in seen.iter().enumerate() {
        let messages = body["messages"].as_array().unwrap();
        let n = i + 1;
        assert_eq!(
            messages.first().unwrap(),
            &json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            messages.last().unwrap(),
            &json!({"role": "user", "content": format!("question {n}")})
        );
        // Earlier turns: the newest ones that fit 4 messages, oldest first, opening with a
        // user message.
        let earlier: Vec<Value> = (n.saturating_sub(2).max(1)..n)
            .flat_map(|k| {
                [
                    json!({"role": "user", "content": format!("question {k}")}),
                    json!({"role": "assistant", "content": format!("answer {k}")}),
                ]
            })
            .collect();
        assert_eq!(
            &messages[1..messages.len() - 1],
            earlier.as_slice(),
            "request {n}"
        );
        assert!(messages.len() <= 4 + 2);
    }

    // Each attempt says how much history it was sent; the log keeps everything.
    let id: SessionId = session.unwrap().parse().unwrap();
    let events = app
        .runtime
        .store()
        .read_events(id, 0, 10_000)
        .await
        .unwrap();
    let sent: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TurnStarted {
                history: Some(h), ..
            } => Some((h.messages, h.dropped)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [(0, 0), (2, 0), (4, 0), (4, 2), (4, 4), (4, 6), (4, 8)]
    );
    let logged = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Message { .. }))
        .count();
    assert_eq!(logged, 2 * TURNS);
    let (status, body) = app
        .get(&format!(
            "/api/v1/sessions/{id}/events?after_seq=0&limit=1000"
        ))
        .await;
    assert_eq!(status, 200);
    let started = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] == "turn.started")
        .unwrap()
        .clone();
    assert_eq!(
        started["data"]["history"],
        json!({"messages": 4, "chars": "question 5answer 5question 6answer 6".len(), "dropped": 8})
    );
}
