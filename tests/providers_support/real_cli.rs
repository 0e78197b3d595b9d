//! Session scenarios the real agent CLIs are put through, each against a mock model API that
//! answers `heard: <the user's messages, joined by " | ">`: every real-CLI test file runs the same
//! checks, with its own CLI and mock.

use super::{
    completed, count_kind, loopback_only_env, open_session, streamed_text, REAL_TURN_LIMIT,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use troupe::providers::cli::CliDialect;
use troupe::providers::{CliProvider, CliSettings, ProviderConfig, ProviderKind};
use troupe_actors::{BusyMode, EventBody, Outcome, Provider, ProviderEvent, Runtime};

/// A real agent CLI set up for one test: its own home, a project it was never shown, and
/// provider settings that keep it on loopback.
pub struct RealCli {
    /// `HOME` of the CLI: its settings, sessions and caches.
    pub home: TempDir,
    /// The session's project directory.
    pub project: TempDir,
    /// The provider's settings; tests adjust them before asking for the provider.
    pub settings: CliSettings,
    /// Which config kind this CLI is.
    kind: ProviderKind,
    /// Builds the provider from the settings.
    make: fn(CliSettings) -> CliProvider,
}

impl RealCli {
    /// The CLI at `command` as a provider of `kind` built by `make`, with `HOME` and `TMPDIR`
    /// in a fresh folder, loopback only, and a short kill grace.
    pub fn new(command: PathBuf, kind: ProviderKind, make: fn(CliSettings) -> CliProvider) -> Self {
        let home = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let mut settings = CliSettings::new(command.display().to_string());
        let home_dir = home.path().display().to_string();
        settings.env.insert("HOME".into(), home_dir.clone());
        settings.env.insert("TMPDIR".into(), home_dir);
        for (name, value) in loopback_only_env() {
            settings.env.insert(name.into(), value);
        }
        settings.kill_grace = Duration::from_millis(500);
        RealCli {
            home,
            project,
            settings,
            kind,
            make,
        }
    }

    /// The provider for the current settings.
    pub fn provider(&self) -> Arc<dyn Provider> {
        Arc::new((self.make)(self.settings.clone()))
    }

    /// The project directory.
    pub fn project(&self) -> &Path {
        self.project.path()
    }

    /// The provider Troupe's default config builds for this CLI found on PATH, given this test's
    /// executable, environment (key, endpoint) and model.
    pub fn default_config_provider(&self) -> Arc<dyn Provider> {
        let mut config = ProviderConfig::of_kind(self.kind);
        config.command = Some(self.settings.command.clone());
        config.env = self.settings.env.clone();
        config.model = self.settings.model.clone();
        config.build("default").expect("the default config builds")
    }
}

/// The provider of `dialect` with `settings`, for [`RealCli::new`].
pub fn cli_provider<D: CliDialect + Default>(settings: CliSettings) -> CliProvider {
    CliProvider::new(D::default(), settings)
}

/// The provider's name in the scenarios' runtimes.
const NAME: &str = "agent";

/// A runtime with `provider` and short retry delays.
fn runtime(provider: Arc<dyn Provider>) -> Runtime {
    super::runtime_with_shared(NAME, provider)
}

/// The outcome and error code of a `turn.completed`.
pub fn ending(end: &EventBody) -> (Outcome, Option<String>) {
    match end {
        EventBody::TurnCompleted { outcome, error, .. } => {
            (*outcome, error.as_ref().map(|e| e.code.clone()))
        }
        other => panic!("not a turn.completed: {other:?}"),
    }
}

/// The message of the first `error` event.
pub fn error_message(events: &[EventBody]) -> String {
    let message = events.iter().find_map(|e| match e {
        EventBody::Error { message, .. } => Some(message.clone()),
        _ => None,
    });
    message.unwrap_or_else(|| panic!("no error event in {events:#?}"))
}

/// Waits (up to the real-turn limit) until `done` holds, e.g. until a mock got a request.
pub async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + REAL_TURN_LIMIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one turn of `prompt` in a fresh session in `project`; returns its events and
/// `turn.completed`.
pub async fn one_turn(
    provider: Arc<dyn Provider>,
    project: &Path,
    prompt: &str,
) -> (Vec<EventBody>, EventBody) {
    let rt = runtime(provider);
    let session = open_session(&rt, NAME, Some(project)).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session.send_text(prompt, BusyMode::Enqueue).await.unwrap();
    completed(&mut sub).await
}

/// Two turns in one session: the second resumes the provider session the first mapped, so
/// the model hears both messages.
pub async fn two_turns_resume(provider: Arc<dyn Provider>, project: &Path) {
    let rt = runtime(provider);
    let session = open_session(&rt, NAME, Some(project)).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Say hello.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first:#?}");
    assert_eq!(streamed_text(&first), "heard: Say hello.");
    let id = session.info().await.unwrap().provider_session_id;
    assert!(
        id.is_some(),
        "the provider session is mapped after a success"
    );
    session
        .send_text("Again.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (second, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{second:#?}");
    assert_eq!(
        streamed_text(&second),
        "heard: Say hello. | Again.",
        "the resumed session carries the first turn"
    );
    assert_eq!(session.info().await.unwrap().provider_session_id, id);
}

/// One turn that fails with `code`, attempted once and never retried; returns its events.
pub async fn fails_once(provider: Arc<dyn Provider>, project: &Path, code: &str) -> Vec<EventBody> {
    let (events, end) = one_turn(provider, project, "Summarize everything.").await;
    assert_eq!(
        ending(&end),
        (Outcome::Failed, Some(code.to_string())),
        "{events:#?}"
    );
    assert_eq!(
        count_kind(&events, "turn.started"),
        1,
        "{code}: one attempt"
    );
    assert_eq!(count_kind(&events, "turn.retrying"), 0, "{code}: no retry");
    events
}

/// One turn whose first attempt fails for `reason` and is retried once, then answers; returns
/// what it streamed.
pub async fn retried_once(provider: Arc<dyn Provider>, project: &Path, reason: &str) -> String {
    let (events, end) = one_turn(provider, project, "Hello?").await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    let retried: Vec<&EventBody> = events
        .iter()
        .filter(|e| matches!(e, EventBody::TurnRetrying { .. }))
        .collect();
    assert!(
        matches!(retried[..], [EventBody::TurnRetrying { reason: r, .. }] if r == reason),
        "one retry for {reason}: {events:#?}"
    );
    streamed_text(&events)
}

/// A first turn, then `lose` removes what the CLI kept of it: the second turn's resume fails,
/// the session says it reset the provider session, starts fresh once and answers.
pub async fn lost_session_starts_fresh(
    provider: Arc<dyn Provider>,
    project: &Path,
    lose: impl FnOnce(),
) {
    let rt = runtime(provider);
    let session = open_session(&rt, NAME, Some(project)).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("First.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{first:#?}");
    let lost = session.info().await.unwrap().provider_session_id;
    lose();
    session
        .send_text("Second.", BusyMode::Enqueue)
        .await
        .unwrap();
    let (events, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert!(
        events.iter().any(|e| matches!(e,
            EventBody::SessionUpdated { reason, .. } if reason == "provider_session_reset")),
        "the reset is announced: {events:#?}"
    );
    assert_eq!(count_kind(&events, "turn.started"), 2, "fresh once");
    assert_eq!(streamed_text(&events), "heard: Second.");
    let fresh = session.info().await.unwrap().provider_session_id;
    assert!(fresh.is_some() && fresh != lost, "{fresh:?} after {lost:?}");
}

/// A turn whose model stalls is interrupted by a new message once `called` says the mock has
/// the request: the first turn ends aborted, its process is gone, the new one answers. Returns
/// what the second turn streamed.
pub async fn interrupted_mid_run(
    provider: Arc<dyn Provider>,
    project: &Path,
    called: impl Fn() -> bool,
) -> String {
    let rt = runtime(provider);
    let session = open_session(&rt, NAME, Some(project)).await;
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("Take forever.", BusyMode::Enqueue)
        .await
        .unwrap();
    wait_until("the CLI called the API", called).await;
    let pid = session.snapshot().await.unwrap().run.and_then(|r| r.pid);
    session
        .send_text("Do this instead.", BusyMode::Interrupt)
        .await
        .unwrap();
    let (first, end) = completed(&mut sub).await;
    assert_eq!(ending(&end).0, Outcome::Aborted, "{first:#?}");
    let pid = pid.expect("a running CLI has a pid");
    assert!(
        super::wait_gone(pid as i32).await,
        "the stalled CLI was stopped"
    );
    let (second, end) = completed(&mut sub).await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{second:#?}");
    streamed_text(&second)
}

/// The default config runs a turn in a project the CLI was never shown.
pub async fn default_config_answers(cli: &RealCli) {
    let (events, end) = one_turn(cli.default_config_provider(), cli.project(), "Hello?").await;
    assert_eq!(ending(&end), (Outcome::Success, None), "{events:#?}");
    assert_eq!(streamed_text(&events), "heard: Hello?");
}

/// With `trust_project` off the CLI refuses the project: terminal `untrusted_project`, attempted
/// once, naming the setting and quoting the CLI (`said`), without colour codes.
pub async fn untrusted_folder_fails_naming_the_fix(cli: &mut RealCli, said: &str) {
    cli.settings.trust_project = false;
    let events = fails_once(cli.provider(), cli.project(), "untrusted_project").await;
    let message = error_message(&events);
    assert!(
        message.contains("trust_project") && message.contains(said),
        "{message}"
    );
    assert!(!message.contains('\u{1b}'), "{message:?}");
}

/// The first tool use of a run (name, input) and its result (output, is_error).
pub fn tool_round_trip(events: &[ProviderEvent]) -> ((String, Value), (Value, bool)) {
    let used = events.iter().find_map(|e| match e {
        ProviderEvent::ToolUse { name, input, .. } => Some((name.clone(), input.clone())),
        _ => None,
    });
    let result = events.iter().find_map(|e| match e {
        ProviderEvent::ToolResult {
            output, is_error, ..
        } => Some((output.clone(), *is_error)),
        _ => None,
    });
    match (used, result) {
        (Some(used), Some(result)) => (used, result),
        _ => panic!("no tool use and result in {events:#?}"),
    }
}
