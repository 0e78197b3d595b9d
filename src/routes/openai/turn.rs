//! Following one turn through its session's event log, and stopping it on a client's request.
//!
//! Many requests may share a session (one session key, sent together): each subscribes at the
//! end of the log *before* it sends, so its turn's events cannot slip past, then keeps only the
//! events of its own turn until that turn's one `turn.completed`. It follows through the core's
//! [`Follow`] (which resubscribes when the actor stops); a follow that lagged is started again
//! from the last seq seen: no gap, no duplicate. A turn can also be followed from its first
//! event in the durable log, which is how a response is replayed hours later or after a restart.

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{
    Event, EventBody, Follow, FollowEnd, Runtime, RuntimeError, SendTurn, SessionHandle, TurnId,
    TurnReceipt,
};

/// Follows started again in a row after lagging, without an event in between, before giving up.
const MAX_RESTARTS: u32 = 8;

/// Events read from the store per page when looking for a turn.
const LOG_PAGE: usize = 1024;

/// A silent stream gets an SSE comment this often, so proxies and clients keep it open.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The events of one turn, in seq order, ending with its `turn.completed`.
pub struct TurnFollower {
    /// Where to follow again after lagging.
    handle: SessionHandle,
    /// The turn followed.
    turn: TurnId,
    /// Events of the turn read from the log and not yet handed out.
    buffered: VecDeque<Arc<Event>>,
    /// The live follow; `None` once the turn is known to be complete.
    sub: Option<Follow>,
    /// Follows started again since the last event.
    restarts: u32,
    /// The turn's `turn.completed` was handed out.
    done: bool,
}

impl TurnFollower {
    /// Subscribes at the end of the session's log, sends `turn`, and follows it. A repeated
    /// `client_message_id` follows the original turn from its first event.
    pub async fn send(
        runtime: &Runtime,
        handle: SessionHandle,
        turn: SendTurn,
    ) -> Result<(TurnFollower, TurnReceipt), RuntimeError> {
        let last_seq = runtime.store().last_seq(handle.id()).await?;
        let sub = handle.follow(last_seq).await?;
        let receipt = handle.send(turn).await?;
        if receipt.duplicate {
            drop(sub);
            let follower = Self::replay(runtime, handle, receipt.turn_id).await?;
            return Ok((follower, receipt));
        }
        let follower = TurnFollower {
            handle,
            turn: receipt.turn_id,
            buffered: VecDeque::new(),
            sub: Some(sub),
            restarts: 0,
            done: false,
        };
        Ok((follower, receipt))
    }

    /// Follows `turn` from its first event in the durable log, then live until it completes.
    /// `turn_not_found` when the log has no event of it.
    pub async fn replay(
        _runtime: &Runtime,
        handle: SessionHandle,
        turn: TurnId,
    ) -> Result<TurnFollower, RuntimeError> {
        let log = read_turn(&handle, turn).await?;
        if log.events.is_empty() {
            return Err(RuntimeError::TurnNotFound);
        }
        let sub = if log.completed {
            None
        } else {
            Some(handle.follow(log.last_seq).await?)
        };
        Ok(TurnFollower {
            handle,
            turn,
            buffered: log.events.into_iter().collect(),
            sub,
            restarts: 0,
            done: false,
        })
    }

