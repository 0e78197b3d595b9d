//! `gemini-cli`: `gemini --output-format stream-json [--resume <id>]`, prompt on stdin (a piped
//! stdin makes Gemini CLI run headless). Events `init`, `message`, `tool_use`, `tool_result`,
//! `error` and `result`; a fatal error ends with a `result` of `status: "error"` or only stderr,
//! and an exit code that names its kind (DESIGN.md §8).
//!
//! Seen with Gemini CLI 0.61: an API error is a `result` whose message is
//! `[API Error: {…the API's JSON…}]` and whose exit code is the HTTP status modulo 256 (400 → 144),
//! so the status is read from the text and the exit code is not taken as a crash. A session id
//! from `init` is only kept once the run succeeds: Gemini CLI resumes a session only once it has
//! answered in it, so a run that failed first leaves nothing `--resume` accepts.

use super::classify::{classify, truncate};
use super::cli::{
    text_of, with_exit_code, CliDialect, LineParser, PolicyArgs, ProcessExit, SandboxMode,
};
use serde_json::{json, Value};
use troupe_actors::{AttemptRequest, Completion, FailureClass, ProviderError, ProviderEvent};

/// Exit code of `FatalAuthenticationError`: no or an invalid auth method is configured.
pub const EXIT_AUTH: i32 = 41;

/// Exit code of `FatalInputError`: bad input, including a session `--resume` cannot find.
pub const EXIT_INPUT_ERROR: i32 = 42;

/// Exit code of `FatalSandboxError`: the configured sandbox could not start.
pub const EXIT_SANDBOX: i32 = 44;

/// Exit code of `FatalConfigError`: the settings files are invalid.
pub const EXIT_CONFIG: i32 = 52;

/// Exit code of `FatalTurnLimitedError`: the run hit its turn limit.
pub const EXIT_TURN_LIMIT: i32 = 53;

/// Exit code of `FatalToolExecutionError`: a tool failed in a way that stops the run.
pub const EXIT_TOOL_ERROR: i32 = 54;

/// Exit code of `FatalUntrustedWorkspaceError`: headless in a folder Gemini CLI does not trust.
pub const EXIT_UNTRUSTED: i32 = 55;

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

    fn policy_args(&self, trust_project: bool, sandbox: Option<SandboxMode>) -> PolicyArgs {
        let mut args = Vec::new();
        if trust_project {
            args.push("--skip-trust".to_string());
        }
        // Headless Gemini CLI runs only the tools its approval mode allows without asking.
        if let Some(mode) = sandbox {
            let approval = match mode {
                SandboxMode::ReadOnly => "plan",
                SandboxMode::WorkspaceWrite => "auto_edit",
                SandboxMode::FullAccess => "yolo",
            };
            args.extend(["--approval-mode".to_string(), approval.to_string()]);
        }
        Ok(args)
    }
}

/// The exit code a fatal error's class name stands for (`result.error.type`).
fn exit_code_of_type(name: &str) -> Option<i32> {
    Some(match name {
        "FatalAuthenticationError" => EXIT_AUTH,
        "FatalInputError" => EXIT_INPUT_ERROR,
        "FatalSandboxError" => EXIT_SANDBOX,
        "FatalConfigError" => EXIT_CONFIG,
        "FatalTurnLimitedError" => EXIT_TURN_LIMIT,
        "FatalToolExecutionError" => EXIT_TOOL_ERROR,
        "FatalUntrustedWorkspaceError" => EXIT_UNTRUSTED,
        _ => return None,
    })
}

