//! A small fuzz of REST bodies: random JSON and random bytes sent to every POST/PATCH route of
//! the real binary. Bad input is a 4xx with the error body, never a 5xx, and the server stays up.

use crate::helpers::*;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, biased towards the fields the routes know so shapes get past the first check.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("echo"),
            Just("reject"),
            Just("enqueue"),
            Just("steer"),
            Just("interrupt")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("provider".to_string()),
                    Just("key".to_string()),
                    Just("project".to_string()),
                    Just("title".to_string()),
                    Just("content".to_string()),
                    Just("mode".to_string()),
                    Just("client_message_id".to_string()),
                    Just("options".to_string()),
                    Just("archived".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => json_value().prop_map(Body::Json),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Bytes),
    ]
}

#[test]
fn random_bodies_never_cause_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let base = server.base();
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&serde_json::json!({"provider": "echo"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["session"]["id"].as_str().unwrap().to_string();
    let routes = [
        (reqwest::Method::POST, format!("{base}/api/v1/sessions")),
        (
            reqwest::Method::POST,
            format!("{base}/api/v1/sessions/{id}/turns"),
        ),
        (
            reqwest::Method::PATCH,
            format!("{base}/api/v1/sessions/{id}"),
        ),
        (
            reqwest::Method::POST,
            format!("{base}/api/v1/sessions/{id}/abort"),
        ),
    ];
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(route in 0..routes.len(), body in body())| {
        let (method, url) = &routes[route];
        let req = client.request(method.clone(), url).header("content-type", "application/json");
        let req = match &body {
            Body::Json(v) => req.body(serde_json::to_vec(v).unwrap()),
            Body::Bytes(b) => req.body(b.clone()),
        };
        let resp = req.send().expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        prop_assert!(status < 500, "{method} {url} {body:?} → {status} {text}");
        if status >= 400 {
            let err: Value = serde_json::from_str(&text).expect("error bodies are JSON");
            prop_assert!(err["error"]["code"].is_string(), "{text}");
        }
    });
    let health = client.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
