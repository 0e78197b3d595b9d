//! The OpenAI-compatible doors: shapes, headers, errors, session keys, the same-key race,
//! hidden one-off sessions, client disconnects, resumable responses, models.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;
use troupe::actors::{EventBody, Outcome, SessionFilter, SessionId, TurnStatus};
use troupe::config::{Secret, TokenConfig};

/// POSTs `body` to `path` with `headers`; status, response headers and JSON body.
async fn post_with(
    app: &TestApp,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.expect("POST");
    let headers = resp.headers().clone();
    let (status, body) = status_json(resp).await;
    (status, headers, body)
}

/// POSTs and reads the whole SSE body as (event name, data) pairs.
async fn post_sse(
    app: &TestApp,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (
    u16,
    reqwest::header::HeaderMap,
    Vec<(Option<String>, String)>,
) {
    let mut request = app.client.post(app.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.expect("POST");
    let headers = resp.headers().clone();
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, headers, parse_sse(&text))
}

/// SSE frames as (event name, data); comments skipped.
fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter_map(|frame| {
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                }
            }
            data.map(|d| (event, d))
        })
        .collect()
}

fn session_header(headers: &reqwest::header::HeaderMap) -> SessionId {
    headers
        .get("x-session-id")
        .expect("X-Session-Id header")
        .to_str()
        .unwrap()
        .parse()
        .expect("a session id")
}

fn chat_body(prompt: &str) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": prompt}]})
}

/// A prompt the echo provider answers slowly: `words` one-word chunks `delay_ms` apart.
fn slow_prompt(text: &str, delay_ms: u64) -> String {
    json!({"script": {"chunk_delay_ms": delay_ms, "chunk_words": 1}, "text": text}).to_string()
}

/// Polls the store until the session's turn list satisfies `done`.
async fn wait_turns(
    app: &TestApp,
    session: SessionId,
    done: impl Fn(&[troupe::actors::record::TurnRecord]) -> bool,
) -> Vec<troupe::actors::record::TurnRecord> {
    for _ in 0..500 {
        let turns = app.runtime.store().all_turns(session).await.unwrap();
        if done(&turns) {
            return turns;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "turns never settled: {:?}",
        app.runtime.store().all_turns(session).await.unwrap()
    );
}

#[actix_rt::test]
async fn chat_completion_answers_in_openais_shape_with_the_session_header() {
    let app = spawn_app().await;
    let body = json!({"model": "echo", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there friend"}]},
    ]});
    let (status, headers, reply) = post_with(&app, "/v1/chat/completions", body, &[]).await;
    assert_eq!(status, 200, "{reply}");
    let session = session_header(&headers);
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], "echo");
    assert!(reply["created"].as_i64().unwrap() > 0);
    let choice = &reply["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "hello there friend");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(reply["usage"]["prompt_tokens"], 3);
    assert_eq!(reply["usage"]["completion_tokens"], 3);
    assert_eq!(reply["usage"]["total_tokens"], 6);
    // The system message went to the provider as its system prompt.
    let turns = app.runtime.store().all_turns(session).await.unwrap();
    assert_eq!(turns[0].options["system"], "be brief");
}

#[actix_rt::test]
async fn chat_stream_sends_chunks_with_stable_id_role_first_stop_usage_and_done() {
    let app = spawn_app().await;
    let mut body = chat_body("one two three four five");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, frames) = post_sse(&app, "/v1/chat/completions", body, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    session_header(&headers);
    assert_eq!(frames.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let (id, created) = (&chunks[0]["id"], &chunks[0]["created"]);
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id);
        assert_eq!(&chunk["created"], created);
        assert_eq!(chunk["model"], "echo");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two three four five");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["usage"], Value::Null);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 10);
}

