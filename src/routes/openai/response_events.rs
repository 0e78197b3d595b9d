//! The Responses API's view of a turn: its streaming events and its Response object, derived
//! deterministically from the turn's events in the durable log, so a stream can be replayed
//! from any point (also hours later, also after a restart) and the object rebuilt at any time.
//!
//! # `sequence_number`
//! Each log event of the turn yields at most [`SEQ_STRIDE`] Responses events; the `i`-th of
//! them (from 0) gets `sequence_number = seq × SEQ_STRIDE + i`, where `seq` is the log event's
//! seq in the session. Numbers only grow, are never reused, and `sequence_number /
//! SEQ_STRIDE` is the session seq that produced the event; `starting_after=N` replays the
//! events numbered above N.
//!
//! | turn's log event | Responses events |
//! | --- | --- |
//! | `turn.accepted` | `response.created` (status `queued` or `in_progress`) |
//! | first `turn.started` | `response.in_progress` |
//! | `message.delta` | (`response.output_item.added`, `response.content_part.added` when no item is open,) `response.output_text.delta` |
//! | assistant `message` | (opens an item and sends its text as one delta if nothing was streamed,) `response.output_text.done`, `response.content_part.done`, `response.output_item.done` |
//! | `turn.retrying` | closes the open item as `incomplete`; the next attempt opens a new one |
//! | `turn.completed` | closes an open item, then `response.completed` (success), `response.failed` (failed, abandoned) or `response.incomplete` (aborted, cancelled → status `cancelled`; interrupted → status `incomplete`) |

use super::turn::token_counts;
use serde_json::{json, Value};
use troupe_actors::{Event, EventBody, Outcome, SessionId, TurnId, TurnStatus};

/// The most Responses events one log event yields; the factor between seq and
/// `sequence_number`.
pub const SEQ_STRIDE: u64 = 8;

/// A response id: `resp_` + the session id + the turn id (both as 32 hex digits), so a
/// response is found without an index and its owner checked through its session.
pub fn response_id(session: SessionId, turn: TurnId) -> String {
    format!("resp_{}{}", session.0.simple(), turn.0.simple())
}

/// The session and turn a response id names.
pub fn parse_response_id(id: &str) -> Option<(SessionId, TurnId)> {
    let hex = id.strip_prefix("resp_")?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let session = hex[..32].parse().ok()?;
    let turn = hex[32..].parse().ok()?;
    Some((session, turn))
}

/// What the request said that the Response object repeats; kept in the turn's options under
/// `openai` so it survives restarts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseMeta {
    /// The model as the request named it.
    pub model: String,
    /// The request's `instructions`.
    pub instructions: Option<String>,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// The request's `metadata`.
    pub metadata: Value,
    /// Whether it ran detached from the connection.
    pub background: bool,
}

impl ResponseMeta {
    /// The `openai` member of the turn's options.
    pub fn to_options(&self) -> Value {
        json!({
            "model": self.model,
            "instructions": self.instructions,
            "previous_response_id": self.previous_response_id,
            "metadata": self.metadata,
            "background": self.background,
        })
    }

    /// Read back from a turn's options; `default_model` when the turn was not made here.
    pub fn from_options(options: &Value, default_model: String) -> Self {
        let openai = &options["openai"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        ResponseMeta {
            model: text(&openai["model"]).unwrap_or(default_model),
            instructions: text(&openai["instructions"]),
            previous_response_id: text(&openai["previous_response_id"]),
            metadata: match &openai["metadata"] {
                Value::Object(map) => Value::Object(map.clone()),
                _ => json!({}),
            },
            background: openai["background"].as_bool().unwrap_or(false),
        }
    }
}

/// One assistant message of the response.
#[derive(Clone, Debug)]
struct OutputItem {
    id: String,
    text: String,
    /// `in_progress`, `completed` or `incomplete`.
    status: &'static str,
}

impl OutputItem {
    fn part(&self) -> Value {
        json!({"type": "output_text", "text": self.text, "annotations": []})
    }

