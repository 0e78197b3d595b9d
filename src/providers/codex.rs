//! `codex-cli`: `codex exec --json [resume <thread_id>] -`, prompt on stdin. `thread.started`
//! carries the thread id, `item.*` events the agent's messages, reasoning and tool calls,
//! `turn.completed` the usage, `turn.failed` and `error` the failures (DESIGN.md §8).

use super::classify::{classify, truncate};
use super::cli::{
    text_of, with_exit_code, CliDialect, LineParser, PolicyArgs, ProcessExit, SandboxMode,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use troupe_actors::{AttemptRequest, Completion, ProviderError, ProviderEvent};

/// What `codex exec` prints, exiting 1, in a folder that is not a Git repository it trusts.
const UNTRUSTED: &str = "Not inside a trusted directory";

/// The OpenAI Codex CLI.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodexCli;

impl CliDialect for CodexCli {
    fn kind(&self) -> &'static str {
        "codex-cli"
    }

    fn default_command(&self) -> &'static str {
        "codex"
    }

    fn args(
        &self,
        request: &AttemptRequest,
        model: Option<&str>,
        _steer: bool,
        extra: &[String],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec!["exec".into(), "--json".into()];
        if let Some(model) = model {
            args.extend(["--model".into(), model.into()]);
        }
        args.extend(extra.iter().cloned());
        if let Some(id) = &request.provider_session_id {
            args.extend(["resume".into(), id.clone()]);
        }
        args.push("-".into());
        args
    }

    fn parser(&self) -> Box<dyn LineParser> {
        Box::<CodexParser>::default()
    }

    fn policy_args(&self, trust_project: bool, sandbox: Option<SandboxMode>) -> PolicyArgs {
        let mut args = Vec::new();
        // Without it `codex exec` refuses a directory that is not a Git repository it trusts.
        if trust_project {
            args.push("--skip-git-repo-check".to_string());
        }
        if let Some(mode) = sandbox {
            let policy = match mode {
                SandboxMode::ReadOnly => "read-only",
                SandboxMode::WorkspaceWrite => "workspace-write",
                SandboxMode::FullAccess => "danger-full-access",
            };
            args.extend(["--sandbox".to_string(), policy.to_string()]);
        }
        Ok(args)
    }
}

/// Reads `codex exec --json` lines.
#[derive(Debug, Default)]
pub struct CodexParser {
    /// Items already announced as tool uses, so `item.completed` only adds the result.
    announced: HashSet<String>,
    /// The last `error` event: codex reports reconnects this way too, so it only counts when
    /// the turn fails or the process ends without completing it.
    last_error: Option<String>,
}

/// The tool name and input of an item that is a tool call; `None` for other items.
fn tool_call(kind: &str, item: &Value) -> Option<(String, Value)> {
    let pick = |keys: &[&str]| {
        let mut input = serde_json::Map::new();
        for key in keys {
            if let Some(v) = item.get(*key) {
                input.insert((*key).to_string(), v.clone());
            }
        }
        Value::Object(input)
    };
    match kind {
        "command_execution" => Some(("shell".into(), pick(&["command"]))),
        "file_change" => Some(("file_change".into(), pick(&["changes"]))),
        "mcp_tool_call" => {
            let server = text_of(item.get("server").unwrap_or(&Value::Null));
            let tool = text_of(item.get("tool").unwrap_or(&Value::Null));
            Some((format!("{server}.{tool}"), pick(&["arguments"])))
        }
        "web_search" => Some(("web_search".into(), pick(&["query"]))),
        _ => None,
    }
}

