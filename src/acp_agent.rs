//! `troupe acp`: Troupe as an Agent Client Protocol agent on stdio, for editors (Zed, JetBrains,
//! Neovim). Every ACP session is a Troupe session on a server reached over HTTP, so what an editor
//! starts is durable, resumable after a restart and shared with every other client.
//!
//! `session/new` creates a session (the editor's `cwd` as its project), `session/load` reattaches
//! to one by id and replays its messages, `session/prompt` sends a turn and streams its events
//! back as `session/update` until its `turn.completed`, `session/cancel` aborts it, and the
//! session's `permission.requested` events become `session/request_permission` requests whose
//! answers go back to the server.

use agent_client_protocol::schema::v1::{
    AgentCapabilities, CancelNotification, ContentBlock, Implementation, InitializeRequest,
    InitializeResponse, LoadSessionRequest, LoadSessionResponse, NewSessionRequest,
    NewSessionResponse, PromptRequest, PromptResponse, RequestPermissionOutcome,
    RequestPermissionRequest, SessionNotification, SessionUpdate, StopReason,
};
use agent_client_protocol::{Agent, Client, ConnectionTo, Stdio};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

/// Where the server is and what sessions to make.
#[derive(Clone, Debug)]
pub struct AcpAgentOptions {
    /// The server's root URL (`http://127.0.0.1:7878`).
    pub url: String,
    /// A bearer token of `[[auth.tokens]]`, when the server requires one.
    pub token: Option<String>,
    /// The provider of new sessions.
    pub provider: String,
}

/// The server, as the ACP agent talks to it.
#[derive(Clone)]
struct Server {
    /// Root URL without a trailing slash.
    url: String,
    /// Bearer token.
    token: Option<String>,
    /// HTTP client.
    http: reqwest::Client,
    /// The provider of new sessions.
    provider: String,
}

impl Server {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; a non-2xx answer becomes an ACP error carrying the server's message.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, agent_client_protocol::Error> {
        let response = request.send().await.map_err(internal)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("request failed");
            let code = body["error"]["code"].as_str().unwrap_or("internal");
            Err(agent_client_protocol::Error::invalid_params()
                .data(json!({"code": code, "message": message, "status": status.as_u16()})))
        }
    }
}

fn internal(e: impl std::fmt::Display) -> agent_client_protocol::Error {
    agent_client_protocol::Error::internal_error().data(json!(e.to_string()))
}