    fn to_json(&self) -> Value {
        let content = if self.status == "in_progress" && self.text.is_empty() {
            json!([])
        } else {
            json!([self.part()])
        };
        json!({
            "type": "message",
            "id": self.id,
            "status": self.status,
            "role": "assistant",
            "content": content,
        })
    }
}

/// A response as its turn's events so far make it.
pub struct ResponseProjection {
    id: String,
    turn: TurnId,
    meta: ResponseMeta,
    /// Unix seconds of `turn.accepted`.
    created_at: i64,
    /// `queued`, `in_progress`, `completed`, `failed`, `cancelled` or `incomplete`.
    status: &'static str,
    items: Vec<OutputItem>,
    /// The last item is still receiving text.
    open: bool,
    started: bool,
    usage: Option<(u64, u64)>,
    error: Option<Value>,
    incomplete_details: Option<Value>,
}

/// Events made from one log event, numbered as they are added.
struct Emitter {
    base: u64,
    events: Vec<Value>,
}

impl Emitter {
    fn push(&mut self, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.base + self.events.len() as u64);
        self.events.push(event);
    }
}

impl ResponseProjection {
    /// An empty projection of the response of `turn` in `session`.
    pub fn new(session: SessionId, turn: TurnId, meta: ResponseMeta) -> Self {
        ResponseProjection {
            id: response_id(session, turn),
            turn,
            meta,
            created_at: 0,
            status: "queued",
            items: Vec::new(),
            open: false,
            started: false,
            usage: None,
            error: None,
            incomplete_details: None,
        }
    }

    /// The response id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the turn has ended.
    pub fn is_terminal(&self) -> bool {
        !matches!(self.status, "queued" | "in_progress")
    }

