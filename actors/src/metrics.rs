//! Counters the runtime keeps for operators; the server renders them as Prometheus text.

use crate::record::Outcome;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Runtime-wide counters and gauges. Cheap to bump from any actor.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    /// Turns accepted.
    pub turns_accepted: AtomicU64,
    /// Turns completed, by outcome (index: [`outcome_index`]).
    pub turns_completed: [AtomicU64; 6],
    /// Attempts started.
    pub attempts: AtomicU64,
    /// Retries scheduled after transient failures.
    pub retries: AtomicU64,
    /// Events appended to logs.
    pub events_appended: AtomicU64,
    /// Subscribers dropped as lagging.
    pub lagged_drops: AtomicU64,
    /// Session actors started (activations and reactivations).
    pub activations: AtomicU64,
    /// Session actors passivated.
    pub passivations: AtomicU64,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Live session actors.
    pub live_sessions: AtomicI64,
    /// Queued turns across live sessions.
    pub queue_depth: AtomicI64,
    /// Subscribers across live sessions.
    pub subscribers: AtomicI64,
    /// Attempts running now.
    pub running_attempts: AtomicI64,
    /// Session actors restarted after a panic.
    pub panics: AtomicU64,
    /// Sessions stopped because a store write failed (fail-stop).
    pub store_failures: AtomicU64,
    /// Sessions stopped because their lease could not be renewed in time or another node
    /// took it (a subset of `store_failures`).
    pub leases_lost: AtomicU64,
    /// Sessions with open turns this node activated because no node held their lease (their
    /// owner died or stopped), startup recovery included.
    pub takeovers: AtomicU64,
    /// Sessions removed by retention, by why (index: [`crate::retention::Expiry::ALL`]).
    pub sessions_expired: [AtomicU64; 3],
    /// Usage counted, by provider (tokens and cost of every attempt).
    pub usage: std::sync::Mutex<std::collections::BTreeMap<String, crate::usage::Usage>>,
    /// Agent process groups a previous server left alive, killed at startup.
    pub process_groups_reaped: AtomicU64,
    /// Operations sent to the node that runs their session, by operation (index:
    /// [`SessionOp::index`](crate::cluster::wire::SessionOp::index)).
    pub forwarded: [AtomicU64; crate::cluster::wire::SessionOp::NAMES.len()],
    /// Operations other nodes forwarded here and this node ran.
    pub forwards_served: AtomicU64,
    /// Follows of sessions another node runs, fed from the store's stream.
    pub remote_follows: AtomicU64,
}

/// Every outcome, in the order of [`RuntimeMetrics::turns_completed`].
pub const OUTCOMES: [Outcome; 6] = [
    Outcome::Success,
    Outcome::Failed,
    Outcome::Aborted,
    Outcome::Interrupted,
    Outcome::Cancelled,
    Outcome::Abandoned,
];

/// The index of an outcome in [`RuntimeMetrics::turns_completed`].
pub fn outcome_index(outcome: Outcome) -> usize {
    OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0)
}

impl RuntimeMetrics {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `by` to a gauge.
    pub fn add(gauge: &AtomicI64, by: i64) {
        gauge.fetch_add(by, Ordering::Relaxed);
    }

    /// Adds usage of `provider`.
    pub fn add_usage(&self, provider: &str, usage: &crate::usage::Usage) {
        let mut by_provider = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let total = by_provider.entry(provider.to_string()).or_default();
        *total = total.plus(usage);
    }

    /// Usage counted so far, by provider.
    pub fn usage_by_provider(&self) -> Vec<(String, crate::usage::Usage)> {
        let by_provider = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        by_provider.iter().map(|(p, u)| (p.clone(), *u)).collect()
    }

    /// Operations forwarded to other nodes, all operations together.
    pub fn forwarded_total(&self) -> u64 {
        self.forwarded.iter().map(Self::get).sum()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
