//! A [`Provider`] for any agent CLI that prints line-delimited JSON: one child process per attempt
//! on the shared [`process`](super::process) runner. What differs between agents (argv, stdin
//! framing, line format, exit codes) is a [`CliDialect`].

use super::classify::{classify, redact, truncate};
use super::process::{
    exit_code, resolve_program, OutputLine, ProcessSpec, RunningProcess, SpawnError,
    DEFAULT_EXIT_GRACE, DEFAULT_KILL_GRACE,
};
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use troupe_actors::{
    AttemptRequest, Capabilities, FailureClass, ProcessLedger, Provider, ProviderError,
    ProviderEvent, ProviderRun,
};

/// How much non-JSON stdout is kept for error messages.
const NOISE_TAIL_BYTES: usize = 4096;

/// Events buffered between the child's task and the session.
const EVENT_BUFFER: usize = 256;

/// How long to wait for the stderr reader to drain after the group is gone.
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// What differs between agent CLIs.
pub trait CliDialect: Send + Sync + 'static {
    /// The provider kind for listings (`claude-cli`, …).
    fn kind(&self) -> &'static str;

    /// The executable looked up on `PATH` when none is configured.
    fn default_command(&self) -> &'static str;

    /// Whether this agent can take further user messages on stdin while it runs.
    fn can_steer(&self) -> bool {
        false
    }

    /// Whether this agent can resume a conversation as a new one (a forked session).
    fn can_fork(&self) -> bool {
        false
    }

    /// The argument vector for one attempt; `extra` are the configured arguments, placed where
    /// this CLI accepts options.
    fn args(
        &self,
        request: &AttemptRequest,
        model: Option<&str>,
        steer: bool,
        extra: &[String],
    ) -> Vec<String>;

    /// The bytes that carry one user message on stdin.
    fn user_input(&self, text: &str, steer: bool) -> Vec<u8> {
        let _ = steer;
        text.as_bytes().to_vec()
    }

    /// A fresh line parser for one attempt.
    fn parser(&self) -> Box<dyn LineParser>;

    /// The arguments that carry the provider's trust and sandbox settings, placed before the
    /// configured ones; `Err` says which setting this CLI cannot honour.
    fn policy_args(&self, trust_project: bool, sandbox: Option<SandboxMode>) -> PolicyArgs {
        let _ = trust_project;
        match sandbox {
            None => Ok(Vec::new()),
            Some(mode) => Err(format!(
                "{} has no sandbox setting (`sandbox = \"{}\"`)",
                self.kind(),
                mode.as_str()
            )),
        }
    }
}

/// The flags of a trust and sandbox setting, or why the CLI cannot honour it.
pub type PolicyArgs = Result<Vec<String>, String>;

/// How far an agent may act on the machine, mapped by each dialect onto its CLI's own setting
/// (Codex `--sandbox`, Gemini CLI and Claude Code approval modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Reads files and runs read-only tools; no edits, no commands that change anything.
    ReadOnly,
    /// Edits files inside the project; commands stay confined where the CLI can confine them.
    WorkspaceWrite,
    /// No confinement: every tool, every command, every path.
    FullAccess,
}

impl SandboxMode {
    /// The mode as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::WorkspaceWrite => "workspace-write",
            SandboxMode::FullAccess => "full-access",
        }
    }
}

/// How the process ended, for the parser's last word.
#[derive(Debug, Default)]
pub struct ProcessExit {
    /// Exit code (`128 + signal` for a death by signal); `None` when it had to be killed.
    pub code: Option<i32>,
    /// The tail of stderr.
    pub stderr: String,
    /// The tail of stdout lines that were not JSON.
    pub noise: String,
}

impl ProcessExit {
    /// The text most likely to explain a failure.
    pub fn explanation(&self) -> String {
        let text = if self.stderr.is_empty() {
            &self.noise
        } else {
            &self.stderr
        };
        match self.code {
            Some(code) if text.is_empty() => format!("exited with code {code} and no result"),
            Some(code) => format!("exited with code {code} and no result: {text}"),
            None => format!("killed after it stopped answering: {text}"),
        }
    }

    /// The default failure for a process that ended without a result: classified on its
    /// output when that names a known cause, else a transient crash.
    pub fn crash(&self) -> ProviderError {
        let text = self.explanation();
        let mut error = classify(None, &format!("{}\n{}", self.stderr, self.noise));
        if error.code == "provider_error" {
            error = ProviderError::transient("provider_crashed", text);
        } else {
            error.message = truncate(&text);
        }
        error.with_exit_code(self.code)
    }
}

