//! `claude-cli`: Claude Code in print mode with `--output-format stream-json --verbose`, resumed
//! with `--resume <session_id>`, and steerable through `--input-format stream-json`, where one
//! long-lived process answers every user line with one `result` (DESIGN.md §8).

use super::classify::classify;
use super::cli::{text_of, CliDialect, LineParser, PolicyArgs, SandboxMode};
use serde_json::{json, Value};
use troupe_actors::{AttemptRequest, Completion, ProviderError, ProviderEvent};

/// The Claude Code CLI.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClaudeCli;

impl CliDialect for ClaudeCli {
    fn kind(&self) -> &'static str {
        "claude-cli"
    }

    fn default_command(&self) -> &'static str {
        "claude"
    }

    fn can_steer(&self) -> bool {
        true
    }

    fn can_fork(&self) -> bool {
        true
    }

    fn args(
        &self,
        request: &AttemptRequest,
        model: Option<&str>,
        steer: bool,
        extra: &[String],
    ) -> Vec<String> {
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
            .map(String::from)
            .to_vec();
        if steer {
            args.extend(["--input-format".into(), "stream-json".into()]);
        }
        if let Some(id) = &request.provider_session_id {
            args.extend(["--resume".into(), id.clone()]);
            if request.fork_session {
                args.push("--fork-session".into());
            }
        }
        if let Some(model) = model {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    fn user_input(&self, text: &str, steer: bool) -> Vec<u8> {
        if !steer {
            return text.as_bytes().to_vec();
        }
        let line = json!({"type": "user", "message": {"role": "user", "content": text}});
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    fn parser(&self) -> Box<dyn LineParser> {
        Box::<ClaudeParser>::default()
    }

    /// Print mode asks about no folder, so trust needs no flag; the sandbox is a permission mode.
    fn policy_args(&self, _trust_project: bool, sandbox: Option<SandboxMode>) -> PolicyArgs {
        Ok(match sandbox {
            None => Vec::new(),
            Some(mode) => {
                let permission = match mode {
                    SandboxMode::ReadOnly => "plan",
                    SandboxMode::WorkspaceWrite => "acceptEdits",
                    SandboxMode::FullAccess => "bypassPermissions",
                };
                vec!["--permission-mode".to_string(), permission.to_string()]
            }
        })
    }
}

/// Reads Claude Code's stream-json lines.
#[derive(Debug, Default)]
pub struct ClaudeParser {
    /// The session id already reported, so it is announced once.
    session_id: Option<String>,
    /// Text of the current message already arrived as partial deltas
    /// (`--include-partial-messages`), so the whole message is not streamed twice.
    streamed_partials: bool,
}

impl ClaudeParser {
    fn session(&mut self, line: &Value, out: &mut Vec<ProviderEvent>) {
        if let Some(id) = line.get("session_id").and_then(Value::as_str) {
            if self.session_id.as_deref() != Some(id) && !id.is_empty() {
                self.session_id = Some(id.to_string());
                out.push(ProviderEvent::SessionId(id.to_string()));
            }
        }
    }

    fn assistant(&mut self, message: &Value, out: &mut Vec<ProviderEvent>) {
        for block in content_blocks(message) {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = text_of(block.get("text").unwrap_or(&Value::Null));
                    if text.is_empty() {
                        continue;
                    }
                    if !self.streamed_partials {
                        out.push(ProviderEvent::Delta(text.clone()));
                    }
                    out.push(ProviderEvent::Message {
                        role: "assistant".into(),
                        text,
                    });
                }
                Some("thinking") => {
                    let text = text_of(block.get("thinking").unwrap_or(&Value::Null));
                    if !text.is_empty() {
                        out.push(ProviderEvent::Thinking(text));
                    }
                }
                Some("tool_use" | "server_tool_use") => out.push(ProviderEvent::ToolUse {
                    tool_id: text_of(block.get("id").unwrap_or(&Value::Null)),
                    name: text_of(block.get("name").unwrap_or(&Value::Null)),
                    input: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
        self.streamed_partials = false;
    }

    fn result(&mut self, line: &Value) -> ProviderEvent {
        self.streamed_partials = false;
        let is_error = line.get("is_error").and_then(Value::as_bool) == Some(true);
        let subtype = line.get("subtype").and_then(Value::as_str).unwrap_or("");
        if !is_error && subtype == "success" {
            return ProviderEvent::Done(Completion {
                usage: line.get("usage").cloned(),
                cost_usd: line.get("total_cost_usd").and_then(Value::as_f64),
                exit_code: None,
            });
        }
        let status = line
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let mut text = line.get("result").map(text_of).unwrap_or_default();
        if let Some(errors) = line.get("errors").and_then(Value::as_array) {
            for e in errors {
                text.push('\n');
                text.push_str(&text_of(e));
            }
        }
        let text = text.trim().to_string();
        let error = match subtype {
            "error_max_turns" => ProviderError::terminal(
                "max_turns",
                format!("the agent reached its turn limit: {text}"),
            ),
            "error_max_budget_usd" => ProviderError::terminal(
                "budget_exhausted",
                format!("the agent reached its budget: {text}"),
            ),
            _ if text.is_empty() => classify(status, &format!("claude failed ({subtype})")),
            _ => classify(status, &text),
        };
        ProviderEvent::Failed(error)
    }
}

/// The `content` blocks of a message (a bare string counts as one text block).
fn content_blocks(message: &Value) -> Vec<Value> {
    match message.get("content") {
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        _ => Vec::new(),
    }
}

/// A tool result's content as one value: joined text for text blocks, else as given.
fn tool_output(content: Option<&Value>) -> Value {
    match content {
        Some(Value::Array(blocks))
            if blocks
                .iter()
                .all(|b| b.get("type").and_then(Value::as_str) == Some("text")) =>
        {
            let text: Vec<String> = blocks
                .iter()
                .map(|b| text_of(b.get("text").unwrap_or(&Value::Null)))
                .collect();
            Value::String(text.join("\n"))
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

impl LineParser for ClaudeParser {
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>) {
        self.session(&line, out);
        let message = line.get("message").unwrap_or(&Value::Null);
        match line.get("type").and_then(Value::as_str) {
            Some("assistant") => self.assistant(message, out),
            Some("user") => {
                for block in content_blocks(message) {
                    if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                        out.push(ProviderEvent::ToolResult {
                            tool_id: text_of(block.get("tool_use_id").unwrap_or(&Value::Null)),
                            output: tool_output(block.get("content")),
                            is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
                        });
                    }
                }
            }
            Some("stream_event") => {
                let event = line.get("event").unwrap_or(&Value::Null);
                let delta = event.get("delta").unwrap_or(&Value::Null);
                if event.get("type").and_then(Value::as_str) == Some("content_block_delta")
                    && delta.get("type").and_then(Value::as_str) == Some("text_delta")
                {
                    let text = text_of(delta.get("text").unwrap_or(&Value::Null));
                    if !text.is_empty() {
                        self.streamed_partials = true;
                        out.push(ProviderEvent::Delta(text));
                    }
                }
            }
            Some("result") => {
                let result = self.result(&line);
                // A failed answer (prompt too long, API error) is billed too: its usage and
                // cost are reported before the failure so they count.
                if matches!(result, ProviderEvent::Failed(_)) {
                    let usage = troupe_actors::Usage::from_provider(
                        line.get("usage"),
                        line.get("total_cost_usd").and_then(Value::as_f64),
                    );
                    if let Some(usage) = usage.filter(|u| !u.is_zero()) {
                        out.push(ProviderEvent::Usage(usage));
                    }
                }
                out.push(result);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_actors::FailureClass;

    fn parse(lines: &[Value]) -> Vec<ProviderEvent> {
        let mut parser = ClaudeParser::default();
        let mut out = Vec::new();
        for line in lines {
            parser.on_line(line.clone(), &mut out);
        }
        out
    }

    #[test]
    fn prompt_too_long_success_subtype_with_is_error_is_terminal() {
        let events = parse(
            &[json!({"type":"result","subtype":"success","is_error":true,
            "api_error_status":400,"result":"Prompt is too long · 201234 tokens > 200000 maximum",
            "session_id":"s1"})],
        );
        let Some(ProviderEvent::Failed(e)) = events.last() else {
            panic!("no failure: {events:?}")
        };
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Terminal, "prompt_too_long")
        );
    }

    #[test]
    fn partial_messages_are_not_streamed_twice() {
        let events = parse(&[
            json!({"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}}),
            json!({"type":"assistant","message":{"content":[{"type":"text","text":"Hi"}]}}),
        ]);
        assert_eq!(
            events,
            vec![
                ProviderEvent::Delta("Hi".into()),
                ProviderEvent::Message {
                    role: "assistant".into(),
                    text: "Hi".into()
                }
            ]
        );
    }
}