    /// The status.
    pub fn status(&self) -> &'static str {
        self.status
    }

    /// Applies one event of the turn; returns the Responses events it yields, numbered.
    pub fn apply(&mut self, event: &Event) -> Vec<Value> {
        let mut out = Emitter {
            base: event.seq * SEQ_STRIDE,
            events: Vec::new(),
        };
        if event.turn_id != Some(self.turn) || self.is_terminal() {
            return out.events;
        }
        match &event.body {
            EventBody::TurnAccepted { status, .. } => {
                self.created_at = event.ts.0.timestamp();
                if *status == TurnStatus::Running {
                    self.status = "in_progress";
                }
                out.push("response.created", json!({"response": self.response()}));
            }
            EventBody::TurnStarted { .. } if !self.started => {
                self.started = true;
                self.status = "in_progress";
                out.push("response.in_progress", json!({"response": self.response()}));
            }
            EventBody::TurnRetrying { .. } => self.close_item("incomplete", &mut out),
            EventBody::MessageDelta { text } if !text.is_empty() => {
                self.open_item(&mut out);
                self.push_text(text, &mut out);
            }
            EventBody::Message { role, text } if role == "assistant" => {
                if !self.open {
                    self.open_item(&mut out);
                    self.push_text(text, &mut out);
                }
                if let Some(item) = self.items.last_mut() {
                    // The whole message is authoritative over the pieces.
                    item.text = text.clone();
                }
                self.close_item("completed", &mut out);
            }
            EventBody::TurnCompleted {
                outcome,
                error,
                usage,
                ..
            } => {
                let item_status = if *outcome == Outcome::Success {
                    "completed"
                } else {
                    "incomplete"
                };
                self.close_item(item_status, &mut out);
                self.usage = Some(token_counts(usage.as_ref()));
                let terminal = match outcome {
                    Outcome::Success => {
                        self.status = "completed";
                        "response.completed"
                    }
                    Outcome::Failed | Outcome::Abandoned => {
                        self.status = "failed";
                        self.error = Some(match error {
                            Some(e) => json!({"code": e.code, "message": e.message}),
                            None => json!({"code": "turn_failed", "message": "the turn failed"}),
                        });
                        "response.failed"
                    }
                    Outcome::Aborted | Outcome::Cancelled => {
                        self.status = "cancelled";
                        self.incomplete_details = Some(json!({"reason": "cancelled"}));
                        "response.incomplete"
                    }
                    Outcome::Interrupted => {
                        self.status = "incomplete";
                        self.incomplete_details = Some(json!({"reason": "interrupted"}));
                        "response.incomplete"
                    }
                };
                out.push(terminal, json!({"response": self.response()}));
            }
            _ => {}
        }
        out.events
    }

    fn open_item(&mut self, out: &mut Emitter) {
        if self.open {
            return;
        }
        self.open = true;
        let index = self.items.len();
        let id = if index == 0 {
            format!("msg_{}", self.turn.0.simple())
        } else {
            format!("msg_{}_{index}", self.turn.0.simple())
        };
        self.items.push(OutputItem {
            id,
            text: String::new(),
            status: "in_progress",
        });
        let item = &self.items[index];
        let (added, part) = (
            item.to_json(),
            json!({"type": "output_text", "text": "", "annotations": []}),
        );
        let item_id = item.id.clone();
        out.push(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        out.push(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
        );
    }

    fn push_text(&mut self, text: &str, out: &mut Emitter) {
        let index = self.items.len() - 1;
        let item = &mut self.items[index];
        item.text.push_str(text);
        out.push(
            "response.output_text.delta",
            json!({
                "item_id": item.id,
                "output_index": index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }),
        );
    }

    fn close_item(&mut self, status: &'static str, out: &mut Emitter) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let item = &mut self.items[index];
        item.status = status;
        let item = item.clone();
        out.push(
            "response.output_text.done",
            json!({
                "item_id": item.id,
                "output_index": index,
                "content_index": 0,
                "text": item.text,
                "logprobs": [],
            }),
        );
        out.push(
            "response.content_part.done",
            json!({"item_id": item.id, "output_index": index, "content_index": 0, "part": item.part()}),
        );
        out.push(
            "response.output_item.done",
            json!({"output_index": index, "item": item.to_json()}),
        );
    }

    /// The Response object.
    pub fn response(&self) -> Value {
        let output: Vec<Value> = self.items.iter().map(OutputItem::to_json).collect();
        let output_text: String = self
            .items
            .iter()
            .filter(|i| i.status == "completed")
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let usage = self.usage.map(|(input, output)| {
            json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output,
            })
        });
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.meta.background,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": self.meta.instructions,
            "max_output_tokens": null,
            "metadata": self.meta.metadata,
            "model": self.meta.model,
            "output": output,
            "output_text": output_text,
            "parallel_tool_calls": false,
            "previous_response_id": self.meta.previous_response_id,
            "store": true,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_actors::{BusyMode, ErrorInfo, Timestamp};

    fn event(seq: u64, session: SessionId, turn: TurnId, body: EventBody) -> Event {
        Event {
            encoded: Default::default(),
            seq,
            session_id: session,
            turn_id: Some(turn),
            ts: Timestamp::now(),
            body,
        }
    }

    fn run(bodies: Vec<EventBody>) -> (ResponseProjection, Vec<Value>) {
        let (session, turn) = (SessionId::new(), TurnId::new());
        let mut p = ResponseProjection::new(session, turn, ResponseMeta::default());
        let mut all = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            all.extend(p.apply(&event(i as u64 + 1, session, turn, body)));
        }
        (p, all)
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn response_ids_round_trip() {
        let (session, turn) = (SessionId::new(), TurnId::new());
        let id = response_id(session, turn);
        assert_eq!(parse_response_id(&id), Some((session, turn)));
        assert_eq!(parse_response_id("resp_xyz"), None);
        assert_eq!(parse_response_id(&id.replace("resp_", "msg_")), None);
    }

    #[test]
    fn a_successful_turn_yields_the_documented_event_order() {
        let (p, events) = run(vec![
            EventBody::TurnAccepted {
                turn_id: TurnId::new(),
                status: TurnStatus::Running,
                position: 0,
                mode: BusyMode::Enqueue,
            },
            EventBody::Message {
                role: "user".into(),
                text: "hi there".into(),
            },
            EventBody::TurnStarted {
                attempt: 1,
                provider: "echo".into(),
                history: None,
            },
            EventBody::MessageDelta { text: "hi ".into() },
            EventBody::MessageDelta {
                text: "there".into(),
            },
            EventBody::Message {
                role: "assistant".into(),
                text: "hi there".into(),
            },
            EventBody::TurnCompleted {
                outcome: Outcome::Success,
                error: None,
                usage: Some(json!({"input_tokens": 2, "output_tokens": 2})),
                cost_usd: None,
                exit_code: None,
            },
        ]);
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert_eq!(numbers[0], SEQ_STRIDE);
        let response = p.response();
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "hi there");
        assert_eq!(response["usage"]["total_tokens"], 4);
    }

    #[test]
    fn a_failed_turn_closes_its_item_incomplete_and_fails() {
        let (p, events) = run(vec![
            EventBody::MessageDelta {
                text: "partial".into(),
            },
            EventBody::TurnCompleted {
                outcome: Outcome::Failed,
                error: Some(ErrorInfo {
                    code: "prompt_too_long".into(),
                    message: "too long".into(),
                }),
                usage: None,
                cost_usd: None,
                exit_code: None,
            },
        ]);
        assert_eq!(kinds(&events).last(), Some(&"response.failed"));
        let response = p.response();
        assert_eq!(response["status"], "failed");
        assert_eq!(response["error"]["code"], "prompt_too_long");
        assert_eq!(response["output"][0]["status"], "incomplete");
    }
}