/// Turns an agent's JSON lines into normalized events.
pub trait LineParser: Send + Sync {
    /// Handles one JSON line, pushing the events it means onto `out`. A `Done` or `Failed` ends
    /// the answer to the current user message.
    fn on_line(&mut self, line: Value, out: &mut Vec<ProviderEvent>);

    /// The last word once the process ended: `result` is the first `Done`/`Failed` the lines
    /// produced (if any); the default adds the exit code, or reports a crash when there was none.
    fn finish(&mut self, result: Option<ProviderEvent>, exit: &ProcessExit) -> ProviderEvent {
        with_exit_code(result, exit)
    }
}

/// Adds the exit code to a result, or makes a crash of its absence.
pub fn with_exit_code(result: Option<ProviderEvent>, exit: &ProcessExit) -> ProviderEvent {
    match result {
        Some(ProviderEvent::Done(mut completion)) => {
            completion.exit_code = completion.exit_code.or(exit.code);
            ProviderEvent::Done(completion)
        }
        Some(ProviderEvent::Failed(mut error)) => {
            error.exit_code = error.exit_code.or(exit.code);
            ProviderEvent::Failed(error)
        }
        Some(other) => other,
        None => ProviderEvent::Failed(exit.crash()),
    }
}

/// Settings of one configured CLI provider.
#[derive(Clone, Debug)]
pub struct CliSettings {
    /// The executable (a name looked up on `PATH`, or a path).
    pub command: String,
    /// Extra arguments appended after the dialect's own.
    pub args: Vec<String>,
    /// Variables set for the child on top of the allow-listed environment.
    pub env: BTreeMap<String, String>,
    /// Names of variables copied from Troupe's environment (API keys); their values are
    /// redacted from error messages.
    pub pass_env: Vec<String>,
    /// The default model.
    pub model: Option<String>,
    /// Keep the process open for steered messages, when the dialect can.
    pub steer: bool,
    /// Tell the CLI to trust the session's working directory (Gemini CLI `--skip-trust`, Codex
    /// `--skip-git-repo-check`); without it those CLIs refuse folders they were never shown.
    pub trust_project: bool,
    /// The confinement asked of the CLI; `None` leaves the CLI's own default.
    pub sandbox: Option<SandboxMode>,
    /// Working directory for sessions without a project directory.
    pub working_dir: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long a process may take to exit after its result.
    pub exit_grace: Duration,
}

impl CliSettings {
    /// Defaults for `command`.
    pub fn new(command: impl Into<String>) -> Self {
        CliSettings {
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            model: None,
            steer: true,
            trust_project: true,
            sandbox: None,
            working_dir: None,
            kill_grace: DEFAULT_KILL_GRACE,
            exit_grace: DEFAULT_EXIT_GRACE,
        }
    }
}

/// An agent CLI as a [`Provider`].
#[derive(Clone)]
pub struct CliProvider {
    /// What this agent's argv and output look like.
    dialect: Arc<dyn CliDialect>,
    /// How it is configured.
    settings: CliSettings,
}

impl CliProvider {
    /// A provider for `dialect` with `settings`.
    pub fn new(dialect: impl CliDialect, settings: CliSettings) -> Self {
        CliProvider {
            dialect: Arc::new(dialect),
            settings,
        }
    }

    /// Whether attempts keep stdin open for steered messages.
    fn steers(&self) -> bool {
        self.settings.steer && self.dialect.can_steer()
    }

    fn program(&self) -> Option<PathBuf> {
        resolve_program(
            &self.settings.command,
            self.settings.env.get("PATH").map(String::as_str),
        )
    }

    /// The session's project when it is a directory, else the configured working directory.
    fn working_dir(&self, request: &AttemptRequest) -> Option<PathBuf> {
        match request.project.as_deref().map(Path::new) {
            Some(dir) if dir.is_dir() => Some(dir.to_path_buf()),
            Some(label) => {
                log::debug!(
                    "session {} turn {}: project {} is not a directory; using the default",
                    request.session_id,
                    request.turn_id,
                    label.display()
                );
                self.settings.working_dir.clone()
            }
            None => self.settings.working_dir.clone(),
        }
    }

    /// Values that must never appear in an error message.
    fn secrets(&self) -> Vec<String> {
        let configured = self
            .settings
            .env
            .iter()
            .filter(|(name, _)| looks_secret(name))
            .map(|(_, value)| value.clone());
        let passed = self
            .settings
            .pass_env
            .iter()
            .filter_map(|name| std::env::var(name).ok());
        configured.chain(passed).collect()
    }
}

/// Whether a variable name suggests a credential.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"]
        .iter()
        .any(|w| upper.contains(w))
}

