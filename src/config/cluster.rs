//! `[cluster]`: who this node is among the nodes sharing a NATS store, how long the lease on a
//! session it runs lasts, and how long it waits for the nodes it forwards requests to
//! (docs/OPERATIONS.md, "Several nodes").

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use troupe_actors::cluster::ForwardSettings;
use troupe_actors::Settings;

/// `[cluster]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, named as the holder of its sessions' leases; unique per running node
    /// (default: the host name and 6 random hex digits, new at every start).
    pub node_id: Option<String>,
    /// How long a session's lease lasts unless renewed: after a node dies, another takes its
    /// sessions over this long after its last renewal. Whole seconds (NATS counts message
    /// TTLs in seconds).
    pub lease_ttl_ms: u64,
    /// Seconds a request forwarded to the node that runs its session waits for the answer.
    pub request_timeout_secs: f64,
    /// Seconds a request keeps looking for the session's node while nobody answers for the
    /// one that held it (it died: its lease has to expire first).
    pub owner_gone_wait_secs: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let forwarding = ForwardSettings::default();
        ClusterConfig {
            node_id: None,
            lease_ttl_ms: 10_000,
            request_timeout_secs: forwarding.request_timeout.as_secs_f64(),
            owner_gone_wait_secs: forwarding.owner_gone_wait.as_secs_f64(),
        }
    }
}

/// The longest node id: it is a lease's value and a label in metrics.
const MAX_NODE_ID: usize = 128;

impl ClusterConfig {
    /// Sets the node id and the lease TTL on `settings`, refusing values that cannot work.
    pub fn apply(&self, settings: &mut Settings) -> Result<(), ConfigError> {
        if self.lease_ttl_ms < 1000 || !self.lease_ttl_ms.is_multiple_of(1000) {
            return Err(ConfigError::Cluster(format!(
                "lease_ttl_ms = {}: must be a whole number of seconds, at least 1000 (NATS \
                 counts message TTLs in whole seconds)",
                self.lease_ttl_ms
            )));
        }
        settings.lease_ttl = Duration::from_millis(self.lease_ttl_ms);
        for (key, secs) in [
            ("request_timeout_secs", self.request_timeout_secs),
            ("owner_gone_wait_secs", self.owner_gone_wait_secs),
        ] {
            if !secs.is_finite() || secs < 0.0 {
                return Err(ConfigError::Cluster(format!(
                    "{key} = {secs}: must be a number of seconds, 0 or more"
                )));
            }
        }
        settings.forwarding = ForwardSettings {
            request_timeout: Duration::from_secs_f64(self.request_timeout_secs.max(0.001)),
            owner_gone_wait: Duration::from_secs_f64(self.owner_gone_wait_secs),
        };
        if let Some(node_id) = &self.node_id {
            let valid = !node_id.is_empty()
                && node_id.len() <= MAX_NODE_ID
                && node_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(ConfigError::Cluster(format!(
                    "node_id `{node_id}`: 1 to {MAX_NODE_ID} letters, digits, `-`, `_` or `.`"
                )));
            }
            settings.node_id = node_id.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ttl_that_is_not_whole_seconds_is_refused() {
        let mut settings = Settings::default();
        for ttl in [0, 500, 1500] {
            let config = ClusterConfig {
                lease_ttl_ms: ttl,
                ..ClusterConfig::default()
            };
            let e = config.apply(&mut settings).expect_err("refused");
            assert!(e.to_string().contains("whole number of seconds"), "{e}");
        }
        let config = ClusterConfig {
            lease_ttl_ms: 2000,
            node_id: Some("node-a".into()),
            ..ClusterConfig::default()
        };
        config.apply(&mut settings).expect("accepted");
        assert_eq!(settings.lease_ttl, Duration::from_secs(2));
        assert_eq!(settings.node_id, "node-a");
    }

    #[test]
    fn a_node_id_that_cannot_name_a_holder_is_refused() {
        for id in ["", "a b", "x\n", &"n".repeat(MAX_NODE_ID + 1)] {
            let config = ClusterConfig {
                node_id: Some(id.to_string()),
                ..ClusterConfig::default()
            };
            assert!(config.apply(&mut Settings::default()).is_err(), "{id:?}");
        }
    }
}
