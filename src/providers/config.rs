//! Provider configuration: the `[providers.NAME]` tables of the server config, turned into a
//! [`ProviderSet`], plus the defaults used without any (`echo` and every agent CLI on `PATH`).

use super::claude::ClaudeCli;
use super::cli::{CliDialect, CliProvider, CliSettings, SandboxMode};
use super::codex::CodexCli;
use super::cursor::CursorCli;
use super::gemini::GeminiCli;
use super::openai_http::{OpenAiHttp, OpenAiHttpSettings};
use super::process::{resolve_program, DEFAULT_EXIT_GRACE, DEFAULT_KILL_GRACE};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::provider::HistoryWindow;
use troupe_actors::usage::Price;
use troupe_actors::{Budget, Capabilities, EchoProvider, Provider, ProviderSet};

/// The kinds of provider Troupe can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// The scripted echo provider (tests, demos, benchmarks).
    Echo,
    /// Claude Code.
    ClaudeCli,
    /// OpenAI Codex CLI.
    CodexCli,
    /// Google Gemini CLI.
    GeminiCli,
    /// Cursor agent CLI.
    CursorCli,
    /// Any OpenAI-compatible chat-completions server.
    OpenaiHttp,
}

impl ProviderKind {
    /// The kind as written in config and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Echo => "echo",
            ProviderKind::ClaudeCli => "claude-cli",
            ProviderKind::CodexCli => "codex-cli",
            ProviderKind::GeminiCli => "gemini-cli",
            ProviderKind::CursorCli => "cursor-cli",
            ProviderKind::OpenaiHttp => "openai-http",
        }
    }

    /// The CLI kinds with the name each gets by default and its dialect's executable.
    fn default_clis() -> [(&'static str, ProviderKind, &'static str); 4] {
        [
            (
                "claude",
                ProviderKind::ClaudeCli,
                ClaudeCli.default_command(),
            ),
            ("codex", ProviderKind::CodexCli, CodexCli.default_command()),
            (
                "gemini",
                ProviderKind::GeminiCli,
                GeminiCli.default_command(),
            ),
            (
                "cursor",
                ProviderKind::CursorCli,
                CursorCli.default_command(),
            ),
        ]
    }
}

/// Time limits of one provider. Unset values take the defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// CLI: between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace_ms: Option<u64>,
    /// CLI: how long a process may take to exit after printing its result.
    pub exit_grace_ms: Option<u64>,
    /// HTTP: until the connection is up.
    pub connect_secs: Option<u64>,
    /// HTTP: until the response headers arrive.
    pub request_secs: Option<u64>,
    /// HTTP: the longest silence within a streamed answer.
    pub stream_idle_secs: Option<u64>,
}

/// One `[providers.NAME]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which implementation runs it.
    pub kind: ProviderKind,
    /// CLI: the executable, a name on `PATH` or a path (default per kind: `claude`, `codex`,
    /// `gemini`, `cursor-agent`).
    #[serde(default)]
    pub command: Option<String>,
    /// CLI: extra arguments, e.g. `["--permission-mode", "acceptEdits"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// CLI: variables set for the child on top of the allow-listed environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// CLI: names of variables copied from Troupe's environment into the child's.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// HTTP: the API root (`https://openrouter.ai/api/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The variable holding the API key. HTTP: sent as a bearer token. CLI: copied into the
    /// child's environment. The key itself never appears in config, argv, logs or events.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The default model.
    #[serde(default)]
    pub model: Option<String>,
    /// The provider that takes the queued turns of a session that failed on this one.
    #[serde(default)]
    pub fallback: Option<String>,
    /// HTTP: a system prompt sent first in every request.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// HTTP: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP: how much of a session's history each request carries (`history.max_messages`,
    /// `history.max_chars`); unset: all of it.
    #[serde(default)]
    pub history: HistoryWindow,
    /// Claude / echo: take steered messages into a running attempt (default true for Claude).
    #[serde(default)]
    pub steer: Option<bool>,
    /// CLI: tell the agent to trust the session's project directory (Gemini CLI `--skip-trust`,
    /// Codex `--skip-git-repo-check`). Default true: sessions only run in projects under the
    /// configured roots. A trusted folder's own agent settings (hooks, MCP servers, `.env`) are
    /// loaded and may run commands.
    #[serde(default)]
    pub trust_project: Option<bool>,
    /// CLI: how far the agent may act (`read-only`, `workspace-write`, `full-access`), mapped to
    /// Codex `--sandbox`, Gemini CLI `--approval-mode` and Claude Code `--permission-mode`.
    /// Unset: the CLI's own default.
    #[serde(default)]
    pub sandbox: Option<SandboxMode>,
    /// CLI: the working directory of sessions without a project directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Time limits.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// The budget of each session on this provider (the tighter of it and `budgets.session`).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Price of the default model, for a provider that reports tokens but no cost.
    #[serde(default)]
    pub price: Option<Price>,
    /// Prices of named models (a session's `model`), likewise.
    #[serde(default)]
    pub model_prices: BTreeMap<String, Price>,
}

