//! Runtime settings with the defaults of DESIGN.md.

use std::collections::HashMap;
use std::time::Duration;

/// What happens to queued turns when a session fails and no fallback provider is configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Keep them queued (visible, never dropped) until `reset` or `resume`.
    #[default]
    Hold,
    /// End them `abandoned`.
    Abandon,
}

/// Tunables of the runtime. Every duration is configurable so tests run on short ones.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A session with nothing to do and no subscribers for this long is passivated.
    pub idle_passivate: Duration,
    /// How many recent events each live session keeps in memory for replay.
    pub replay_tail: usize,
    /// The most queued turns a session takes.
    pub max_queue: usize,
    /// Events a subscriber may have unread before it is dropped as lagging.
    pub subscriber_buffer: usize,
    /// Transient failures in a row before a turn fails with `retries_exhausted`.
    pub max_consecutive_restarts: u32,
    /// First retry delay; doubled per retry.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Wall clock limit of one attempt (terminal `turn_timeout`).
    pub attempt_timeout: Duration,
    /// Longest silence of a running provider (transient `provider_stalled`).
    pub output_idle_timeout: Duration,
    /// Attempts running at once across the runtime; further turns wait queued.
    pub max_concurrent_runs: usize,
    /// Sessions found running for longer than this at startup go `failed`.
    pub stale_running: Duration,
    /// Queued turns of a failed session: hold or abandon.
    pub on_failure: FailurePolicy,
    /// Provider → fallback provider for the queued turns of a failed session.
    pub fallbacks: HashMap<String, String>,
    /// Panics within [`Settings::panic_window`] beyond which a session goes `failed`.
    pub max_panics: u32,
    /// The window panics are counted in.
    pub panic_window: Duration,
    /// Worker arbiters (threads) session actors are spread over; 0 runs them on the arbiter
    /// that started the runtime. Default: the available cores.
    pub workers: usize,
    /// Which sessions the store keeps for how long (the sweeper removes the rest).
    pub retention: crate::retention::Retention,
    /// Prices and budgets (session, provider, owner per day).
    pub usage: crate::usage::UsageSettings,
    /// This node's id among the nodes sharing a store: the holder named in its leases.
    /// Unique per running process (default: the host name and 6 random hex digits).
    pub node_id: String,
    /// How long a session's lease lasts unless renewed, on a store whose leases expire
    /// ([`crate::store::Store::leases_expire`]): after a node dies, another takes its
    /// sessions over this long after its last renewal. Whole seconds (NATS counts message
    /// TTLs in seconds).
    pub lease_ttl: Duration,
    /// How a node forwards operations to the node that runs a session (several nodes).
    pub forwarding: crate::cluster::ForwardSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_passivate: Duration::from_secs(900),
            replay_tail: 5000,
            max_queue: 20,
            subscriber_buffer: 4096,
            max_consecutive_restarts: 3,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(4 * 3600),
            output_idle_timeout: Duration::from_secs(600),
            max_concurrent_runs: 256,
            stale_running: Duration::from_secs(6 * 3600),
            on_failure: FailurePolicy::Hold,
            fallbacks: HashMap::new(),
            max_panics: 5,
            panic_window: Duration::from_secs(60),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            retention: Default::default(),
            usage: Default::default(),
            node_id: default_node_id(),
            lease_ttl: Duration::from_secs(10),
            forwarding: Default::default(),
        }
    }
}

/// The host name and 6 random hex digits: unique per process, readable in the actor table.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "troupe".into());
    format!("{host}-{:06x}", fastrand::u32(..0x0100_0000))
}

impl Settings {
    /// The delay before retry number `n` (1-based): base·2ⁿ⁻¹ with ±20% jitter, capped.
    pub fn retry_delay(&self, n: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let jitter = 0.8 + fastrand::f64() * 0.4;
        exp.mul_f64(jitter).min(self.retry_max)
    }

    /// How often a live session renews its lease when it writes nothing else.
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// How long after the send of its last confirmed renewal a session stops, its lease
    /// counted lost: well before the TTL, so it has stopped before the server could let
    /// another node take the lease.
    pub fn lease_stop_after(&self) -> Duration {
        self.lease_ttl * 3 / 5
    }

    /// How often a live session checks its lease, and a node looks for sessions to take over.
    pub fn lease_check_interval(&self) -> Duration {
        (self.lease_ttl / 10).max(Duration::from_millis(20))
    }

    /// How often a live session checks whether it is idle enough to passivate.
    pub fn idle_check_interval(&self) -> Duration {
        (self.idle_passivate / 4).clamp(Duration::from_millis(5), Duration::from_secs(30))
    }
}
