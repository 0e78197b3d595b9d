//! Bearer tokens: 401 without a valid one, 403 on admin endpoints for non-admins, and another
//! owner's session is 404 on every session route, exactly like a session that does not exist.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use troupe::config::{Secret, TokenConfig};

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";
const ROOT: &str = "root-token";

async fn spawn_with_tokens() -> TestApp {
    spawn_app_with(|c| {
        c.auth.tokens = vec![
            TokenConfig {
                token: Secret(ALICE.into()),
                owner: "alice".into(),
                admin: false,
            },
            TokenConfig {
                token: Secret(BOB.into()),
                owner: "bob".into(),
                admin: false,
            },
            TokenConfig {
                token: Secret(ROOT.into()),
                owner: "ops".into(),
                admin: true,
            },
        ]
    })
    .await
}

#[actix_rt::test]
async fn missing_or_invalid_tokens_are_401() {
    let app = spawn_with_tokens().await;
    let routes = [
        (Method::POST, "/api/v1/sessions"),
        (Method::GET, "/api/v1/sessions"),
        (Method::GET, "/api/v1/providers"),
        (Method::GET, "/api/v1/admin/actors"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong")] {
            let answer = app
                .call(
                    method.clone(),
                    path,
                    token,
                    Some(json!({"provider": "echo"})),
                )
                .await;
            assert_error(&answer, 401, "unauthorized");
        }
    }
    // A malformed id behind a missing token is still 401: auth is checked first.
    let answer = app
        .call(Method::GET, "/api/v1/sessions/not-a-uuid", None, None)
        .await;
    assert_error(&answer, 401, "unauthorized");
    let resp = app
        .client
        .get(app.url("/api/v1/sessions"))
        .header("authorization", "Basic YWxpY2U6eA==")
        .send()
        .await
        .unwrap();
    assert_error(&status_json(resp).await, 401, "unauthorized");

    // Probes, metrics and the OpenAPI document need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let (status, body) = app
        .call(Method::GET, "/api/v1/sessions", Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn admin_endpoint_is_403_for_non_admins() {
    let app = spawn_with_tokens().await;
    let answer = app
        .call(Method::GET, "/api/v1/admin/actors", Some(ALICE), None)
        .await;
    assert_error(&answer, 403, "forbidden");
    let (status, body) = app
        .call(Method::GET, "/api/v1/admin/actors", Some(ROOT), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn another_owners_session_is_404_on_every_session_route() {
    let app = spawn_with_tokens().await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/sessions",
            Some(ALICE),
            Some(json!({"provider": "echo", "key": "private"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session"]["id"].as_str().unwrap().to_string();
    let (status, turn) = app
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{id}/turns"),
            Some(ALICE),
            Some(slow_turn(40)),
        )
        .await;
    assert_eq!(status, 202, "{turn}");
    let turn = turn["turn_id"].as_str().unwrap().to_string();
    let unknown = uuid::Uuid::now_v7().to_string();

    let routes = |sid: &str| -> Vec<(Method, String, Option<Value>)> {
        vec![
            (Method::GET, format!("/api/v1/sessions/{sid}"), None),
            (
                Method::PATCH,
                format!("/api/v1/sessions/{sid}"),
                Some(json!({"title": "mine now"})),
            ),
            (
                Method::POST,
                format!("/api/v1/sessions/{sid}/turns"),
                Some(json!({"content": "hi"})),
            ),
            (Method::GET, format!("/api/v1/sessions/{sid}/turns"), None),
            (
                Method::DELETE,
                format!("/api/v1/sessions/{sid}/turns/{turn}"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/sessions/{sid}/turns/{turn}/promote"),
                None,
            ),
            (Method::POST, format!("/api/v1/sessions/{sid}/abort"), None),
            (Method::POST, format!("/api/v1/sessions/{sid}/pause"), None),
            (Method::POST, format!("/api/v1/sessions/{sid}/resume"), None),
            (Method::POST, format!("/api/v1/sessions/{sid}/reset"), None),
            (Method::GET, format!("/api/v1/sessions/{sid}/events"), None),
            (
                Method::GET,
                format!("/api/v1/sessions/{sid}/events/stream"),
                None,
            ),
            (Method::DELETE, format!("/api/v1/sessions/{sid}"), None),
        ]
    };
    for ((method, foreign, body), (_, missing, _)) in routes(&id).into_iter().zip(routes(&unknown))
    {
        let as_bob = app
            .call(method.clone(), &foreign, Some(BOB), body.clone())
            .await;
        assert_error(&as_bob, 404, "session_not_found");
        let not_there = app.call(method.clone(), &missing, Some(BOB), body).await;
        assert_eq!(
            as_bob, not_there,
            "{method} {foreign}: same answer as a missing session"
        );
    }
    // Bob's list does not show it, and his create with the same key makes his own session.
    let (_, list) = app
        .call(Method::GET, "/api/v1/sessions", Some(BOB), None)
        .await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 0);
    let (status, own) = app
        .call(
            Method::POST,
            "/api/v1/sessions",
            Some(BOB),
            Some(json!({"provider": "echo", "key": "private"})),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    assert_ne!(own["session"]["id"], id.as_str());

    // Nothing Bob did touched Alice's session: the turn still runs, the title is unchanged.
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/v1/sessions/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["title"], Value::Null);
    assert_eq!(body["session"]["state"], "running");
    app.call(
        Method::POST,
        &format!("/api/v1/sessions/{id}/abort"),
        Some(ALICE),
        None,
    )
    .await;
}

#[actix_rt::test]
async fn access_token_in_the_url_authenticates_only_the_streaming_doors() {
    let app = spawn_with_tokens().await;
    let (_, created) = app
        .call(
            Method::POST,
            "/api/v1/sessions",
            Some(ALICE),
            Some(json!({"provider": "echo"})),
        )
        .await;
    let id = created["session"]["id"].as_str().unwrap().to_string();
    let query = format!("access_token={ALICE}");
    for path in [
        format!("/api/v1/sessions?{query}"),
        format!("/api/v1/sessions/{id}?{query}"),
        format!("/api/v1/sessions/{id}/events?{query}"),
        format!("/api/v1/providers?{query}"),
    ] {
        let answer = app.call(Method::GET, &path, None, None).await;
        assert_error(&answer, 401, "unauthorized");
    }
    let models = app
        .call(Method::GET, &format!("/v1/models?{query}"), None, None)
        .await;
    assert_eq!(models.0, 401, "{}", models.1);
    assert_eq!(models.1["error"]["code"], "invalid_api_key");

    // The SSE stream (EventSource cannot send headers) takes it.
    let stream = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/events/stream?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    drop(stream);
    let wrong = app
        .call(
            Method::GET,
            &format!("/api/v1/sessions/{id}/events/stream?access_token={BOB}"),
            None,
            None,
        )
        .await;
    assert_error(&wrong, 404, "session_not_found");
}
