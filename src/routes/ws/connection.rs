//! One WebSocket connection. Three roles:
//! - the reader answers the client's requests one at a time, in order;
//! - one forwarding task per subscription moves events from the session (or the owner feed)
//!   into the connection's ONE bounded outbound queue;
//! - the writer owns the socket's sending side: it drains the queue, pings on the heartbeat and
//!   sends the close frame.
//!
//! Invariant: a slow client costs its session nothing but one dropped subscriber, and other
//! clients of the same session never slow down. A session's forwarder waits for room in the
//! outbound queue (events arrive in bursts: a store group commit releases many at once), and the
//! session's own bounded subscriber buffer is where falling behind is detected: the session drops
//! the subscriber, and the connection is closed 1013 `lagged`; the client resumes with
//! `after_seq`. Frames that are not a session's events (answers, the owner feed) never wait: a
//! full queue means the client is not reading, and the connection is closed `lagged` at once.

use super::frames::{self, ClientFrame, FrameError, Request, OWNER_FEED};
use super::{WsLimits, WsMetrics};
use crate::error::{ApiError, ErrorCode};
use actix_ws::{CloseCode, CloseReason, Item, Message, MessageStream, ProtocolError, Session};
use futures::Sink;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use troupe_actors::owner_feed::FeedItem;
use troupe_actors::{Follow, FollowEnd, Runtime, SendTurn, SessionHandle, SessionId};

/// Why the server ends a connection, and the close frame that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Closing {
    /// The client sent a close frame: answer with the same code.
    ClientClosed(Option<CloseReason>),
    /// The outbound queue was full or a session dropped the subscriber as lagging.
    Lagged,
    /// A frame, or a message joined from continuations, over the size limit.
    TooBig,
    /// No frame and no pong from the peer for the client timeout.
    Timeout,
    /// The peer broke the WebSocket protocol (bad framing, invalid UTF-8).
    Protocol,
    /// The socket is gone; no close frame can be sent.
    Gone,
}

impl Closing {
    /// The close frame to send, if one can be sent.
    fn close_reason(&self) -> Option<Option<CloseReason>> {
        let reason = |code: CloseCode, text: &str| {
            Some(Some(CloseReason {
                code,
                description: Some(text.to_string()),
            }))
        };
        match self {
            Closing::ClientClosed(reason) => Some(reason.clone().map(|r| CloseReason {
                code: r.code,
                description: None,
            })),
            Closing::Lagged => reason(CloseCode::Again, "lagged"),
            Closing::TooBig => reason(CloseCode::Size, "frame too large"),
            Closing::Timeout => reason(CloseCode::Away, "heartbeat timeout"),
            Closing::Protocol => reason(CloseCode::Protocol, "protocol error"),
            Closing::Gone => None,
        }
    }
}

/// The shared sending side of a connection: a bounded queue of frames and the close signal.
#[derive(Clone)]
struct Outbound {
    /// Frames for the writer; bounded by `limits.ws_outbound_buffer`.
    frames: mpsc::Sender<Message>,
    /// Set once, by whoever decides first that the connection ends.
    closing: Arc<watch::Sender<Option<Closing>>>,
    /// Whose connection this is, for logs.
    owner: Arc<str>,
}

impl Outbound {
    /// Queues a text frame; `false` when the connection is closing (the queue was full, so it
    /// is closing now as `lagged`).
    fn push(&self, frame: String) -> bool {
        self.push_message(Message::Text(frame.into()))
    }

    /// Queues a session's event, waiting for room in the queue (see the module's invariant);
    /// `false` when the connection is closing.
    async fn push_waiting(&self, frame: String) -> bool {
        if self.is_closing() {
            return false;
        }
        let mut closing = self.closing.subscribe();
        tokio::select! {
            permit = self.frames.reserve() => match permit {
                Ok(permit) => {
                    permit.send(Message::Text(frame.into()));
                    true
                }
                Err(_) => {
                    self.close(Closing::Gone);
                    false
                }
            },
            _ = closing.wait_for(Option::is_some) => false,
        }
    }

