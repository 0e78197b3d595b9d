//! A [`Provider`] for any Agent Client Protocol agent (JSON-RPC over stdio; Claude through
//! `claude-agent-acp`, Gemini CLI `--experimental-acp`, Codex through `codex-acp`, goose, …).
//!
//! Unlike the CLI providers, one agent process serves a session for as long as the session's
//! actor lives: it starts on the first turn, takes every later turn, and is killed with its
//! process group when the actor stops ([`Provider::end_session`]: passivation, delete, shutdown),
//! when a turn is aborted (after `session/cancel` and a grace period), or when it stops answering.
//! The ACP session id is the provider session id; a fresh process resumes it with `session/load`.
//!
//! # Layout
//! - this file: settings, the approval policy, and the provider that keeps one agent per session;
//! - `agent`: the task that owns one agent process and its ACP connection;
//! - `updates`: `session/update` notifications and stop reasons as Troupe events.

mod agent;
mod updates;

use super::process::{
    resolve_program, ProcessSpec, RunningProcess, SpawnError, DEFAULT_KILL_GRACE,
};
use agent::{AgentHandle, PromptJob};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use troupe_actors::{
    AttemptRequest, Capabilities, Provider, ProviderError, ProviderRun, SessionId,
};

/// How long a permission request waits for an answer when none is configured.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// What happens when an agent asks before running a tool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approvals {
    /// Ask the session's clients (`permission.requested`); the timeout rejects.
    #[default]
    Ask,
    /// Allow at once; no request is shown.
    Allow,
    /// Reject at once; the tool never runs.
    Deny,
}

/// The approval policy of one provider: the tool lists win over the mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApprovalPolicy {
    /// The answer for tools on neither list.
    pub mode: Approvals,
    /// Tools allowed without asking.
    pub allow_tools: Vec<String>,
    /// Tools rejected without asking (checked first).
    pub deny_tools: Vec<String>,
    /// How long a request waits before its reject option answers it.
    pub timeout: Duration,
}

impl ApprovalPolicy {
    /// What the policy says of a tool known by these names (its name, kind and title); a list
    /// entry matches a name exactly or a title's first word (`Bash`, `Write`, …).
    pub fn decide(&self, names: &[&str]) -> Approvals {
        let listed = |list: &[String]| {
            list.iter().any(|entry| {
                names.iter().any(|name| {
                    name == entry || name.split_whitespace().next() == Some(entry.as_str())
                })
            })
        };
        if listed(&self.deny_tools) {
            Approvals::Deny
        } else if listed(&self.allow_tools) {
            Approvals::Allow
        } else {
            self.mode
        }
    }
}

/// Settings of one configured ACP agent.
#[derive(Clone, Debug)]
pub struct AcpSettings {
    /// The executable (a name looked up on `PATH`, or a path).
    pub command: String,
    /// Its arguments (`--experimental-acp` for Gemini CLI).
    pub args: Vec<String>,
    /// Variables set for the agent on top of the allow-listed environment.
    pub env: BTreeMap<String, String>,
    /// Names of variables copied from Troupe's environment (API keys).
    pub pass_env: Vec<String>,
    /// Working directory for sessions without a project directory (ACP needs an absolute one).
    pub working_dir: Option<PathBuf>,
    /// Between `session/cancel` and killing the agent's process group (and SIGTERM → SIGKILL).
    pub kill_grace: Duration,
    /// What to do when the agent asks before running a tool.
    pub approvals: ApprovalPolicy,
    /// An `authenticate` method sent after `initialize` (codex-acp's `openai-api-key`), for
    /// agents that want one before `session/new`.
    pub auth_method: Option<String>,
}

impl AcpSettings {
    /// Defaults for `command`.
    pub fn new(command: impl Into<String>) -> Self {
        AcpSettings {
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            working_dir: None,
            kill_grace: DEFAULT_KILL_GRACE,
            approvals: ApprovalPolicy {
                timeout: DEFAULT_APPROVAL_TIMEOUT,
                ..ApprovalPolicy::default()
            },
            auth_method: None,
        }
    }
}

/// Any ACP agent as a [`Provider`]: one agent process per live session.
pub struct AcpProvider {
    /// How the agent is started and what the policy is.
    settings: Arc<AcpSettings>,
    /// The live sessions' agents.
    agents: Arc<Mutex<HashMap<SessionId, AgentHandle>>>,
}

impl AcpProvider {
    /// A provider for `settings`.
    pub fn new(settings: AcpSettings) -> Self {
        AcpProvider {
            settings: Arc::new(settings),
            agents: Arc::default(),
        }
    }

