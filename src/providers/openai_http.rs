//! `openai-http`: any OpenAI-compatible chat-completions server (OpenRouter, vLLM, llama.cpp,
//! Ollama, LiteLLM), streamed as server-sent `chat.completion.chunk`s ending `data: [DONE]`.
//! Stateless: every attempt sends the system prompt, the session's history and the new prompt.

use super::classify::{classify, redact, truncate};
use super::cli::receiver_stream;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use troupe_actors::provider::HistoryWindow;
use troupe_actors::{
    AttemptRequest, Capabilities, Completion, FailureClass, Provider, ProviderError, ProviderEvent,
    ProviderRun,
};

/// How long to wait for the response headers when none is configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait for a TCP/TLS connection when none is configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the stream may stay silent when none is configured.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The most of an error body read into a message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Settings of one configured OpenAI-compatible endpoint.
#[derive(Clone, Debug)]
pub struct OpenAiHttpSettings {
    /// The configured provider name, for the synthetic provider session id.
    pub name: String,
    /// The API root, e.g. `https://openrouter.ai/api/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// The variable that holds the API key; read at each attempt so rotation needs no restart.
    pub api_key_env: Option<String>,
    /// The model when the session names none.
    pub model: Option<String>,
    /// Sent first in every request.
    pub system_prompt: Option<String>,
    /// Extra HTTP headers (OpenRouter's `HTTP-Referer`, `X-Title`).
    pub headers: BTreeMap<String, String>,
    /// How much of the session's history a request carries (applied by the session).
    pub history: HistoryWindow,
    /// Until the response headers arrive.
    pub request_timeout: Duration,
    /// Until the connection is up.
    pub connect_timeout: Duration,
    /// Longest silence within the stream.
    pub stream_idle_timeout: Duration,
}

impl OpenAiHttpSettings {
    /// Defaults for the endpoint `base_url`, named `name`.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        OpenAiHttpSettings {
            name: name.into(),
            base_url: base_url.into(),
            api_key_env: None,
            model: None,
            system_prompt: None,
            headers: BTreeMap::new(),
            history: HistoryWindow::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

/// An OpenAI-compatible chat-completions endpoint as a [`Provider`].
#[derive(Clone)]
pub struct OpenAiHttp {
    /// How it is configured.
    settings: OpenAiHttpSettings,
    /// Shared connection pool.
    client: reqwest::Client,
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl OpenAiHttp {
    /// A provider for `settings`.
    pub fn new(settings: OpenAiHttpSettings) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .build()?;
        Ok(OpenAiHttp { settings, client })
    }

    fn api_key(&self) -> Result<Option<String>, ProviderError> {
        let Some(name) = &self.settings.api_key_env else {
            return Ok(None);
        };
        match std::env::var(name) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(ProviderError::terminal(
                "missing_api_key",
                format!("the API key variable {name} is not set"),
            )),
        }
    }

    /// The request body: system prompt, history, the new prompt.
    pub fn body(&self, request: &AttemptRequest, model: &str) -> Value {
        let mut messages = Vec::new();
        let system = request
            .options
            .get("system")
            .and_then(Value::as_str)
            .or(self.settings.system_prompt.as_deref());
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        for message in &request.history {
            messages.push(json!({"role": message.role, "content": message.text}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    }

    fn headers(&self, key: Option<String>) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.settings.headers {
            let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) else {
                return Err(ProviderError::terminal(
                    "invalid_config",
                    format!("invalid header `{name}`"),
                ));
            };
            headers.insert(name, value);
        }
        if let Some(key) = key {
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                ProviderError::terminal("invalid_api_key", "the API key is not a valid header")
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

impl Provider for OpenAiHttp {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: false,
            steer: false,
            stateless: true,
            fork: false,
        }
    }

    fn available(&self) -> bool {
        self.api_key().is_ok()
    }

    fn kind(&self) -> &str {
        "openai-http"
    }

    fn model(&self) -> Option<&str> {
        self.settings.model.as_deref()
    }

    fn history_window(&self) -> HistoryWindow {
        self.settings.history
    }

    fn start(&self, request: AttemptRequest) -> ProviderRun {
        let prepared = self.api_key().and_then(|key| {
            let secret = key.clone();
            Ok((self.headers(key)?, secret))
        });
        let (headers, secret) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return ProviderRun::failed(error),
        };
        let Some(model) = request.model.clone().or(self.settings.model.clone()) else {
            return ProviderRun::failed(ProviderError::terminal(
                "invalid_request",
                "no model configured for this provider or session",
            ));
        };
        let url = format!(
            "{}/chat/completions",
            self.settings.base_url.trim_end_matches('/')
        );
        let call = self
            .client
            .post(url)
            .headers(headers)
            .json(&self.body(&request, &model));
        let (tx, rx) = mpsc::channel(256);
        let synthetic = request
            .provider_session_id
            .is_none()
            .then(|| format!("{}-{}", self.settings.name, request.session_id));
        let exchange = Exchange {
            tx,
            request_timeout: self.settings.request_timeout,
            idle_timeout: self.settings.stream_idle_timeout,
            secrets: secret.into_iter().collect(),
            label: format!("session {} turn {}", request.session_id, request.turn_id),
        };
        let cancel = request.cancel.clone();
        tokio::spawn(async move {
            if let Some(id) = synthetic {
                if exchange
                    .tx
                    .send(ProviderEvent::SessionId(id))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let last = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = exchange.tx.closed() => return,
                last = exchange.run(call) => last,
            };
            let _ = exchange.tx.send(last).await;
        });
        ProviderRun {
            events: receiver_stream(rx),
            steer: None,
            pid: None,
        }
    }
}

/// One streamed request.
struct Exchange {
    /// Where events go.
    tx: mpsc::Sender<ProviderEvent>,
    /// Until the response headers arrive.
    request_timeout: Duration,
    /// Longest silence within the stream.
    idle_timeout: Duration,
    /// Taken out of error messages.
    secrets: Vec<String>,
    /// `session … turn …`, for logs.
    label: String,
}

/// What a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The error message inside an OpenAI-style error body, or the body itself.
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let code = error
                .get("code")
                .or_else(|| error.get("type"))
                .map(|c| c.to_string())
                .unwrap_or_default();
            Some(format!("{message} {code}").trim().to_string())
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| body.trim().to_string())
}

