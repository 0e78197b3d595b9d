//! The wire contract at its edges: bodies are JSON objects, every route answers other methods
//! with 405 and `Allow`, `/v1` type errors name the field, and seq cursors take exactly the
//! documented `int64 ≥ 0`.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[actix_rt::test]
async fn json_arrays_are_refused_as_bodies_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let session = format!("/api/v1/sessions/{id}");
    for body in [json!(["renamed by array", null]), json!([null, true])] {
        let answer = app.patch(&session, body).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.1["error"]["field"], Value::Null, "{}", answer.1);
    }
    let (_, after) = app.get(&session).await;
    assert_eq!(after["session"]["title"], Value::Null, "{after}");
    assert_eq!(after["session"]["state"], "idle", "{after}");

    let create = app
        .post("/api/v1/sessions", json!(["echo", null, null, "k", "T"]))
        .await;
    assert_error(&create, 400, "invalid_request");
    let (_, list) = app.get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");

    let turn = app.send_turn(&id, json!(["hello"])).await;
    assert_error(&turn, 400, "invalid_request");
}

#[actix_rt::test]
async fn valid_json_of_the_wrong_shape_is_not_called_invalid_json() {
    let app = spawn_app().await;
    let cases = [
        ("[null,null,null]", "invalid_request"),
        ("\"echo\"", "invalid_request"),
        ("3", "invalid_request"),
        ("null", "invalid_request"),
        ("true", "invalid_request"),
        ("[null,", "invalid_json"),
        ("{\"provider\": ", "invalid_json"),
        ("[1] trailing", "invalid_json"),
    ];
    for (body, code) in cases {
        let answer = app
            .post_bytes(
                "/api/v1/sessions",
                Some("application/json"),
                body.as_bytes().to_vec(),
            )
            .await;
        assert_error(&answer, 400, code);
        if code == "invalid_request" {
            let message = answer.1["error"]["message"].as_str().unwrap();
            assert!(message.contains("JSON object"), "{body}: {}", answer.1);
        }
    }
}

#[actix_rt::test]
async fn openai_bodies_must_be_objects_and_type_errors_name_the_field() {
    let app = spawn_app().await;
    let array = app.post("/v1/chat/completions", json!([null, null])).await;
    assert_eq!(array.0, 400, "{}", array.1);
    assert_eq!(array.1["error"]["code"], "invalid_request", "{}", array.1);
    assert_eq!(
        array.1["error"]["type"], "invalid_request_error",
        "{}",
        array.1
    );

    let user = |content: Value| json!([{"role": "user", "content": content}]);
    for (path, body, param) in [
        (
            "/v1/responses",
            json!({"model": "echo", "input": "hi", "background": 1}),
            "background",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "echo", "messages": user(json!(5))}),
            "messages[0].content",
        ),
        (
            "/v1/responses",
            json!({"model": "echo", "input": "hi", "metadata": 5}),
            "metadata",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "echo", "messages": user(json!("x")), "user": "a\u{1}"}),
            "user",
        ),
    ] {
        let (status, answer) = app.post(path, body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
}

/// A concrete path for a documented one.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0193a4b2-0000-7000-8000-000000000001")
        .replace("{turn_id}", "0193a4b2-0000-7000-8000-000000000002")
}

#[actix_rt::test]
async fn every_documented_path_answers_other_methods_with_405_and_allow() {
    let app = spawn_app().await;
    let mut checked = 0;
    for document in ["/api/v1/openapi.json", "/v1/openapi.json"] {
        let (status, doc) = app.get(document).await;
        assert_eq!(status, 200);
        for (path, item) in doc["paths"].as_object().unwrap() {
            let allowed: BTreeSet<String> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                if allowed.contains(method) {
                    continue;
                }
                let url = app.url(&concrete(path));
                let response = app
                    .client
                    .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 405, "{method} {path}");
                let allow: BTreeSet<String> = response
                    .headers()
                    .get("allow")
                    .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                    .to_str()
                    .unwrap()
                    .split(',')
                    .map(|m| m.trim().to_string())
                    .collect();
                assert_eq!(allow, allowed, "{method} {path}");
                let (_, body) = status_json(response).await;
                assert_eq!(
                    body["error"]["code"], "method_not_allowed",
                    "{path}: {body}"
                );
                if path.starts_with("/v1/") {
                    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "only {checked} method checks");
    // The WebSocket door is in no document and answers the same way.
    let ws = app.call(Method::POST, "/api/v1/ws", None, None).await;
    assert_error(&ws, 405, "method_not_allowed");
}

#[actix_rt::test]
async fn seq_cursors_take_exactly_int64_from_zero() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let events = format!("/api/v1/sessions/{id}/events");
    let (status, body) = app.get(&format!("{events}?after_seq={}", i64::MAX)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
    for bad in ["-1", "9223372036854775808", "18446744073709551615", "x"] {
        let answer = app.get(&format!("{events}?after_seq={bad}")).await;
        assert_error(&answer, 400, "invalid_request");
        let stream = app.get(&format!("{events}/stream?after_seq={bad}")).await;
        assert_error(&stream, 400, "invalid_request");
    }
    for limit in ["0", "1001"] {
        let answer = app.get(&format!("{events}?limit={limit}")).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.1["error"]["field"], "limit");
    }
    // The Responses API's cursor follows the same rule.
    for bad in ["-1", "9223372036854775808"] {
        let (status, body) = app
            .get(&format!(
                "/v1/responses/resp_0?stream=true&starting_after={bad}"
            ))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // A malformed query cursor is refused even when the header would win.
    for (query, header, field) in [
        ("?after_seq=-1", "0", "after_seq"),
        ("", "-3", "Last-Event-ID"),
        ("", "9223372036854775808", "Last-Event-ID"),
    ] {
        let answer = app
            .client
            .get(app.url(&format!("{events}/stream{query}")))
            .header("last-event-id", header)
            .send()
            .await
            .unwrap();
        let answer = status_json(answer).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.1["error"]["field"], field);
    }
}

#[actix_rt::test]
async fn path_ids_are_hyphenated_uuids_only() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let simple = id.replace('-', "");
    let answer = app.get(&format!("/api/v1/sessions/{simple}")).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "session_id");
    let (status, _) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn an_idempotency_key_is_bounded_like_a_client_message_id() {
    let app = spawn_app().await;
    let send = |key: String| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .header("idempotency-key", key)
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let (status, body) = status_json(send("k".repeat(257)).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "Idempotency-Key", "{body}");
    let (status, body) = status_json(send("k".repeat(256)).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn every_session_key_header_present_is_checked() {
    let app = spawn_app().await;
    let (status, body) = status_json(
        app.client
            .post(app.url("/v1/chat/completions"))
            .header("x-session-key", "good")
            .header("x-openclaw-session-key", "")
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_session_key", "{body}");
    assert_eq!(body["error"]["param"], "x-openclaw-session-key", "{body}");
}
