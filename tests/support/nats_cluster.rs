//! Three (or any number of) real `troupe serve --store nats://…` nodes on one real
//! `nats-server -js`, each with its node id and the test lease TTL, and typed REST calls on
//! them (those of [`Api`]).
#![allow(dead_code)]
//
// A test file includes `support/external.rs`, `support/nats_server.rs`, `support/nodes.rs`
// and `support/server_process.rs` next to this one.

use super::nats_server::NatsServer;
use super::nodes::{start_node_with, Api};
use super::server_process::ServerProcess;
use std::ops::Deref;

pub use super::nodes::words;

/// A NATS server and the nodes on it.
pub struct Cluster {
    /// The nodes, named `node-0`, `node-1`, …
    pub nodes: Vec<Node>,
    /// Kept running for the test.
    pub nats: NatsServer,
}

/// One node: its process, its data directory and a client ([`Api`], which it derefs to).
pub struct Node {
    /// Its node id.
    pub id: String,
    /// The process.
    pub process: ServerProcess,
    /// `http://ADDRESS`.
    pub base: String,
    /// Its data directory (nothing of the cluster's state is in it).
    _data: tempfile::TempDir,
    /// Typed REST calls on it.
    api: Api,
}

impl Deref for Node {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Cluster {
    /// Starts NATS and `count` nodes; `None` when `nats-server` is missing (and not in CI).
    pub fn start(test: &str, count: usize) -> Option<Cluster> {
        Self::start_with(test, count, &[])
    }

    /// [`Cluster::start`] with more environment for every node.
    pub fn start_with(test: &str, count: usize, env: &[(&str, &str)]) -> Option<Cluster> {
        let nats = NatsServer::start(test)?;
        let nodes = (0..count).map(|n| Node::start(&nats, n, env)).collect();
        let cluster = Cluster { nodes, nats };
        for node in &cluster.nodes {
            node.wait_ready(200);
        }
        Some(cluster)
    }
}

impl Node {
    fn start(nats: &NatsServer, n: usize, extra: &[(&str, &str)]) -> Node {
        let id = format!("node-{n}");
        let (process, data) = start_node_with(nats, Some(&id), extra);
        Node {
            id,
            base: process.base(),
            api: Api::of(&process),
            process,
            _data: data,
        }
    }

    /// `ws://ADDRESS/api/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.process.address)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.client()
            .get(format!("{}/metrics", self.base))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("text")
    }

    /// The value of one sample of `/metrics` (`name{labels}` exactly as written), 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}