    fn push_message(&self, message: Message) -> bool {
        if self.is_closing() {
            return false;
        }
        match self.frames.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(Closing::Lagged);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.close(Closing::Gone);
                false
            }
        }
    }

    /// Ends the connection for `why`, unless it is ending already.
    fn close(&self, why: Closing) {
        let first = self.closing.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(why.clone());
            true
        });
        if !first {
            return;
        }
        let metrics = WsMetrics::global();
        match why {
            Closing::Lagged => {
                metrics.lagged.fetch_add(1, Ordering::Relaxed);
                log::info!("websocket of owner {} closed 1013: lagged", self.owner);
            }
            Closing::TooBig => {
                metrics.oversized.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "websocket of owner {} closed 1009: frame too large",
                    self.owner
                );
            }
            Closing::Timeout => {
                metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "websocket of owner {} dropped: heartbeat timeout",
                    self.owner
                );
            }
            other => log::debug!("websocket of owner {} closing: {other:?}", self.owner),
        }
    }

    fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }
}

/// Keeps the open-connections gauge true, however the connection ends.
struct ConnectionGauge;

impl ConnectionGauge {
    fn open() -> Self {
        let metrics = WsMetrics::global();
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        WsMetrics::global()
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a subscription follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// The caller's owner feed (`*`).
    Feed,
    /// One session's event log.
    Session(SessionId),
}

impl Target {
    fn parse(raw: &str) -> Result<Target, ApiError> {
        if raw == OWNER_FEED {
            Ok(Target::Feed)
        } else {
            frames::session_id(raw).map(Target::Session)
        }
    }
}

/// The reader's side of a connection: who is calling and what they follow.
struct Connection {
    /// The owner every request acts as.
    owner: Arc<str>,
    /// Where sessions live.
    runtime: Runtime,
    /// Where answers and events go.
    outbound: Outbound,
    /// The forwarding task of each subscription.
    subscriptions: HashMap<Target, JoinHandle<()>>,
}

/// Serves one upgraded connection until either side ends it.
pub(super) async fn serve(
    owner: String,
    runtime: Runtime,
    limits: WsLimits,
    session: Session,
    stream: MessageStream,
) {
    let _gauge = ConnectionGauge::open();
    let owner: Arc<str> = owner.into();
    let (frames_tx, frames_rx) = mpsc::channel(limits.outbound_buffer);
    let (closing_tx, closing_rx) = watch::channel(None);
    let outbound = Outbound {
        frames: frames_tx,
        closing: Arc::new(closing_tx),
        owner: owner.clone(),
    };
    let last_seen = Rc::new(Cell::new(Instant::now()));
    let mut connection = Connection {
        owner: owner.clone(),
        runtime,
        outbound: outbound.clone(),
        subscriptions: HashMap::new(),
    };
    let stream = stream.max_frame_size(limits.frame_bytes);
    let reader = async {
        connection
            .read(stream, limits.frame_bytes, last_seen.clone(), closing_rx)
            .await;
        connection.unsubscribe_all();
    };
    let writer = write(session, frames_rx, outbound, limits, last_seen.clone());
    futures::join!(reader, writer);
    log::info!("websocket of owner {owner} closed");
}

impl Connection {
    /// Reads frames until the client leaves or the connection is closing.
    async fn read(
        &mut self,
        mut stream: MessageStream,
        max_message: usize,
        last_seen: Rc<Cell<Instant>>,
        mut closing: watch::Receiver<Option<Closing>>,
    ) {
        let mut fragments = Fragments::new(max_message);
        loop {
            let message = tokio::select! {
                message = stream.recv() => message,
                _ = closing.wait_for(Option::is_some) => return,
            };
            last_seen.set(Instant::now());
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(ProtocolError::Overflow)) => return self.outbound.close(Closing::TooBig),
                Some(Err(e)) => {
                    log::debug!("websocket of owner {}: protocol error: {e}", self.owner);
                    return self.outbound.close(Closing::Protocol);
                }
                None => return self.outbound.close(Closing::Gone),
            };
            match message {
                Message::Text(text) => self.answer(&text).await,
                Message::Binary(_) => self.refuse_binary(),
                Message::Continuation(item) => match fragments.push(item) {
                    Ok(Some(Joined::Text(text))) => self.answer(&text).await,
                    Ok(Some(Joined::Binary)) => self.refuse_binary(),
                    Ok(None) => {}
                    Err(why) => return self.outbound.close(why),
                },
                Message::Ping(bytes) => {
                    self.outbound.push_message(Message::Pong(bytes));
                }
                Message::Pong(_) | Message::Nop => {}
                Message::Close(reason) => {
                    return self.outbound.close(Closing::ClientClosed(reason));
                }
            }
        }
    }

    fn refuse_binary(&self) {
        self.outbound.push(frames::error(
            &Value::Null,
            &ApiError::invalid_request("binary frames are not supported; send JSON text frames"),
        ));
    }

    /// Answers one text frame: an `ack`, `subscribed`, `pong` or `error` frame.
    async fn answer(&mut self, text: &str) {
        let frame = match frames::parse(text) {
            Ok(Request { id, frame }) => match self.handle(&id, frame).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return,
                Err(error) => frames::error(&id, &error),
            },
            Err(FrameError { id, error }) => frames::error(&id, &error),
        };
        self.outbound.push(frame);
    }

    /// Carries out a request; `Ok(None)` when the answer was queued already (`subscribed`).
    async fn handle(&mut self, id: &Value, frame: ClientFrame) -> Result<Option<String>, ApiError> {
        let answer = match frame {
            ClientFrame::Subscribe {
                session_id,
                after_seq,
            } => {
                match Target::parse(&session_id)? {
                    Target::Feed => self.subscribe_feed(id),
                    Target::Session(session_id) => {
                        self.subscribe(id, session_id, after_seq).await?
                    }
                }
                return Ok(None);
            }
            ClientFrame::Unsubscribe { session_id } => {
                let target = Target::parse(&session_id)?;
                let unsubscribed = match self.subscriptions.remove(&target) {
                    Some(task) => {
                        task.abort();
                        true
                    }
                    None => false,
                };
                frames::ack(
                    id,
                    json!({ "session_id": session_id, "unsubscribed": unsubscribed }),
                )
            }
            ClientFrame::Send {
                session_id,
                content,
                mode,
                client_message_id,
                options,
            } => {
                let turn = SendTurn::parse(content, mode, client_message_id, Some(options))?;
                let receipt = self.session(&session_id).await?.send(turn).await?;
                frames::ack(id, json!(receipt))
            }
            ClientFrame::Abort { session_id } => {
                frames::ack(id, json!(self.session(&session_id).await?.abort().await?))
            }
            ClientFrame::QueuePause { session_id } => {
                let session = self.session(&session_id).await?.pause().await?;
                frames::ack(id, json!({ "session": session }))
            }
            ClientFrame::QueueResume { session_id } => {
                let session = self.session(&session_id).await?.resume().await?;
                frames::ack(id, json!({ "session": session }))
            }
            ClientFrame::QueueCancel {
                session_id,
                turn_id,
            } => {
                self.session(&session_id)
                    .await?
                    .cancel_turn(turn_id)
                    .await?;
                frames::ack(id, json!({ "turn_id": turn_id, "cancelled": true }))
            }
            ClientFrame::QueuePromote {
                session_id,
                turn_id,
            } => {
                self.session(&session_id)
                    .await?
                    .promote_turn(turn_id)
                    .await?;
                frames::ack(id, json!({ "turn_id": turn_id, "promoted": true }))
            }
            ClientFrame::PermissionReply {
                session_id,
                request_id,
                option_id,
            } => {
                let resolution = self
                    .session(&session_id)
                    .await?
                    .answer_permission(&request_id, &option_id, &self.owner)
                    .await?;
                frames::ack(id, json!(resolution))
            }
            ClientFrame::Ping {} => frames::pong(id),
        };
        Ok(Some(answer))
    }

    /// The caller's session `raw`; another owner's answers `session_not_found`.
    async fn session(&self, raw: &str) -> Result<SessionHandle, ApiError> {
        let id = frames::session_id(raw)?;
        Ok(self.runtime.session_of(&self.owner, id).await?)
    }

    /// Subscribes to a session: `subscribed` first, then the replay, then live events. A
    /// subscription to the same session replaces the old one.
    async fn subscribe(
        &mut self,
        id: &Value,
        session_id: SessionId,
        after_seq: u64,
    ) -> Result<(), ApiError> {
        let handle = self.runtime.session_of(&self.owner, session_id).await?;
        if let Some(old) = self.subscriptions.remove(&Target::Session(session_id)) {
            old.abort();
        }
        let follow = handle.follow(after_seq).await?;
        let queued = self.outbound.push(frames::subscribed(
            id,
            session_id,
            follow.last_seq_at_start(),
            follow.state_at_start(),
        ));
        if !queued {
            return Ok(());
        }
        log::debug!(
            "websocket of owner {}: subscribed to session {session_id} after seq {after_seq}",
            self.owner
        );
        let task = actix_web::rt::spawn(forward_session(follow, self.outbound.clone()));
        self.subscriptions.insert(Target::Session(session_id), task);
        Ok(())
    }

    /// Subscribes to the owner feed: `subscribed`, then live lifecycle events.
    fn subscribe_feed(&mut self, id: &Value) {
        if let Some(old) = self.subscriptions.remove(&Target::Feed) {
            old.abort();
        }
        let feed = self.runtime.feed().subscribe();
        if !self.outbound.push(frames::subscribed_feed(id)) {
            return;
        }
        let task = actix_web::rt::spawn(forward_feed(
            feed,
            self.owner.clone(),
            self.outbound.clone(),
        ));
        self.subscriptions.insert(Target::Feed, task);
    }

    /// Stops every forwarding task; their subscriptions drop and their sessions forget them.
    fn unsubscribe_all(&mut self) {
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
    }
}

