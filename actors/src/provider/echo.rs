//! The scripted `echo` provider: deterministic, no network. Replies with the prompt's text in
//! chunks, then one whole `message`. A script in the turn's options (`{"script": {...}}`) or in
//! the prompt itself (a JSON object with `script` and `text`) adds delays, tool use, failures of
//! each class, crashes, stalls, exit codes, a provider session id, and usage and cost (at the
//! end, before a failure, or cumulatively after every chunk), so every budget rule is testable
//! offline.

use crate::usage::Usage;

use super::{
    AttemptRequest, Capabilities, Completion, FailureClass, Provider, ProviderError, ProviderEvent,
    ProviderRun,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a turn asks the echo provider to do.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EchoScript {
    /// Wait before each chunk.
    pub chunk_delay_ms: u64,
    /// Words per `message.delta` (default 2).
    pub chunk_words: Option<usize>,
    /// Reply with this instead of the prompt.
    pub reply: Option<String>,
    /// Emit a tool use and its result before the text.
    pub tool_use: bool,
    /// Emit a thinking event before the text.
    pub thinking: bool,
    /// Fail with this class (`transient`, `terminal`, `resume_lost`) after the text.
    pub fail: Option<FailureClass>,
    /// The failure's code (default per class).
    pub fail_code: Option<String>,
    /// Fail only the first N attempts (default: every attempt).
    pub fail_attempts: Option<u32>,
    /// Fail with `resume_lost` when resuming this provider session id.
    pub lost_session: Option<String>,
    /// End the stream without a result after this many chunks (a crash).
    pub crash_after: Option<usize>,
    /// Go silent forever after this many chunks (a stall).
    pub stall_after: Option<usize>,
    /// Report this provider session id first.
    pub provider_session_id: Option<String>,
    /// Exit code reported with the result.
    pub exit_code: Option<i32>,
    /// Usage and cost the attempt reports: with its result, or before its scripted failure
    /// (failed attempts cost money too). Default: words in and out, no cost.
    pub usage: Option<Usage>,
    /// Usage added by each chunk, reported cumulatively after every chunk (a provider that
    /// reports usage mid-run); the result then reports the sum unless `usage` is given.
    pub usage_per_chunk: Option<Usage>,
}

/// `per` times `n`.
fn times(per: &Usage, n: u64) -> Usage {
    Usage::new(
        per.input_tokens * n,
        per.output_tokens * n,
        per.cached_tokens * n,
        per.cost_usd * n as f64,
    )
}

/// The echo provider. `steer` makes it take steered messages mid-run, like Claude Code.
#[derive(Clone, Debug, Default)]
pub struct EchoProvider {
    /// Whether it accepts user messages into a running attempt.
    steer: bool,
}

impl EchoProvider {
    /// An echo provider without steering.
    pub fn new() -> Self {
        Self::default()
    }

    /// An echo provider that answers steered messages within the running attempt.
    pub fn with_steer() -> Self {
        EchoProvider { steer: true }
    }
}

/// Splits the turn into the script and the text to echo.
fn script_and_text(request: &AttemptRequest) -> Result<(EchoScript, String), ProviderError> {
    let invalid = |e: serde_json::Error| {
        ProviderError::terminal("invalid_request", format!("invalid echo script: {e}"))
    };
    if let Some(script) = request.options.get("script") {
        let script = EchoScript::deserialize(script).map_err(invalid)?;
        return Ok((script, request.prompt.clone()));
    }
    if request.prompt.trim_start().starts_with('{') {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&request.prompt) {
            if let Some(script) = obj.get("script") {
                let script = EchoScript::deserialize(script).map_err(invalid)?;
                let text = obj
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return Ok((script, text));
            }
        }
    }
    Ok((EchoScript::default(), request.prompt.clone()))
}

