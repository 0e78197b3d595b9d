//! ACP `session/update` notifications and `session/prompt` stop reasons as Troupe events:
//! message chunks → `message.delta`, thought chunks → `thinking`, tool calls → `tool.use`, their
//! final updates → `tool.result`, plans and context usage → `status`; a prompt's token usage
//! and cost → the attempt's [`Completion`].

use agent_client_protocol::schema::v1::{PromptResponse, SessionUpdate, StopReason};
use serde_json::{json, Value};
use std::collections::HashMap;
use troupe_actors::{Completion, ProviderError, ProviderEvent};

/// The events one update means. `tools` remembers the tool calls announced so far (id → name),
/// so an update that finishes one becomes its `tool.result` exactly once.
pub fn update_events(
    update: &SessionUpdate,
    tools: &mut HashMap<String, String>,
) -> Vec<ProviderEvent> {
    // The crate parsed and checked the update; its JSON is read here so every variant's optional
    // fields are handled alike.
    let value = serde_json::to_value(update).unwrap_or(Value::Null);
    let text = || chunk_text(&value["content"]);
    match update {
        SessionUpdate::AgentMessageChunk(_) => {
            let text = text();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![ProviderEvent::Delta(text)]
            }
        }
        SessionUpdate::AgentThoughtChunk(_) => {
            let text = text();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![ProviderEvent::Thinking(text)]
            }
        }
        SessionUpdate::ToolCall(_) => {
            let id = value["toolCallId"].as_str().unwrap_or_default().to_string();
            let mut events = Vec::new();
            if !tools.contains_key(&id) {
                let name = tool_name(&value);
                tools.insert(id.clone(), name.clone());
                events.push(ProviderEvent::ToolUse {
                    tool_id: id.clone(),
                    name,
                    input: value.get("rawInput").cloned().unwrap_or(Value::Null),
                });
            }
            events.extend(tool_result(&id, &value, tools));
            events
        }
        SessionUpdate::ToolCallUpdate(_) => {
            let id = value["toolCallId"].as_str().unwrap_or_default().to_string();
            let mut events = Vec::new();
            if !tools.contains_key(&id) && value.get("title").is_some() {
                let name = tool_name(&value);
                tools.insert(id.clone(), name.clone());
                events.push(ProviderEvent::ToolUse {
                    tool_id: id.clone(),
                    name,
                    input: value.get("rawInput").cloned().unwrap_or(Value::Null),
                });
            }
            events.extend(tool_result(&id, &value, tools));
            events
        }
        SessionUpdate::Plan(_) => vec![ProviderEvent::Status(
            json!({"plan": value.get("entries").cloned().unwrap_or(Value::Null)}),
        )],
        SessionUpdate::UsageUpdate(_) => vec![ProviderEvent::Status(json!({
            "context_used": value["used"],
            "context_size": value["size"],
            "cost": value.get("cost").cloned().unwrap_or(Value::Null),
        }))],
        _ => Vec::new(),
    }
}

/// The `tool.result` of a tool call that reached `completed` or `failed`, once per call.
fn tool_result(
    id: &str,
    value: &Value,
    tools: &mut HashMap<String, String>,
) -> Option<ProviderEvent> {
    let status = value["status"].as_str()?;
    if !matches!(status, "completed" | "failed") || tools.remove(id).is_none() {
        return None;
    }
    let output = match value.get("rawOutput") {
        Some(raw) if !raw.is_null() => raw.clone(),
        _ => value.get("content").cloned().unwrap_or(Value::Null),
    };
    Some(ProviderEvent::ToolResult {
        tool_id: id.to_string(),
        output,
        is_error: status == "failed",
    })
}

/// A tool's name: its own, else the first word of its title, else its kind.
fn tool_name(value: &Value) -> String {
    value["name"]
        .as_str()
        .or_else(|| {
            value["title"]
                .as_str()
                .and_then(|t| t.split_whitespace().next())
        })
        .or_else(|| value["kind"].as_str())
        .unwrap_or("tool")
        .to_string()
}

