//! `cursor-cli`: `cursor-agent -p --output-format stream-json [--resume=<id>]`, prompt on stdin.
//! `system`/`init` carries the session id, `assistant` the text, `tool_call` started/completed
//! the tools, `result` the end; it may exit non-zero without a `result` (DESIGN.md §8).

use super::classify::classify;
use super::cli::{text_of, CliDialect, LineParser};
use serde_json::Value;
use troupe_actors::{AttemptRequest, Completion, ProviderEvent};

/// The Cursor agent CLI.
#[derive(Clone, Copy, Debug, Default)]
pub struct CursorCli;

impl CliDialect for CursorCli {
    fn kind(&self) -> &'static str {
        "cursor-cli"
    }

    fn default_command(&self) -> &'static str {
        "cursor-agent"
    }

    fn args(
        &self,
        request: &AttemptRequest,
        model: Option<&str>,
        _steer: bool,
        extra: &[String],
    ) -> Vec<String> {
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json"]
            .map(String::from)
            .to_vec();
        if let Some(id) = &request.provider_session_id {
            args.push(format!("--resume={id}"));
        }
        if let Some(model) = model {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    fn parser(&self) -> Box<dyn LineParser> {
        Box::<CursorParser>::default()
    }
}

/// Reads cursor-agent's stream-json lines.
#[derive(Debug, Default)]
pub struct CursorParser {
    /// The session id already reported.
    session_id: Option<String>,
    /// Assistant text since the last whole message.
    pending: String,
}

impl CursorParser {
    fn flush(&mut self, out: &mut Vec<ProviderEvent>) {
        if !self.pending.is_empty() {
            out.push(ProviderEvent::Message {
                role: "assistant".into(),
                text: std::mem::take(&mut self.pending),
            });
        }
    }
}

/// The tool's name and its call object: `{"readToolCall": {"args": …, "result": …}}` names the
/// tool `read`; a generic `{"function": {"name": …, "arguments": …}}` names itself.
fn tool_of(line: &Value) -> (String, Value) {
    let call = line.get("tool_call").and_then(Value::as_object);
    let Some((key, body)) = call.and_then(|c| c.iter().next()) else {
        return ("tool".into(), Value::Null);
    };
    if key == "function" {
        let name = text_of(body.get("name").unwrap_or(&Value::Null));
        return (name, body.clone());
    }
    let name = key.strip_suffix("ToolCall").unwrap_or(key).to_string();
    (name, body.clone())
}

impl LineParser for CursorParser {
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>) {
        if let Some(id) = line.get("session_id").and_then(Value::as_str) {
            if self.session_id.as_deref() != Some(id) && !id.is_empty() {
                self.session_id = Some(id.to_string());
                out.push(ProviderEvent::SessionId(id.to_string()));
            }
        }
        let field = |key: &str| line.get(key).unwrap_or(&Value::Null);
        match field("type").as_str().unwrap_or("") {
            "assistant" => {
                let content = field("message").get("content");
                let blocks = content
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for block in blocks {
                    if block.get("type").and_then(Value::as_str) == Some("text") {
                        let text = text_of(block.get("text").unwrap_or(&Value::Null));
                        if !text.is_empty() {
                            self.pending.push_str(&text);
                            out.push(ProviderEvent::Delta(text));
                        }
                    }
                }
            }
            "tool_call" => {
                let tool_id = text_of(field("call_id"));
                let (name, body) = tool_of(&line);
                match field("subtype").as_str() {
                    Some("started") => {
                        self.flush(out);
                        out.push(ProviderEvent::ToolUse {
                            tool_id,
                            name,
                            input: body
                                .get("args")
                                .or_else(|| body.get("arguments"))
                                .cloned()
                                .unwrap_or(Value::Null),
                        });
                    }
                    Some("completed") => {
                        let result = body.get("result").cloned().unwrap_or(Value::Null);
                        let is_error = result.get("error").is_some()
                            || result.get("failure").is_some()
                            || result.get("rejected").is_some();
                        out.push(ProviderEvent::ToolResult {
                            tool_id,
                            output: result,
                            is_error,
                        });
                    }
                    _ => {}
                }
            }
            "result" => {
                self.flush(out);
                let is_error = field("is_error").as_bool() == Some(true)
                    || field("subtype").as_str().is_some_and(|s| s != "success");
                if is_error {
                    out.push(ProviderEvent::Failed(classify(
                        None,
                        &text_of(field("result")),
                    )));
                } else {
                    out.push(ProviderEvent::Done(Completion {
                        usage: line.get("usage").cloned(),
                        cost_usd: None,
                        exit_code: None,
                    }));
                }
            }
            _ => {}
        }
    }
}