/// Splits text into chunks of `words` words, keeping the spaces so the chunks join back exactly.
pub fn chunks(text: &str, words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for piece in text.split_inclusive(' ') {
        current.push_str(piece);
        if !piece.trim().is_empty() {
            count += 1;
        }
        if count >= words.max(1) {
            out.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sends one event; `false` when the run was dropped.
async fn emit(tx: &mpsc::Sender<ProviderEvent>, event: ProviderEvent) -> bool {
    tx.send(event).await.is_ok()
}

/// Answers one user message; `false` when the run ended (cancelled, crashed, stalled, failed).
async fn answer(
    tx: &mpsc::Sender<ProviderEvent>,
    request: &AttemptRequest,
    script: &EchoScript,
    text: &str,
) -> bool {
    if let Some(model) = &request.model {
        // Reports the model it was given, so a model switch can be seen to take effect.
        if !emit(tx, ProviderEvent::Status(json!({ "model": model }))).await {
            return false;
        }
    }
    if let Some(id) = &script.provider_session_id {
        if !emit(tx, ProviderEvent::SessionId(id.clone())).await {
            return false;
        }
    }
    if let (Some(lost), Some(current)) = (&script.lost_session, &request.provider_session_id) {
        if lost == current {
            let error = ProviderError::new(
                FailureClass::ResumeLost,
                "provider_session_lost",
                format!("No conversation found with session ID: {current}"),
            );
            emit(tx, ProviderEvent::Failed(error)).await;
            return false;
        }
    }
    if script.thinking
        && !emit(
            tx,
            ProviderEvent::Thinking(format!("echoing {} bytes", text.len())),
        )
        .await
    {
        return false;
    }
    if script.tool_use {
        let tool_id = format!("tool-{}", request.turn_id);
        let used = emit(
            tx,
            ProviderEvent::ToolUse {
                tool_id: tool_id.clone(),
                name: "echo".into(),
                input: json!({ "text": text }),
            },
        )
        .await;
        let answered = used
            && emit(
                tx,
                ProviderEvent::ToolResult {
                    tool_id,
                    output: json!(text),
                    is_error: false,
                },
            )
            .await;
        if !answered {
            return false;
        }
    }
    let reply = script.reply.clone().unwrap_or_else(|| text.to_string());
    let pieces = chunks(&reply, script.chunk_words.unwrap_or(2));
    let chunk_count = pieces.len() as u64;
    for (index, chunk) in pieces.into_iter().enumerate() {
        if script.crash_after == Some(index) {
            return false;
        }
        if script.stall_after == Some(index) {
            std::future::pending::<()>().await;
        }
        if script.chunk_delay_ms > 0 {
            tokio::select! {
                _ = request.cancel.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(script.chunk_delay_ms)) => {}
            }
        }
        if !emit(tx, ProviderEvent::Delta(chunk)).await {
            return false;
        }
        if let Some(per) = &script.usage_per_chunk {
            let so_far = times(per, index as u64 + 1);
            if !emit(tx, ProviderEvent::Usage(so_far)).await {
                return false;
            }
        }
    }
    let scripted_usage = script
        .usage
        .map(|u| Usage::new(u.input_tokens, u.output_tokens, u.cached_tokens, u.cost_usd))
        .or_else(|| script.usage_per_chunk.map(|per| times(&per, chunk_count)));
    if script.stall_after.is_some() {
        std::future::pending::<()>().await;
    }
    if script.crash_after.is_some() {
        return false;
    }
    if let Some(class) = script.fail {
        if script.fail_attempts.is_none_or(|n| request.attempt <= n) {
            let code = script.fail_code.clone().unwrap_or_else(|| {
                match class {
                    FailureClass::Transient => "provider_crashed",
                    FailureClass::Terminal => "invalid_request",
                    FailureClass::ResumeLost => "provider_session_lost",
                }
                .to_string()
            });
            if let Some(usage) = scripted_usage {
                if !emit(tx, ProviderEvent::Usage(usage)).await {
                    return false;
                }
            }
            let error = ProviderError::new(class, code, "scripted failure")
                .with_exit_code(script.exit_code);
            emit(tx, ProviderEvent::Failed(error)).await;
            return false;
        }
    }
    let message = ProviderEvent::Message {
        role: "assistant".into(),
        text: reply.clone(),
    };
    if !emit(tx, message).await {
        return false;
    }
    let words = reply.split_whitespace().count() as u64;
    let done = match scripted_usage {
        Some(usage) => Completion {
            usage: Some(usage.to_json()),
            cost_usd: Some(usage.cost_usd),
            exit_code: script.exit_code.or(Some(0)),
        },
        None => Completion {
            usage: Some(
                json!({"input_tokens": text.split_whitespace().count(), "output_tokens": words}),
            ),
            cost_usd: None,
            exit_code: script.exit_code.or(Some(0)),
        },
    };
    emit(tx, ProviderEvent::Done(done)).await
}

impl Provider for EchoProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            steer: self.steer,
            stateless: true,
            fork: false,
        }
    }

    fn kind(&self) -> &str {
        "echo"
    }

    fn start(&self, request: AttemptRequest) -> ProviderRun {
        let (script, text) = match script_and_text(&request) {
            Ok(parsed) => parsed,
            Err(error) => return ProviderRun::failed(error),
        };
        let (tx, rx) = mpsc::channel(64);
        let (steer_tx, mut steer_rx) = mpsc::unbounded_channel::<String>();
        let cancel = request.cancel.clone();
        let steer = self.steer;
        tokio::spawn(async move {
            let work = async {
                if !answer(&tx, &request, &script, &text).await {
                    return;
                }
                if !steer {
                    return;
                }
                // A steering run answers every message that arrived while it ran, in order.
                // Before ending it closes the channel and answers what slipped in: a message
                // sent after that fails at the session, which queues it, instead of riding an
                // attempt that ends without answering it.
                loop {
                    let next = match steer_rx.try_recv() {
                        Ok(next) => next,
                        Err(_) => {
                            steer_rx.close();
                            let Ok(next) = steer_rx.try_recv() else { break };
                            next
                        }
                    };
                    if !answer(&tx, &request, &EchoScript::default(), &next).await {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = work => {}
            }
        });
        ProviderRun {
            events: tokio_stream_from(rx),
            steer: self.steer.then_some(steer_tx),
            pid: None,
        }
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<ProviderEvent>,
) -> futures::stream::BoxStream<'static, ProviderEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
