//! A session with no running turn, no queued turn and no subscribers is passivated after the
//! configured idle time; the next call reactivates it from the store with its record, queue
//! state, turns and seq intact. Open turns or a subscriber keep it live.
mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use troupe_actors::session::UpdateSession;
use troupe_actors::{BusyMode, Runtime, SessionState, Settings, TurnStatus};

const IDLE: Duration = Duration::from_millis(100);

fn settings() -> Settings {
    Settings {
        idle_passivate: IDLE,
        ..fast_settings()
    }
}

async fn live(rt: &Runtime) -> usize {
    rt.figures().await.unwrap().live
}

/// Asserts the session stays live for a few idle periods.
async fn stays_live(rt: &Runtime, why: &str) {
    let until = Instant::now() + IDLE * 3;
    while Instant::now() < until {
        assert_eq!(live(rt).await, 1, "passivated although {why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn idle_session_passivates_and_reactivates_intact() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(sled_store(dir.path()), settings());
    let handle = session(&rt).await;
    let passivations = || rt.metrics().passivations.load(Ordering::Relaxed);

    let mut sub = handle.subscribe(0).await.unwrap();
    handle
        .update(UpdateSession {
            title: Some("kept".into()),
            ..UpdateSession::default()
        })
        .await
        .unwrap();
    handle
        .send(scripted(
            "remember me",
            BusyMode::Enqueue,
            json!({"provider_session_id": "ps-1"}),
        ))
        .await
        .unwrap();
    until_completed(&mut sub, 1).await;

    // A subscriber keeps it live.
    stays_live(&rt, "a subscriber is attached").await;
    drop(sub);

    // A held queue keeps it live.
    handle.pause().await.unwrap();
    let held = handle.send_text("held", BusyMode::Enqueue).await.unwrap();
    stays_live(&rt, "a turn is queued").await;
    handle.cancel_turn(held.turn_id).await.unwrap();

    // Now it is idle: passivated within a few idle periods.
    let before = handle.info().await.unwrap();
    let turns_before = handle.turns().await.unwrap().turns;
    let idle_since = Instant::now();
    eventually(IDLE * 10, "passivation", || async { live(&rt).await == 0 }).await;
    assert!(idle_since.elapsed() >= IDLE, "not before the idle time");
    assert_eq!(passivations(), 1);
    assert_eq!(rt.figures().await.unwrap().passivated, 1);

    // The next call reactivates it with everything in place.
    let after = handle.info().await.unwrap();
    assert_eq!(live(&rt).await, 1);
    assert_eq!(after.title.as_deref(), Some("kept"));
    assert_eq!(after.provider_session_id.as_deref(), Some("ps-1"));
    assert_eq!(after.state, SessionState::Paused);
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.queue_len, 0);
    assert_eq!(handle.turns().await.unwrap().turns, turns_before);

    // The held queue still holds, and seq goes on from where it was.
    let mut sub = handle.subscribe(before.last_seq).await.unwrap();
    let queued = handle
        .send_text("after waking", BusyMode::Enqueue)
        .await
        .unwrap();
    assert_eq!(queued.status, TurnStatus::Queued);
    handle.resume().await.unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_gapless(&events, before.last_seq + 1);
    assert_eq!(delta_text(&events), "after waking");
    // It resumes the same provider session.
    assert_eq!(
        handle.info().await.unwrap().provider_session_id.as_deref(),
        Some("ps-1")
    );
    drop(sub);
    eventually(IDLE * 10, "second passivation", || async {
        live(&rt).await == 0
    })
    .await;
    assert_eq!(passivations(), 2);
}
