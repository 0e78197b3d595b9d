//! Turns: send (busy modes, idempotency, queue cap), list, cancel, promote; and the controls
//! abort, pause, resume, reset.

use crate::helpers::*;
use serde_json::json;

#[actix_rt::test]
async fn send_accepts_and_the_turn_completes() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, body) = app
        .send_turn(&id, json!({"content": "hello there world"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "running");
    assert_eq!(body["position"], 0);
    let turn = body["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&id, turn).await, "success");
    let message = app.wait_for_event(&id, |e| e["kind"] == "message").await;
    assert_eq!(message["data"]["text"], "hello there world");

    let (status, body) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], false);
    let turns = body["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["turn_id"], turn);
    assert_eq!(turns[0]["status"], "completed");
    assert_eq!(turns[0]["outcome"], "success");
}

#[actix_rt::test]
async fn repeated_client_message_id_answers_the_original_turn() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let body = json!({"content": "once", "client_message_id": "m-1"});
    let (status, first) = app.send_turn(&id, body.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = app.send_turn(&id, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["turn_id"], first["turn_id"]);
    assert_eq!(again["duplicate"], true);
    let (_, list) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    assert_eq!(list["turns"].as_array().unwrap().len(), 1);
}

#[actix_rt::test]
async fn send_rejects_bad_bodies() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let cases = [
        (json!({}), "content"),
        (json!({"content": 5}), "content"),
        (json!({"content": ""}), "content"),
        (json!({"content": "x", "mode": "later"}), "mode"),
        (
            json!({"content": "x", "client_message_id": ""}),
            "client_message_id",
        ),
        (json!({"content": "x", "options": [1, 2]}), "options"),
        (json!({"content": "x", "extra": true}), "extra"),
    ];
    for (body, field) in cases {
        let answer = app.send_turn(&id, body.clone()).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.1["error"]["field"], field, "{body}");
    }
    let answer = app
        .post_bytes(
            &format!("/api/v1/sessions/{id}/turns"),
            Some("application/json"),
            b"{\"content\": \"x\",}".to_vec(),
        )
        .await;
    assert_error(&answer, 400, "invalid_json");
}

#[actix_rt::test]
async fn reject_mode_on_a_busy_session_is_409_and_a_full_queue_is_429() {
    let app = spawn_app_with(|c| c.runtime.max_queue = 1).await;
    let id = app.create_session().await;
    let (status, running) = app.send_turn(&id, slow_turn(60)).await;
    assert_eq!(status, 202, "{running}");
    let answer = app
        .send_turn(&id, json!({"content": "now", "mode": "reject"}))
        .await;
    assert_error(&answer, 409, "session_busy");
    let (status, queued) = app.send_turn(&id, json!({"content": "later"})).await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["position"], 1);
    let answer = app.send_turn(&id, json!({"content": "too many"})).await;
    assert_error(&answer, 429, "queue_full");
    assert_eq!(answer.1["error"]["max"], 1);
    app.post_empty(&format!("/api/v1/sessions/{id}/abort"))
        .await;
}

#[actix_rt::test]
async fn cancel_and_promote_queued_turns() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (_, running) = app.send_turn(&id, slow_turn(60)).await;
    let running = running["turn_id"].as_str().unwrap().to_string();
    let mut queued = Vec::new();
    for text in ["a", "b", "c"] {
        let (status, body) = app.send_turn(&id, json!({"content": text})).await;
        assert_eq!(status, 202, "{body}");
        queued.push(body["turn_id"].as_str().unwrap().to_string());
    }

    let (status, body) = app
        .post_empty(&format!(
            "/api/v1/sessions/{id}/turns/{}/promote",
            queued[2]
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["turn_id"], queued[2].as_str());
    assert_eq!(body["status"], "queued");
    assert_eq!(body["position"], 1);

    let (status, _) = app
        .delete(&format!("/api/v1/sessions/{id}/turns/{}", queued[0]))
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.wait_for_outcome(&id, &queued[0]).await, "cancelled");
    let (_, list) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    let mut open: Vec<(String, u64)> = list["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "queued")
        .map(|t| {
            (
                t["turn_id"].as_str().unwrap().to_string(),
                t["position"].as_u64().unwrap(),
            )
        })
        .collect();
    open.sort_by_key(|(_, position)| *position);
    assert_eq!(open, vec![(queued[2].clone(), 1), (queued[1].clone(), 2)]);

    let answer = app
        .delete(&format!("/api/v1/sessions/{id}/turns/{running}"))
        .await;
    assert_error(&answer, 409, "turn_running");
    let answer = app
        .post_empty(&format!("/api/v1/sessions/{id}/turns/{running}/promote"))
        .await;
    assert_error(&answer, 409, "turn_running");
    let unknown = uuid::Uuid::now_v7();
    let answer = app
        .delete(&format!("/api/v1/sessions/{id}/turns/{unknown}"))
        .await;
    assert_error(&answer, 404, "turn_not_found");
    let answer = app
        .post_empty(&format!("/api/v1/sessions/{id}/turns/{unknown}/promote"))
        .await;
    assert_error(&answer, 404, "turn_not_found");
    let answer = app
        .post_empty(&format!("/api/v1/sessions/{id}/turns/zzz/promote"))
        .await;
    assert_error(&answer, 400, "invalid_request");
    app.post_empty(&format!("/api/v1/sessions/{id}/pause"))
        .await;
    app.post_empty(&format!("/api/v1/sessions/{id}/abort"))
        .await;
}

#[actix_rt::test]
async fn abort_ends_the_running_turn_aborted() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, body) = app
        .post_empty(&format!("/api/v1/sessions/{id}/abort"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aborted"], false);
    assert_eq!(body["turn_id"], serde_json::Value::Null);

    let (_, running) = app.send_turn(&id, slow_turn(60)).await;
    let turn = running["turn_id"].as_str().unwrap();
    let (status, body) = app
        .post_empty(&format!("/api/v1/sessions/{id}/abort"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aborted"], true);
    assert_eq!(body["turn_id"], turn);
    assert_eq!(app.wait_for_outcome(&id, turn).await, "aborted");
}

#[actix_rt::test]
async fn pause_holds_the_queue_resume_and_reset_release_it() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, body) = app
        .post_empty(&format!("/api/v1/sessions/{id}/pause"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["state"], "paused");

    let (status, body) = app.send_turn(&id, json!({"content": "held"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let turn = body["turn_id"].as_str().unwrap().to_string();
    let (_, list) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    assert_eq!(list["paused"], true);

    let (status, body) = app
        .post_empty(&format!("/api/v1/sessions/{id}/resume"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["session"]["state"], "paused");
    assert_eq!(app.wait_for_outcome(&id, &turn).await, "success");

    let (status, body) = app
        .post_empty(&format!("/api/v1/sessions/{id}/reset"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["state"], "idle");
    assert_eq!(
        body["session"]["provider_session_id"],
        serde_json::Value::Null
    );

    app.patch(&format!("/api/v1/sessions/{id}"), json!({"archived": true}))
        .await;
    for control in ["pause", "resume", "reset"] {
        let answer = app
            .post_empty(&format!("/api/v1/sessions/{id}/{control}"))
            .await;
        assert_error(&answer, 409, "session_archived");
    }
}
