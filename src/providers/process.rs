//! The child-process runner every CLI provider stands on: spawn with an argument vector (never a
//! shell) in its own process group, feed the prompt on stdin, read line-delimited JSON from stdout,
//! keep the tail of stderr, and make sure no process of the group outlives the attempt.
//!
//! Nor the server: on Linux each child gets the parent-death signal (SIGKILL when the thread
//! that spawned it exits, so children are spawned on the session actors' long-lived arbiter
//! threads, never on a blocking-pool thread), and its group is recorded durably through the
//! attempt's [`ProcessLedger`](troupe_actors::ProcessLedger) before it gets its prompt, so
//! the [`reaper`](super::reaper) can kill whatever of the group a crashed server left behind.

use bytes::BytesMut;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use troupe_actors::{ProcessLedger, RecordedGroup, SpawnedGroup};

/// Variables a child inherits from Troupe's own environment; everything else is dropped so
/// Troupe's secrets never leak into an agent that did not ask for them.
pub const ENV_ALLOW_LIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The longest stdout line kept; longer lines are skipped whole (agents print multi-megabyte tool
/// results, but nothing legitimate is this long).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How much of stderr is kept for error messages.
pub const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// Grace between SIGTERM and SIGKILL when none is configured.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// How long to wait for a process to exit after it printed its last result, or for its
/// remaining output after it exited while something else in its group holds the pipe open.
pub const DEFAULT_EXIT_GRACE: Duration = Duration::from_secs(5);

/// How often the group is polled while waiting for it to die.
const GROUP_POLL: Duration = Duration::from_millis(10);

/// Everything needed to start one child.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The executable, resolved to a path when possible.
    pub program: PathBuf,
    /// Its arguments; never joined into a shell line.
    pub args: Vec<String>,
    /// The working directory, when the session has a project directory.
    pub cwd: Option<PathBuf>,
    /// Variables set on top of the allow-listed ones (the provider's configured env).
    pub env: BTreeMap<String, String>,
    /// Names of further variables copied from Troupe's environment (API keys the agent needs).
    pub pass_env: Vec<String>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The executable does not exist or is not executable.
    #[error("executable `{0}` not found")]
    NotFound(String),
    /// Any other failure of `spawn`.
    #[error("could not start `{program}`: {source}")]
    Io {
        /// The executable.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Finds `program` the way a shell would: a path with a slash is taken as is, a bare name is
/// looked up on `path` (Troupe's own `PATH` when `None`).
pub fn resolve_program(program: &str, path: Option<&str>) -> Option<PathBuf> {
    let is_executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path: OsString = match path {
        Some(p) => p.into(),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// The process group of a running child. Dropping it while armed kills the whole group at once,
/// so a task that is torn down (runtime shutdown, panic) leaves no process behind.
#[derive(Debug)]
pub struct GroupGuard {
    /// The group id (the leader's pid, as the child was spawned with `process_group(0)`).
    pgid: Pid,
    /// Cleared once the group was terminated gracefully.
    armed: bool,
    /// The group's durable record, cleared (dropped) once the group is gone. Declared after
    /// nothing that must outlive it: `Drop` kills the group first, then the fields drop.
    record: Option<RecordedGroup>,
}

impl GroupGuard {
    /// The group's id.
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Keeps the group's durable record until the group is gone.
    pub fn keep_record(&mut self, record: Option<RecordedGroup>) {
        self.record = record;
    }

    /// Whether any process of the group is still alive (or an unreaped zombie).
    pub fn alive(&self) -> bool {
        !matches!(killpg(self.pgid, None), Err(Errno::ESRCH))
    }

    /// SIGTERM to the group, SIGKILL to whatever is left after `grace`. Reaps the leader
    /// meanwhile so it does not linger as a zombie that looks alive.
    pub async fn terminate(&mut self, child: &mut Child, grace: Duration) {
        if killpg(self.pgid, Signal::SIGTERM).is_ok() {
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                let _ = child.try_wait();
                if !self.alive() || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(GROUP_POLL).await;
            }
            if self.alive() {
                log::debug!("process group {} outlived SIGTERM; killing", self.pgid);
                let _ = killpg(self.pgid, Signal::SIGKILL);
            }
        }
        let _ = child.wait().await;
        self.armed = false;
        // The group is gone: its record goes too.
        self.record = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// The last bytes a child wrote to stderr, kept for error messages.
#[derive(Clone, Default)]
pub struct StderrTail {
    /// Shared with the task that reads stderr.
    bytes: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    /// What was kept, as lossy UTF-8 without terminal colour codes (Gemini CLI colours its
    /// fatal messages even on a pipe).
    pub fn text(&self) -> String {
        // The lock is only held to copy bytes; a poisoned lock still holds valid bytes.
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        strip_ansi(&String::from_utf8_lossy(&all))
            .trim()
            .to_string()
    }

    fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend(chunk);
        let excess = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        bytes.drain(..excess);
    }

    async fn collect(self, mut stderr: impl AsyncRead + Unpin) {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            self.push(&buf[..n]);
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ … final byte`, `ESC ( x`, `ESC x`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates up to the final byte, a letter or `@`…`~`.
            for p in chars.by_ref() {
                if ('@'..='~').contains(&p) {
                    break;
                }
            }
        } else if matches!(chars.next(), Some('(' | ')')) {
            // A character-set designation names its set in one more character.
            chars.next();
        }
    }
    out
}

/// One line of stdout.
#[derive(Debug, PartialEq)]
pub enum OutputLine {
    /// A JSON value.
    Json(Value),
    /// Anything else (banners, warnings, a JSON line that was cut off).
    Noise(String),
    /// A line longer than [`MAX_LINE_BYTES`], skipped.
    Oversized(usize),
}

/// Reads newline-delimited lines of any length up to [`MAX_LINE_BYTES`], joining partial reads.
pub struct LineReader<R> {
    /// The buffered pipe.
    reader: BufReader<R>,
    /// The line being assembled.
    line: BytesMut,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads lines from `reader`.
    pub fn new(reader: R) -> Self {
        LineReader {
            reader: BufReader::with_capacity(64 * 1024, reader),
            line: BytesMut::new(),
        }
    }

    /// The next line, or `None` at the end of the stream. A last line without a newline counts.
    pub async fn next_line(&mut self) -> std::io::Result<Option<OutputLine>> {
        let mut skipped = 0usize;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.line.is_empty() && skipped == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.finish(skipped)));
            }
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if skipped > 0 || self.line.len() + chunk.len() > MAX_LINE_BYTES {
                skipped += self.line.len() + chunk.len();
                self.line.clear();
            } else {
                self.line.extend_from_slice(chunk);
            }
            let consumed = found.unwrap_or(available.len());
            self.reader.consume(consumed);
            if found.is_some() {
                return Ok(Some(self.finish(skipped)));
            }
        }
    }

    fn finish(&mut self, skipped: usize) -> OutputLine {
        if skipped > 0 {
            return OutputLine::Oversized(skipped);
        }
        let line = self.line.split();
        let trimmed = line.trim_ascii();
        if trimmed.first() == Some(&b'{') {
            if let Ok(value) = serde_json::from_slice::<Value>(trimmed) {
                return OutputLine::Json(value);
            }
        }
        OutputLine::Noise(String::from_utf8_lossy(trimmed).into_owned())
    }
}

/// A started child with its pipes taken apart.
pub struct RunningProcess {
    /// The child; reaped by [`GroupGuard::terminate`].
    pub child: Child,
    /// Kills the group when dropped.
    pub group: GroupGuard,
    /// Its pid, for the actor table.
    pub pid: u32,
    /// Lines of stdout.
    pub stdout: LineReader<ChildStdout>,
    /// Tail of stderr, filled by a background task.
    pub stderr: StderrTail,
    /// Bytes to write to stdin; stdin is closed when every sender is dropped.
    pub stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// The task that reads stderr; ends when every process of the group closed it.
    stderr_task: tokio::task::JoinHandle<()>,
}

impl RunningProcess {
    /// Starts `spec` with `stdin_bytes` written first. The child gets its own process group, the
    /// allow-listed environment plus the spec's, and is killed if this value is dropped.
    pub fn spawn(spec: &ProcessSpec, stdin_bytes: Vec<u8>) -> Result<Self, SpawnError> {
        let display = spec.program.display().to_string();
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        for name in ENV_ALLOW_LIST
            .iter()
            .copied()
            .chain(spec.pass_env.iter().map(String::as_str))
        {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                SpawnError::NotFound(display.clone())
            }
            _ => SpawnError::Io {
                program: display.clone(),
                source,
            },
        })?;
        // A freshly spawned child has a pid until it is reaped, and nothing reaped it yet.
        let pid = child.id().expect("a just-spawned child has a pid");
        let group = GroupGuard {
            pgid: Pid::from_raw(pid as i32),
            armed: true,
            record: None,
        };
        // The pipes were requested above, so they are there.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stdin_pipe = child.stdin.take().expect("stdin is piped");
        let stderr = StderrTail::default();
        let stderr_task = tokio::spawn(stderr.clone().collect(stderr_pipe));
        let (stdin, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_stdin(stdin_pipe, rx));
        // Sending into a channel whose receiver lives in the task just spawned cannot fail.
        let _ = stdin.send(stdin_bytes);
        Ok(RunningProcess {
            child,
            group,
            pid,
            stdout: LineReader::new(stdout),
            stderr,
            stdin: Some(stdin),
            stderr_task,
        })
    }

    /// What a ledger records about this child's group: `None` where `/proc` cannot tell the
    /// leader's start time (not Linux), so nothing could later be matched safely.
    pub fn spawned_group(&self, kill_grace: Duration) -> Option<SpawnedGroup> {
        let pid = self.pid as i32;
        let stat = super::proc_table::stat(pid)?;
        Some(SpawnedGroup {
            pgid: self.group.pgid(),
            leader_pid: pid,
            leader_start: stat.start,
            boot_id: super::proc_table::boot_id()?,
            kill_grace_ms: kill_grace.as_millis() as u64,
        })
    }

    /// Records the group through `ledger` and, once the record is durable, writes `prompt` to
    /// stdin: the agent gets no work that a crashed server could not find again. `false` when
    /// `stop` came first or the store refused the record (the ledger told the session); the
    /// caller then terminates the group.
    pub async fn record_then_prompt(
        &mut self,
        ledger: &ProcessLedger,
        prompt: Vec<u8>,
        kill_grace: Duration,
        stop: impl Future<Output = ()>,
    ) -> bool {
        if let Some(group) = self.spawned_group(kill_grace) {
            let ledger = ledger.clone();
            let mut recording = Box::pin(async move { ledger.record(group).await });
            let recorded = tokio::select! {
                recorded = &mut recording => recorded,
                () = stop => {
                    // The record may still land: let it, and clear it (drop) once it has.
                    tokio::spawn(recording);
                    return false;
                }
            };
            match recorded {
                Ok(record) => self.group.keep_record(record),
                Err(e) => {
                    log::error!("process group {}: could not record it: {e}", self.pid);
                    return false;
                }
            }
        }
        if let Some(stdin) = &self.stdin {
            // The writer task holds the other end until stdin is closed, which is later.
            let _ = stdin.send(prompt);
        }
        true
    }

    /// Waits until stderr is closed and fully read.
    pub async fn stderr_done(&mut self) {
        let _ = (&mut self.stderr_task).await;
    }

    /// The exit status, when the leader already exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Asks Linux to SIGKILL the child when the thread that spawns it exits: a server that dies
/// (`kill -9`, OOM) takes its agents along at once instead of leaving them working.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as i32;
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe system
    // calls (prctl, getppid); its error is built from an errno, without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent died between fork and prctl: the signal will never come.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere there is no parent-death signal; the reaper at startup is all there is.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Writes whatever arrives to the child's stdin, then closes it. Written in its own task so a
/// large prompt never blocks reading the child's output.
async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if bytes.is_empty() {
            continue;
        }
        if let Err(e) = stdin.write_all(&bytes).await {
            log::debug!("child stdin closed early: {e}");
            return;
        }
        let _ = stdin.flush().await;
    }
}

/// An exit status as a code; a death by signal is `128 + signal`, as shells report it.
pub fn exit_code(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[31mnot trusted\u{1b}[0m."),
            "not trusted."
        );
        assert_eq!(strip_ansi("a\u{1b}[1;32mb\u{1b}(Bc"), "abc");
        assert_eq!(strip_ansi("tail\u{1b}"), "tail");
    }
}
