//! Sessions CRUD: `POST/GET /sessions`, `GET/PATCH/DELETE /sessions/{id}`, and the errors of
//! bad input (malformed JSON, wrong types, unknown fields, bad ids, body limit).

use crate::helpers::*;
use serde_json::{json, Value};

#[actix_rt::test]
async fn create_answers_201_then_200_for_the_same_key() {
    let app = spawn_app().await;
    let body = json!({"provider": "echo", "key": "chat-42", "title": "First", "model": "m1"});
    let (status, first) = app.post("/api/v1/sessions", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    let session = &first["session"];
    for field in [
        "id",
        "owner",
        "project",
        "provider",
        "key",
        "title",
        "model",
        "provider_session_id",
        "state",
        "created_at",
        "updated_at",
        "last_seq",
        "queue_len",
    ] {
        assert!(session.get(field).is_some(), "missing {field}: {session}");
    }
    assert_eq!(session["owner"], "local");
    assert_eq!(session["key"], "chat-42");
    assert_eq!(session["title"], "First");
    assert_eq!(session["model"], "m1");
    assert_eq!(session["state"], "idle");

    let (status, second) = app.post("/api/v1/sessions", body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["created"], false);
    assert_eq!(second["session"]["id"], session["id"]);
}

#[actix_rt::test]
async fn create_rejects_unknown_provider_bad_key_and_bad_bodies() {
    let app = spawn_app().await;
    let answer = app
        .post("/api/v1/sessions", json!({"provider": "nope"}))
        .await;
    assert_error(&answer, 400, "unknown_provider");
    for key in ["", "bad\u{7}key", &"k".repeat(257)] {
        let answer = app
            .post("/api/v1/sessions", json!({"provider": "echo", "key": key}))
            .await;
        assert_error(&answer, 400, "invalid_session_key");
    }
    let answer = app.post("/api/v1/sessions", json!({})).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "provider");
    let answer = app.post("/api/v1/sessions", json!({"provider": 7})).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "provider");
    let answer = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "colour": "red"}),
        )
        .await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "colour");
    let answer = app
        .post_bytes(
            "/api/v1/sessions",
            Some("application/json"),
            b"{\"provider\": ".to_vec(),
        )
        .await;
    assert_error(&answer, 400, "invalid_json");
    let answer = app
        .post_bytes(
            "/api/v1/sessions",
            Some("application/json"),
            b"nope".to_vec(),
        )
        .await;
    assert_error(&answer, 400, "invalid_json");
    let answer = app
        .post_bytes(
            "/api/v1/sessions",
            Some("text/plain"),
            br#"{"provider": "echo"}"#.to_vec(),
        )
        .await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "content-type");
}

#[actix_rt::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_app_with(|c| c.limits.body_bytes = 1024).await;
    let big = json!({"provider": "echo", "title": "x".repeat(2000)});
    let answer = app.post("/api/v1/sessions", big).await;
    assert_error(&answer, 413, "payload_too_large");
    // Chunked (no Content-Length): the limit holds while reading.
    let id = app.create_session().await;
    let stream = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/sessions/{id}/turns")))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let answer = status_json(resp).await;
    assert_error(&answer, 413, "payload_too_large");
    // Just under the limit is fine.
    let answer = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "title": "x".repeat(900)}),
        )
        .await;
    assert_eq!(answer.0, 201, "{}", answer.1);
}

#[actix_rt::test]
async fn projects_must_lie_under_configured_roots() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("repo");
    std::fs::create_dir(&inside).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let roots = vec![root.path().to_path_buf()];
    let app = spawn_app_with(move |c| c.projects.roots = roots).await;

    let (status, body) = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "project": inside.join("..").join("repo")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let canonical = inside.canonicalize().unwrap();
    assert_eq!(body["session"]["project"], canonical.to_str().unwrap());

    for project in [
        outside.path().to_str().unwrap().to_string(),
        format!("{}/../..", inside.display()),
        "/does/not/exist".to_string(),
    ] {
        let answer = app
            .post(
                "/api/v1/sessions",
                json!({"provider": "echo", "project": project}),
            )
            .await;
        assert_error(&answer, 400, "project_not_allowed");
    }
    // A symlink inside the root that points outside is resolved, and refused.
    let link = root.path().join("escape");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let answer = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "project": link}),
        )
        .await;
    assert_error(&answer, 400, "project_not_allowed");
}

