//! Configuration: defaults, then a TOML file, then `TROUPE_*` environment overrides
//! (`TROUPE_BIND`, `TROUPE_DATA_DIR`, nested keys with `__`: `TROUPE_RUNTIME__MAX_QUEUE=50`).

mod cluster;

pub use cluster::ClusterConfig;

use crate::providers::{default_provider_configs, ProviderConfig};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_actors::store::Durability;
use troupe_actors::usage::{ProviderPrices, UsageSettings};
use troupe_actors::NatsOptions;
use troupe_actors::{Budget, FailurePolicy, Settings};

/// The whole configuration of `troupe serve`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// Where the sled store lives.
    pub data_dir: PathBuf,
    /// Which store and how durable (`store = "sled"` or `[store] kind, durability`).
    pub store: StoreConfig,
    /// Bearer tokens.
    pub auth: AuthConfig,
    /// Where projects may point.
    pub projects: ProjectsConfig,
    /// Request and frame size limits.
    pub limits: LimitsConfig,
    /// WebSocket heartbeat and buffers.
    pub websocket: WebSocketConfig,
    /// HTTP details: SSE keep-alives and the readiness probe's timeout.
    pub http: HttpConfig,
    /// Runtime tunables.
    pub runtime: RuntimeConfig,
    /// How long sessions are kept before the sweeper removes them.
    pub retention: RetentionConfig,
    /// The OpenAI-compatible routes.
    pub openai: OpenAiConfig,
    /// The AG-UI route.
    pub agui: AguiConfig,
    /// Seconds running attempts get to finish at shutdown before they are interrupted.
    pub shutdown_grace_secs: u64,
    /// Providers by name (`[providers.NAME]` tables); empty means `echo` plus every CLI on
    /// `PATH` (see `docs/OPERATIONS.md`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Budgets for every session and every owner's day (`[budgets]`).
    pub budgets: BudgetsConfig,
    /// This node among the nodes sharing a NATS store (`[cluster]`).
    pub cluster: ClusterConfig,
}

/// Global budgets; providers and tokens may set their own (`docs/OPERATIONS.md`, "Usage and
/// budgets").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Every session's budget, unless the session has its own.
    pub session: Budget,
    /// Every owner's daily cap (UTC day), unless `owners` sets the owner's own.
    pub owner_daily: Budget,
    /// Per owner (the `owner` of a token), a daily cap that replaces `owner_daily`.
    pub owners: BTreeMap<String, Budget>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:7878".into(),
            data_dir: PathBuf::from("./troupe-data"),
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            projects: ProjectsConfig::default(),
            limits: LimitsConfig::default(),
            websocket: WebSocketConfig::default(),
            http: HttpConfig::default(),
            runtime: RuntimeConfig::default(),
            retention: RetentionConfig::default(),
            openai: OpenAiConfig::default(),
            agui: AguiConfig::default(),
            shutdown_grace_secs: 10,
            providers: BTreeMap::new(),
            budgets: BudgetsConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Which store backs the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The embedded sled database in `data_dir`.
    #[default]
    Sled,
    /// In memory; for tests and demos.
    Memory,
    /// NATS JetStream at `url`, shared by several nodes (`docs/OPERATIONS.md`, "Several
    /// nodes").
    Nats,
}

/// The store: which one, and when a write counts as done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoreSetting")]
pub struct StoreConfig {
    /// `sled` (durable, the default), `memory` (nothing survives a restart) or `nats`.
    pub kind: StoreKind,
    /// `flushed` (the default): an event is shown and a write acknowledged only once it is on
    /// disk. `relaxed`: once applied; a crash can lose and rewrite the last ~200 ms. (NATS:
    /// always once JetStream acknowledged it.)
    pub durability: Durability,
    /// NATS: the server(s), `nats://host:port`, comma-separated for several.
    pub url: String,
    /// NATS: a token to authenticate with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// NATS: a `.creds` file to authenticate with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// NATS: the JetStream stream that holds everything (every node names the same one).
    pub stream: String,
    /// NATS: the prefix of the stream's subjects.
    pub subject_prefix: String,
    /// NATS: the stream's replicas (1 on one server, 3 on a three-server cluster).
    pub replicas: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let nats = NatsOptions::default();
        StoreConfig {
            kind: StoreKind::default(),
            durability: Durability::default(),
            url: nats.url,
            token: None,
            credentials: None,
            stream: nats.stream,
            subject_prefix: nats.subject_prefix,
            replicas: nats.replicas,
        }
    }
}