#[actix_rt::test]
async fn errors_come_in_openais_shape_with_the_right_status() {
    let app = spawn_app_with(|c| {
        c.auth.tokens = vec![TokenConfig {
            token: Secret("secret-token".into()),
            owner: "alice".into(),
            admin: false,
        }];
    })
    .await;
    let auth = [("authorization", "Bearer secret-token")];
    let check = |status: u16, body: &Value, want_status: u16, kind: &str, code: &str| {
        assert_eq!(status, want_status, "{body}");
        let error = &body["error"];
        assert_eq!(error["type"], kind, "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error.get("param").is_some(), "{body}");
    };

    let (s, _, b) = post_with(&app, "/v1/chat/completions", chat_body("hi"), &[]).await;
    check(s, &b, 401, "invalid_request_error", "invalid_api_key");
    let bad = [("authorization", "Bearer wrong")];
    let (s, _, b) = post_with(&app, "/v1/chat/completions", chat_body("hi"), &bad).await;
    check(s, &b, 401, "invalid_request_error", "invalid_api_key");
    let resp = app.client.get(app.url("/v1/models")).send().await.unwrap();
    let (s, b) = status_json(resp).await;
    check(s, &b, 401, "invalid_request_error", "invalid_api_key");

    let body = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    let (s, _, b) = post_with(&app, "/v1/chat/completions", body, &auth).await;
    check(s, &b, 404, "invalid_request_error", "model_not_found");
    assert_eq!(b["error"]["param"], "model");

    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("authorization", "Bearer secret-token")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(resp).await;
    check(s, &b, 400, "invalid_request_error", "invalid_json");

    let (s, _, b) = post_with(
        &app,
        "/v1/chat/completions",
        json!({"model": "echo"}),
        &auth,
    )
    .await;
    check(s, &b, 400, "invalid_request_error", "invalid_request");
    assert_eq!(b["error"]["param"], "messages");

    let body = json!({"model": "echo", "messages": [{"role": "assistant", "content": "hi"}]});
    let (s, _, b) = post_with(&app, "/v1/chat/completions", body, &auth).await;
    check(s, &b, 400, "invalid_request_error", "invalid_request");

    let long_key = "k".repeat(300);
    let headers = [auth[0], ("x-session-key", long_key.as_str())];
    let (s, _, b) = post_with(&app, "/v1/chat/completions", chat_body("hi"), &headers).await;
    check(s, &b, 400, "invalid_request_error", "invalid_session_key");

    let resp = app
        .client
        .get(app.url("/v1/nothing-here"))
        .header("authorization", "Bearer secret-token")
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(resp).await;
    check(s, &b, 404, "invalid_request_error", "not_found");

    // A provider failure is a 5xx with the turn's own error code; a streamed one too while no
    // text went out, and an error object in the stream after that.
    let failing = |reply: &str| {
        let script = json!({"fail": "terminal", "fail_code": "prompt_too_long", "reply": reply});
        chat_body(&json!({"script": script, "text": "x"}).to_string())
    };
    let (s, _, b) = post_with(&app, "/v1/chat/completions", failing("some text"), &auth).await;
    check(s, &b, 502, "server_error", "prompt_too_long");
    let mut streamed = failing("");
    streamed["stream"] = json!(true);
    let (s, _, b) = post_with(&app, "/v1/chat/completions", streamed, &auth).await;
    check(s, &b, 502, "server_error", "prompt_too_long");
    let mut streamed = failing("some text");
    streamed["stream"] = json!(true);
    let (s, _, frames) = post_sse(&app, "/v1/chat/completions", streamed, &auth).await;
    assert_eq!(s, 200);
    assert_eq!(frames.last().unwrap().1, "[DONE]");
    let error: Value = serde_json::from_str(&frames[frames.len() - 2].1).unwrap();
    check(502, &error, 502, "server_error", "prompt_too_long");
}

#[actix_rt::test]
async fn a_full_queue_answers_429_in_openais_shape() {
    let app = spawn_app_with(|c| c.runtime.max_queue = 1).await;
    let headers = [("x-session-key", "busy")];
    let slow = chat_body(&slow_prompt("a b c d e f g h", 100));
    let first = post_with(&app, "/v1/chat/completions", slow.clone(), &headers);
    let second = post_with(&app, "/v1/chat/completions", slow.clone(), &headers);
    let third = async {
        // The third arrives once the first runs and the second waits.
        loop {
            let sessions = app
                .runtime
                .list_sessions("local", &SessionFilter::default())
                .await
                .unwrap();
            if let Some(s) = sessions.first() {
                if app.runtime.store().all_turns(s.id).await.unwrap().len() == 2 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        post_with(&app, "/v1/chat/completions", slow.clone(), &headers).await
    };
    let (a, b, c) = futures::join!(first, second, third);
    assert_eq!(a.0, 200, "{}", a.2);
    assert_eq!(b.0, 200, "{}", b.2);
    assert_eq!(c.0, 429, "{}", c.2);
    assert_eq!(c.2["error"]["code"], "queue_full");
    assert_eq!(c.2["error"]["type"], "rate_limit_error");
}

#[actix_rt::test]
async fn fifty_concurrent_requests_with_one_key_share_one_session_serially_each_with_its_answer() {
    let app = spawn_app_with(|c| c.runtime.max_queue = 64).await;
    let headers = [("x-session-key", "race")];
    let requests = (0..50).map(|i| {
        let prompt = format!("race message number {i} unique");
        let app = &app;
        async move {
            let (status, headers, body) =
                post_with(app, "/v1/chat/completions", chat_body(&prompt), &headers).await;
            (prompt, status, headers, body)
        }
    });
    let results = futures::future::join_all(requests).await;
    let mut sessions = std::collections::HashSet::new();
    for (prompt, status, headers, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], *prompt);
        sessions.insert(session_header(headers));
    }
    assert_eq!(sessions.len(), 1, "one session for one key");
    let session = *sessions.iter().next().unwrap();
    let listed = app
        .runtime
        .list_sessions("local", &SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.as_deref(), Some("race"));
    let turns = app.runtime.store().all_turns(session).await.unwrap();
    assert_eq!(turns.len(), 50);
    assert!(turns.iter().all(|t| t.outcome == Some(Outcome::Success)));
    // Serial: between a turn's start and its completion no other turn starts.
    let events = app
        .runtime
        .store()
        .read_events(session, 0, usize::MAX)
        .await
        .unwrap();
    let mut running = None;
    let mut started = 0;
    for event in &events {
        match &event.body {
            EventBody::TurnStarted { .. } => {
                assert!(running.is_none(), "a turn started while another ran");
                running = event.turn_id;
                started += 1;
            }
            EventBody::TurnCompleted { .. } => {
                assert_eq!(running, event.turn_id);
                running = None;
            }
            _ => {}
        }
    }
    assert_eq!(started, 50);
}

#[actix_rt::test]
async fn a_session_key_or_user_keeps_one_session_and_its_log_has_every_turn() {
    let app = spawn_app().await;
    for (headers, user, key) in [
        (vec![("x-session-key", "chat-1")], None, "chat-1"),
        (vec![("x-openclaw-session-key", "claw")], None, "claw"),
        (vec![], Some("bob"), "user:bob"),
    ] {
        let mut ids = Vec::new();
        for prompt in ["first message", "second message"] {
            let mut body = chat_body(prompt);
            if let Some(user) = user {
                body["user"] = json!(user);
            }
            let (status, h, reply) = post_with(&app, "/v1/chat/completions", body, &headers).await;
            assert_eq!(status, 200, "{reply}");
            assert_eq!(reply["choices"][0]["message"]["content"], prompt);
            ids.push(session_header(&h));
        }
        assert_eq!(ids[0], ids[1], "{key}");
        let record = app
            .runtime
            .store()
            .get_session(ids[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.key.as_deref(), Some(key));
        assert!(!record.hidden);
        let turns = app.runtime.store().all_turns(ids[0]).await.unwrap();
        let contents: Vec<&str> = turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(contents, ["first message", "second message"]);
    }
}

#[actix_rt::test]
async fn requests_without_a_key_get_hidden_one_off_sessions_that_carry_their_history() {
    let app = spawn_app().await;
    let body = json!({"model": "echo", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "new question"},
    ]});
    let (s1, h1, r1) = post_with(&app, "/v1/chat/completions", body.clone(), &[]).await;
    let (s2, h2, _) = post_with(&app, "/v1/chat/completions", body, &[]).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(r1["choices"][0]["message"]["content"], "new question");
    let (a, b) = (session_header(&h1), session_header(&h2));
    assert_ne!(a, b, "every keyless request gets its own session");
    for id in [a, b] {
        let record = app.runtime.store().get_session(id).await.unwrap().unwrap();
        assert!(record.hidden);
        let turns = app.runtime.store().all_turns(id).await.unwrap();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].content, "new question");
        assert_eq!(
            turns[0].options["history"],
            json!([
                {"role": "user", "text": "earlier question"},
                {"role": "assistant", "text": "earlier answer"},
            ])
        );
        assert_eq!(turns[0].options["system"], "sys");
    }
    let listed = app
        .runtime
        .list_sessions("local", &SessionFilter::default())
        .await
        .unwrap();
    assert!(
        listed.is_empty(),
        "hidden sessions are never listed: {listed:?}"
    );
}

