//! Troupe: an actor-model runtime for AI-agent chat sessions, behind HTTP, WebSocket, SSE and
//! OpenAI-compatible endpoints. The runtime core lives in the `troupe-actors` crate; this crate
//! is the product around it.
//!
//! # Layout
//! - [`acp_agent`]: `troupe acp`, Troupe as an Agent Client Protocol agent for editors.
//! - [`console`]: the embedded web console served at `/`.
//! - [`config`]: layered configuration (defaults, TOML file, `TROUPE_*` environment).
//! - [`app`]: startup, the bound [`app::Application`], graceful shutdown.
//! - [`routes`]: the API's doors (REST, WebSocket, SSE, operators).
//! - [`auth`]: bearer tokens → owners; admin.
//! - [`error`]: the one API error type and its JSON body.
//! - [`projects`]: project paths under configured roots.
//! - [`providers`]: real providers (Claude Code, Codex, Gemini, Cursor CLIs; OpenAI-compatible HTTP).
//! - [`state`]: what handlers share.
//! - [`extract`]: extractors that turn bad input into error codes (JSON bodies, owned sessions).
//! - [`metrics`]: Prometheus metrics and the request-counting middleware.
//! - [`schema`]: OpenAPI schemas of the core's wire types.

#![warn(missing_docs)]

pub mod acp_agent;
pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod projects;
pub mod providers;
pub mod routes;
pub mod schema;
pub mod state;

pub use troupe_actors as actors;