    /// The next event of the turn; `None` after its `turn.completed`. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Arc<Event>>, RuntimeError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(event) = self.buffered.pop_front() {
                self.done = is_completion(&event);
                return Ok(Some(event));
            }
            let Some(sub) = self.sub.as_mut() else {
                return Ok(None);
            };
            match sub.next().await {
                Some(event) => {
                    self.restarts = 0;
                    if event.turn_id == Some(self.turn) {
                        self.done = is_completion(&event);
                        return Ok(Some(event));
                    }
                }
                None => {
                    let last_seq = sub.last_seq();
                    match sub.end() {
                        Some(FollowEnd::Deleted) => return Err(RuntimeError::SessionNotFound),
                        Some(FollowEnd::Failed(e)) => return Err(e.clone()),
                        Some(FollowEnd::Lagged) | None => {}
                    }
                    self.restarts += 1;
                    if self.restarts > MAX_RESTARTS {
                        return Err(RuntimeError::Internal(format!(
                            "following session {} kept lagging",
                            self.handle.id()
                        )));
                    }
                    log::debug!(
                        "session {} turn {}: follow lagged; again after seq {last_seq}",
                        self.handle.id(),
                        self.turn
                    );
                    self.sub = Some(self.handle.follow(last_seq).await?);
                }
            }
        }
    }

    /// The next event, or `Ok(None)` when `quiet` passes without one (the turn goes on).
    pub async fn next_within(
        &mut self,
        quiet: Duration,
    ) -> Result<Option<Option<Arc<Event>>>, RuntimeError> {
        match tokio::time::timeout(quiet, self.next()).await {
            Ok(next) => next.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// Whether `event` is a turn's terminal event.
pub fn is_completion(event: &Event) -> bool {
    matches!(event.body, EventBody::TurnCompleted { .. })
}

/// What the durable log holds of one turn.
pub struct TurnLog {
    /// The turn's events, in seq order.
    pub events: Vec<Arc<Event>>,
    /// The last seq read (of any turn).
    pub last_seq: u64,
    /// Whether the turn's `turn.completed` is among the events.
    pub completed: bool,
}

/// Reads the turn's durable events, page by page from the start of the session's log, up to
/// its `turn.completed` or the end of the durable log.
pub async fn read_turn(handle: &SessionHandle, turn: TurnId) -> Result<TurnLog, RuntimeError> {
    let mut log = TurnLog {
        events: Vec::new(),
        last_seq: 0,
        completed: false,
    };
    loop {
        let page = handle.events(log.last_seq, LOG_PAGE).await?.events;
        let Some(last) = page.last() else {
            return Ok(log);
        };
        log.last_seq = last.seq;
        let full = page.len() == LOG_PAGE;
        for event in page {
            if event.turn_id != Some(turn) {
                continue;
            }
            let completion = is_completion(&event);
            if completion {
                log.last_seq = event.seq;
            }
            log.events.push(event);
            if completion {
                log.completed = true;
                return Ok(log);
            }
        }
        if !full {
            return Ok(log);
        }
    }
}

/// Stops `turn` wherever it is: aborts it while it runs, cancels it while it waits. A turn
/// that already ended is left as it is. Never touches another turn of the session.
pub async fn stop_turn(handle: &SessionHandle, turn: TurnId) -> Result<(), RuntimeError> {
    // A queued turn can start between the two calls; a third round settles it.
    for _ in 0..3 {
        if handle.abort_turn(turn).await?.aborted {
            return Ok(());
        }
        match handle.cancel_turn(turn).await {
            Ok(()) | Err(RuntimeError::TurnNotFound) => return Ok(()),
            Err(RuntimeError::TurnRunning) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Held by a request while it serves its turn; when the client asked that a disconnect stops
/// the turn and the request goes away before the turn completed, dropping it stops the turn.
pub struct StopOnDrop {
    /// The session of the turn.
    handle: SessionHandle,
    /// The turn to stop.
    turn: TurnId,
    /// Whether dropping stops the turn: set by the client's header, cleared on completion.
    armed: bool,
}

impl StopOnDrop {
    /// A guard for `turn` that stops it on drop when `armed`.
    pub fn new(handle: SessionHandle, turn: TurnId, armed: bool) -> Self {
        StopOnDrop {
            handle,
            turn,
            armed,
        }
    }

    /// The turn completed (or was handed over): dropping does nothing now.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let handle = self.handle.clone();
        let turn = self.turn;
        log::info!(
            "session {} turn {}: client went away; stopping the turn as it asked",
            handle.id(),
            turn
        );
        actix_web::rt::spawn(async move {
            if let Err(e) = stop_turn(&handle, turn).await {
                log::warn!(
                    "session {} turn {turn}: could not stop after disconnect: {e}",
                    handle.id()
                );
            }
        });
    }
}

/// Input and output token counts from a provider's usage figures, whichever names it uses
/// (`input_tokens`/`output_tokens` or `prompt_tokens`/`completion_tokens`); 0 when absent.
pub fn token_counts(usage: Option<&Value>) -> (u64, u64) {
    let count = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| usage.and_then(|u| u.get(n)).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    (
        count(["input_tokens", "prompt_tokens"]),
        count(["output_tokens", "completion_tokens"]),
    )
}

/// Turns a turn's events into SSE frames for one door.
pub trait SseFrames {
    /// Frames sent before anything is read (events seen while the headers were held).
    fn start(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// Frames for one event of the turn.
    fn event(&mut self, event: &Event) -> Vec<Bytes>;
    /// Frames for a failure to follow the turn (the stream ends after them).
    fn failure(&mut self, error: RuntimeError) -> Vec<Bytes>;
    /// Frames after the turn's last event.
    fn end(&mut self) -> Vec<Bytes>;
}

/// An SSE comment line that keeps a quiet stream open.
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// The state behind an SSE body.
struct SseState<F> {
    follower: TurnFollower,
    frames: F,
    /// Stops the turn if the body is dropped before the turn completed (when armed).
    guard: Option<StopOnDrop>,
    /// Frames made but not yet sent.
    out: VecDeque<Bytes>,
    /// Nothing more will be made.
    finished: bool,
}

/// An SSE body that follows the turn to its end; `frames` says what each event becomes.
/// Dropping the body (the client went away) drops `guard`.
pub fn sse_body<F: SseFrames + 'static>(
    follower: TurnFollower,
    frames: F,
    guard: Option<StopOnDrop>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut frames = frames;
    let state = SseState {
        follower,
        out: frames.start().into(),
        frames,
        guard,
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(frame) = state.out.pop_front() {
                return Some((Ok(frame), state));
            }
            if state.finished {
                return None;
            }
            match state.follower.next_within(KEEPALIVE_INTERVAL).await {
                Ok(None) => return Some((Ok(Bytes::from_static(KEEPALIVE)), state)),
                Ok(Some(Some(event))) => {
                    if is_completion(&event) {
                        if let Some(guard) = state.guard.as_mut() {
                            guard.disarm();
                        }
                    }
                    let frames = state.frames.event(&event);
                    state.out.extend(frames);
                }
                Ok(Some(None)) => {
                    state.finished = true;
                    let frames = state.frames.end();
                    state.out.extend(frames);
                }
                Err(e) => {
                    state.finished = true;
                    let frames = state.frames.failure(e);
                    state.out.extend(frames);
                }
            }
        }
    })
}

/// One SSE frame: `data: <json>` (and `event: <name>` when named).
pub fn sse_frame(event: Option<&str>, data: &Value) -> Bytes {
    let mut frame = String::new();
    if let Some(name) = event {
        frame.push_str("event: ");
        frame.push_str(name);
        frame.push('\n');
    }
    frame.push_str("data: ");
    frame.push_str(&data.to_string());
    frame.push_str("\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_counts_read_either_naming() {
        let echo = json!({"input_tokens": 3, "output_tokens": 4});
        let openai = json!({"prompt_tokens": 5, "completion_tokens": 6});
        assert_eq!(token_counts(Some(&echo)), (3, 4));
        assert_eq!(token_counts(Some(&openai)), (5, 6));
        assert_eq!(token_counts(None), (0, 0));
    }
}
