//! The export file: JSON lines with a format version, and a Markdown transcript for people.
//!
//! ```text
//! {"type":"session","format":"troupe.session","version":1,"exported_at":"…","session":{record}}
//! {"type":"turn","turn":{turn record}}          one per turn, oldest first
//! {"type":"event","event":{event}}              one per event, in seq order
//! ```

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_actors::event::EventBody;
use troupe_actors::record::{SessionRecord, TurnRecord};
use troupe_actors::transfer::SessionCopy;
use troupe_actors::{Event, Outcome, Timestamp};

/// The `format` of an export's first line.
pub const FORMAT: &str = "troupe.session";
/// The export format version this build writes and reads.
pub const VERSION: u32 = 1;

/// One line of an export.
#[derive(Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    /// The first line: what the file is, and the session's record.
    Session {
        /// Always [`FORMAT`].
        format: String,
        /// The format version.
        version: u32,
        /// When it was written.
        exported_at: Timestamp,
        /// The session's record.
        session: Box<SessionRecord>,
    },
    /// A turn.
    Turn {
        /// The turn's record.
        turn: Box<TurnRecord>,
    },
    /// An event.
    Event {
        /// The event.
        event: Box<Event>,
    },
}

/// The export's lines, each ending with a newline.
pub fn jsonl(copy: SessionCopy) -> Vec<String> {
    let header = Line::Session {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: Timestamp::now(),
        session: Box::new(copy.record),
    };
    let mut lines = Vec::with_capacity(1 + copy.turns.len() + copy.events.len());
    // Plain data with string keys serializes.
    lines.push(serde_json::to_string(&header).expect("records serialize") + "\n");
    for turn in copy.turns {
        let line = Line::Turn {
            turn: Box::new(turn),
        };
        lines.push(serde_json::to_string(&line).expect("turns serialize") + "\n");
    }
    for event in copy.events {
        // The event's own encoding, as the store and every wire carry it.
        lines.push(format!(
            "{{\"type\":\"event\",\"event\":{}}}\n",
            event.json()
        ));
    }
    lines
}

/// Reads an export; `invalid_request` naming the line at fault.
pub fn parse(body: &str) -> Result<SessionCopy, ApiError> {
    let mut record = None;
    let mut turns = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    for (index, text) in body.lines().enumerate() {
        let number = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |message: String| {
            ApiError::invalid_request(format!("line {number}: {message}")).with("line", number)
        };
        let line: Line = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        match (line, record.is_some()) {
            (
                Line::Session {
                    format,
                    version,
                    session,
                    ..
                },
                false,
            ) => {
                if format != FORMAT || version != VERSION {
                    return Err(bad(format!(
                        "this server reads `{FORMAT}` version {VERSION}, not `{format}` version \
                         {version}"
                    )));
                }
                record = Some(*session);
            }
            (Line::Session { .. }, true) => return Err(bad("a second session line".into())),
            (_, false) => return Err(bad("the first line must be the session line".into())),
            (Line::Turn { turn }, true) => turns.push(*turn),
            (Line::Event { event }, true) => {
                let expected = events.last().map_or(1, |e| e.seq + 1);
                if event.seq != expected {
                    return Err(bad(format!(
                        "event seq {} where {expected} was expected",
                        event.seq
                    )));
                }
                events.push(*event);
            }
        }
    }
    let record =
        record.ok_or_else(|| ApiError::invalid_request("the export is empty").with("line", 1))?;
    Ok(SessionCopy {
        record,
        turns,
        events,
    })
}

/// The conversation as Markdown: the user's messages, the assistant's replies, tool use, and
/// how turns that did not succeed ended.
pub fn markdown(copy: &SessionCopy) -> String {
    let record = &copy.record;
    let title = record.title.as_deref().unwrap_or("Untitled session");
    let mut out = format!("# {title}\n\n");
    out.push_str(&format!(
        "Session `{}` on `{}`{} · created {}\n\n",
        record.id,
        record.provider,
        record
            .model
            .as_ref()
            .map(|m| format!(" (model `{m}`)"))
            .unwrap_or_default(),
        record.created_at
    ));
    for event in &copy.events {
        match &event.body {
            EventBody::Message { role, text } => {
                let who = if role == "user" { "User" } else { "Assistant" };
                out.push_str(&format!("## {who}\n\n{text}\n\n"));
            }
            EventBody::ToolUse { name, input, .. } => {
                out.push_str(&format!("> tool `{name}`: `{input}`\n\n"));
            }
            EventBody::ToolResult {
                output, is_error, ..
            } => {
                let label = if *is_error {
                    "tool error"
                } else {
                    "tool result"
                };
                out.push_str(&format!("> {label}: `{}`\n\n", json!(output)));
            }
            EventBody::TurnCompleted { outcome, error, .. } if *outcome != Outcome::Success => {
                let why = error
                    .as_ref()
                    .map(|e| format!(": {} ({})", e.message, e.code))
                    .unwrap_or_default();
                out.push_str(&format!("*The turn ended {outcome:?}{why}.*\n\n"));
            }
            _ => {}
        }
    }
    out
}
