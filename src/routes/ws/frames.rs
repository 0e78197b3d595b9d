//! The WebSocket's JSON frames (DESIGN.md §11): what a client may send, parsed without ever
//! panicking, and the frames the server answers with.

use crate::error::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use troupe_actors::{BusyMode, Event, SessionId, SessionState, TurnId};

/// The `session_id` that subscribes to the caller's owner feed.
pub const OWNER_FEED: &str = "*";

/// A request from the client. Every request may carry an `id` (any JSON value), echoed in the
/// answer; unknown fields are ignored so newer clients can talk to older servers.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum ClientFrame {
    /// Replay a session's events after `after_seq`, then follow it live; `*` follows the
    /// owner feed (no replay).
    #[serde(rename = "subscribe")]
    Subscribe {
        /// `*` or a session id.
        session_id: String,
        /// Replay events with a greater seq (default 0: the whole log).
        #[serde(default)]
        after_seq: u64,
    },
    /// Stops a subscription.
    #[serde(rename = "unsubscribe")]
    Unsubscribe {
        /// `*` or a session id.
        session_id: String,
    },
    /// Sends a user message, as `POST /sessions/{id}/turns`.
    #[serde(rename = "send")]
    Send {
        /// The session.
        session_id: String,
        /// The message text.
        content: String,
        /// What to do when the session is busy (default `enqueue`).
        #[serde(default)]
        mode: BusyMode,
        /// Makes sending idempotent per session.
        #[serde(default)]
        client_message_id: Option<String>,
        /// Provider options for this turn (the echo provider's script).
        #[serde(default)]
        options: Value,
    },
    /// Aborts the running turn.
    #[serde(rename = "abort")]
    Abort {
        /// The session.
        session_id: String,
    },
    /// Holds the queue.
    #[serde(rename = "queue.pause")]
    QueuePause {
        /// The session.
        session_id: String,
    },
    /// Releases the queue.
    #[serde(rename = "queue.resume")]
    QueueResume {
        /// The session.
        session_id: String,
    },
    /// Cancels a queued turn.
    #[serde(rename = "queue.cancel")]
    QueueCancel {
        /// The session.
        session_id: String,
        /// The queued turn.
        turn_id: TurnId,
    },
    /// Moves a queued turn to the front.
    #[serde(rename = "queue.promote")]
    QueuePromote {
        /// The session.
        session_id: String,
        /// The queued turn.
        turn_id: TurnId,
    },
    /// Answers a permission request, as `POST /sessions/{id}/permissions/{request_id}`.
    #[serde(rename = "permission.reply")]
    PermissionReply {
        /// The session.
        session_id: String,
        /// The `request_id` of `permission.requested`.
        request_id: String,
        /// One of the request's `options[].id`.
        option_id: String,
    },
    /// Asks for a `pong`.
    #[serde(rename = "ping")]
    Ping {},
}

/// Every `type` a client may send, for the error message of an unknown one.
const CLIENT_TYPES: &str = "subscribe, unsubscribe, send, abort, queue.pause, queue.resume, \
                            queue.cancel, queue.promote, permission.reply, ping";

/// A client frame that could not be understood, with the request id when one was readable.
#[derive(Debug)]
pub struct FrameError {
    /// The request's `id`, if the text was a JSON object that had one.
    pub id: Value,
    /// `invalid_json` or `invalid_request`, with a message naming the problem (boxed: an
    /// error is the rare path, and keeps the parse result small).
    pub error: Box<ApiError>,
}

/// A request: its echoed id and what it asks.
#[derive(Debug)]
pub struct Request {
    /// Echoed in the answer (`null` when the client sent none).
    pub id: Value,
    /// What the client asks.
    pub frame: ClientFrame,
}

/// Parses a text frame: malformed JSON → `invalid_json`; not an object, no or unknown `type`,
/// missing or mistyped fields → `invalid_request` naming the field.
pub fn parse(text: &str) -> Result<Request, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        id: Value::Null,
        error: Box::new(ApiError::new(
            ErrorCode::InvalidJson,
            format!("malformed JSON: {e}"),
        )),
    })?;
    let Value::Object(mut object) = value else {
        return Err(FrameError {
            id: Value::Null,
            error: Box::new(ApiError::invalid_request(
                "a frame must be a JSON object with a `type`",
            )),
        });
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let invalid = |error: ApiError| FrameError {
        id: id.clone(),
        error: Box::new(error),
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(invalid(
                ApiError::invalid_request("`type` must be a string").with("field", "type"),
            ))
        }
        None => {
            return Err(invalid(
                ApiError::invalid_request("missing field `type`").with("field", "type"),
            ))
        }
    };
    if !CLIENT_TYPES.split(", ").any(|known| known == kind) {
        return Err(invalid(ApiError::invalid_request(format!(
            "unknown frame type `{kind}`; expected one of: {CLIENT_TYPES}"
        ))));
    }
    let frame = ClientFrame::deserialize(Value::Object(object)).map_err(|e| {
        let message = e.to_string();
        let mut error = ApiError::invalid_request(format!("invalid `{kind}` frame: {message}"));
        if let Some(field) = field_of(&message) {
            error = error.with("field", field);
        }
        invalid(error)
    })?;
    Ok(Request { id, frame })
}

/// The field serde named in its message (``missing field `content` ``).
fn field_of(message: &str) -> Option<String> {
    let mut parts = message.split('`');
    parts.next()?;
    parts.next().map(str::to_string)
}

/// A session id of a request: a UUID, else `invalid_request`.
pub fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid_request(format!(
            "`session_id` must be a session id (a UUID){}",
            if raw == OWNER_FEED {
                "; `*` only subscribes to the owner feed"
            } else {
                ""
            }
        ))
        .with("field", "session_id")
    })
}

