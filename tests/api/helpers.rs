//! `spawn_app` and typed request helpers for the API tests.
#![allow(dead_code)]

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use tempfile::TempDir;

pub use crate::server_process::ServerProcess;
use troupe::app::Application;
use troupe::config::Config;

/// A server running in this test's actix system.
pub struct TestApp {
    /// Where it listens.
    pub address: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The runtime behind it (to inspect the store and metrics).
    pub runtime: troupe::actors::Runtime,
    /// The data directory (kept alive while the app lives).
    pub data: TempDir,
    /// Fires graceful shutdown.
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Completes when the server has shut down.
    pub stopped: Option<actix_web::rt::task::JoinHandle<anyhow::Result<()>>>,
}

/// A default test configuration: sled in a temp dir, port 0.
pub fn test_config(data: &TempDir) -> Config {
    let mut config = Config {
        bind: "127.0.0.1:0".into(),
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    config.runtime.retry_base_ms = 10;
    config.runtime.retry_max_ms = 50;
    config
}

/// Starts a server with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with the test configuration changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&data);
    tweak(&mut config);
    let app = Application::build(config).await.expect("build app");
    let address = app.address();
    let runtime = app.runtime().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = actix_web::rt::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        runtime,
        data,
        stop: Some(tx),
        stopped: Some(stopped),
    }
}

impl TestApp {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET `path`, returning status and JSON body (Null when empty or not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        status_json(resp).await
    }

    /// POST JSON to `path`.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        status_json(resp).await
    }

    /// Creates an echo session, returning its id.
    pub async fn create_session(&self) -> String {
        let (status, body) = self
            .post("/api/v1/sessions", serde_json::json!({"provider": "echo"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["session"]["id"].as_str().expect("id").to_string()
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            stopped.await.expect("join").expect("clean shutdown");
        }
    }
}

/// Status and JSON body of a response.
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A temp dir path for tests that spawn the binary.
pub fn temp_path(dir: &TempDir) -> PathBuf {
    dir.path().to_path_buf()
}

/// A turn body that runs for a while on the echo provider: `words` words, a chunk of two words
/// every 200 ms.
pub fn slow_turn(words: usize) -> Value {
    let content = vec!["slow"; words.max(2)].join(" ");
    serde_json::json!({"content": content, "options": {"script": {"chunk_delay_ms": 200}}})
}

impl TestApp {
    /// Any request, with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        status_json(req.send().await.expect("request")).await
    }

    /// PATCH JSON to `path`.
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, None, Some(body))
            .await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None, None).await
    }

    /// POST with no body.
    pub async fn post_empty(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, None, None).await
    }

    /// POST raw bytes with an optional content type.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        status_json(req.send().await.expect("POST")).await
    }

    /// Sends a turn to session `id`.
    pub async fn send_turn(&self, id: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/api/v1/sessions/{id}/turns"), body)
            .await
    }

    /// Every event of session `id`, paging through the log.
    pub async fn all_events(&self, id: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map(|e| e["seq"].as_u64().unwrap()).unwrap_or(0);
            let (status, body) = self
                .get(&format!(
                    "/api/v1/sessions/{id}/events?after_seq={after}&limit=1000"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// Polls session `id`'s log until an event satisfies `matches` (10 s at most).
    pub async fn wait_for_event(&self, id: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(e) = self.all_events(id).await.into_iter().find(|e| matches(e)) {
                return e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "event never came; log: {:?}",
                self.all_events(id).await
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits for `turn.completed` of `turn_id` and returns its outcome.
    pub async fn wait_for_outcome(&self, id: &str, turn_id: &str) -> String {
        let event = self
            .wait_for_event(id, |e| {
                e["kind"] == "turn.completed" && e["turn_id"] == turn_id
            })
            .await;
        event["data"]["outcome"].as_str().unwrap().to_string()
    }
}

/// Asserts an error answer: status and code.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].is_string(), "{}", answer.1);
}