impl StoreConfig {
    /// The NATS store's options.
    pub fn nats_options(&self) -> NatsOptions {
        NatsOptions {
            url: self.url.clone(),
            token: self.token.as_ref().map(|t| t.0.clone()),
            credentials: self.credentials.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
        }
    }

    /// `--store`: `sled`, `memory`, or a NATS URL (`nats://127.0.0.1:4222`).
    pub fn apply_flag(&mut self, store: &str) -> Result<(), ConfigError> {
        match store {
            "sled" => self.kind = StoreKind::Sled,
            "memory" => self.kind = StoreKind::Memory,
            url if url.starts_with("nats://") || url.starts_with("tls://") => {
                self.kind = StoreKind::Nats;
                self.url = url.to_string();
            }
            other => return Err(ConfigError::Store(other.to_string())),
        }
        Ok(())
    }
}

/// `store` as written: a kind alone (`store = "memory"`) or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSetting {
    /// Just the kind, default durability.
    Kind(StoreKind),
    /// The table.
    Table(StoreTable),
}

/// The `[store]` table; what it leaves out has its default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    #[serde(default)]
    kind: StoreKind,
    #[serde(default)]
    durability: Durability,
    url: Option<String>,
    token: Option<Secret>,
    credentials: Option<PathBuf>,
    stream: Option<String>,
    subject_prefix: Option<String>,
    replicas: Option<usize>,
}

impl From<StoreSetting> for StoreConfig {
    fn from(setting: StoreSetting) -> Self {
        let defaults = StoreConfig::default();
        match setting {
            StoreSetting::Kind(kind) => StoreConfig { kind, ..defaults },
            StoreSetting::Table(t) => StoreConfig {
                kind: t.kind,
                durability: t.durability,
                url: t.url.unwrap_or(defaults.url),
                token: t.token,
                credentials: t.credentials,
                stream: t.stream.unwrap_or(defaults.stream),
                subject_prefix: t.subject_prefix.unwrap_or(defaults.subject_prefix),
                replicas: t.replicas.unwrap_or(defaults.replicas),
            },
        }
    }
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One bearer token and who it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token.
    pub token: Secret,
    /// The owner it authenticates as.
    pub owner: String,
    /// Whether it may use the admin endpoints.
    #[serde(default)]
    pub admin: bool,
}

/// Authentication: with no tokens, one implicit owner `local` (loopback only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
}

/// Project paths: with roots configured, a project must resolve under one of them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectsConfig {
    /// Allowed roots; empty means projects are free labels, unchecked.
    pub roots: Vec<PathBuf>,
}

/// Size limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body (413 `payload_too_large` beyond).
    pub body_bytes: usize,
    /// Largest WebSocket frame (close 1009 beyond).
    pub ws_frame_bytes: usize,
    /// Outbound frames a WebSocket may have unsent before it is closed 1013 `lagged`.
    pub ws_outbound_buffer: usize,
    /// Largest session export `POST /api/v1/sessions/import` takes (413 beyond).
    pub import_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes: 1024 * 1024,
            ws_frame_bytes: 1024 * 1024,
            ws_outbound_buffer: 4096,
            import_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The OpenAI-compatible routes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// What a request naming another model (or provider) for an existing session does.
    pub model_switch: ModelSwitch,
}

/// The AG-UI route (`POST /api/v1/agui`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AguiConfig {
    /// The provider (or `provider/model`) of a session a new `threadId` creates, when the
    /// request's `forwardedProps.model` names none.
    pub model: String,
}

impl Default for AguiConfig {
    fn default() -> Self {
        AguiConfig {
            model: "echo".into(),
        }
    }
}

/// What an OpenAI request naming another model for an existing session does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSwitch {
    /// Switch the session to it, as `PATCH /api/v1/sessions/{id} {model, provider}` does
    /// (announced with `session.updated`), when the provider exists.
    #[default]
    Switch,
    /// Refuse another provider with 400 (`param: "model"`) and keep the session's model.
    Refuse,
}