impl ProviderConfig {
    /// A config of `kind` with every other field at its default.
    pub fn of_kind(kind: ProviderKind) -> Self {
        ProviderConfig {
            kind,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            base_url: None,
            api_key_env: None,
            model: None,
            fallback: None,
            system_prompt: None,
            headers: BTreeMap::new(),
            history: HistoryWindow::default(),
            steer: None,
            trust_project: None,
            sandbox: None,
            working_dir: None,
            timeouts: TimeoutConfig::default(),
            budget: None,
            price: None,
            model_prices: BTreeMap::new(),
        }
    }

    fn cli_settings(&self, dialect: &dyn CliDialect) -> CliSettings {
        let mut pass_env = self.pass_env.clone();
        pass_env.extend(self.api_key_env.iter().cloned());
        CliSettings {
            command: self
                .command
                .clone()
                .unwrap_or_else(|| dialect.default_command().to_string()),
            args: self.args.clone(),
            env: self.env.clone(),
            pass_env,
            model: self.model.clone(),
            steer: self.steer.unwrap_or(true),
            trust_project: self.trust_project.unwrap_or(true),
            sandbox: self.sandbox,
            working_dir: self.working_dir.clone(),
            kill_grace: self
                .timeouts
                .kill_grace_ms
                .map_or(DEFAULT_KILL_GRACE, Duration::from_millis),
            exit_grace: self
                .timeouts
                .exit_grace_ms
                .map_or(DEFAULT_EXIT_GRACE, Duration::from_millis),
        }
    }

    fn http_settings(&self, name: &str) -> Result<OpenAiHttpSettings, ProviderConfigError> {
        let base_url = self
            .base_url
            .clone()
            .ok_or_else(|| ProviderConfigError::Missing {
                provider: name.to_string(),
                field: "base_url",
            })?;
        let mut settings = OpenAiHttpSettings::new(name, base_url);
        settings.api_key_env = self.api_key_env.clone();
        settings.model = self.model.clone();
        settings.system_prompt = self.system_prompt.clone();
        settings.headers = self.headers.clone();
        settings.history = self.history;
        let t = &self.timeouts;
        if let Some(s) = t.connect_secs {
            settings.connect_timeout = Duration::from_secs(s);
        }
        if let Some(s) = t.request_secs {
            settings.request_timeout = Duration::from_secs(s);
        }
        if let Some(s) = t.stream_idle_secs {
            settings.stream_idle_timeout = Duration::from_secs(s);
        }
        Ok(settings)
    }

    /// The provider this config describes, named `name`.
    pub fn build(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderConfigError> {
        let unsupported = |message: String| ProviderConfigError::Unsupported {
            provider: name.to_string(),
            message,
        };
        let dialect: Option<&dyn CliDialect> = match self.kind {
            ProviderKind::ClaudeCli => Some(&ClaudeCli),
            ProviderKind::CodexCli => Some(&CodexCli),
            ProviderKind::GeminiCli => Some(&GeminiCli),
            ProviderKind::CursorCli => Some(&CursorCli),
            ProviderKind::Echo | ProviderKind::OpenaiHttp => None,
        };
        match dialect {
            Some(dialect) => {
                let trust = self.trust_project.unwrap_or(true);
                dialect
                    .policy_args(trust, self.sandbox)
                    .map_err(unsupported)?;
            }
            None if self.sandbox.is_some() || self.trust_project.is_some() => {
                return Err(unsupported(format!(
                    "`sandbox` and `trust_project` apply to agent CLIs, not to {}",
                    self.kind.as_str()
                )));
            }
            None => {}
        }
        if self.history.is_bounded() && self.kind != ProviderKind::OpenaiHttp {
            return Err(unsupported(format!(
                "`history` bounds what a stateless HTTP provider is sent; {} keeps its own \
                 conversation",
                self.kind.as_str()
            )));
        }
        let cli = |dialect: &dyn CliDialect| self.cli_settings(dialect);
        Ok(match self.kind {
            ProviderKind::Echo if self.steer == Some(true) => Arc::new(EchoProvider::with_steer()),
            ProviderKind::Echo => Arc::new(EchoProvider::new()),
            ProviderKind::ClaudeCli => Arc::new(CliProvider::new(ClaudeCli, cli(&ClaudeCli))),
            ProviderKind::CodexCli => Arc::new(CliProvider::new(CodexCli, cli(&CodexCli))),
            ProviderKind::GeminiCli => Arc::new(CliProvider::new(GeminiCli, cli(&GeminiCli))),
            ProviderKind::CursorCli => Arc::new(CliProvider::new(CursorCli, cli(&CursorCli))),
            ProviderKind::OpenaiHttp => {
                let provider = OpenAiHttp::new(self.http_settings(name)?).map_err(|e| {
                    ProviderConfigError::Client {
                        provider: name.to_string(),
                        message: e.to_string(),
                    }
                })?;
                Arc::new(provider)
            }
        })
    }
}

/// Why the provider configuration is unusable.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ProviderConfigError {
    /// A field the kind needs is missing.
    #[error("provider `{provider}` needs `{field}`")]
    Missing {
        /// The provider's name.
        provider: String,
        /// The missing field.
        field: &'static str,
    },
    /// A fallback names a provider that is not configured, or the provider itself.
    #[error("provider `{provider}` falls back to `{fallback}`, which is not another configured provider")]
    UnknownFallback {
        /// The provider's name.
        provider: String,
        /// The fallback it names.
        fallback: String,
    },
    /// A provider name is empty or has characters that do not fit in a URL or a model name.
    #[error("invalid provider name `{0}` (use letters, digits, `-`, `_` and `.`)")]
    InvalidName(String),
    /// A setting the provider's kind cannot honour.
    #[error("provider `{provider}`: {message}")]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// Which setting, and why.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("provider `{provider}`: {message}")]
    Client {
        /// The provider's name.
        provider: String,
        /// The cause.
        message: String,
    },
}

