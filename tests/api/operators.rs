//! Operators' doors: `/readyz`, `/metrics`, `/api/v1/admin/actors`, `/api/v1/providers`, and
//! the generated OpenAPI document.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[actix_rt::test]
async fn readyz_is_200_when_the_store_takes_writes() {
    let app = spawn_app().await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
}

#[actix_rt::test]
async fn readyz_is_503_naming_the_store_when_it_cannot_be_written() {
    let app = spawn_app().await;
    // Tests run as root, so permission bits do not stop writes. Instead the probe's own path is
    // taken: the readiness check writes a probe file in the data directory, and a directory
    // sitting at that path makes the write fail with EISDIR for any user, root included.
    let probe = app.data.path().join(".troupe-ready-probe");
    std::fs::create_dir(&probe).unwrap();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["check"], "store");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    // Healthy again once the path is free.
    std::fs::remove_dir(&probe).unwrap();
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn metrics_expose_runtime_and_http_figures() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (_, turn) = app.send_turn(&id, json!({"content": "count me"})).await;
    app.wait_for_outcome(&id, turn["turn_id"].as_str().unwrap())
        .await;
    app.get(&format!("/api/v1/sessions/{id}")).await;
    app.get("/api/v1/sessions/not-a-uuid").await;

    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = resp.text().await.unwrap();
    for needle in [
        "troupe_sessions{state=\"live\"} 1",
        "troupe_sessions{state=\"passivated\"} 0",
        "troupe_turns_accepted_total 1",
        "troupe_turns_completed_total{outcome=\"success\"} 1",
        "troupe_attempts_total 1",
        "troupe_retries_total 0",
        "troupe_queue_depth 0",
        "troupe_subscribers ",
        "troupe_lagged_drops_total 0",
        // Process-wide figures: other tests in this binary open WebSockets concurrently.
        "troupe_ws_connections ",
        "troupe_ws_lagged_total ",
        "troupe_running_attempts 0",
        "troupe_http_requests_total{method=\"POST\",route=\"/api/v1/sessions\",status=\"201\"} 1",
        "troupe_http_requests_total{method=\"GET\",route=\"/api/v1/sessions/{id}\",status=\"200\"} 1",
        "troupe_http_requests_total{method=\"GET\",route=\"/api/v1/sessions/{id}\",status=\"400\"} 1",
        "troupe_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"POST\",route=\"/api/v1/sessions/{id}/turns\"} 1",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(text.contains("troupe_events_appended_total "));
    assert!(!text.contains(&id), "raw ids never become labels");
    assert!(text.trim_end().ends_with("# EOF"));
}

#[actix_rt::test]
async fn admin_actors_lists_live_sessions_and_registry_figures() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (_, turn) = app.send_turn(&id, slow_turn(40)).await;
    let turn = turn["turn_id"].as_str().unwrap().to_string();
    app.wait_for_event(&id, |e| e["kind"] == "turn.started")
        .await;

    let (status, body) = app.get("/api/v1/admin/actors").await;
    assert_eq!(status, 200, "{body}");
    let actors = body["actors"].as_array().unwrap();
    assert_eq!(actors.len(), 1, "{body}");
    let row = &actors[0];
    assert_eq!(row["session_id"], id.as_str());
    assert_eq!(row["state"], "running");
    assert_eq!(row["run"]["turn_id"], turn.as_str());
    assert_eq!(row["run"]["attempt"], 1);
    for field in [
        "subscribers",
        "queue_len",
        "restarts",
        "last_seq",
        "last_event_at",
    ] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
    assert_eq!(body["registry"]["live"], 1);
    assert_eq!(body["registry"]["passivated"], 0);
    assert!(body["registry"]["activations"].as_u64().unwrap() >= 1);
    app.post_empty(&format!("/api/v1/sessions/{id}/abort"))
        .await;
}

#[actix_rt::test]
async fn providers_lists_the_configured_providers() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/providers").await;
    assert_eq!(status, 200, "{body}");
    let echo = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .expect("echo is configured")
        .clone();
    assert_eq!(echo["kind"], "echo");
    assert_eq!(echo["available"], true);
    assert!(echo.get("model").is_some());
    for cap in ["resume", "steer", "stateless"] {
        assert!(echo["capabilities"][cap].is_boolean(), "{echo}");
    }
}

/// The property names of a schema in the document.
fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[actix_rt::test]
async fn openapi_document_covers_every_route_and_matches_the_wire() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{id}", "get"),
        ("/api/v1/sessions/{id}", "patch"),
        ("/api/v1/sessions/{id}", "delete"),
        ("/api/v1/sessions/{id}/turns", "post"),
        ("/api/v1/sessions/{id}/turns", "get"),
        ("/api/v1/sessions/{id}/turns/{turn_id}", "delete"),
        ("/api/v1/sessions/{id}/turns/{turn_id}/promote", "post"),
        ("/api/v1/sessions/{id}/abort", "post"),
        ("/api/v1/sessions/{id}/pause", "post"),
        ("/api/v1/sessions/{id}/resume", "post"),
        ("/api/v1/sessions/{id}/reset", "post"),
        ("/api/v1/sessions/{id}/events", "get"),
        ("/api/v1/sessions/{id}/events/stream", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/providers", "get"),
        ("/api/v1/admin/actors", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    // Without tokens nothing is required; `tests/api/openapi.rs` checks the bearer scheme.
    assert!(doc["components"]["securitySchemes"].is_null());

    // The hand-described core shapes match what the server sends.
    let id = app.create_session().await;
    let (_, turn) = app
        .send_turn(&id, json!({"content": "shape", "client_message_id": "c1"}))
        .await;
    app.wait_for_outcome(&id, turn["turn_id"].as_str().unwrap())
        .await;
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(properties(&doc, "Session"), keys(&session["session"]));
    let (_, turns) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    // A completed turn omits only its `position`.
    let turn_keys = keys(&turns["turns"][0]);
    let described = properties(&doc, "Turn");
    assert!(
        turn_keys.is_subset(&described),
        "{turn_keys:?} vs {described:?}"
    );
    let omitted: Vec<&String> = described.difference(&turn_keys).collect();
    assert_eq!(omitted, vec!["position"]);
    let events = app.all_events(&id).await;
    assert_eq!(properties(&doc, "Event"), keys(&events[1]));
    let kinds: BTreeSet<String> = doc["components"]["schemas"]["EventKind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for e in &events {
        assert!(kinds.contains(e["kind"].as_str().unwrap()), "{e}");
    }
    let (_, actors) = app.get("/api/v1/admin/actors").await;
    assert_eq!(
        properties(&doc, "ActorSnapshot"),
        keys(&actors["actors"][0])
    );
    assert_eq!(
        properties(&doc, "RegistryFigures"),
        keys(&actors["registry"])
    );
    let (_, providers) = app.get("/api/v1/providers").await;
    assert_eq!(
        properties(&doc, "Capabilities"),
        keys(&providers["providers"][0]["capabilities"])
    );
}