/// Starts a slow streamed chat, reads its first bytes, and drops the connection.
async fn stream_then_disconnect(app: &TestApp, headers: &[(&str, &str)]) -> SessionId {
    let mut body = chat_body(&slow_prompt("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", 60));
    body["stream"] = json!(true);
    let mut request = app.client.post(app.url("/v1/chat/completions")).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut resp = request.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let session = session_header(resp.headers());
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    drop(resp);
    session
}

#[actix_rt::test]
async fn a_client_disconnect_mid_stream_leaves_the_turn_running_to_success() {
    let app = spawn_app().await;
    let session = stream_then_disconnect(&app, &[("x-session-key", "dc")]).await;
    let turns = wait_turns(&app, session, |t| t[0].status == TurnStatus::Completed).await;
    assert_eq!(turns[0].outcome, Some(Outcome::Success));
    let events = app
        .runtime
        .store()
        .read_events(session, 0, usize::MAX)
        .await
        .unwrap();
    assert!(events.iter().any(|e| matches!(&e.body,
        EventBody::Message { role, text } if role == "assistant" && text.ends_with("w10"))));
}

#[actix_rt::test]
async fn a_client_that_asked_for_it_aborts_its_turn_by_disconnecting() {
    let app = spawn_app().await;
    let session = stream_then_disconnect(
        &app,
        &[
            ("x-session-key", "dc-abort"),
            ("x-troupe-abort-on-disconnect", "true"),
        ],
    )
    .await;
    let turns = wait_turns(&app, session, |t| t[0].status == TurnStatus::Completed).await;
    assert_eq!(turns[0].outcome, Some(Outcome::Aborted));
}