/// What a finished tool item answered, and whether it failed.
fn tool_outcome(kind: &str, item: &Value) -> (Value, bool) {
    let status = item.get("status").and_then(Value::as_str).unwrap_or("");
    let failed = status == "failed"
        || item.get("error").is_some_and(|e| !e.is_null())
        || item
            .get("exit_code")
            .and_then(Value::as_i64)
            .is_some_and(|c| c != 0);
    let output = match kind {
        "command_execution" => json!({
            "output": item.get("aggregated_output").cloned().unwrap_or(Value::Null),
            "exit_code": item.get("exit_code").cloned().unwrap_or(Value::Null),
        }),
        "file_change" => json!({"status": status}),
        "mcp_tool_call" => item
            .get("result")
            .or_else(|| item.get("error"))
            .cloned()
            .unwrap_or(Value::Null),
        _ => json!({"status": status}),
    };
    (output, failed)
}

impl CodexParser {
    fn item(&mut self, phase: &str, item: &Value, out: &mut Vec<ProviderEvent>) {
        let id = text_of(item.get("id").unwrap_or(&Value::Null));
        let kind = item
            .get("type")
            .or_else(|| item.get("item_type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some((name, input)) = tool_call(kind, item) {
            if self.announced.insert(id.clone()) {
                out.push(ProviderEvent::ToolUse {
                    tool_id: id.clone(),
                    name,
                    input,
                });
            }
            if phase == "item.completed" {
                let (output, is_error) = tool_outcome(kind, item);
                out.push(ProviderEvent::ToolResult {
                    tool_id: id,
                    output,
                    is_error,
                });
            }
            return;
        }
        if phase != "item.completed" {
            return;
        }
        let text = text_of(item.get("text").unwrap_or(&Value::Null));
        match kind {
            "agent_message" if !text.is_empty() => {
                out.push(ProviderEvent::Delta(text.clone()));
                out.push(ProviderEvent::Message {
                    role: "assistant".into(),
                    text,
                });
            }
            "reasoning" if !text.is_empty() => out.push(ProviderEvent::Thinking(text)),
            "todo_list" => out.push(ProviderEvent::Status(
                json!({"todo_list": item.get("items").cloned().unwrap_or(Value::Null)}),
            )),
            "error" => out.push(ProviderEvent::Status(
                json!({"warning": item.get("message")}),
            )),
            _ => {}
        }
    }
}

impl LineParser for CodexParser {
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>) {
        let kind = line.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "thread.started" => {
                if let Some(id) = line.get("thread_id").and_then(Value::as_str) {
                    out.push(ProviderEvent::SessionId(id.to_string()));
                }
            }
            "item.started" | "item.updated" | "item.completed" => {
                if let Some(item) = line.get("item") {
                    self.item(kind, item, out);
                }
            }
            "turn.completed" => out.push(ProviderEvent::Done(Completion {
                usage: line.get("usage").cloned(),
                cost_usd: None,
                exit_code: None,
            })),
            "turn.failed" => {
                let error = line.get("error").unwrap_or(&Value::Null);
                let text = error
                    .get("message")
                    .map(text_of)
                    .unwrap_or_else(|| text_of(error));
                out.push(ProviderEvent::Failed(classify(None, &text)));
            }
            "error" => {
                self.last_error = Some(text_of(line.get("message").unwrap_or(&Value::Null)));
            }
            _ => {}
        }
    }

    fn finish(&mut self, result: Option<ProviderEvent>, exit: &ProcessExit) -> ProviderEvent {
        if result.is_none() && exit.stderr.contains(UNTRUSTED) {
            let message = format!(
                "Codex does not trust the session's project directory. Set `trust_project = \
                 true` on this provider (Troupe then passes `--skip-git-repo-check`) or make it \
                 a Git repository Codex trusts. It said: {}",
                exit.stderr
            );
            let error = ProviderError::terminal("untrusted_project", truncate(&message));
            return ProviderEvent::Failed(error.with_exit_code(exit.code));
        }
        match (result, &self.last_error) {
            (None, Some(message)) => {
                ProviderEvent::Failed(classify(None, message).with_exit_code(exit.code))
            }
            (result, _) => with_exit_code(result, exit),
        }
    }
}