/// `subscribed`: the subscription is registered; replayed events follow, then live ones.
pub fn subscribed(id: &Value, session_id: SessionId, last_seq: u64, state: SessionState) -> String {
    json!({
        "type": "subscribed",
        "id": id,
        "session_id": session_id,
        "last_seq": last_seq,
        "state": state,
    })
    .to_string()
}

/// `subscribed` for the owner feed: live only, so no `last_seq` and no `state`.
pub fn subscribed_feed(id: &Value) -> String {
    json!({ "type": "subscribed", "id": id, "session_id": OWNER_FEED }).to_string()
}

/// The event frame of `event`: the event object of §7 with `"type": "event"` added.
pub fn event(event: &Event) -> String {
    // The event's own JSON (encoded once, shared with the store and every subscriber) is an
    // object: the frame is that object with `type` first.
    let json = event.json();
    let mut frame = String::with_capacity(json.len() + 16);
    frame.push_str("{\"type\":\"event\",");
    frame.push_str(json.strip_prefix('{').unwrap_or(json));
    frame
}

/// `ack`: the request succeeded; `result` is what the matching REST call answers.
pub fn ack(id: &Value, result: Value) -> String {
    json!({ "type": "ack", "id": id, "result": result }).to_string()
}

/// `error`: the request failed; the connection stays open. Extra fields of the error (`field`,
/// `max`, `session_id`, …) ride along.
pub fn error(id: &Value, error: &ApiError) -> String {
    let mut frame = Map::new();
    frame.insert("type".into(), json!("error"));
    frame.insert("id".into(), id.clone());
    for (key, value) in &error.extra {
        frame.insert(key.clone(), value.clone());
    }
    frame.insert("code".into(), json!(error.code));
    frame.insert("message".into(), json!(error.message));
    Value::Object(frame).to_string()
}

/// `pong`: the answer to `ping`.
pub fn pong(id: &Value) -> String {
    json!({ "type": "pong", "id": id }).to_string()
}

/// `truncated`: retention dropped events of the requested range; replay starts at
/// `oldest_seq`. The stores keep every event, so this is sent only by a store that prunes.
pub fn truncated(session_id: SessionId, oldest_seq: u64) -> String {
    json!({ "type": "truncated", "session_id": session_id, "oldest_seq": oldest_seq }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_frame_of_the_contract() {
        let sid = SessionId::new();
        let tid = TurnId::new();
        let frames = [
            json!({"type": "subscribe", "id": "r1", "session_id": sid, "after_seq": 3}),
            json!({"type": "subscribe", "id": "r2", "session_id": "*"}),
            json!({"type": "unsubscribe", "id": "r3", "session_id": sid}),
            json!({"type": "send", "id": "r4", "session_id": sid, "content": "hi",
                   "mode": "reject", "client_message_id": "c1", "options": {"script": {}}}),
            json!({"type": "abort", "id": "r5", "session_id": sid}),
            json!({"type": "queue.pause", "id": "r6", "session_id": sid}),
            json!({"type": "queue.resume", "id": "r6", "session_id": sid}),
            json!({"type": "queue.cancel", "id": "r7", "session_id": sid, "turn_id": tid}),
            json!({"type": "queue.promote", "id": "r7", "session_id": sid, "turn_id": tid}),
            json!({"type": "ping", "id": "r8"}),
        ];
        for frame in frames {
            let request = parse(&frame.to_string()).expect("parses");
            assert_eq!(request.id, frame["id"]);
        }
    }

    #[test]
    fn bad_frames_get_the_right_code_and_keep_the_id() {
        let bad_json = parse("{nope").unwrap_err();
        assert_eq!(bad_json.error.code, "invalid_json");
        let missing = parse(r#"{"type":"send","id":7,"session_id":"x"}"#).unwrap_err();
        assert_eq!(missing.error.code, "invalid_request");
        assert_eq!(missing.id, json!(7));
        assert_eq!(missing.error.extra["field"], "content");
        let unknown = parse(r#"{"type":"dance","id":"a"}"#).unwrap_err();
        assert_eq!(unknown.error.code, "invalid_request");
        assert_eq!(unknown.id, json!("a"));
        assert_eq!(parse("[1]").unwrap_err().error.code, "invalid_request");
        assert_eq!(
            parse(r#"{"type":3}"#).unwrap_err().error.code,
            "invalid_request"
        );
        let mode = parse(r#"{"type":"send","session_id":"x","content":"","mode":"loud"}"#);
        assert_eq!(mode.unwrap_err().error.code, "invalid_request");
    }

    #[test]
    fn event_frames_are_the_event_with_a_type() {
        let event = Event {
            encoded: Default::default(),
            seq: 4,
            session_id: SessionId::new(),
            turn_id: None,
            ts: troupe_actors::Timestamp::now(),
            body: troupe_actors::EventBody::MessageDelta { text: "Hel".into() },
        };
        let frame: Value = serde_json::from_str(&super::event(&event)).unwrap();
        let mut expected: Value = serde_json::from_str(&event.to_json()).unwrap();
        expected["type"] = json!("event");
        assert_eq!(frame, expected);
    }

    #[test]
    fn error_frames_carry_extra_fields() {
        let frame: Value = serde_json::from_str(&error(
            &json!("r1"),
            &ApiError::new(ErrorCode::QueueFull, "full").with("max", 20),
        ))
        .unwrap();
        assert_eq!(
            frame,
            json!({"type": "error", "id": "r1", "code": "queue_full", "message": "full", "max": 20})
        );
    }
}
