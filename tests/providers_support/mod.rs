//! Helpers shared by the provider tests: fake CLIs, attempt requests, event collection,
//! process checks, the mock HTTP server of the real-CLI tests and where external programs are.
#![allow(dead_code)]

#[path = "../support/external.rs"]
pub mod external;
pub mod http_mock;
pub mod real_cli;

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use http_mock::*;
#[allow(unused_imports)]
pub use real_cli::*;

use futures::StreamExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use troupe::providers::cli::CliDialect;
use troupe::providers::{CliProvider, CliSettings};
use troupe_actors::{AttemptRequest, ProviderError, ProviderEvent, ProviderRun, SessionId, TurnId};

/// Longest a whole attempt may take in a test.
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// The folder of the fake CLIs.
pub fn fake_clis() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_clis")
}

/// A fake CLI with its own scratch folder, where it records every invocation.
pub struct Fake {
    /// Holds `record.jsonl` and `pids.json`; removed at the end of the test.
    pub dir: TempDir,
}

impl Fake {
    pub fn new() -> Self {
        Fake {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn record_path(&self) -> PathBuf {
        self.dir.path().join("record.jsonl")
    }

    pub fn pids_path(&self) -> PathBuf {
        self.dir.path().join("pids.json")
    }

    /// Settings that run `tests/fake_clis/<command>` with short grace periods.
    pub fn settings(&self, command: &str) -> CliSettings {
        let mut settings = CliSettings::new(fake_clis().join(command).display().to_string());
        settings.env.insert(
            "FAKE_RECORD".into(),
            self.record_path().display().to_string(),
        );
        settings
            .env
            .insert("FAKE_PIDS".into(), self.pids_path().display().to_string());
        settings.kill_grace = Duration::from_millis(300);
        settings.exit_grace = Duration::from_secs(3);
        settings
    }

    pub fn provider(&self, dialect: impl CliDialect, command: &str) -> CliProvider {
        CliProvider::new(dialect, self.settings(command))
    }

    /// Every recorded invocation, oldest first.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record line"))
            .collect()
    }

    /// The argv of the last invocation.
    pub fn last_argv(&self) -> Vec<String> {
        let records = self.records();
        let last = records.last().expect("the fake was invoked");
        serde_json::from_value(last["argv"].clone()).expect("argv")
    }

    /// Waits until the fake wrote its pids; returns (pid, grandchild).
    pub async fn pids(&self) -> (i32, i32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.pids_path()) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    return (
                        v["pid"].as_i64().unwrap() as i32,
                        v["grandchild"].as_i64().unwrap() as i32,
                    );
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake never wrote its pids"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A first attempt of a new turn with `prompt`.
pub fn request(prompt: &str) -> AttemptRequest {
    AttemptRequest {
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        attempt: 1,
        provider_session_id: None,
        fork_session: false,
        prompt: prompt.to_string(),
        history: Vec::new(),
        project: None,
        model: None,
        options: Value::Null,
        cancel: CancellationToken::new(),
        processes: troupe_actors::ProcessLedger::untracked(),
    }
}

/// Reads the run to its end (or its first `Done`/`Failed` and then to the end).
pub async fn collect(run: ProviderRun) -> Vec<ProviderEvent> {
    tokio::time::timeout(ATTEMPT_LIMIT, run.events.collect::<Vec<_>>())
        .await
        .expect("the attempt did not finish in time")
}

/// Reads events up to and including the first `Done`/`Failed`, leaving the run open.
pub async fn until_end(run: &mut ProviderRun) -> Vec<ProviderEvent> {
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(ATTEMPT_LIMIT, run.events.next())
            .await
            .expect("no result in time")
            .expect("the stream ended without a result");
        let end = matches!(next, ProviderEvent::Done(_) | ProviderEvent::Failed(_));
        out.push(next);
        if end {
            return out;
        }
    }
}

/// The streamed text.
pub fn deltas(events: &[ProviderEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The whole messages.
pub fn messages(events: &[ProviderEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The provider session ids reported.
pub fn session_ids(events: &[ProviderEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::SessionId(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The failure the run ended with; panics when it did not fail.
pub fn failure(events: &[ProviderEvent]) -> ProviderError {
    match events.last() {
        Some(ProviderEvent::Failed(e)) => e.clone(),
        other => panic!("expected a failure, got {other:?} in {events:#?}"),
    }
}

/// Asserts the run ended with exactly one `Done` as its last event; returns the completion.
pub fn done(events: &[ProviderEvent]) -> troupe_actors::Completion {
    let ends = events
        .iter()
        .filter(|e| matches!(e, ProviderEvent::Done(_) | ProviderEvent::Failed(_)))
        .count();
    assert_eq!(ends, 1, "exactly one end: {events:#?}");
    match events.last() {
        Some(ProviderEvent::Done(c)) => c.clone(),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet, which runs nothing).
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Waits up to 5 s for `pid` to be gone.
pub async fn wait_gone(pid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if pid_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pid_gone(pid)
}

/// A 2 MiB + 17 line of `x`, as the fakes print it.
pub fn big_text() -> String {
    "x".repeat(2 * 1024 * 1024 + 17)
}

/// A runtime over a memory store with `provider` under `name` and short retry delays.
pub fn runtime_with(name: &str, provider: impl troupe_actors::Provider) -> troupe_actors::Runtime {
    runtime_with_shared(name, std::sync::Arc::new(provider))
}

/// [`runtime_with`] for a provider already shared (as the config builds them).
pub fn runtime_with_shared(
    name: &str,
    provider: std::sync::Arc<dyn troupe_actors::Provider>,
) -> troupe_actors::Runtime {
    troupe_actors::Runtime::builder()
        .store(troupe_actors::MemoryStore::new())
        .shared_provider(name, provider)
        .settings(troupe_actors::Settings {
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            ..troupe_actors::Settings::default()
        })
        .start()
}

/// Binds 127.0.0.1:0 and serves every accepted connection with `serve` on its own task; the
/// mock servers of the HTTP provider tests.
pub async fn serve_on_loopback<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    address
}

/// Longest a turn of a real agent CLI may take in a test.
pub const REAL_TURN_LIMIT: Duration = Duration::from_secs(90);

/// The events of the next turn to complete, and its `turn.completed`.
pub async fn completed(
    sub: &mut troupe_actors::Subscription,
) -> (Vec<troupe_actors::EventBody>, troupe_actors::EventBody) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(REAL_TURN_LIMIT, sub.next())
            .await
            .expect("the real CLI took too long")
            .expect("subscription closed");
        if matches!(event.body, troupe_actors::EventBody::TurnCompleted { .. }) {
            return (seen, event.body.clone());
        }
        seen.push(event.body.clone());
    }
}

/// The streamed text of `events`.
pub fn streamed_text(events: &[troupe_actors::EventBody]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            troupe_actors::EventBody::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// How many of `events` match `kind` (an event's wire name, `turn.started`, …).
pub fn count_kind(events: &[troupe_actors::EventBody], kind: &str) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

/// A session of `owner` "local" on `provider` in `project`.
pub async fn open_session(
    rt: &troupe_actors::Runtime,
    provider: &str,
    project: Option<&Path>,
) -> troupe_actors::SessionHandle {
    let (session, _) = rt
        .get_or_create(troupe_actors::NewSession {
            owner: "local".into(),
            provider: provider.into(),
            project: project.map(|p| p.display().to_string()),
            ..troupe_actors::NewSession::default()
        })
        .await
        .expect("session");
    session
}

/// Variables that keep a real CLI on loopback: every other host goes through a proxy that does
/// not exist, so a stray request fails at once instead of reaching the network.
pub fn loopback_only_env() -> Vec<(&'static str, String)> {
    let dead_proxy = "http://127.0.0.1:9".to_string();
    let local = "127.0.0.1,localhost".to_string();
    vec![
        ("HTTP_PROXY", dead_proxy.clone()),
        ("HTTPS_PROXY", dead_proxy.clone()),
        ("http_proxy", dead_proxy.clone()),
        ("https_proxy", dead_proxy),
        ("NO_PROXY", local.clone()),
        ("no_proxy", local),
    ]
}