impl Provider for CliProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            steer: self.steers(),
            stateless: false,
            fork: self.dialect.can_fork(),
        }
    }

    fn available(&self) -> bool {
        self.program().is_some()
    }

    fn kind(&self) -> &str {
        self.dialect.kind()
    }

    fn model(&self) -> Option<&str> {
        self.settings.model.as_deref()
    }

    fn start(&self, request: AttemptRequest) -> ProviderRun {
        let Some(program) = self.program() else {
            return ProviderRun::failed(ProviderError::terminal(
                "executable_not_found",
                format!("executable `{}` not found on PATH", self.settings.command),
            ));
        };
        let steer = self.steers();
        let model = request.model.as_deref().or(self.settings.model.as_deref());
        let policy = self
            .dialect
            .policy_args(self.settings.trust_project, self.settings.sandbox);
        let mut extra = match policy {
            Ok(flags) => flags,
            Err(message) => {
                return ProviderRun::failed(ProviderError::terminal(
                    "provider_misconfigured",
                    message,
                ))
            }
        };
        extra.extend(self.settings.args.iter().cloned());
        let args = self.dialect.args(&request, model, steer, &extra);
        let spec = ProcessSpec {
            program,
            args,
            cwd: self.working_dir(&request),
            env: self.settings.env.clone(),
            pass_env: self.settings.pass_env.clone(),
        };
        // The prompt waits until the group is recorded (see `Attempt::drive`).
        let prompt = self.dialect.user_input(&request.prompt, steer);
        let process = match RunningProcess::spawn(&spec, Vec::new()) {
            Ok(process) => process,
            Err(SpawnError::NotFound(program)) => {
                return ProviderRun::failed(ProviderError::terminal(
                    "executable_not_found",
                    format!("executable `{program}` not found"),
                ))
            }
            Err(e) => {
                return ProviderRun::failed(ProviderError::transient("spawn_failed", e.to_string()))
            }
        };
        let pid = process.pid;
        log::debug!(
            "session {} turn {}: started {} (pid {pid}, attempt {})",
            request.session_id,
            request.turn_id,
            self.dialect.kind(),
            request.attempt
        );
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let (steer_tx, steer_rx) = mpsc::unbounded_channel();
        let attempt = Attempt {
            prompt,
            processes: request.processes.clone(),
            tx,
            cancel: request.cancel.clone(),
            dialect: self.dialect.clone(),
            parser: self.dialect.parser(),
            steer: steer.then_some(steer_rx),
            kill_grace: self.settings.kill_grace,
            exit_grace: self.settings.exit_grace,
            secrets: self.secrets(),
            label: format!("session {} turn {}", request.session_id, request.turn_id),
        };
        tokio::spawn(attempt.drive(process));
        ProviderRun {
            events: receiver_stream(rx),
            steer: steer.then_some(steer_tx),
            pid: Some(pid),
        }
    }
}

/// A stream over a channel's receiver.
pub(crate) fn receiver_stream(
    mut rx: mpsc::Receiver<ProviderEvent>,
) -> futures::stream::BoxStream<'static, ProviderEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// One running attempt: the task that owns the child.
struct Attempt {
    /// The first user message, written to stdin once the group is recorded.
    prompt: Vec<u8>,
    /// Where the group is recorded before the agent gets any work.
    processes: ProcessLedger,
    /// Where normalized events go; closed when the run is dropped.
    tx: mpsc::Sender<ProviderEvent>,
    /// The attempt's abort signal.
    cancel: CancellationToken,
    /// Frames steered messages.
    dialect: Arc<dyn CliDialect>,
    /// Reads the lines.
    parser: Box<dyn LineParser>,
    /// Steered messages, when the attempt takes them.
    steer: Option<mpsc::UnboundedReceiver<String>>,
    /// Between SIGTERM and SIGKILL.
    kill_grace: Duration,
    /// How long to wait for the exit after a result, or for output after the exit.
    exit_grace: Duration,
    /// Taken out of error messages.
    secrets: Vec<String>,
    /// `session … turn …`, for logs.
    label: String,
}

/// Why the reading loop stopped.
enum Stop {
    /// The process finished (or was given up on after its result); report the outcome.
    Ended,
    /// Aborted or dropped: kill quietly.
    Aborted,
}

