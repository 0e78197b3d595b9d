//! The served OpenAPI documents say exactly what the server accepts: unique operation ids, uuid
//! path ids, the bounds and lengths the server enforces, the configured providers, links from
//! create to send to events, and security only when tokens are required.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use troupe::config::{Secret, TokenConfig};
use troupe::providers::config::{ProviderConfig, ProviderKind};

/// Every operation of a document, with its path and method.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

fn operation(doc: &Value, id: &str) -> Value {
    operations(doc)
        .into_iter()
        .find(|(_, _, op)| op["operationId"] == id)
        .unwrap_or_else(|| panic!("no operation {id}"))
        .2
}

fn parameter(op: &Value, name: &str) -> Value {
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
        .clone()
}

#[actix_rt::test]
async fn operation_ids_are_unique_and_path_ids_are_uuids() {
    let app = spawn_app().await;
    for document in ["/api/v1/openapi.json", "/v1/openapi.json"] {
        let (_, doc) = app.get(document).await;
        let ops = operations(&doc);
        let ids: BTreeSet<&str> = ops
            .iter()
            .map(|(_, _, op)| op["operationId"].as_str().expect("operationId"))
            .collect();
        assert_eq!(ids.len(), ops.len(), "{document}: {ids:?}");
        for (path, method, op) in ops.iter().filter(|(p, _, _)| p.starts_with("/api/")) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path}");
                }
                assert!(
                    !p["schema"]["type"].is_array(),
                    "{method} {path}: parameter {} may be null",
                    p["name"]
                );
            }
        }
    }
}

#[actix_rt::test]
async fn bounds_and_lengths_are_the_ones_the_server_enforces() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    for id in ["list_sessions", "list_events"] {
        let limit = parameter(&operation(&doc, id), "limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{id}");
        assert_eq!(limit["schema"]["maximum"], 1000, "{id}");
    }
    for id in ["list_events", "stream_events"] {
        let after = parameter(&operation(&doc, id), "after_seq");
        assert_eq!(after["schema"]["format"], "int64", "{id}");
        assert_eq!(after["schema"]["minimum"], 0, "{id}");
    }
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateSession"]["properties"];
    let send = &schemas["SendTurnBody"]["properties"];
    for (field, min, max) in [
        (&create["provider"], 1, None),
        (&create["project"], 1, None),
        (&create["key"], 1, Some(256)),
        (&send["content"], 1, None),
        (&send["client_message_id"], 1, Some(256)),
    ] {
        assert_eq!(field["minLength"], min, "{field}");
        assert_eq!(
            field.get("maxLength").and_then(Value::as_u64),
            max,
            "{field}"
        );
    }
    // The configured providers: `echo` and whichever agent CLIs are on PATH.
    let (_, providers) = app.get("/api/v1/providers").await;
    let mut configured: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    configured.sort();
    let mut listed: Vec<&str> = create["provider"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, configured);
    assert!(listed.contains(&"echo"));
    let project = parameter(&operation(&doc, "list_sessions"), "project");
    assert_eq!(project["schema"]["minLength"], 1);
    assert_eq!(
        schemas["ErrorObject"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    assert!(schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("session_not_found")));
}

#[actix_rt::test]
async fn the_provider_enum_is_the_configured_providers() {
    let app = spawn_app_with(|c| {
        c.providers.clear();
        for name in ["alpha", "beta"] {
            c.providers
                .insert(name.into(), ProviderConfig::of_kind(ProviderKind::Echo));
        }
    })
    .await;
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(
        doc["components"]["schemas"]["CreateSession"]["properties"]["provider"]["enum"],
        json!(["alpha", "beta"])
    );
    let (_, openai) = app.get("/v1/openapi.json").await;
    assert_eq!(
        openai["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["pattern"],
        "^(alpha|beta)(/.+)?$"
    );
}

#[actix_rt::test]
async fn links_lead_from_create_to_send_to_events() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    let created = &operation(&doc, "create_session")["responses"]["201"]["links"];
    assert_eq!(created["SendTurn"]["operationId"], "send_turn");
    assert_eq!(
        created["SendTurn"]["parameters"]["id"],
        "$response.body#/session/id"
    );
    let sent = &operation(&doc, "send_turn")["responses"]["202"]["links"];
    assert_eq!(sent["ListEvents"]["operationId"], "list_events");
    assert_eq!(sent["ListEvents"]["parameters"]["id"], "$request.path.id");
    let (_, openai) = app.get("/v1/openapi.json").await;
    let response = &operation(&openai, "create_response")["responses"]["200"]["links"];
    assert_eq!(response["GetResponse"]["operationId"], "get_response");
}

#[actix_rt::test]
async fn the_openai_document_covers_the_v1_routes() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{id}",
        "/v1/responses/{id}/cancel",
        "/v1/models",
        "/v1/models/{id}",
    ] {
        assert!(paths.contains(path), "{path} missing: {paths:?}");
    }
    let chat = operation(&doc, "create_chat_completion");
    let content = &chat["responses"]["200"]["content"];
    assert!(content["application/json"].is_object(), "{content}");
    assert!(content["text/event-stream"].is_object(), "{content}");
}

#[actix_rt::test]
async fn security_is_declared_only_when_tokens_are_required() {
    let open = spawn_app().await;
    let (_, doc) = open.get("/api/v1/openapi.json").await;
    assert!(operations(&doc)
        .iter()
        .all(|(_, _, op)| op.get("security").is_none()));
    let locked = spawn_app_with(|c| {
        c.auth.tokens = vec![TokenConfig {
            token: Secret("t".into()),
            owner: "o".into(),
            admin: true,
        }]
    })
    .await;
    for document in ["/api/v1/openapi.json", "/v1/openapi.json"] {
        let (status, doc) = locked.get(document).await;
        assert_eq!(status, 200, "the documents need no token");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(operation(
            &doc,
            if document.starts_with("/v1") {
                "create_response"
            } else {
                "create_session"
            }
        )["security"]
            .is_array());
    }
}