fn event_types(frames: &[(Option<String>, String)]) -> Vec<String> {
    frames.iter().map(|(e, _)| e.clone().unwrap()).collect()
}

#[actix_rt::test]
async fn responses_stream_retrieve_replay_continue_and_cancel() {
    let app = spawn_app().await;
    let body = json!({"model": "echo", "input": "alpha beta gamma delta", "stream": true,
                      "instructions": "be terse", "metadata": {"k": "v"}});
    let (status, headers, frames) = post_sse(&app, "/v1/responses", body, &[]).await;
    assert_eq!(status, 200);
    let session = session_header(&headers);
    let types = event_types(&frames);
    assert_eq!(types[0], "response.created");
    assert_eq!(types[1], "response.in_progress");
    assert_eq!(types.last().unwrap(), "response.completed");
    for kind in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ] {
        assert!(types.iter().any(|t| t == kind), "{kind} in {types:?}");
    }
    let events: Vec<Value> = frames
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for (event, (name, _)) in events.iter().zip(&frames) {
        assert_eq!(event["type"].as_str(), name.as_deref());
    }
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "alpha beta gamma delta");
    let id = events[0]["response"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"));
    let hidden = app
        .runtime
        .store()
        .get_session(session)
        .await
        .unwrap()
        .unwrap();
    assert!(
        hidden.hidden,
        "a response without a key runs in a hidden session"
    );

    // GET: the Response object, rebuilt from the log.
    let (status, response) = app.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "echo");
    assert_eq!(response["instructions"], "be terse");
    assert_eq!(response["metadata"], json!({"k": "v"}));
    assert_eq!(response["output"][0]["type"], "message");
    assert_eq!(response["output"][0]["role"], "assistant");
    assert_eq!(response["output"][0]["status"], "completed");
    assert_eq!(
        response["output"][0]["content"][0],
        json!({"type": "output_text", "text": "alpha beta gamma delta", "annotations": []})
    );
    assert_eq!(response["output_text"], "alpha beta gamma delta");
    assert_eq!(response["usage"]["total_tokens"], 8);
    assert_eq!(response["parallel_tool_calls"], false);
    assert_eq!(response["tool_choice"], "auto");
    assert_eq!(response["tools"], json!([]));

    // Replay after a sequence number: exactly the later events, the same ones.
    let n = numbers[3];
    let resp = app
        .client
        .get(app.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={n}"
        )))
        .send()
        .await
        .unwrap();
    let replayed = parse_sse(&resp.text().await.unwrap());
    let replayed: Vec<Value> = replayed
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let expected: Vec<&Value> = events
        .iter()
        .filter(|e| e["sequence_number"].as_u64().unwrap() > n)
        .collect();
    assert_eq!(replayed.len(), expected.len());
    for (a, b) in replayed.iter().zip(expected) {
        assert_eq!(a["type"], b["type"]);
        assert_eq!(a["sequence_number"], b["sequence_number"]);
    }

    // previous_response_id continues the same session.
    let body = json!({"model": "echo", "input": [{"role": "user", "content": [{"type": "input_text", "text": "next one"}]}],
                      "previous_response_id": id});
    let (status, headers, second) = post_with(&app, "/v1/responses", body, &[]).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(session_header(&headers), session);
    assert_eq!(second["output_text"], "next one");
    assert_eq!(second["previous_response_id"], id.as_str());
    assert_eq!(
        app.runtime.store().all_turns(session).await.unwrap().len(),
        2
    );

    // Background: answers at once, runs detached; cancel stops it.
    let body = json!({"model": "echo", "input": slow_prompt("s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12", 100),
                      "background": true});
    let (status, _, queued) = post_with(&app, "/v1/responses", body, &[]).await;
    assert_eq!(status, 200, "{queued}");
    assert!(["queued", "in_progress"].contains(&queued["status"].as_str().unwrap()));
    assert_eq!(queued["background"], true);
    let bg = queued["id"].as_str().unwrap();
    let (status, cancelled) = app
        .post(&format!("/v1/responses/{bg}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (_, again) = app.get(&format!("/v1/responses/{bg}")).await;
    assert_eq!(again["status"], "cancelled");

    // Unknown and foreign ids are 404 in OpenAI's shape.
    let (status, missing) = app
        .get(&format!(
            "/v1/responses/resp_{}{}",
            SessionId::new().0.simple(),
            SessionId::new().0.simple()
        ))
        .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["code"], "response_not_found");
    let (status, _) = app.get("/v1/responses/not-an-id").await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn a_background_response_streams_live_after_a_dropped_stream() {
    let app = spawn_app().await;
    let body = json!({"model": "echo", "input": slow_prompt("b1 b2 b3 b4 b5 b6", 80),
                      "background": true, "stream": true});
    let mut resp = app
        .client
        .post(app.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    drop(resp);
    let first = parse_sse(&String::from_utf8_lossy(&first));
    let created: Value = serde_json::from_str(&first[0].1).unwrap();
    assert_eq!(created["type"], "response.created");
    let id = created["response"]["id"].as_str().unwrap();
    let n = created["sequence_number"].as_u64().unwrap();
    let resp = app
        .client
        .get(app.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={n}"
        )))
        .send()
        .await
        .unwrap();
    let rest = parse_sse(&resp.text().await.unwrap());
    let types = event_types(&rest);
    assert_eq!(types.last().unwrap(), "response.completed", "{types:?}");
    assert!(!types.contains(&"response.created".to_string()));
    let done: Value = serde_json::from_str(&rest.last().unwrap().1).unwrap();
    assert_eq!(done["response"]["output_text"], "b1 b2 b3 b4 b5 b6");
}