impl Attempt {
    /// Sends one event; `false` when the attempt was aborted or the run dropped meanwhile.
    async fn emit(&self, event: ProviderEvent) -> bool {
        tokio::select! {
            sent = self.tx.send(event) => sent.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }

    async fn drive(mut self, mut process: RunningProcess) {
        let prompt = std::mem::take(&mut self.prompt);
        let stop = async {
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = self.tx.closed() => {}
            }
        };
        let recorded = process
            .record_then_prompt(&self.processes, prompt, self.kill_grace, stop)
            .await;
        if !recorded {
            process
                .group
                .terminate(&mut process.child, self.kill_grace)
                .await;
            return;
        }
        let steering = self.steer.is_some();
        // Without steering there is one message only: stdin closes after the prompt.
        let mut stdin = process.stdin.take().filter(|_| steering);
        let mut sent: u32 = 1;
        let mut answered: u32 = 0;
        let mut result: Option<ProviderEvent> = None;
        let mut noise = String::new();
        let mut exited: Option<Option<i32>> = None;
        let mut stdout_open = true;
        let mut deadline: Option<Instant> = None;
        let mut events = Vec::new();
        let stop = loop {
            if exited.is_some() && !stdout_open {
                break Stop::Ended;
            }
            if deadline.is_none() && (result.is_some() || exited.is_some()) {
                deadline = Some(Instant::now() + self.exit_grace);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break Stop::Aborted,
                _ = self.tx.closed() => break Stop::Aborted,
                Some(text) = recv_steer(&mut self.steer) => {
                    if let Some(stdin) = &stdin {
                        if stdin.send(self.dialect.user_input(&text, true)).is_ok() {
                            sent += 1;
                        }
                    }
                }
                line = process.stdout.next_line(), if stdout_open => match line {
                    Ok(Some(OutputLine::Json(value))) => {
                        if result.is_some() {
                            continue;
                        }
                        self.parser.on_line(value, &mut events);
                        for event in events.drain(..) {
                            let ends = matches!(event, ProviderEvent::Done(_) | ProviderEvent::Failed(_));
                            if result.is_some() {
                                break;
                            }
                            if ends && steering && matches!(event, ProviderEvent::Done(_)) {
                                answered += 1;
                                if !self.emit(event).await {
                                    break;
                                }
                            } else if ends {
                                // Held until the exit so the exit code rides along; a failed
                                // steering run takes no more input.
                                stdin = None;
                                result = Some(event);
                            } else if !self.emit(event).await {
                                break;
                            }
                        }
                    }
                    Ok(Some(OutputLine::Noise(text))) => {
                        log::debug!("{}: non-JSON output: {}", self.label, truncate(&text));
                        noise.push_str(&text);
                        noise.push('\n');
                        let excess = noise.len().saturating_sub(NOISE_TAIL_BYTES);
                        if excess > 0 {
                            let cut = (excess..noise.len()).find(|i| noise.is_char_boundary(*i)).unwrap_or(noise.len());
                            noise.drain(..cut);
                        }
                    }
                    Ok(Some(OutputLine::Oversized(len))) => {
                        log::warn!("{}: skipped an output line of {len} bytes", self.label);
                    }
                    Ok(None) => stdout_open = false,
                    Err(e) => {
                        log::debug!("{}: stdout read failed: {e}", self.label);
                        stdout_open = false;
                    }
                },
                status = process.child.wait(), if exited.is_none() => {
                    exited = Some(status.ok().as_ref().and_then(exit_code));
                }
                _ = sleep_until(deadline) => {
                    log::debug!("{}: gave up waiting for the process to finish", self.label);
                    break Stop::Ended;
                }
            }
        };
        drop(stdin);
        process
            .group
            .terminate(&mut process.child, self.kill_grace)
            .await;
        if matches!(stop, Stop::Aborted) {
            log::info!(
                "{}: aborted; process group {} stopped",
                self.label,
                process.pid
            );
            return;
        }
        if steering && result.is_none() && answered > 0 && answered >= sent {
            // Every message was answered; the process was only waiting for more.
            return;
        }
        let _ = tokio::time::timeout(STDERR_DRAIN, process.stderr_done()).await;
        let exit = ProcessExit {
            code: exited.flatten(),
            stderr: redact(process.stderr.text(), &self.secrets),
            noise: redact(noise, &self.secrets),
        };
        let mut last = self.parser.finish(result, &exit);
        if let ProviderEvent::Failed(error) = &mut last {
            error.message = redact(std::mem::take(&mut error.message), &self.secrets);
            log::info!("{}: failed ({:?}): {}", self.label, error.class, error.code);
            if error.class == FailureClass::Transient && error.code == "provider_crashed" {
                log::debug!("{}: {}", self.label, error.message);
            }
        }
        self.emit(last).await;
    }
}

async fn recv_steer(rx: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Text of a JSON value that is either a string or something to print as JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
