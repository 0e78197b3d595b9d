//! A turn's events as AG-UI events, derived deterministically from the session's durable log,
//! so a stream can be replayed from any point (also after a restart).
//!
//! Each log event of the turn yields at most [`ID_STRIDE`] AG-UI events; the `i`-th of them
//! (from 0) gets the SSE `id` `seq × ID_STRIDE + i`. Ids only grow and are never reused;
//! `Last-Event-ID: N` skips the events numbered up to N.
//!
//! | turn's log event | AG-UI events |
//! | --- | --- |
//! | `turn.accepted` | `RUN_STARTED` |
//! | `message.delta` | (`TEXT_MESSAGE_START` when no message is open,) `TEXT_MESSAGE_CONTENT` |
//! | assistant `message` | (`TEXT_MESSAGE_START`, `TEXT_MESSAGE_CONTENT` with the whole text when nothing was streamed,) `TEXT_MESSAGE_END` |
//! | `tool.use` | (`TEXT_MESSAGE_END` of an open message,) `TOOL_CALL_START`, `TOOL_CALL_ARGS` (the input as JSON), `TOOL_CALL_END` |
//! | `tool.result` | `TOOL_CALL_RESULT` |
//! | `turn.retrying` | `TEXT_MESSAGE_END` of an open message |
//! | `turn.completed` | (`TEXT_MESSAGE_END` of an open message,) `RUN_FINISHED` (success) or `RUN_ERROR` |

use crate::routes::openai::turn::SseFrames;
use bytes::Bytes;
use serde_json::{json, Value};
use troupe_actors::{Event, EventBody, Outcome, RuntimeError, TurnId};

/// The most AG-UI events one log event yields; the factor between seq and the SSE id.
pub const ID_STRIDE: u64 = 8;

/// Makes a turn's AG-UI events.
pub struct AguiFrames {
    /// The thread as the client named it.
    pub thread_id: String,
    /// The run as the client named it.
    pub run_id: String,
    /// The turn followed.
    pub turn: TurnId,
    /// Events numbered up to this were seen already (`Last-Event-ID`).
    pub after: u64,
    /// The assistant message being streamed, and whether text went into it.
    pub open: Option<(String, bool)>,
    /// The run ended (`RUN_FINISHED` or `RUN_ERROR` was made).
    pub ended: bool,
}

impl AguiFrames {
    /// The frames of a run of `turn`, skipping those numbered up to `after`.
    pub fn new(thread_id: String, run_id: String, turn: TurnId, after: u64) -> Self {
        AguiFrames {
            thread_id,
            run_id,
            turn,
            after,
            open: None,
            ended: false,
        }
    }

    /// The AG-UI events one log event yields.
    fn events_of(&mut self, event: &Event) -> Vec<Value> {
        let mut out = Vec::new();
        match &event.body {
            EventBody::TurnAccepted { .. } => out.push(json!({
                "type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id,
            })),
            EventBody::MessageDelta { text } => {
                let id = self.open_message(event.seq, &mut out);
                self.open = Some((id.clone(), true));
                out.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": text}));
            }
            EventBody::Message { role, text } if role == "assistant" => {
                let streamed = self.open.as_ref().is_some_and(|(_, streamed)| *streamed);
                let id = self.open_message(event.seq, &mut out);
                if !streamed && !text.is_empty() {
                    out.push(
                        json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": text}),
                    );
                }
                self.close_message(&mut out);
            }
            EventBody::ToolUse {
                tool_id,
                name,
                input,
            } => {
                self.close_message(&mut out);
                out.push(json!({
                    "type": "TOOL_CALL_START", "toolCallId": tool_id, "toolCallName": name,
                }));
                out.push(json!({
                    "type": "TOOL_CALL_ARGS", "toolCallId": tool_id, "delta": input.to_string(),
                }));
                out.push(json!({"type": "TOOL_CALL_END", "toolCallId": tool_id}));
            }
            EventBody::ToolResult {
                tool_id, output, ..
            } => {
                let content = match output {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                out.push(json!({
                    "type": "TOOL_CALL_RESULT", "messageId": format!("result-{tool_id}"),
                    "toolCallId": tool_id, "content": content, "role": "tool",
                }));
            }
            EventBody::TurnRetrying { .. } => self.close_message(&mut out),
            EventBody::TurnCompleted { outcome, error, .. } => {
                self.close_message(&mut out);
                self.ended = true;
                out.push(match (outcome, error) {
                    (Outcome::Success, _) => json!({
                        "type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id,
                    }),
                    (_, Some(error)) => json!({
                        "type": "RUN_ERROR", "message": error.message, "code": error.code,
                    }),
                    (outcome, None) => json!({
                        "type": "RUN_ERROR",
                        "message": format!("the turn ended {}", outcome_name(*outcome)),
                        "code": outcome_name(*outcome),
                    }),
                });
            }
            _ => {}
        }
        out
    }

    /// The open message's id, opening one (named after `seq`) when none is open.
    fn open_message(&mut self, seq: u64, out: &mut Vec<Value>) -> String {
        if let Some((id, _)) = &self.open {
            return id.clone();
        }
        let id = format!("msg-{}-{seq}", self.turn.0.simple());
        out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}));
        self.open = Some((id.clone(), false));
        id
    }

    fn close_message(&mut self, out: &mut Vec<Value>) {
        if let Some((id, _)) = self.open.take() {
            out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failed => "failed",
        Outcome::Aborted => "aborted",
        Outcome::Interrupted => "interrupted",
        Outcome::Cancelled => "cancelled",
        Outcome::Abandoned => "abandoned",
    }
}

/// One SSE frame with its id.
fn frame(id: u64, data: &Value) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {data}\n\n"))
}

impl SseFrames for AguiFrames {
    fn event(&mut self, event: &Event) -> Vec<Bytes> {
        let base = event.seq * ID_STRIDE;
        self.events_of(event)
            .into_iter()
            .enumerate()
            .map(|(i, data)| (base + i as u64, data))
            .filter(|(id, _)| *id > self.after)
            .map(|(id, data)| frame(id, &data))
            .collect()
    }

    fn failure(&mut self, error: RuntimeError) -> Vec<Bytes> {
        self.ended = true;
        let data = json!({"type": "RUN_ERROR", "message": error.to_string(), "code": error.code()});
        vec![Bytes::from(format!("data: {data}\n\n"))]
    }

    fn end(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}
