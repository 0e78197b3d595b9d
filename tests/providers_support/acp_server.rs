//! A real Troupe server (`Application` on 127.0.0.1:0, sled in a temporary directory) with one
//! configured `acp` provider, driven as a client drives it: sessions and turns over REST, events
//! and `permission.reply` frames over the WebSocket. The real ACP agent tests share its
//! permission scenario: one request allowed over REST, one rejected over the WebSocket.

use super::REAL_TURN_LIMIT;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use tokio_tungstenite::tungstenite::Message;
use troupe::providers::ProviderConfig;

/// A client's WebSocket to the server.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The running server and one client of it.
pub struct AcpServer {
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// REST requests.
    http: reqwest::Client,
    /// The client's WebSocket, subscribed to one session at a time.
    ws: Socket,
    /// Ends the server.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The server's task.
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The sled directory; removed when the test ends.
    _data: tempfile::TempDir,
}

impl AcpServer {
    /// Starts a server whose only agent provider is `provider`, configured as `name`.
    pub async fn start(name: &str, provider: ProviderConfig) -> AcpServer {
        let data = tempfile::tempdir().unwrap();
        let mut config = troupe::config::Config {
            bind: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            ..troupe::config::Config::default()
        };
        config.providers.insert(name.into(), provider);
        let app = troupe::app::Application::build(config).await.unwrap();
        let address = app.address();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = actix_rt::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/api/v1/ws"))
            .await
            .unwrap();
        AcpServer {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            ws,
            stop,
            server,
            _data: data,
        }
    }

    /// Creates a session of `provider` in `project` over REST and subscribes to it over the
    /// WebSocket; its id.
    pub async fn session(&mut self, provider: &str, project: &Path) -> String {
        let created: Value = self
            .http
            .post(format!("{}/api/v1/sessions", self.base))
            .json(&json!({"provider": provider, "project": project}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["session"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a session: {created}"))
            .to_string();
        let subscribe = json!({"type": "subscribe", "id": "s", "session_id": id});
        self.ws
            .send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        id
    }

    /// Sends a turn over REST; the status.
    pub async fn send(&self, session: &str, content: &str) -> u16 {
        self.http
            .post(format!("{}/api/v1/sessions/{session}/turns", self.base))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Answers a permission request over REST; the status.
    pub async fn answer_over_rest(&self, session: &str, request: &str, option: &str) -> u16 {
        self.http
            .post(format!(
                "{}/api/v1/sessions/{session}/permissions/{request}",
                self.base
            ))
            .json(&json!({"option_id": option}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Answers a permission request with a WebSocket frame (its answer, an `ack` frame, comes
    /// among the session's events).
    pub async fn answer_over_websocket(&mut self, session: &str, request: &str, option: &str) {
        let reply = json!({"type": "permission.reply", "id": "p", "session_id": session,
            "request_id": request, "option_id": option});
        self.ws
            .send(Message::text(reply.to_string()))
            .await
            .unwrap();
    }

    /// The next event frame of `kind`.
    pub async fn next_event(&mut self, kind: &str) -> Value {
        self.next_frame(|f| f["type"] == "event" && f["kind"] == kind)
            .await
    }

    /// The next WebSocket frame that `matches`.
    pub async fn next_frame(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let message = tokio::time::timeout(REAL_TURN_LIMIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("the frame reads");
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if matches(&frame) {
                    return frame;
                }
            }
        }
    }

    /// Closes the WebSocket (a graceful shutdown waits for open connections), then stops the
    /// server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.ws.close(None).await;
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// The id of the first option of `kind` in a `permission.requested` frame.
pub fn option_of(requested: &Value, kind: &str) -> String {
    let options = requested["data"]["options"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let option = options.iter().find(|o| o["kind"] == kind);
    option
        .and_then(|o| o["id"].as_str())
        .unwrap_or_else(|| panic!("an option of kind {kind}: {requested}"))
        .to_string()
}

/// The permission scenario every real ACP agent passes, through the real server: "Please write
/// approved." asks, is allowed over REST (a second answer is 409) and writes `approved.txt` in
/// `project`; "Please write denied." asks, is rejected over the WebSocket and never writes
/// `denied.txt`. Both turns succeed: the agent hears the rejection and goes on.
pub async fn permissions_over_rest_and_the_websocket(
    server: &mut AcpServer,
    provider: &str,
    project: &Path,
) {
    let id = server.session(provider, project).await;

    assert_eq!(server.send(&id, "Please write approved.").await, 202);
    let requested = server.next_event("permission.requested").await;
    let request = requested["data"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !project.join("approved.txt").exists(),
        "nothing is written before the answer"
    );
    let allow = option_of(&requested, "allow_once");
    assert_eq!(server.answer_over_rest(&id, &request, &allow).await, 200);
    assert_eq!(
        server.answer_over_rest(&id, &request, &allow).await,
        409,
        "a second answer is refused"
    );
    let resolved = server.next_event("permission.resolved").await;
    assert_eq!(resolved["data"]["option_id"], allow.as_str(), "{resolved}");
    let completed = server.next_event("turn.completed").await;
    assert_eq!(completed["data"]["outcome"], "success", "{completed}");
    assert!(
        project.join("approved.txt").exists(),
        "the allowed tool ran"
    );

    assert_eq!(server.send(&id, "Please write denied.").await, 202);
    let requested = server.next_event("permission.requested").await;
    let request = requested["data"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let reject = option_of(&requested, "reject_once");
    server.answer_over_websocket(&id, &request, &reject).await;
    let (mut ack, mut resolved) = (None, None);
    let completed = loop {
        let frame = server.next_frame(|_| true).await;
        match (frame["type"].as_str(), frame["kind"].as_str()) {
            (Some("ack" | "error"), _) if frame["id"] == "p" => ack = Some(frame),
            (_, Some("permission.resolved")) => resolved = Some(frame),
            (_, Some("turn.completed")) => break frame,
            _ => {}
        }
    };
    let ack = ack.expect("the reply is answered");
    assert_eq!(ack["type"], "ack", "{ack}");
    let resolved = resolved.expect("permission.resolved");
    assert_eq!(resolved["data"]["option_id"], reject.as_str(), "{resolved}");
    assert_eq!(resolved["data"]["by"], "local", "{resolved}");
    assert_eq!(completed["data"]["outcome"], "success", "{completed}");
    assert!(
        !project.join("denied.txt").exists(),
        "the rejected tool never ran"
    );
}
