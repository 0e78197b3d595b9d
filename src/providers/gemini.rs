//! `gemini-cli`: `gemini --output-format stream-json [--resume <id>]`, prompt on stdin (a piped
//! stdin makes Gemini CLI run headless). Events `init`, `message`, `tool_use`, `tool_result`,
//! `error` and `result`; exit codes 0 ok, 1 error, 42 input error, 53 turn limit (DESIGN.md §8).

use super::classify::classify;
use super::cli::{text_of, with_exit_code, CliDialect, LineParser, ProcessExit};
use serde_json::{json, Value};
use troupe_actors::{AttemptRequest, Completion, ProviderError, ProviderEvent};

/// Gemini CLI's exit code for invalid input (bad flags, unreadable prompt).
pub const EXIT_INPUT_ERROR: i32 = 42;

/// Gemini CLI's exit code for a run that hit its turn limit.
pub const EXIT_TURN_LIMIT: i32 = 53;

/// Google's Gemini CLI.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeminiCli;

impl CliDialect for GeminiCli {
    fn kind(&self) -> &'static str {
        "gemini-cli"
    }

    fn default_command(&self) -> &'static str {
        "gemini"
    }

    fn args(
        &self,
        request: &AttemptRequest,
        model: Option<&str>,
        _steer: bool,
        extra: &[String],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec!["--output-format".into(), "stream-json".into()];
        if let Some(id) = &request.provider_session_id {
            args.extend(["--resume".into(), id.clone()]);
        }
        if let Some(model) = model {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    fn parser(&self) -> Box<dyn LineParser> {
        Box::<GeminiParser>::default()
    }
}

/// Reads Gemini CLI's stream-json lines.
#[derive(Debug, Default)]
pub struct GeminiParser {
    /// Assistant text since the last whole message, emitted as one `Message` at the next tool
    /// use or the result.
    pending: String,
    /// The last `error` event of severity `error`, for a run that ends without a result.
    last_error: Option<String>,
}

impl GeminiParser {
    fn flush(&mut self, out: &mut Vec<ProviderEvent>) {
        if !self.pending.is_empty() {
            out.push(ProviderEvent::Message {
                role: "assistant".into(),
                text: std::mem::take(&mut self.pending),
            });
        }
    }
}

impl LineParser for GeminiParser {
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>) {
        let field = |key: &str| line.get(key).unwrap_or(&Value::Null);
        match field("type").as_str().unwrap_or("") {
            "init" => {
                if let Some(id) = field("session_id").as_str() {
                    out.push(ProviderEvent::SessionId(id.to_string()));
                }
            }
            "message" if field("role").as_str() == Some("assistant") => {
                let text = text_of(field("content"));
                if !text.is_empty() {
                    self.pending.push_str(&text);
                    out.push(ProviderEvent::Delta(text));
                }
            }
            "tool_use" => {
                self.flush(out);
                out.push(ProviderEvent::ToolUse {
                    tool_id: text_of(field("tool_id")),
                    name: text_of(field("tool_name")),
                    input: field("parameters").clone(),
                });
            }
            "tool_result" => {
                let failed = field("status").as_str() == Some("error");
                let output = if failed && !field("error").is_null() {
                    field("error").clone()
                } else {
                    field("output").clone()
                };
                out.push(ProviderEvent::ToolResult {
                    tool_id: text_of(field("tool_id")),
                    output,
                    is_error: failed,
                });
            }
            "error" => {
                let message = text_of(field("message"));
                if field("severity").as_str() == Some("error") {
                    self.last_error = Some(message);
                } else {
                    out.push(ProviderEvent::Status(json!({"warning": message})));
                }
            }
            "result" => {
                self.flush(out);
                if field("status").as_str() == Some("success") {
                    out.push(ProviderEvent::Done(Completion {
                        usage: line.get("stats").cloned(),
                        cost_usd: None,
                        exit_code: None,
                    }));
                } else {
                    let error = field("error");
                    let text = error
                        .get("message")
                        .map(text_of)
                        .or_else(|| self.last_error.clone())
                        .unwrap_or_else(|| text_of(error));
                    out.push(ProviderEvent::Failed(classify(None, &text)));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, result: Option<ProviderEvent>, exit: &ProcessExit) -> ProviderEvent {
        let message = || {
            self.last_error
                .clone()
                .unwrap_or_else(|| exit.explanation())
        };
        let by_exit_code = match exit.code {
            Some(EXIT_INPUT_ERROR) => Some(ProviderError::terminal("invalid_request", message())),
            Some(EXIT_TURN_LIMIT) => Some(ProviderError::terminal("turn_limit", message())),
            _ => None,
        };
        match (result, by_exit_code) {
            (Some(ProviderEvent::Done(c)), _) => with_exit_code(Some(ProviderEvent::Done(c)), exit),
            (_, Some(error)) => ProviderEvent::Failed(error.with_exit_code(exit.code)),
            (None, None) if self.last_error.is_some() => {
                ProviderEvent::Failed(classify(None, &message()).with_exit_code(exit.code))
            }
            (result, None) => with_exit_code(result, exit),
        }
    }
}
