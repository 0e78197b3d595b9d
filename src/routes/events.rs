//! A session's event log: a page of it, or a Server-Sent Events stream (replay, then live).
//!
//! SSE frames: `id:` is the event's `seq`, `event:` its kind, `data:` the event's JSON. A client
//! resumes with the `Last-Event-ID` header (browsers send it on reconnect) or `?after_seq=`;
//! either way it gets every later event once, in order. Idle streams get a comment every
//! `http.sse_keepalive_ms`. The stream is a thin adapter of the core's `Follow` (a session
//! actor that stops is followed again). When the follow ends (lagging, the session deleted, or
//! it keeps stopping) the server sends one `event: stream.closed` frame with the reason and
//! ends the response.

use crate::error::ApiError;
use crate::extract::{OwnedSession, StreamedSession};
use crate::schema::{ErrorBodySchema, EventSchema, SseFrameSchema};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use troupe_actors::{Event, Follow};
use utoipa::{IntoParams, ToSchema};

/// The largest page of `GET /events`.
pub const MAX_EVENTS_PAGE: usize = 1000;
/// The page size of `GET /events` when `limit` is not given.
pub const DEFAULT_EVENTS_PAGE: usize = 100;

/// Paging of `GET /sessions/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with a greater seq (default 0: from the start).
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPageBody {
    /// Events in seq order.
    #[schema(value_type = Vec<EventSchema>)]
    pub events: Vec<Arc<Event>>,
    /// The session's last seq: page on while the last event's seq is below it.
    pub last_seq: u64,
}

/// Where an SSE stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Replay events with a greater seq, then stream live ones (default 0). The
    /// `Last-Event-ID` header wins over it.
    #[param(minimum = 0)]
    pub after_seq: Option<i64>,
}

/// A seq cursor as the document states it: an `int64` of at least 0 (default 0). Larger
/// numbers never reach here (they are not `int64`) and are refused like negative ones.
fn cursor(value: Option<i64>, field: &str) -> Result<u64, ApiError> {
    u64::try_from(value.unwrap_or(0)).map_err(|_| {
        ApiError::invalid_request(format!("`{field}` must be an event seq: an integer from 0"))
            .with("field", field)
    })
}

/// A page of the session's events.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/events", operation_id = "list_events", tag = "events",
    params(("id" = uuid::Uuid, Path, description = "Session id"), EventsQuery),
    responses(
        (status = 200, description = "A page", body = EventPageBody),
        (status = 400, description = "`invalid_request`", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn page(
    session: OwnedSession,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "`limit` must be between 1 and {MAX_EVENTS_PAGE}"
        ))
        .with("field", "limit"));
    }
    let page = session
        .handle
        .events(cursor(query.after_seq, "after_seq")?, limit)
        .await?;
    Ok(HttpResponse::Ok().json(EventPageBody {
        events: page.events,
        last_seq: page.last_seq,
    }))
}

/// The session's events as Server-Sent Events: the replay after the cursor, then live.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/events/stream", operation_id = "stream_events", tag = "events",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this seq (wins over `after_seq`)"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `id: <seq>`, `event: <kind>`, `data: <event JSON>`", content_type = "text/event-stream", body = SseFrameSchema),
        (status = 400, description = "`invalid_request`: a malformed cursor", body = ErrorBodySchema),
        (status = 401, description = "`unauthorized`", body = ErrorBodySchema),
        (status = 404, description = "`session_not_found`", body = ErrorBodySchema),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    state: web::Data<AppState>,
    StreamedSession(session): StreamedSession,
    req: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    // Both cursors are checked, though the header wins: a malformed one is never ignored.
    let from_query = cursor(query.after_seq, "after_seq")?;
    let after_seq = match req.headers().get("last-event-id") {
        Some(value) => {
            let seq = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok());
            cursor(Some(seq.unwrap_or(-1)), "Last-Event-ID")?
        }
        None => from_query,
    };
    let follow = session.handle.follow(after_seq).await?;
    log::debug!(
        "session {}: SSE stream after seq {after_seq}",
        session.handle.id()
    );
    let keepalive = Duration::from_millis(state.config.http.sse_keepalive_ms.max(10));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(event_stream(follow, after_seq, keepalive)))
}

/// A follow rendered as SSE frames, with keep-alive comments while idle: a greeting comment,
/// the events, then one `stream.closed` frame.
fn event_stream(
    follow: Follow,
    after_seq: u64,
    every: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let mut keepalive = interval_at(Instant::now() + every, every);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let greeting = Bytes::from(format!(
        ": session {} after seq {after_seq}; last seq {}\nretry: 1000\n\n",
        follow.session_id(),
        follow.last_seq_at_start()
    ));
    let frames = futures::stream::unfold(
        (Some(follow), keepalive),
        |(follow, mut keepalive)| async move {
            let mut follow = follow?;
            tokio::select! {
                event = follow.next() => match event {
                    Some(event) => {
                        keepalive.reset();
                        Some((Ok(frame(&event)), (Some(follow), keepalive)))
                    }
                    None => {
                        let reason = follow.end().map_or("stopped", |e| e.as_str());
                        log::debug!(
                            "session {}: SSE stream closed ({reason})",
                            follow.session_id()
                        );
                        Some((Ok(closing_frame(reason)), (None, keepalive)))
                    }
                },
                _ = keepalive.tick() => Some((
                    Ok(Bytes::from_static(b": keep-alive\n\n")),
                    (Some(follow), keepalive),
                )),
            }
        },
    );
    futures::stream::once(async move { Ok(greeting) }).chain(frames)
}

/// One SSE frame of an event. Event JSON has no raw newlines, so one `data:` line holds it.
fn frame(event: &Event) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.seq,
        event.kind(),
        event.json()
    ))
}

fn closing_frame(reason: &str) -> Bytes {
    Bytes::from(format!(
        "event: stream.closed\ndata: {{\"reason\":\"{reason}\"}}\n\n"
    ))
}

/// Registers the event routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/sessions/{id}/events").route(web::get().to(page)))
        .service(web::resource("/sessions/{id}/events/stream").route(web::get().to(stream)));
}
