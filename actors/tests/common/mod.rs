//! Helpers shared by the runtime's behaviour tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{
    EchoProvider, Event, EventBody, NewSession, Outcome, Runtime, SessionHandle, Settings, Store,
    Subscription,
};

/// Settings with short durations for tests.
pub fn fast_settings() -> Settings {
    Settings {
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(80),
        ..Settings::default()
    }
}

/// A runtime over `store` with `echo` and the steer-capable `echo-steer`.
pub fn runtime(store: Arc<dyn Store>, settings: Settings) -> Runtime {
    Runtime::builder()
        .shared_store(store)
        .provider("echo", EchoProvider::new())
        .provider("echo-steer", EchoProvider::with_steer())
        .settings(settings)
        .start()
}

/// A new echo session of owner `local`.
pub async fn session(rt: &Runtime) -> SessionHandle {
    rt.get_or_create(NewSession {
        owner: "local".into(),
        provider: "echo".into(),
        ..NewSession::default()
    })
    .await
    .expect("create session")
    .0
}

/// Reads events until `done` says stop; fails after 10 s.
pub async fn collect_until(
    sub: &mut Subscription,
    mut done: impl FnMut(&Event) -> bool,
) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("timed out waiting for events")
            .expect("subscription closed");
        let stop = done(&next);
        out.push(next);
        if stop {
            return out;
        }
    }
}

/// Reads until `n` `turn.completed` events arrived.
pub async fn until_completed(sub: &mut Subscription, n: usize) -> Vec<Arc<Event>> {
    let mut seen = 0;
    collect_until(sub, |e| {
        if matches!(e.body, EventBody::TurnCompleted { .. }) {
            seen += 1;
        }
        seen >= n
    })
    .await
}

/// The outcomes of the `turn.completed` events, in order.
pub fn outcomes(events: &[Arc<Event>]) -> Vec<Outcome> {
    events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::TurnCompleted { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect()
}

/// Concatenated `message.delta` text.
pub fn delta_text(events: &[Arc<Event>]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Asserts seqs are 1.. consecutive.
pub fn assert_gapless(events: &[Arc<Event>], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, first + i as u64, "gap or duplicate at index {i}");
    }
}