/// The text of a content block (other blocks carry no text to stream).
fn chunk_text(content: &Value) -> String {
    match content["type"].as_str() {
        Some("text") => content["text"].as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// The session's cumulative cost (US dollars) a `usage_update` reports, when it has one.
pub fn reported_cost(update: &SessionUpdate) -> Option<f64> {
    match update {
        SessionUpdate::UsageUpdate(usage) => usage
            .cost
            .as_ref()
            .filter(|c| c.currency.eq_ignore_ascii_case("USD"))
            .map(|c| c.amount),
        _ => None,
    }
}

/// The token usage a `session/prompt` result reports, in the names [`troupe_actors::Usage`]
/// reads: ACP's own `usage` (claude-agent-acp; cache reads and writes counted apart from
/// `inputTokens`, as Anthropic counts them), else Gemini CLI's `_meta.quota.token_count`.
pub fn prompt_usage(response: &PromptResponse) -> Option<Value> {
    if let Some(usage) = &response.usage {
        return Some(json!({
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_read_tokens.unwrap_or(0),
            "cache_creation_input_tokens": usage.cached_write_tokens.unwrap_or(0),
        }));
    }
    let counts = response.meta.as_ref()?.get("quota")?.get("token_count")?;
    counts.is_object().then(|| counts.clone())
}

/// How a prompt's result ends the attempt: its stop reason says whether it succeeded
/// ([`stop_reason_event`]); a success carries the prompt's usage and `cost_usd`.
pub fn prompt_end(response: &PromptResponse, cost_usd: Option<f64>) -> ProviderEvent {
    match stop_reason_event(response.stop_reason) {
        ProviderEvent::Done(_) => ProviderEvent::Done(Completion {
            usage: prompt_usage(response),
            cost_usd,
            exit_code: None,
        }),
        failed => failed,
    }
}

/// How a prompt's stop reason ends the attempt: `end_turn` is a success; `max_tokens`,
/// `max_turn_requests` and `refusal` are terminal failures (another attempt would end the same);
/// `cancelled` without an abort is the agent giving up, worth a retry.
pub fn stop_reason_event(reason: StopReason) -> ProviderEvent {
    match reason {
        StopReason::EndTurn => ProviderEvent::Done(Completion::default()),
        StopReason::MaxTokens => ProviderEvent::Failed(ProviderError::terminal(
            "max_tokens",
            "the agent stopped at its token limit",
        )),
        StopReason::MaxTurnRequests => ProviderEvent::Failed(ProviderError::terminal(
            "max_turn_requests",
            "the agent stopped at its limit of model requests in one turn",
        )),
        StopReason::Refusal => ProviderEvent::Failed(ProviderError::terminal(
            "refusal",
            "the agent refused to continue",
        )),
        StopReason::Cancelled => ProviderEvent::Failed(ProviderError::transient(
            "provider_cancelled",
            "the agent cancelled the turn on its own",
        )),
        _ => ProviderEvent::Failed(ProviderError::transient(
            "provider_error",
            format!("unknown stop reason {reason:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(value: Value) -> SessionUpdate {
        serde_json::from_value(value).expect("a valid update")
    }

    #[test]
    fn chunks_tools_and_plans_become_events() {
        let mut tools = HashMap::new();
        let chunk = update(json!({"sessionUpdate": "agent_message_chunk",
            "content": {"type": "text", "text": "Hel"}}));
        assert_eq!(
            update_events(&chunk, &mut tools),
            vec![ProviderEvent::Delta("Hel".into())]
        );
        let thought = update(json!({"sessionUpdate": "agent_thought_chunk",
            "content": {"type": "text", "text": "hmm"}}));
        assert_eq!(
            update_events(&thought, &mut tools),
            vec![ProviderEvent::Thinking("hmm".into())]
        );
        let call = update(json!({"sessionUpdate": "tool_call", "toolCallId": "t1",
            "title": "Write a.txt", "kind": "edit", "status": "pending", "rawInput": {"path": "a.txt"}}));
        assert_eq!(
            update_events(&call, &mut tools),
            vec![ProviderEvent::ToolUse {
                tool_id: "t1".into(),
                name: "Write".into(),
                input: json!({"path": "a.txt"})
            }]
        );
        let done = update(
            json!({"sessionUpdate": "tool_call_update", "toolCallId": "t1",
            "status": "completed", "rawOutput": "ok"}),
        );
        assert_eq!(
            update_events(&done, &mut tools),
            vec![ProviderEvent::ToolResult {
                tool_id: "t1".into(),
                output: json!("ok"),
                is_error: false
            }]
        );
        assert!(
            update_events(&done, &mut tools).is_empty(),
            "one result per call"
        );
        let plan = update(json!({"sessionUpdate": "plan", "entries": []}));
        assert!(matches!(
            &update_events(&plan, &mut tools)[..],
            [ProviderEvent::Status(_)]
        ));
    }

    #[test]
    fn a_prompts_usage_and_cost_reach_the_completion() {
        let claude: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn",
            "usage": {"inputTokens": 10, "outputTokens": 3, "cachedReadTokens": 5,
            "cachedWriteTokens": 2, "totalTokens": 20}}))
        .unwrap();
        let ProviderEvent::Done(done) = prompt_end(&claude, Some(0.25)) else {
            panic!("a success")
        };
        let usage = troupe_actors::Usage::from_provider(done.usage.as_ref(), done.cost_usd);
        assert_eq!(usage, Some(troupe_actors::Usage::new(17, 3, 5, 0.25)));
        let gemini: PromptResponse = serde_json::from_value(json!({"stopReason": "end_turn",
            "_meta": {"quota": {"token_count": {"input_tokens": 7, "output_tokens": 4},
            "model_usage": []}}}))
        .unwrap();
        let ProviderEvent::Done(done) = prompt_end(&gemini, None) else {
            panic!("a success")
        };
        let usage = troupe_actors::Usage::from_provider(done.usage.as_ref(), done.cost_usd);
        assert_eq!(usage, Some(troupe_actors::Usage::new(7, 4, 0, 0.0)));
        let cost = update(
            json!({"sessionUpdate": "usage_update", "used": 100, "size": 1000,
            "cost": {"amount": 0.5, "currency": "USD"}}),
        );
        assert_eq!(reported_cost(&cost), Some(0.5));
    }

    #[test]
    fn refusal_and_max_tokens_are_not_successes_to_retry() {
        for reason in [StopReason::Refusal, StopReason::MaxTokens] {
            match stop_reason_event(reason) {
                ProviderEvent::Failed(e) => {
                    assert_eq!(e.class, troupe_actors::FailureClass::Terminal)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            stop_reason_event(StopReason::EndTurn),
            ProviderEvent::Done(_)
        ));
    }
}
