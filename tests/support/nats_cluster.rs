//! Three (or any number of) real `troupe serve --store nats://…` nodes on one real
//! `nats-server -js`, each with its node id and a short lease TTL, and typed REST calls on
//! them.
#![allow(dead_code)]
//
// A test file includes `support/external.rs`, `support/nats_server.rs` and
// `support/server_process.rs` next to this one.

use super::nats_server::NatsServer;
use super::server_process::ServerProcess;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The lease TTL the nodes use (the shortest NATS allows: whole seconds).
pub const LEASE_TTL_MS: &str = "2000";

/// A NATS server and the nodes on it.
pub struct Cluster {
    /// The nodes, named `node-0`, `node-1`, …
    pub nodes: Vec<Node>,
    /// Kept running for the test.
    pub nats: NatsServer,
}

/// One node: its process, its data directory and a client.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// The process.
    pub process: ServerProcess,
    /// `http://ADDRESS`.
    pub base: String,
    /// Its data directory (nothing of the cluster's state is in it).
    _data: tempfile::TempDir,
    /// A blocking client.
    pub client: reqwest::blocking::Client,
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
            node.wait_ready();
        }
        Some(cluster)
    }
}

impl Node {
    fn start(nats: &NatsServer, n: usize, extra: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("temp dir");
        let id = format!("node-{n}");
        let url = nats.url();
        let mut env = vec![
            ("TROUPE_CLUSTER__NODE_ID", id.as_str()),
            ("TROUPE_CLUSTER__LEASE_TTL_MS", LEASE_TTL_MS),
            ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
            ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
            ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
        ];
        env.extend_from_slice(extra);
        let process = ServerProcess::start(data.path(), &["--store", &url], &env);
        let base = process.base();
        Node {
            id,
            process,
            base,
            _data: data,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// `ws://ADDRESS/api/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.process.address)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.client
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

    /// Every event of `session`, paging through the log.
    pub fn events(&self, session: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().expect("seq"));
            let (status, body) = self.get(&format!(
                "/api/v1/sessions/{session}/events?after_seq={after}&limit=500"
            ));
            assert_eq!(status, 200, "{body}");
            let page = body["events"].as_array().expect("events").clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .map_or(0, |r| r.status().as_u16());
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "{} never got ready", self.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `n` words tagged `tag`: an echo turn of `n` chunks.
pub fn words(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}