/// WebSocket heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The server pings this often.
    pub heartbeat_interval_ms: u64,
    /// A peer silent this long is dropped.
    pub client_timeout_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            heartbeat_interval_ms: 30_000,
            client_timeout_ms: 60_000,
        }
    }
}

/// HTTP details that are not size limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// An idle SSE stream gets a comment this often, so proxies and clients keep it open.
    pub sse_keepalive_ms: u64,
    /// How long `/readyz` waits for the store write and the registry round trip, each.
    pub ready_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            sse_keepalive_ms: 15_000,
            ready_timeout_ms: 2_000,
        }
    }
}

/// Runtime tunables (see `troupe_actors::Settings`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Idle seconds before a session actor is passivated.
    pub idle_passivate_secs: f64,
    /// Events each live session keeps in memory for replay.
    pub replay_tail: usize,
    /// Queued turns per session.
    pub max_queue: usize,
    /// Unread events per subscriber before it is dropped as lagging.
    pub subscriber_buffer: usize,
    /// Transient failures in a row before `retries_exhausted`.
    pub max_consecutive_restarts: u32,
    /// First retry delay.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Wall clock of one attempt.
    pub attempt_timeout_secs: f64,
    /// Longest provider silence.
    pub output_idle_timeout_secs: f64,
    /// Attempts running at once.
    pub max_concurrent_runs: usize,
    /// Sessions running longer than this at startup go `failed`.
    pub stale_running_hours: f64,
    /// `hold` or `abandon` the queue of a failed session.
    pub on_failure: OnFailure,
    /// Worker threads session actors are spread over (default: the available cores; 0 runs
    /// them on the server's main thread).
    pub workers: usize,
}

/// What happens to the queue of a failed session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Keep the queued turns until `reset` or `resume`.
    #[default]
    Hold,
    /// End them `abandoned`.
    Abandon,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let s = Settings::default();
        RuntimeConfig {
            idle_passivate_secs: s.idle_passivate.as_secs_f64(),
            replay_tail: s.replay_tail,
            max_queue: s.max_queue,
            subscriber_buffer: s.subscriber_buffer,
            max_consecutive_restarts: s.max_consecutive_restarts,
            retry_base_ms: s.retry_base.as_millis() as u64,
            retry_max_ms: s.retry_max.as_millis() as u64,
            attempt_timeout_secs: s.attempt_timeout.as_secs_f64(),
            output_idle_timeout_secs: s.output_idle_timeout.as_secs_f64(),
            max_concurrent_runs: s.max_concurrent_runs,
            stale_running_hours: s.stale_running.as_secs_f64() / 3600.0,
            on_failure: OnFailure::Hold,
            workers: s.workers,
        }
    }
}

impl RuntimeConfig {
    /// The runtime's settings; `fallbacks` come from the providers' `fallback` keys.
    pub fn settings(&self) -> Settings {
        Settings {
            idle_passivate: Duration::from_secs_f64(self.idle_passivate_secs.max(0.0)),
            replay_tail: self.replay_tail.max(1),
            max_queue: self.max_queue,
            subscriber_buffer: self.subscriber_buffer.max(1),
            max_consecutive_restarts: self.max_consecutive_restarts,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            attempt_timeout: Duration::from_secs_f64(self.attempt_timeout_secs.max(0.001)),
            output_idle_timeout: Duration::from_secs_f64(self.output_idle_timeout_secs.max(0.001)),
            max_concurrent_runs: self.max_concurrent_runs.max(1),
            stale_running: Duration::from_secs_f64(self.stale_running_hours.max(0.0) * 3600.0),
            on_failure: match self.on_failure {
                OnFailure::Hold => FailurePolicy::Hold,
                OnFailure::Abandon => FailurePolicy::Abandon,
            },
            workers: self.workers,
            ..Settings::default()
        }
    }
}

/// An age after which sessions are removed: seconds, or `"never"`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Age {
    /// Seconds (0 = at the first sweep).
    Secs(f64),
    /// Kept forever.
    Never(Never),
}