impl Exchange {
    async fn emit(&self, event: ProviderEvent) -> Result<(), ProviderError> {
        self.tx
            .send(event)
            .await
            .map_err(|_| ProviderError::transient("aborted", "the run was dropped"))
    }

    /// Sends the request and streams the answer; returns the last event (`Done` or `Failed`).
    async fn run(&self, call: reqwest::RequestBuilder) -> ProviderEvent {
        match self.exchange(call).await {
            Ok(done) => done,
            Err(mut error) => {
                error.message = redact(std::mem::take(&mut error.message), &self.secrets);
                log::info!("{}: failed ({:?}): {}", self.label, error.class, error.code);
                ProviderEvent::Failed(error)
            }
        }
    }

    async fn exchange(
        &self,
        call: reqwest::RequestBuilder,
    ) -> Result<ProviderEvent, ProviderError> {
        let response = match tokio::time::timeout(self.request_timeout, call.send()).await {
            Err(_) => {
                return Err(ProviderError::transient(
                    "request_timeout",
                    format!("no response within {:?}", self.request_timeout),
                ))
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(ProviderError::transient("request_timeout", e.to_string()))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(ProviderError::transient("connection_failed", e.to_string()))
            }
            Ok(Err(e)) => return Err(ProviderError::transient("connection_lost", e.to_string())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error(response).await);
        }
        let mut stream = response.bytes_stream().eventsource();
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut usage: Option<Value> = None;
        let mut finished = false;
        loop {
            let next = tokio::time::timeout(self.idle_timeout, stream.next()).await;
            let event = match next {
                Err(_) => {
                    return Err(ProviderError::transient(
                        "provider_stalled",
                        format!("the stream was silent for {:?}", self.idle_timeout),
                    ))
                }
                Ok(None) if finished => break,
                Ok(None) => {
                    return Err(ProviderError::transient(
                        "connection_lost",
                        "the stream ended before the answer was complete",
                    ))
                }
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::transient(
                        "connection_lost",
                        format!("the stream broke: {e}"),
                    ))
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                break;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                log::debug!(
                    "{}: skipped a non-JSON event: {}",
                    self.label,
                    truncate(data)
                );
                continue;
            };
            if let Some(error) = chunk.get("error") {
                let status = error
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok());
                return Err(classify(status, &error_text(&chunk.to_string())));
            }
            if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
            let choice = chunk
                .get("choices")
                .and_then(|c| c.get(0))
                .unwrap_or(&Value::Null);
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let thought = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str)
                .unwrap_or("");
            reasoning.push_str(thought);
            if let Some(piece) = delta.get("content").and_then(Value::as_str) {
                if !piece.is_empty() {
                    if !reasoning.is_empty() {
                        self.emit(ProviderEvent::Thinking(std::mem::take(&mut reasoning)))
                            .await?;
                    }
                    text.push_str(piece);
                    self.emit(ProviderEvent::Delta(piece.to_string())).await?;
                }
            }
            if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                finished = true;
            }
        }
        if !reasoning.is_empty() {
            self.emit(ProviderEvent::Thinking(reasoning)).await?;
        }
        if !text.is_empty() {
            self.emit(ProviderEvent::Message {
                role: "assistant".into(),
                text,
            })
            .await?;
        }
        let cost_usd = usage
            .as_ref()
            .and_then(|u| u.get("cost"))
            .and_then(Value::as_f64);
        Ok(ProviderEvent::Done(Completion {
            usage,
            cost_usd,
            exit_code: None,
        }))
    }

    /// Classifies a non-success response: 400/401/403/404 terminal, 429/5xx transient.
    async fn status_error(&self, response: reqwest::Response) -> ProviderError {
        let status = response.status();
        let wait = retry_after(response.headers());
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(Ok(chunk)) = chunks.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                body.truncate(MAX_ERROR_BODY);
                break;
            }
        }
        let text = error_text(&String::from_utf8_lossy(&body));
        let message = format!("HTTP {}: {text}", status.as_u16());
        let mut error = classify(Some(status.as_u16()), &message);
        // The status decides where the text is ambiguous: a 5xx body that mentions a model is
        // still a server fault, and a 4xx other than 408/409/425/429 is never worth a retry.
        if status.is_server_error() && error.class == FailureClass::Terminal {
            error = ProviderError::transient("provider_unavailable", message);
        } else if status.is_client_error()
            && !matches!(status.as_u16(), 408 | 409 | 425 | 429)
            && error.class == FailureClass::Transient
        {
            error = ProviderError::terminal("invalid_request", message);
        }
        if error.class == FailureClass::Transient || status == StatusCode::TOO_MANY_REQUESTS {
            error.retry_after = wait;
        }
        error
    }
}