#[actix_rt::test]
async fn list_filters_and_pages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let project = if i % 2 == 0 { "even" } else { "odd" };
        let (status, body) = app
            .post(
                "/api/v1/sessions",
                json!({"provider": "echo", "project": project, "key": format!("k{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["session"]["id"].as_str().unwrap().to_string());
    }
    let (status, body) = app.get("/api/v1/sessions").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(body["next_after"], Value::Null);

    let (_, body) = app.get("/api/v1/sessions?project=even").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 3);
    let (_, body) = app.get("/api/v1/sessions?provider=echo&state=idle").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 5);
    let (_, body) = app.get("/api/v1/sessions?state=running").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 0);
    let (_, body) = app.get("/api/v1/sessions?provider=other").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 0);

    // Paging: two at a time, following next_after.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/sessions?limit=2&after={a}"),
            None => "/api/v1/sessions?limit=2".to_string(),
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        for s in body["sessions"].as_array().unwrap() {
            paged.push(s["id"].as_str().unwrap().to_string());
        }
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, ids);

    for bad in [
        "/api/v1/sessions?limit=0",
        "/api/v1/sessions?limit=1001",
        "/api/v1/sessions?limit=many",
        "/api/v1/sessions?state=sleeping",
        "/api/v1/sessions?after=not-a-uuid",
    ] {
        let answer = app.get(bad).await;
        assert_error(&answer, 400, "invalid_request");
    }
}

#[actix_rt::test]
async fn get_patch_and_delete_one_session() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let path = format!("/api/v1/sessions/{id}");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["id"], id.as_str());

    let (status, body) = app.patch(&path, json!({"title": "Renamed"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["title"], "Renamed");
    let (status, body) = app.patch(&path, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["title"], "Renamed");
    let answer = app.patch(&path, json!({"archived": "yes"})).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "archived");

    let (status, body) = app.patch(&path, json!({"archived": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["state"], "archived");
    let answer = app.patch(&path, json!({"title": "Again"})).await;
    assert_error(&answer, 409, "session_archived");
    let answer = app.send_turn(&id, json!({"content": "hi"})).await;
    assert_error(&answer, 409, "session_archived");
    let (status, body) = app.patch(&path, json!({"archived": false})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["state"], "idle");

    let (status, _) = app.delete(&path).await;
    assert_eq!(status, 204);
    assert_error(&app.get(&path).await, 404, "session_not_found");
    assert_error(&app.delete(&path).await, 404, "session_not_found");
}

#[actix_rt::test]
async fn malformed_and_unknown_ids() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/v1/sessions/{unknown}"),
        format!("/api/v1/sessions/{unknown}/turns"),
        format!("/api/v1/sessions/{unknown}/events"),
    ] {
        assert_error(&app.get(&path).await, 404, "session_not_found");
    }
    for path in [
        "/api/v1/sessions/not-a-uuid",
        "/api/v1/sessions/123/turns",
        "/api/v1/sessions/%20/events",
    ] {
        let answer = app.get(path).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.1["error"]["field"], "session_id");
    }
    let id = app.create_session().await;
    let answer = app
        .delete(&format!("/api/v1/sessions/{id}/turns/not-a-turn"))
        .await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "turn_id");
}

#[actix_rt::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    assert_error(&app.get("/api/v1/nothing-here").await, 404, "not_found");
    let answer = app
        .call(reqwest::Method::PUT, "/api/v1/sessions", None, None)
        .await;
    assert_error(&answer, 405, "method_not_allowed");
}