/// The failure a fatal exit code means, explained by `text`; `None` for codes that name no
/// fatal error (1, a crash, or an HTTP status modulo 256).
fn fatal_error(code: i32, text: &str) -> Option<ProviderError> {
    let text = text.trim();
    Some(match code {
        EXIT_INPUT_ERROR => {
            let error = classify(None, text);
            if error.class == FailureClass::ResumeLost {
                error
            } else {
                ProviderError::terminal("invalid_request", truncate(text))
            }
        }
        EXIT_AUTH | EXIT_CONFIG | EXIT_SANDBOX => ProviderError::terminal(
            "provider_misconfigured",
            truncate(&format!("Gemini CLI's configuration is unusable: {text}")),
        ),
        EXIT_TURN_LIMIT => ProviderError::terminal("turn_limit", truncate(text)),
        EXIT_TOOL_ERROR => ProviderError::terminal("tool_failed", truncate(text)),
        EXIT_UNTRUSTED => ProviderError::terminal(
            "untrusted_project",
            truncate(&format!(
                "Gemini CLI does not trust the session's project directory. Set \
                 `trust_project = true` on this provider (Troupe then passes `--skip-trust`) or \
                 trust the folder in Gemini CLI. It said: {text}"
            )),
        ),
        _ => return None,
    })
}

/// Reads Gemini CLI's stream-json lines.
#[derive(Debug, Default)]
pub struct GeminiParser {
    /// Assistant text since the last whole message, emitted as one `Message` at the next tool
    /// use or the result.
    pending: String,
    /// The last `error` event of severity `error`, for a run that ends without a result.
    last_error: Option<String>,
    /// The `init` session id, reported only once the run succeeded.
    session_id: Option<String>,
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

    /// The failure an error `result` reports: a fatal error by its class name, else an API
    /// error by the status in its text.
    fn failed_result(&self, line: &Value) -> ProviderError {
        let error = line.get("error").unwrap_or(&Value::Null);
        let text = error
            .get("message")
            .map(text_of)
            .or_else(|| self.last_error.clone())
            .unwrap_or_else(|| text_of(error));
        let fatal = error
            .get("type")
            .and_then(Value::as_str)
            .and_then(exit_code_of_type)
            .and_then(|code| fatal_error(code, &text));
        fatal.unwrap_or_else(|| classify(None, &text))
    }
}

impl LineParser for GeminiParser {
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>) {
        let field = |key: &str| line.get(key).unwrap_or(&Value::Null);
        match field("type").as_str().unwrap_or("") {
            "init" => {
                self.session_id = field("session_id").as_str().map(str::to_string);
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
                    if let Some(id) = self.session_id.take() {
                        out.push(ProviderEvent::SessionId(id));
                    }
                    out.push(ProviderEvent::Done(Completion {
                        usage: line.get("stats").cloned(),
                        cost_usd: None,
                        exit_code: None,
                    }));
                } else {
                    // A failed run may have used tokens first (retried API calls): they count.
                    let usage = troupe_actors::Usage::from_provider(line.get("stats"), None);
                    if let Some(usage) = usage.filter(|u| !u.is_zero()) {
                        out.push(ProviderEvent::Usage(usage));
                    }
                    out.push(ProviderEvent::Failed(self.failed_result(&line)));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, result: Option<ProviderEvent>, exit: &ProcessExit) -> ProviderEvent {
        if result.is_some() {
            // The result line already says what happened; its exit code may be an HTTP status.
            return with_exit_code(result, exit);
        }
        let text = self
            .last_error
            .clone()
            .unwrap_or_else(|| exit.explanation());
        let fatal = exit.code.and_then(|code| {
            let said = if exit.stderr.is_empty() {
                &text
            } else {
                &exit.stderr
            };
            fatal_error(code, said)
        });
        if let Some(error) = fatal {
            return ProviderEvent::Failed(error.with_exit_code(exit.code));
        }
        if exit.code == Some(1) && rejected_arguments(&exit.stderr) {
            return ProviderEvent::Failed(
                ProviderError::terminal(
                    "invalid_request",
                    truncate(&format!(
                        "Gemini CLI rejected its arguments: {}",
                        exit.stderr
                    )),
                )
                .with_exit_code(exit.code),
            );
        }
        match &self.last_error {
            Some(message) => {
                ProviderEvent::Failed(classify(None, message).with_exit_code(exit.code))
            }
            None => with_exit_code(None, exit),
        }
    }
}

/// Whether stderr is Gemini CLI's argument parser refusing the command line (exit 1, usage).
fn rejected_arguments(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|line| line.starts_with("Invalid values:") || line.starts_with("Unknown argument"))
}