/// Serves ACP on stdin/stdout until the editor closes them.
pub async fn serve_stdio(options: AcpAgentOptions) -> anyhow::Result<()> {
    let server = Server {
        url: options.url.trim_end_matches('/').to_string(),
        token: options.token,
        http: reqwest::Client::new(),
        provider: options.provider,
    };
    let (new_server, load_server, prompt_server, cancel_server) =
        (server.clone(), server.clone(), server.clone(), server);
    Agent
        .builder()
        .name("troupe")
        .on_receive_request(
            async move |initialize: InitializeRequest, responder, _cx| {
                responder.respond(
                    InitializeResponse::new(initialize.protocol_version)
                        .agent_capabilities(AgentCapabilities::new().load_session(true))
                        .agent_info(Implementation::new("troupe", env!("CARGO_PKG_VERSION"))),
                )
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: NewSessionRequest, responder, _cx| {
                let server = new_server.clone();
                let body = json!({"provider": server.provider, "project": request.cwd});
                let created = server
                    .call(
                        server
                            .request(reqwest::Method::POST, "/sessions")
                            .json(&body),
                    )
                    .await;
                match created {
                    Ok(body) => {
                        let id = body["session"]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        responder.respond(NewSessionResponse::new(id))
                    }
                    Err(e) => responder.respond_with_error(e),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: LoadSessionRequest, responder, cx: ConnectionTo<Client>| {
                let server = load_server.clone();
                let id = request.session_id.0.to_string();
                cx.clone().spawn(async move {
                    match replay(&server, &id, &cx).await {
                        Ok(()) => responder.respond(LoadSessionResponse::new()),
                        Err(e) => responder.respond_with_error(e),
                    }
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: PromptRequest, responder, cx: ConnectionTo<Client>| {
                let server = prompt_server.clone();
                cx.clone().spawn(async move {
                    match prompt(&server, request, &cx).await {
                        Ok(reason) => responder.respond(PromptResponse::new(reason)),
                        Err(e) => responder.respond_with_error(e),
                    }
                })
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |cancel: CancelNotification, _cx| {
                let server = cancel_server.clone();
                let path = format!("/sessions/{}/abort", cancel.session_id.0);
                if let Err(e) = server
                    .call(server.request(reqwest::Method::POST, &path))
                    .await
                {
                    log::warn!("acp: abort of session {} failed: {e}", cancel.session_id.0);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_to(Stdio::new())
        .await
        .map_err(|e| anyhow::anyhow!("ACP connection: {e}"))
}

/// `session/load`: the session must exist; its messages are replayed as updates.
async fn replay(
    server: &Server,
    id: &str,
    cx: &ConnectionTo<Client>,
) -> Result<(), agent_client_protocol::Error> {
    server
        .call(server.request(reqwest::Method::GET, &format!("/sessions/{id}")))
        .await?;
    let mut after = 0u64;
    loop {
        let path = format!("/sessions/{id}/events?after_seq={after}&limit=1000");
        let page = server
            .call(server.request(reqwest::Method::GET, &path))
            .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return Ok(());
        }
        for event in &events {
            after = event["seq"].as_u64().unwrap_or(after);
            if event["kind"] != "message" {
                continue;
            }
            let kind = match event["data"]["role"].as_str() {
                Some("user") => "user_message_chunk",
                _ => "agent_message_chunk",
            };
            let text = event["data"]["text"].clone();
            notify(
                cx,
                id,
                json!({"sessionUpdate": kind, "content": {"type": "text", "text": text}}),
            )?;
        }
    }
}

/// Sends one `session/update` built from its JSON (checked by the crate's types).
fn notify(
    cx: &ConnectionTo<Client>,
    session: &str,
    update: Value,
) -> Result<(), agent_client_protocol::Error> {
    let update: SessionUpdate = serde_json::from_value(update).map_err(internal)?;
    cx.send_notification(SessionNotification::new(session.to_string(), update))
}

/// `session/prompt`: follows the session's events from its current end, sends the turn, and
/// streams the turn's events back until its `turn.completed`.
async fn prompt(
    server: &Server,
    request: PromptRequest,
    cx: &ConnectionTo<Client>,
) -> Result<StopReason, agent_client_protocol::Error> {
    let id = request.session_id.0.to_string();
    let content: String = request
        .prompt
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(text) => Some(text.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let session = server
        .call(server.request(reqwest::Method::GET, &format!("/sessions/{id}")))
        .await?;
    let after = session["session"]["last_seq"].as_u64().unwrap_or(0);
    let stream_path = format!("/sessions/{id}/events/stream?after_seq={after}");
    let response = server
        .request(reqwest::Method::GET, &stream_path)
        .send()
        .await
        .map_err(internal)?;
    let mut events = response.bytes_stream().eventsource();
    let accepted = server
        .call(
            server
                .request(reqwest::Method::POST, &format!("/sessions/{id}/turns"))
                .json(&json!({"content": content})),
        )
        .await?;
    let turn = accepted["turn_id"].clone();
    while let Some(frame) = events.next().await {
        let frame = frame.map_err(internal)?;
        let Ok(event) = serde_json::from_str::<Value>(&frame.data) else {
            continue;
        };
        if event["turn_id"] != turn {
            continue;
        }
        let data = &event["data"];
        let update = match event["kind"].as_str().unwrap_or_default() {
            "message.delta" => json!({"sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": data["text"]}}),
            "thinking" => json!({"sessionUpdate": "agent_thought_chunk",
                "content": {"type": "text", "text": data["text"]}}),
            "tool.use" => json!({"sessionUpdate": "tool_call", "toolCallId": data["tool_id"],
                "title": data["name"], "status": "in_progress", "rawInput": data["input"]}),
            "tool.result" => {
                json!({"sessionUpdate": "tool_call_update", "toolCallId": data["tool_id"],
                "status": if data["is_error"] == true { "failed" } else { "completed" },
                "rawOutput": data["output"]})
            }
            "permission.requested" => {
                ask_editor(server, &id, data, cx).await?;
                continue;
            }
            "error" => json!({"sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": format!("\n[{}] {}\n", data["code"].as_str().unwrap_or("error"),
                    data["message"].as_str().unwrap_or_default())}}),
            "turn.completed" => return Ok(stop_reason(data)),
            _ => continue,
        };
        notify(cx, &id, update)?;
    }
    Err(internal(
        "the server's event stream ended before the turn completed",
    ))
}

/// A `permission.requested` as `session/request_permission`; the editor's choice goes back to the
/// server. Another client may have answered first: that answer stands.
async fn ask_editor(
    server: &Server,
    id: &str,
    data: &Value,
    cx: &ConnectionTo<Client>,
) -> Result<(), agent_client_protocol::Error> {
    let options: Vec<Value> = data["options"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| json!({"optionId": o["id"], "name": o["name"], "kind": o["kind"]}))
        .collect();
    let request: RequestPermissionRequest = serde_json::from_value(json!({
        "sessionId": id,
        "toolCall": {"toolCallId": data["request_id"], "title": data["title"], "rawInput": data["input"]},
        "options": options,
    }))
    .map_err(internal)?;
    let answer = cx.send_request(request).block_task().await?;
    let RequestPermissionOutcome::Selected(selected) = answer.outcome else {
        // The editor cancelled its prompt: the turn's own end settles the request.
        return Ok(());
    };
    let request_id = data["request_id"].as_str().unwrap_or_default();
    let path = format!("/sessions/{id}/permissions/{request_id}");
    let body = json!({"option_id": selected.option_id.0.to_string()});
    match server
        .call(server.request(reqwest::Method::POST, &path).json(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            log::info!("acp: permission {request_id} of session {id} was answered elsewhere: {e}");
            Ok(())
        }
    }
}

/// A `turn.completed` outcome as a stop reason; a failed turn says why in the stop reason it
/// maps to (`refusal`, `max_tokens`) or ends the prompt as `end_turn` after the error was shown.
fn stop_reason(data: &Value) -> StopReason {
    match (data["outcome"].as_str(), data["error"]["code"].as_str()) {
        (Some("aborted" | "cancelled" | "interrupted"), _) => StopReason::Cancelled,
        (_, Some("refusal")) => StopReason::Refusal,
        (_, Some("max_tokens")) => StopReason::MaxTokens,
        (_, Some("max_turn_requests")) => StopReason::MaxTurnRequests,
        _ => StopReason::EndTurn,
    }
}