/// A message the client sent in fragments, joined.
enum Joined {
    /// A text message.
    Text(String),
    /// A binary message (refused, so its bytes are not kept).
    Binary,
}

/// Joins continuation frames into one message, refusing one over the size limit as it grows
/// (so a client cannot make the server buffer more than the limit).
struct Fragments {
    /// The largest message.
    max: usize,
    /// Whether a fragmented message is open, and of which kind (`true`: text).
    open: Option<bool>,
    /// Bytes of the open message so far.
    len: usize,
    /// The open text message's bytes.
    text: Vec<u8>,
}

impl Fragments {
    fn new(max: usize) -> Self {
        Fragments {
            max,
            open: None,
            len: 0,
            text: Vec::new(),
        }
    }

    /// Takes one fragment; the whole message once its last fragment arrived.
    fn push(&mut self, item: Item) -> Result<Option<Joined>, Closing> {
        let (first, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(true), bytes, false),
            Item::FirstBinary(bytes) => (Some(false), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        match (first, self.open) {
            (Some(_), Some(_)) | (None, None) => return Err(Closing::Protocol),
            (Some(text), None) => self.open = Some(text),
            (None, Some(_)) => {}
        }
        self.len += bytes.len();
        if self.len > self.max {
            return Err(Closing::TooBig);
        }
        let text = self.open == Some(true);
        if text {
            self.text.extend_from_slice(&bytes);
        }
        if !last {
            return Ok(None);
        }
        self.open = None;
        self.len = 0;
        let bytes = std::mem::take(&mut self.text);
        if !text {
            return Ok(Some(Joined::Binary));
        }
        String::from_utf8(bytes)
            .map(|text| Some(Joined::Text(text)))
            .map_err(|_| Closing::Protocol)
    }
}

/// Moves one session's events into the outbound queue, in seq order: a thin adapter of the
/// core's [`Follow`] (which resubscribes when the actor stops).
///
/// A follow that lagged closes the connection 1013 `lagged`. A deleted session, or one that
/// keeps stopping, ends the subscription with an `error` frame. A jump in seq (only possible
/// with a store that prunes old events) is announced with `truncated` before the first event
/// after it.
async fn forward_session(mut follow: Follow, outbound: Outbound) {
    let session_id = follow.session_id();
    let mut last_delivered = follow.last_seq();
    while let Some(event) = follow.next().await {
        if event.seq > last_delivered + 1
            && !outbound.push(frames::truncated(session_id, event.seq))
        {
            return;
        }
        last_delivered = event.seq;
        if !outbound.push_waiting(frames::event(&event)).await {
            return;
        }
    }
    let ended = |code, message: &str| {
        outbound.push(frames::error(
            &Value::Null,
            &ApiError::new(code, message).with("session_id", session_id.to_string()),
        ));
    };
    match follow.end() {
        Some(FollowEnd::Lagged) => {
            log::info!("session {session_id}: websocket subscriber dropped as lagging");
            outbound.close(Closing::Lagged);
        }
        Some(FollowEnd::Deleted) => ended(ErrorCode::SessionNotFound, "the session was deleted"),
        Some(FollowEnd::Failed(e)) => {
            let error = ApiError::from(e.clone()).with("session_id", session_id.to_string());
            outbound.push(frames::error(&Value::Null, &error));
        }
        None => {}
    }
}

/// Moves the owner's lifecycle events from the runtime-wide feed into the outbound queue. A
/// receiver that fell behind the feed has lost events: that is lagging too.
async fn forward_feed(
    mut feed: broadcast::Receiver<FeedItem>,
    owner: Arc<str>,
    outbound: Outbound,
) {
    loop {
        match feed.recv().await {
            Ok(item) if item.owner == owner => {
                if !outbound.push(frames::event(&item.event)) {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                log::info!("owner feed of {owner}: websocket subscriber lagged by {missed} items");
                return outbound.close(Closing::Lagged);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends queued frames and heartbeat pings until the connection is closing, then the close
/// frame. Drops the peer when it has been silent for the client timeout.
async fn write(
    mut session: Session,
    mut frames: mpsc::Receiver<Message>,
    outbound: Outbound,
    limits: WsLimits,
    last_seen: Rc<Cell<Instant>>,
) {
    let mut closing = outbound.closing.subscribe();
    let mut heartbeat = tokio::time::interval_at(
        Instant::now() + limits.heartbeat_interval,
        limits.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The one frame taken from the queue and waiting for room in the socket.
    let mut pending: Option<Message> = None;
    // A ping is owed: it goes out right after the frame being sent, ahead of the queue, so a
    // client kept busy reading a long stream is still pinged and can answer.
    let mut ping_due = false;
    loop {
        if pending.is_none() && ping_due {
            pending = Some(Message::Ping(Default::default()));
            ping_due = false;
        }
        tokio::select! {
            biased;
            _ = closing.wait_for(Option::is_some) => break,
            _ = heartbeat.tick() => {
                if last_seen.get().elapsed() >= limits.client_timeout {
                    outbound.close(Closing::Timeout);
                } else {
                    ping_due = true;
                }
            }
            ready = std::future::poll_fn(|cx| std::pin::Pin::new(&mut session).poll_ready(cx)),
                if pending.is_some() =>
            {
                let sent = ready.and_then(|()| match pending.take() {
                    Some(frame) => std::pin::Pin::new(&mut session).start_send(frame),
                    None => Ok(()),
                });
                if sent.is_err() {
                    outbound.close(Closing::Gone);
                }
            }
            frame = frames.recv(), if pending.is_none() => match frame {
                Some(frame) => pending = Some(frame),
                None => outbound.close(Closing::Gone),
            },
        }
    }
    drop(frames);
    let why = closing.borrow().clone();
    if let Some(reason) = why.and_then(|why| why.close_reason()) {
        // A peer that does not read (the lagging one) gets the client timeout to take the close
        // frame, like any silent peer; then the socket goes without it.
        if tokio::time::timeout(limits.client_timeout, session.close(reason))
            .await
            .is_err()
        {
            log::debug!(
                "websocket: the peer took no close frame in {:?}",
                limits.client_timeout
            );
        }
    }
}
