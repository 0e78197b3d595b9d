//! What every request handler shares: the runtime handle, configuration, auth and metrics.

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::HttpMetrics;
use crate::projects::ProjectPolicy;
use std::sync::Arc;
use troupe_actors::Runtime;

/// Application state, cloned into every worker (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    /// The runtime: routes hold no session state, they talk to its actors.
    pub runtime: Runtime,
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// The token table.
    pub auth: Auth,
    /// Allowed project roots.
    pub projects: ProjectPolicy,
    /// Prometheus metrics of the HTTP layer (the WebSocket route bumps its gauges too).
    pub metrics: Arc<HttpMetrics>,
}