#[actix_rt::test]
async fn models_list_the_configured_providers() {
    let app = spawn_app().await;
    let (status, list) = app.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let echo = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "echo")
        .expect("echo listed");
    assert_eq!(echo["object"], "model");
    assert_eq!(echo["owned_by"], "troupe");
    assert!(echo["created"].is_i64());
    let (status, one) = app.get("/v1/models/echo").await;
    assert_eq!((status, one["id"].as_str()), (200, Some("echo")));
    let (status, one) = app.get("/v1/models/echo/some-model").await;
    assert_eq!((status, one["id"].as_str()), (200, Some("echo/some-model")));
    let (status, missing) = app.get("/v1/models/nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
}

#[test]
fn a_response_replays_from_the_log_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::blocking::Client::new();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let created: Value = client
        .post(format!("{}/v1/responses", server.base()))
        .json(&json!({"model": "echo", "input": "survives a restart"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["status"], "completed", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(server.terminate().success());

    let server = ServerProcess::start(dir.path(), &[], &[]);
    let response: Value = client
        .get(format!("{}/v1/responses/{id}", server.base()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(response["status"], "completed", "{response}");
    assert_eq!(response["output_text"], "survives a restart");
    let text = client
        .get(format!(
            "{}/v1/responses/{id}?stream=true&starting_after=0",
            server.base()
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let frames = parse_sse(&text);
    assert_eq!(frames[0].0.as_deref(), Some("response.created"));
    assert_eq!(
        frames.last().unwrap().0.as_deref(),
        Some("response.completed")
    );
}

#[actix_rt::test]
async fn a_repeated_idempotency_key_answers_with_the_original_turn() {
    let app = spawn_app().await;
    let headers = [("x-session-key", "idem"), ("idempotency-key", "req-1")];
    let (s1, h1, first) = post_with(
        &app,
        "/v1/chat/completions",
        chat_body("only once"),
        &headers,
    )
    .await;
    let (s2, _, again) = post_with(
        &app,
        "/v1/chat/completions",
        chat_body("only once"),
        &headers,
    )
    .await;
    assert_eq!((s1, s2), (200, 200), "{again}");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["choices"][0]["message"]["content"], "only once");
    let turns = app
        .runtime
        .store()
        .all_turns(session_header(&h1))
        .await
        .unwrap();
    assert_eq!(turns.len(), 1);
}
