//! Helpers shared by the runtime's behaviour tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
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
        // On the test's own arbiter: a test that reopens a store finds it closed when its
        // system is dropped. Worker arbiters have tests of their own.
        workers: 0,
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

/// A sled store in `dir` (real files; the lock is released when the last Arc drops).
pub fn sled_store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(troupe_actors::SledStore::open(dir).expect("open sled store"))
}

/// A turn whose options carry an echo script.
pub fn scripted(
    content: &str,
    mode: troupe_actors::BusyMode,
    script: serde_json::Value,
) -> troupe_actors::SendTurn {
    troupe_actors::SendTurn {
        content: content.to_string(),
        mode,
        options: serde_json::json!({ "script": script }),
        ..troupe_actors::SendTurn::default()
    }
}

/// A new session of owner `local` on `provider`.
pub async fn session_on(rt: &Runtime, provider: &str) -> SessionHandle {
    rt.get_or_create(NewSession {
        owner: "local".into(),
        provider: provider.into(),
        ..NewSession::default()
    })
    .await
    .expect("create session")
    .0
}

/// Polls `check` every few milliseconds until it holds; fails after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `f` to completion in a fresh actix `System` on this thread, then drops the system with
/// every actor in it (so a sled store it opened is closed and unlocked afterwards).
pub fn in_system<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let system = actix::System::new();
    let out = system.block_on(f());
    drop(system);
    out
}

/// The whole stored log of session `id`.
pub async fn stored_events(
    store: &Arc<dyn Store>,
    id: troupe_actors::SessionId,
) -> Vec<Arc<Event>> {
    store
        .read_events(id, 0, usize::MAX)
        .await
        .expect("read events")
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// The `turn.completed` events per turn id.
pub fn completions_per_turn(
    events: &[Arc<Event>],
) -> std::collections::HashMap<troupe_actors::TurnId, usize> {
    let mut out = std::collections::HashMap::new();
    for e in events {
        if let (EventBody::TurnCompleted { .. }, Some(turn)) = (&e.body, e.turn_id) {
            *out.entry(turn).or_insert(0) += 1;
        }
    }
    out
}

/// The kinds of the events, in order.
pub fn kinds(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

/// A subscription to the events from now on (the replay of the past is skipped).
pub async fn live_events(handle: &SessionHandle) -> Subscription {
    let mut sub = handle.subscribe(0).await.expect("subscribe");
    for _ in 0..sub.replay_len() {
        sub.next().await;
    }
    sub
}

/// A turn that streams `words` words one at a time, `delay_ms` apart: long enough to act on
/// while it runs.
pub fn slow_turn(
    label: &str,
    words: usize,
    delay_ms: u64,
    mode: troupe_actors::BusyMode,
) -> troupe_actors::SendTurn {
    let text = (0..words)
        .map(|i| format!("{label}{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    scripted(
        &text,
        mode,
        serde_json::json!({"chunk_words": 1, "chunk_delay_ms": delay_ms}),
    )
}

/// The turns in the order their attempts started (one entry per attempt).
pub fn started_order(events: &[Arc<Event>]) -> Vec<troupe_actors::TurnId> {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::TurnStarted { .. }))
        .filter_map(|e| e.turn_id)
        .collect()
}

/// The turns in the order they completed, with their outcomes.
pub fn completed_order(events: &[Arc<Event>]) -> Vec<(troupe_actors::TurnId, Outcome)> {
    events
        .iter()
        .filter_map(|e| match (&e.body, e.turn_id) {
            (EventBody::TurnCompleted { outcome, .. }, Some(turn)) => Some((turn, *outcome)),
            _ => None,
        })
        .collect()
}

/// Waits until the session's first event of `kind` for `turn` (or any turn) arrives.
pub async fn wait_for_kind(sub: &mut Subscription, kind: &str) -> Vec<Arc<Event>> {
    collect_until(sub, |e| e.kind() == kind).await
}

/// The attempt numbers of a turn's `turn.started` events.
pub fn attempts_of(events: &[Arc<Event>], turn: troupe_actors::TurnId) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.turn_id == Some(turn))
        .filter_map(|e| match e.body {
            EventBody::TurnStarted { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect()
}

/// The error of a turn's `turn.completed`.
pub fn completion_error(
    events: &[Arc<Event>],
    turn: troupe_actors::TurnId,
) -> Option<troupe_actors::ErrorInfo> {
    events.iter().find_map(|e| match &e.body {
        EventBody::TurnCompleted { error, .. } if e.turn_id == Some(turn) => error.clone(),
        _ => None,
    })
}

/// Each attempt's prompt with the history it was given.
pub type Seen = Arc<Mutex<Vec<(String, Vec<troupe_actors::provider::HistoryMessage>)>>>;

/// The echo provider, recording the prompt and history each attempt was given.
pub struct Recording {
    /// Does the answering.
    pub echo: EchoProvider,
    /// What each attempt was given.
    pub seen: Seen,
}

impl troupe_actors::Provider for Recording {
    fn capabilities(&self) -> troupe_actors::Capabilities {
        self.echo.capabilities()
    }

    fn start(&self, request: troupe_actors::AttemptRequest) -> troupe_actors::ProviderRun {
        self.seen
            .lock()
            .unwrap()
            .push((request.prompt.clone(), request.history.clone()));
        self.echo.start(request)
    }

    fn kind(&self) -> &str {
        "recording-echo"
    }
}

/// Asserts `failed` was attempted exactly once, never retried, ended `failed` with `code`, and
/// `next`, queued behind it, then ran to success.
pub fn assert_failed_once_then_next_ran(
    events: &[Arc<Event>],
    failed: troupe_actors::TurnId,
    next: troupe_actors::TurnId,
    code: &str,
) {
    assert_eq!(attempts_of(events, failed), vec![1]);
    assert!(!events
        .iter()
        .any(|e| matches!(e.body, EventBody::TurnRetrying { .. })));
    assert_eq!(
        completed_order(events),
        vec![(failed, Outcome::Failed), (next, Outcome::Success)]
    );
    assert_eq!(completion_error(events, failed).unwrap().code, code);
}