/// The word `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Never {
    /// Kept forever.
    Never,
}

impl Age {
    fn duration(self) -> Option<Duration> {
        match self {
            Age::Secs(secs) => Some(Duration::from_secs_f64(secs.max(0.0))),
            Age::Never(_) => None,
        }
    }
}

/// Retention: which sessions the background sweeper removes from the store, after how long
/// since their last change (see `troupe_actors::retention`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Hidden one-off sessions (OpenAI requests without a key): default 24 h.
    pub hidden_sessions: Age,
    /// Archived sessions: kept forever unless set.
    pub archived_sessions: Age,
    /// Any other session with no change for this long: kept forever unless set.
    pub idle_sessions: Age,
    /// How often the sweeper runs.
    pub sweep_interval_secs: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = troupe_actors::retention::Retention::default();
        let age = |d: Option<Duration>| {
            d.map_or(Age::Never(Never::Never), |d| Age::Secs(d.as_secs_f64()))
        };
        RetentionConfig {
            hidden_sessions: age(r.hidden),
            archived_sessions: age(r.archived),
            idle_sessions: age(r.idle),
            sweep_interval_secs: r.sweep_interval.as_secs_f64(),
        }
    }
}

impl RetentionConfig {
    /// The runtime's retention settings.
    pub fn retention(&self) -> troupe_actors::retention::Retention {
        troupe_actors::retention::Retention {
            hidden: self.hidden_sessions.duration(),
            archived: self.archived_sessions.duration(),
            idle: self.idle_sessions.duration(),
            sweep_interval: Duration::from_secs_f64(self.sweep_interval_secs.max(0.01)),
            ..troupe_actors::retention::Retention::default()
        }
    }
}

/// Why configuration could not be loaded or is unsafe.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable did not parse.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The bind address is not an address.
    #[error("bind address `{0}` is not host:port")]
    Bind(String),
    /// Non-loopback bind with no tokens.
    #[error("refusing to bind {0}: not a loopback address and no auth tokens are configured")]
    Unprotected(SocketAddr),
    /// `--store` names no store.
    #[error("--store `{0}`: expected sled, memory or a NATS URL (nats://host:port)")]
    Store(String),
    /// `[cluster]` has a value that cannot work.
    #[error("[cluster] {0}")]
    Cluster(String),
}

impl Config {
    /// The providers to run: the configured ones, or the defaults when none are configured.
    pub fn provider_configs(&self) -> BTreeMap<String, ProviderConfig> {
        if self.providers.is_empty() {
            default_provider_configs()
        } else {
            self.providers.clone()
        }
    }

    /// Prices and budgets for the runtime: `[budgets]` and each provider's `budget`, `price`
    /// and `model_prices`.
    pub fn usage_settings(&self, providers: &BTreeMap<String, ProviderConfig>) -> UsageSettings {
        let mut usage = UsageSettings {
            session_budget: self.budgets.session,
            owner_daily: self.budgets.owner_daily,
            ..UsageSettings::default()
        };
        for (name, provider) in providers {
            if let Some(budget) = provider.budget {
                usage.provider_budgets.insert(name.clone(), budget);
            }
            if provider.price.is_some() || !provider.model_prices.is_empty() {
                usage.prices.insert(
                    name.clone(),
                    ProviderPrices {
                        default: provider.price,
                        models: provider
                            .model_prices
                            .iter()
                            .map(|(m, p)| (m.clone(), *p))
                            .collect(),
                    },
                );
            }
        }
        usage.owner_daily_by_owner = self
            .budgets
            .owners
            .iter()
            .map(|(owner, budget)| (owner.clone(), *budget))
            .collect();
        usage
    }

    /// Defaults, then `file` (if given), then `TROUPE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("TROUPE_").split("__"));
        figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// The bind address, refusing a non-loopback one without tokens.
    pub fn checked_bind(&self) -> Result<SocketAddr, ConfigError> {
        let addr: SocketAddr = self
            .bind
            .parse()
            .map_err(|_| ConfigError::Bind(self.bind.clone()))?;
        if !addr.ip().is_loopback() && self.auth.tokens.is_empty() {
            return Err(ConfigError::Unprotected(addr));
        }
        Ok(addr)
    }
}
