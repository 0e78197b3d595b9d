//! The real providers: agent CLIs run as child processes and OpenAI-compatible HTTP servers,
//! behind [`troupe_actors::Provider`].
//!
//! # Layout
//! - [`process`]: the child-process runner every CLI shares (argv, stdin, process group,
//!   allow-listed environment, line reader, bounded stderr, kill on drop).
//! - [`proc_table`]: what `/proc` says about a process (group, start time, zombie or not).
//! - [`reaper`]: at startup, kills the agent process groups a crashed server left behind.
//! - [`cli`]: a [`Provider`](troupe_actors::Provider) for any line-JSON agent CLI, driven by a
//!   [`CliDialect`](cli::CliDialect).
//! - [`claude`], [`codex`], [`gemini`], [`cursor`]: the dialects of each agent CLI.
//! - [`openai_http`]: any OpenAI-compatible chat-completions server, streamed.
//! - [`acp`]: any Agent Client Protocol agent, one process per live session, with tool-permission
//!   approvals.
//! - [`classify`]: HTTP statuses and error texts to failure classes, shared by all.
//! - [`config`]: the `[providers.NAME]` tables, [`build_providers`] and the defaults.

pub mod acp;
pub mod classify;
pub mod claude;
pub mod cli;
pub mod codex;
pub mod config;
pub mod cursor;
pub mod gemini;
pub mod openai_http;
pub mod proc_table;
pub mod process;
pub mod reaper;

pub use acp::{AcpProvider, AcpSettings, ApprovalPolicy, Approvals};
pub use claude::ClaudeCli;
pub use cli::{CliProvider, CliSettings, SandboxMode};
pub use codex::CodexCli;
pub use config::{
    build_providers, default_provider_configs, default_providers, fallbacks, provider_infos,
    ProviderConfig, ProviderConfigError, ProviderInfo, ProviderKind, TimeoutConfig,
};
pub use cursor::CursorCli;
pub use gemini::GeminiCli;
pub use openai_http::{OpenAiHttp, OpenAiHttpSettings};
