//! `--nodes N`: several `troupe serve` nodes on one NATS JetStream server, and the clients'
//! requests spread over them in turn (`openai-chat`, `create-storm`, `create-distinct`). With
//! `--nats URL` the nodes use that server; without, a `nats-server -js` is started on a free
//! port and a temporary directory (`--nats-server`, default `.venv/bin/nats-server`, then
//! `nats-server` on `PATH`).

use super::{Cli, Error, Server};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nodes this tool started, and the NATS server it started for them.
pub struct Cluster {
    /// The nodes; dropped (stopped) before NATS.
    pub nodes: Vec<Server>,
    /// The NATS server this tool started, if it did.
    nats: Option<SpawnedNats>,
}

/// A `nats-server -js` this tool started; killed when dropped.
struct SpawnedNats {
    child: Child,
    /// Its JetStream store, removed with it.
    _dir: tempfile::TempDir,
}

impl Drop for SpawnedNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    /// The nodes stop first (gracefully), NATS last.
    fn drop(&mut self) {
        self.nodes.clear();
        self.nats = None;
    }
}

impl Cluster {
    /// `--nodes` nodes (default 1) of ids `node-0`, `node-1`, … on `cli.nats` or a NATS started here.
    pub fn start(cli: &Cli, env: &[(&str, String)]) -> Result<Cluster, Error> {
        let (url, nats) = match &cli.nats {
            Some(url) => (url.clone(), None),
            None => {
                let (url, nats) = start_nats(cli)?;
                (url, Some(nats))
            }
        };
        let count = cli.nodes.unwrap_or(1).max(1);
        let mut nodes = Vec::with_capacity(count);
        for n in 0..count {
            let mut node_env = env.to_vec();
            node_env.push(("TROUPE_STORE__KIND", "nats".into()));
            node_env.push(("TROUPE_STORE__URL", url.clone()));
            node_env.push(("TROUPE_CLUSTER__NODE_ID", format!("node-{n}")));
            nodes.push(Server::troupe(cli, None, &node_env)?);
        }
        eprintln!("{} node(s) on NATS {url}", nodes.len());
        Ok(Cluster { nodes, nats })
    }

    /// Each node's `http://ADDRESS`.
    pub fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.base.clone()).collect()
    }
}

/// Starts `nats-server -js` on a free loopback port.
fn start_nats(cli: &Cli) -> Result<(String, SpawnedNats), Error> {
    let program = match &cli.nats_server {
        Some(program) => program.clone(),
        None => {
            let venv = PathBuf::from(".venv/bin/nats-server");
            if venv.is_file() {
                venv
            } else {
                PathBuf::from("nats-server")
            }
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let child = Command::new(&program)
        .args(["-js", "-a", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-sd")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e} (--nats-server or --nats URL)", program.display()))?;
    let nats = SpawnedNats { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("nats://127.0.0.1:{port}"), nats))
}