/// Builds every configured provider, checking names and fallbacks.
pub fn build_providers(
    configs: &BTreeMap<String, ProviderConfig>,
) -> Result<ProviderSet, ProviderConfigError> {
    let mut set = ProviderSet::new();
    for (name, config) in configs {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(ProviderConfigError::InvalidName(name.clone()));
        }
        if let Some(fallback) = &config.fallback {
            if fallback == name || !configs.contains_key(fallback) {
                return Err(ProviderConfigError::UnknownFallback {
                    provider: name.clone(),
                    fallback: fallback.clone(),
                });
            }
        }
        set.insert(name.clone(), config.build(name)?);
    }
    Ok(set)
}

/// The configuration used when none is given: `echo`, plus `claude`, `codex`, `gemini` and
/// `cursor` for each of those CLIs found on `PATH`.
pub fn default_provider_configs() -> BTreeMap<String, ProviderConfig> {
    let mut configs = BTreeMap::new();
    configs.insert(
        "echo".to_string(),
        ProviderConfig::of_kind(ProviderKind::Echo),
    );
    for (name, kind, command) in ProviderKind::default_clis() {
        if resolve_program(command, None).is_some() {
            configs.insert(name.to_string(), ProviderConfig::of_kind(kind));
        }
    }
    configs
}

/// The providers used when none are configured (see [`default_provider_configs`]).
pub fn default_providers() -> ProviderSet {
    // The defaults have valid names, no fallbacks and no HTTP client to build.
    build_providers(&default_provider_configs()).expect("the default providers are valid")
}

/// The fallback map for [`troupe_actors::Settings::fallbacks`].
pub fn fallbacks(configs: &BTreeMap<String, ProviderConfig>) -> HashMap<String, String> {
    configs
        .iter()
        .filter_map(|(name, c)| Some((name.clone(), c.fallback.clone()?)))
        .collect()
}

/// One provider as `GET /api/v1/providers` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderInfo {
    /// The configured name (what sessions and `model` fields refer to).
    pub name: String,
    /// `echo`, `claude-cli`, `codex-cli`, `gemini-cli`, `cursor-cli` or `openai-http`.
    pub kind: String,
    /// Resume, steer, stateless.
    pub capabilities: Capabilities,
    /// Whether it can run now: its executable is found, its API key is set.
    pub available: bool,
    /// The default model.
    pub model: Option<String>,
    /// Where the queued turns of a failed session go.
    pub fallback: Option<String>,
}

/// Every provider of `set`, with its fallback from `configs` where it has one.
pub fn provider_infos(
    set: &ProviderSet,
    configs: &BTreeMap<String, ProviderConfig>,
) -> Vec<ProviderInfo> {
    set.iter()
        .map(|(name, provider)| ProviderInfo {
            name: name.clone(),
            kind: provider.kind().to_string(),
            capabilities: provider.capabilities(),
            available: provider.available(),
            model: provider.model().map(str::to_string),
            fallback: configs.get(name).and_then(|c| c.fallback.clone()),
        })
        .collect()
}
