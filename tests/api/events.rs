//! The event log over REST: pages, and the SSE stream (resume by `Last-Event-ID` or
//! `after_seq` with no gap and no duplicate, keep-alives, clean end).

use crate::helpers::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// One SSE frame.
#[derive(Debug, Default)]
struct Frame {
    id: Option<u64>,
    event: Option<String>,
    data: Option<Value>,
    comment: bool,
}

/// Reads SSE frames off a streaming response.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> Self {
        SseReader {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next frame; `None` when the stream ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in raw.lines() {
                    if line.starts_with(':') {
                        frame.comment = true;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                return Some(frame);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("SSE frame within 10 s")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk.expect("chunk")).unwrap());
        }
    }

    /// The next event frame, skipping comments.
    async fn next_event(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next().await?;
            if frame.event.is_some() {
                return Some(frame);
            }
        }
    }
}

async fn open_stream(app: &TestApp, path: &str, last_event_id: Option<u64>) -> SseReader {
    let mut req = app.client.get(app.url(path));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.expect("SSE request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    SseReader::new(resp)
}

#[actix_rt::test]
async fn events_page_reads_the_log_in_order() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (_, turn) = app
        .send_turn(&id, json!({"content": "one two three four"}))
        .await;
    app.wait_for_outcome(&id, turn["turn_id"].as_str().unwrap())
        .await;
    let (status, body) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
    assert_eq!(status, 200, "{body}");
    let last_seq = body["last_seq"].as_u64().unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len() as u64, last_seq);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["session_id"], id.as_str());
        assert!(e["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(events[0]["kind"], "session.created");

    let (_, page) = app
        .get(&format!("/api/v1/sessions/{id}/events?after_seq=2&limit=2"))
        .await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(page["last_seq"], last_seq);
    let (_, past) = app
        .get(&format!(
            "/api/v1/sessions/{id}/events?after_seq={last_seq}"
        ))
        .await;
    assert_eq!(past["events"].as_array().unwrap().len(), 0);

    for bad in ["limit=0", "limit=1001", "after_seq=-1", "after_seq=x"] {
        let answer = app
            .get(&format!("/api/v1/sessions/{id}/events?{bad}"))
            .await;
        assert_error(&answer, 400, "invalid_request");
    }
}

#[actix_rt::test]
async fn sse_replays_then_streams_live_events() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let mut stream = open_stream(&app, &format!("/api/v1/sessions/{id}/events/stream"), None).await;
    let first = stream.next_event().await.unwrap();
    assert_eq!(first.id, Some(1));
    assert_eq!(first.event.as_deref(), Some("session.created"));
    assert_eq!(first.data.as_ref().unwrap()["seq"], 1);

    let (_, turn) = app
        .send_turn(&id, json!({"content": "live words here"}))
        .await;
    let mut expected = 2;
    loop {
        let frame = stream.next_event().await.expect("live event");
        assert_eq!(frame.id, Some(expected));
        let data = frame.data.unwrap();
        assert_eq!(data["kind"].as_str(), frame.event.as_deref());
        assert_eq!(data["seq"], expected);
        expected += 1;
        if data["kind"] == "turn.completed" {
            assert_eq!(data["turn_id"], turn["turn_id"]);
            break;
        }
    }
}

#[actix_rt::test]
async fn sse_resumes_with_last_event_id_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let path = format!("/api/v1/sessions/{id}/events/stream");
    // A turn that streams for a while: the first connection drops mid-stream.
    let (_, turn) = app
        .send_turn(
            &id,
            json!({"content": vec!["w"; 24].join(" "),
                   "options": {"script": {"chunk_delay_ms": 30}}}),
        )
        .await;
    let turn_id = turn["turn_id"].as_str().unwrap().to_string();

    let mut seen: Vec<u64> = Vec::new();
    let mut stream = open_stream(&app, &path, None).await;
    while seen.len() < 6 {
        let frame = stream.next_event().await.unwrap();
        seen.push(frame.id.unwrap());
    }
    drop(stream);

    let mut completed = false;
    let mut reconnects = 0;
    while !completed {
        reconnects += 1;
        let mut stream = open_stream(&app, &path, seen.last().copied()).await;
        // Read a few events per connection, then drop it again.
        for _ in 0..4 {
            let frame = stream.next_event().await.unwrap();
            seen.push(frame.id.unwrap());
            let data = frame.data.unwrap();
            if data["kind"] == "turn.completed" && data["turn_id"] == turn_id.as_str() {
                completed = true;
                break;
            }
        }
    }
    assert!(reconnects >= 2, "the stream was resumed more than once");
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "no gap, no duplicate");
    let log = app.all_events(&id).await;
    let completed_at = log.iter().find(|e| e["kind"] == "turn.completed").unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(*seen.last().unwrap(), completed_at);

    // `?after_seq=` resumes the same way; the header wins when both are given.
    let mut stream = open_stream(&app, &format!("{path}?after_seq=3"), None).await;
    assert_eq!(stream.next_event().await.unwrap().id, Some(4));
    let mut stream = open_stream(&app, &format!("{path}?after_seq=3"), Some(5)).await;
    assert_eq!(stream.next_event().await.unwrap().id, Some(6));
}

#[actix_rt::test]
async fn sse_rejects_a_malformed_cursor() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let path = format!("/api/v1/sessions/{id}/events/stream");
    let resp = app
        .client
        .get(app.url(&path))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    let answer = status_json(resp).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "Last-Event-ID");
    assert_error(
        &app.get(&format!("{path}?after_seq=x")).await,
        400,
        "invalid_request",
    );
}

#[actix_rt::test]
async fn sse_sends_keepalives_and_ends_cleanly_when_the_session_is_deleted() {
    let app = spawn_app_with(|c| c.http.sse_keepalive_ms = 50).await;
    let id = app.create_session().await;
    let mut stream = open_stream(&app, &format!("/api/v1/sessions/{id}/events/stream"), None).await;
    assert_eq!(stream.next_event().await.unwrap().id, Some(1));
    let keepalive = stream.next().await.unwrap();
    assert!(
        keepalive.comment && keepalive.event.is_none(),
        "{keepalive:?}"
    );

    let (status, _) = app.delete(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 204);
    let closing = stream.next_event().await.expect("closing frame");
    assert_eq!(closing.event.as_deref(), Some("stream.closed"));
    assert_eq!(closing.data.unwrap()["reason"], "deleted");
    assert!(stream.next().await.is_none(), "the response ends");
}
