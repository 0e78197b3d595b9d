//! Tool-permission answers over the wire: `POST /sessions/{id}/permissions/{request_id}` and the
//! WebSocket frame `permission.reply`; a second answer is 409, a pending request is replayed to a
//! client that subscribes again, and the actor table shows the wait.

use crate::helpers::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A turn on the echo provider that asks permission before its tool.
fn asking_turn() -> Value {
    json!({"content": "echo me", "options": {"script": {"ask_permission": true}}})
}

/// Polls the log until an event of `kind` appears; returns it.
async fn wait_for(app: &TestApp, id: &str, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(event) = app
            .all_events(id)
            .await
            .into_iter()
            .find(|e| e["kind"] == kind)
        {
            return event;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {kind} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_rest_answer_resolves_the_request_and_a_second_one_is_409() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, _) = app.send_turn(&id, asking_turn()).await;
    assert_eq!(status, 202);
    let requested = wait_for(&app, &id, "permission.requested").await;
    let request = requested["data"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(requested["data"]["options"][0]["kind"], "allow_once");
    let (_, actors) = app.get("/api/v1/admin/actors").await;
    assert!(
        actors.to_string().contains(&request),
        "the actor table shows the wait: {actors}"
    );
    let path = format!("/api/v1/sessions/{id}/permissions/{request}");
    let (status, body) = app.post(&path, json!({"option_id": "nope"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/sessions/{id}/permissions/0193a8c4-0000-7000-8000-000000000000"),
            json!({"option_id": "allow"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("permission_not_found"))
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/sessions/{id}/permissions/unknown"),
            json!({"option_id": "allow"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = app.post(&path, json!({"option_id": "allow"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["option_id"], "allow");
    let (status, body) = app.post(&path, json!({"option_id": "reject"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("permission_resolved"))
    );
    let completed = wait_for(&app, &id, "turn.completed").await;
    assert_eq!(completed["data"]["outcome"], "success");
    let resolved = wait_for(&app, &id, "permission.resolved").await;
    assert_eq!(resolved["data"]["option_id"], "allow");
}

#[actix_rt::test]
async fn a_websocket_client_that_subscribes_again_sees_the_request_and_answers_it() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let url = format!("ws://{}/api/v1/ws", app.address);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    first
        .send(Message::text(
            json!({"type": "subscribe", "id": "s", "session_id": id}).to_string(),
        ))
        .await
        .unwrap();
    app.send_turn(&id, asking_turn()).await;
    let requested = next_kind(&mut first, "permission.requested").await;
    drop(first);
    // A client that comes back gets the pending request in its replay, and answers it.
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    second
        .send(Message::text(
            json!({"type": "subscribe", "id": "s", "session_id": id, "after_seq": 0}).to_string(),
        ))
        .await
        .unwrap();
    let replayed = next_kind(&mut second, "permission.requested").await;
    assert_eq!(replayed["seq"], requested["seq"]);
    let request = replayed["data"]["request_id"].clone();
    second
        .send(Message::text(
            json!({"type": "permission.reply", "id": "p", "session_id": id,
                   "request_id": request, "option_id": "reject"})
            .to_string(),
        ))
        .await
        .unwrap();
    // The ack and the events the answer lets happen may come in either order: the turn can
    // go on (and its events be delivered) before the answer's own ack is sent.
    let (mut ack, mut result, mut completed) = (None, None, None);
    while ack.is_none() || result.is_none() || completed.is_none() {
        let frame = next_frame(&mut second, |_| true).await;
        match (frame["type"].as_str(), frame["kind"].as_str()) {
            _ if frame["id"] == "p" => ack = Some(frame),
            (Some("event"), Some("tool.result")) => result = Some(frame),
            (Some("event"), Some("turn.completed")) => completed = Some(frame),
            _ => {}
        }
    }
    let (ack, result, completed) = (ack.unwrap(), result.unwrap(), completed.unwrap());
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["option_id"], "reject");
    assert_eq!(
        result["data"]["is_error"], true,
        "the rejected tool did not run"
    );
    assert_eq!(completed["data"]["outcome"], "success");
}

/// The next frame that `matches`.
async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("reads");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if matches(&frame) {
                return frame;
            }
        }
    }
}

/// The next event of `kind`.
async fn next_kind(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) -> Value {
    next_frame(socket, |f| f["type"] == "event" && f["kind"] == kind).await
}