    fn program(&self) -> Option<PathBuf> {
        resolve_program(
            &self.settings.command,
            self.settings.env.get("PATH").map(String::as_str),
        )
    }

    /// The session's project when it is a directory, else the configured working directory,
    /// else Troupe's own.
    fn working_dir(&self, request: &AttemptRequest) -> PathBuf {
        let project = request
            .project
            .as_deref()
            .map(Path::new)
            .filter(|p| p.is_dir());
        let dir = project
            .map(Path::to_path_buf)
            .or_else(|| self.settings.working_dir.clone())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        std::fs::canonicalize(&dir).unwrap_or(dir)
    }

    /// The session's live agent, or a new one started in `cwd`.
    fn agent(&self, request: &AttemptRequest, cwd: &Path) -> Result<AgentHandle, ProviderError> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = agents.get(&request.session_id) {
            if agent.is_alive() {
                return Ok(agent.clone());
            }
        }
        let program = self.program().ok_or_else(|| {
            ProviderError::terminal(
                "executable_not_found",
                format!("executable `{}` not found on PATH", self.settings.command),
            )
        })?;
        let spec = ProcessSpec {
            program,
            args: self.settings.args.clone(),
            cwd: Some(cwd.to_path_buf()),
            env: self.settings.env.clone(),
            pass_env: self.settings.pass_env.clone(),
        };
        let process = RunningProcess::spawn(&spec, Vec::new()).map_err(|e| match e {
            SpawnError::NotFound(program) => ProviderError::terminal(
                "executable_not_found",
                format!("executable `{program}` not found"),
            ),
            e => ProviderError::transient("spawn_failed", e.to_string()),
        })?;
        log::info!(
            "session {}: started ACP agent `{}` (pid {})",
            request.session_id,
            self.settings.command,
            process.pid
        );
        let label = format!("session {} (acp)", request.session_id);
        let agent = AgentHandle::start(
            process,
            request.processes.clone(),
            self.settings.clone(),
            label,
        );
        agents.insert(request.session_id, agent.clone());
        Ok(agent)
    }
}

impl Provider for AcpProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            steer: false,
            stateless: false,
            // ACP's `session/fork` is unstable and unexercised: a fork gets a transcript.
            fork: false,
        }
    }

    fn available(&self) -> bool {
        self.program().is_some()
    }

    fn kind(&self) -> &str {
        "acp"
    }

    fn start(&self, request: AttemptRequest) -> ProviderRun {
        let cwd = self.working_dir(&request);
        let agent = match self.agent(&request, &cwd) {
            Ok(agent) => agent,
            Err(error) => return ProviderRun::failed(error),
        };
        let (events, rx) = mpsc::channel(agent::EVENT_BUFFER);
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let job = PromptJob {
            resume: request.provider_session_id.clone(),
            cwd,
            text: request.prompt.clone(),
            events,
            answers,
            cancel: request.cancel.clone(),
            label: format!("session {} turn {}", request.session_id, request.turn_id),
        };
        let pid = agent.pid();
        if let Err(job) = agent.prompt(job) {
            // The agent died between the check and now: the attempt fails and is retried on a
            // fresh one.
            drop(job);
            return ProviderRun::failed(ProviderError::transient(
                "provider_exited",
                "the ACP agent exited before it took the prompt",
            ));
        }
        ProviderRun {
            events: super::cli::receiver_stream(rx),
            steer: None,
            pid: Some(pid),
            permissions: Some(answers_tx),
        }
    }

    fn end_session(&self, session_id: SessionId) {
        let agent = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_id);
        if let Some(agent) = agent {
            log::info!(
                "session {session_id}: stopping its ACP agent (pid {})",
                agent.pid()
            );
            agent.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_win_over_the_mode_and_deny_wins_over_allow() {
        let policy = ApprovalPolicy {
            mode: Approvals::Ask,
            allow_tools: vec!["Read".into(), "edit".into()],
            deny_tools: vec!["Bash".into(), "edit".into()],
            timeout: Duration::from_secs(1),
        };
        assert_eq!(policy.decide(&["Read /etc/hosts"]), Approvals::Allow);
        assert_eq!(policy.decide(&["Bash", "execute"]), Approvals::Deny);
        assert_eq!(policy.decide(&["Write a.txt", "edit"]), Approvals::Deny);
        assert_eq!(policy.decide(&["Fetch", "fetch"]), Approvals::Ask);
    }
}
