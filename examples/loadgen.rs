//! Load generator: drives a Troupe server over real sockets on 127.0.0.1 and prints a table and
//! one JSON line per scenario. `ws-stream` also runs a bare actix-web + actix-ws server (no
//! runtime, no store) that pushes the same frames, and reports Troupe as a ratio of it.
//!
//! ```sh
//! cargo build --release --bin troupe --example loadgen
//! target/release/examples/loadgen --spawn ws-stream --sessions 4 --subscribers 1
//! target/release/examples/loadgen --url http://127.0.0.1:7878 turn-latency
//! target/release/examples/loadgen fill-store --dir /tmp/big --sessions 10000 --events 1000000
//! target/release/examples/loadgen restart --dir /tmp/big
//! target/release/examples/loadgen --spawn --nodes 3 openai-chat --keyed
//! ```
//!
//! Every loop is bounded in count, and every scenario in time (`--max-secs`).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "loadgen/cluster.rs"]
mod cluster;
#[path = "loadgen/keyless.rs"]
mod keyless;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for a Troupe server (127.0.0.1 only)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The server to drive; only 127.0.0.1 / localhost.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7878")]
    url: String,
    /// Start `troupe serve` on a temporary directory (port 0) instead of using `--url`.
    #[arg(long, global = true)]
    spawn: bool,
    /// The troupe binary for `--spawn` (default: `troupe` next to this example's directory).
    #[arg(long, global = true)]
    troupe_bin: Option<PathBuf>,
    /// The server's pid, for RSS figures when it was not spawned here.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Environment for a spawned troupe, `KEY=VALUE`, repeatable (`TROUPE_STORE=memory`).
    #[arg(long = "troupe-env", global = true)]
    troupe_env: Vec<String>,
    /// Stop any scenario after this long.
    #[arg(long, global = true, default_value_t = 300)]
    max_secs: u64,
    /// With `--spawn`: this many nodes (1 too) on one NATS JetStream store instead of one
    /// node on sled; `openai-chat`, `create-storm` and `create-distinct` spread their
    /// requests over them in turn.
    #[arg(long, global = true)]
    nodes: Option<usize>,
    /// With `--spawn`: the NATS server the nodes share (default: one started here, even for
    /// one node).
    #[arg(long, global = true)]
    nats: Option<String>,
    /// The `nats-server` binary to start (default `.venv/bin/nats-server`, then `PATH`).
    #[arg(long, global = true)]
    nats_server: Option<PathBuf>,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// S sessions × T echo turns of D deltas, K WebSocket subscribers per session; the bare
    /// baseline runs the same load first.
    WsStream(StreamArgs),
    /// The bare actix-ws baseline alone.
    BaselineWs(StreamArgs),
    /// N concurrent `POST /api/v1/sessions` with one key.
    CreateStorm {
        /// Concurrent requests.
        #[arg(long, default_value_t = 1000)]
        n: usize,
    },
    /// Sessions with distinct keys, C requests in flight.
    CreateDistinct {
        /// Sessions to create.
        #[arg(long, default_value_t = 5000)]
        n: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// POST a turn → its first event on a WebSocket subscription.
    TurnLatency {
        /// Turns.
        #[arg(long, default_value_t = 500)]
        turns: usize,
    },
    /// Reconnect with `after_seq` over a session of E events: time to the last one.
    Replay {
        /// Events in the session.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Replays measured.
        #[arg(long, default_value_t = 10)]
        repeats: usize,
    },
    /// Streamed `/v1/chat/completions`.
    OpenaiChat {
        /// Requests.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Words in each reply (one chunk per two words).
        #[arg(long, default_value_t = 20)]
        words: usize,
        /// One `X-Session-Key` per client (a conversation), its requests one after another;
        /// without, every request is keyless (a one-off session).
        #[arg(long)]
        keyed: bool,
    },
    /// N sessions created and live: RSS per live idle session, then after passivation.
    /// Needs `--spawn` (which sets a short idle passivation) or `--pid`.
    IdleSessions {
        /// Sessions.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Seconds of idleness before passivation, for `--spawn`.
        #[arg(long, default_value_t = 20.0)]
        idle_passivate_secs: f64,
    },
    /// N keyless `/v1/chat/completions` (hidden one-off sessions) at the default log level:
    /// RSS, store size and live actors before, after and after the retention sweep; log bytes
    /// per request. Spawns its own server.
    Keyless(keyless::KeylessArgs),
    /// Writes a sled store of S sessions and E events through the `troupe_actors` Store API.
    FillStore {
        /// The store directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// Sessions.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Events, spread evenly over the sessions.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Starts `troupe serve --data DIR` and times start → `/readyz` 200.
    Restart {
        /// A store made by `fill-store`.
        #[arg(long)]
        dir: PathBuf,
        /// Restarts measured.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Internal: serve the bare baseline and print its address.
    #[command(hide = true)]
    ServeBaseline,
}

/// The shape of a streaming run.
#[derive(clap::Args, Clone, Copy, Debug, Serialize)]
struct StreamArgs {
    /// Sessions streaming at once.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// WebSocket subscribers per session.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Turns per session, one after another.
    #[arg(long, default_value_t = 5)]
    turns: usize,
    /// Deltas per turn.
    #[arg(long, default_value_t = 1000)]
    deltas: usize,
}

fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    if let Scenario::ServeBaseline = cli.scenario {
        return baseline::serve();
    }
    if let Scenario::FillStore {
        dir,
        sessions,
        events,
    } = &cli.scenario
    {
        return fill_store(dir, *sessions, *events);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let limit = Duration::from_secs(cli.max_secs);
        match tokio::time::timeout(limit, run(&cli)).await {
            Ok(result) => result,
            Err(_) => Err(format!("stopped after --max-secs {}", cli.max_secs).into()),
        }
    })
}

async fn run(cli: &Cli) -> Result<(), Error> {
    if let Scenario::Restart { dir, repeats } = &cli.scenario {
        return restart(cli, dir, *repeats).await;
    }
    if let Scenario::Keyless(args) = &cli.scenario {
        return keyless::run(cli, *args, load_average()).await;
    }
    if let Scenario::BaselineWs(args) = &cli.scenario {
        let baseline = Server::baseline()?;
        let figures = ws_stream(&baseline.base, Target::Baseline, *args).await?;
        report("baseline-ws", &figures.to_json(args), None);
        return Ok(());
    }
    let mut env = match &cli.scenario {
        Scenario::IdleSessions {
            idle_passivate_secs,
            ..
        } => vec![(
            "TROUPE_RUNTIME__IDLE_PASSIVATE_SECS",
            idle_passivate_secs.to_string(),
        )],
        _ => Vec::new(),
    };
    for pair in &cli.troupe_env {
        let (k, v) = pair.split_once('=').ok_or("--troupe-env takes KEY=VALUE")?;
        env.push((k, v.to_string()));
    }
    let on_nats = cli.spawn && (cli.nodes.is_some() || cli.nats.is_some());
    let cluster = if on_nats {
        Some(cluster::Cluster::start(cli, &env)?)
    } else {
        None
    };
    let spawned = if cli.spawn && !on_nats {
        Some(Server::troupe(cli, None, &env)?)
    } else {
        None
    };
    let bases = match (&cluster, &spawned) {
        (Some(cluster), _) => cluster.bases(),
        (None, Some(server)) => vec![server.base.clone()],
        (None, None) => vec![loopback_only(&cli.url)?],
    };
    let base = bases[0].clone();
    let pid = spawned
        .as_ref()
        .or(cluster.as_ref().map(|c| &c.nodes[0]))
        .map(|s| s.child.id())
        .or(cli.pid);
    let load = load_average();
    match cli.scenario.clone() {
        Scenario::WsStream(args) => {
            // The baseline first, in the same run, on the same machine.
            let baseline = Server::baseline()?;
            let bare = ws_stream(&baseline.base, Target::Baseline, args).await?;
            drop(baseline);
            report("baseline-ws", &bare.to_json(&args), Some(load));
            let troupe = ws_stream(&base, Target::Troupe, args).await?;
            let mut line = troupe.to_json(&args);
            line["baseline_events_per_sec"] = json!(round(bare.events_per_sec()));
            line["ratio_to_baseline"] =
                json!((troupe.events_per_sec() / bare.events_per_sec() * 1000.0).round() / 1000.0);
            report("ws-stream", &line, Some(load_average()));
        }
        Scenario::CreateStorm { n } => create_storm(&bases, n, load).await?,
        Scenario::CreateDistinct { n, concurrency } => {
            create_distinct(&bases, n, concurrency, load).await?
        }
        Scenario::TurnLatency { turns } => turn_latency(&base, turns, load).await?,
        Scenario::Replay { events, repeats } => replay(&base, events, repeats, load).await?,
        Scenario::OpenaiChat {
            requests,
            concurrency,
            words,
            keyed,
        } => {
            let shape = ChatShape {
                requests,
                concurrency,
                words,
                keyed,
            };
            openai_chat(&bases, shape, load).await?
        }
        Scenario::IdleSessions { n, .. } => {
            let pid = pid.ok_or("idle-sessions needs --spawn or --pid")?;
            idle_sessions(&base, pid, n, load).await?
        }
        Scenario::BaselineWs(_)
        | Scenario::Keyless(_)
        | Scenario::FillStore { .. }
        | Scenario::Restart { .. }
        | Scenario::ServeBaseline => unreachable!("handled above"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output

/// Prints a scenario's figures as a small table, then as one JSON line.
fn report(scenario: &str, figures: &Value, load: Option<f64>) {
    let mut line = json!({ "scenario": scenario });
    if let Value::Object(map) = figures {
        for (k, v) in map {
            line[k] = v.clone();
        }
    }
    if let Some(load) = load {
        line["load_avg_1m"] = json!(load);
    }
    println!("== {scenario}");
    if let Value::Object(map) = &line {
        for (k, v) in map {
            if k != "scenario" {
                println!("  {k:<28} {v}");
            }
        }
    }
    println!("{line}");
}

/// p50 and p99 of microsecond samples, in milliseconds.
fn percentiles(samples: &mut [u64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i] as f64 / 1000.0
    };
    (round3(at(0.50)), round3(at(0.99)))
}

fn round(x: f64) -> f64 {
    x.round()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Resident set of a process in KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

// ---------------------------------------------------------------------------------------------
// Servers

/// Refuses any server that is not on this machine's loopback.
fn loopback_only(url: &str) -> Result<String, Error> {
    let base = url.trim_end_matches('/');
    let host = base
        .strip_prefix("http://")
        .ok_or("--url must be http://127.0.0.1:PORT")?
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if host != "127.0.0.1" && host != "localhost" {
        return Err(format!("refusing {url}: only 127.0.0.1 is driven").into());
    }
    Ok(base.to_string())
}

/// The troupe binary to spawn: `--troupe-bin`, or `troupe` next to this example's directory.
fn troupe_bin(cli: &Cli) -> Result<PathBuf, Error> {
    let bin = match &cli.troupe_bin {
        Some(bin) => bin.clone(),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("no target directory")?;
            dir.join("troupe")
        }
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: cargo build --release --bin troupe (or --troupe-bin)",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// A server process this tool started; killed when dropped.
struct Server {
    child: Child,
    base: String,
    /// The temporary data directory of a spawned troupe, removed with it.
    _data: Option<tempfile::TempDir>,
}

impl Server {
    /// `troupe serve` on port 0, on `data` or a fresh temporary directory.
    fn troupe(cli: &Cli, data: Option<&Path>, env: &[(&str, String)]) -> Result<Server, Error> {
        let bin = troupe_bin(cli)?;
        let temp = match data {
            Some(_) => None,
            None => Some(tempfile::tempdir()?),
        };
        let dir = data.map_or_else(
            || temp.as_ref().map(|t| t.path().to_path_buf()),
            |d| Some(d.to_path_buf()),
        );
        let mut command = Command::new(bin);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data"])
            .arg(dir.expect("a data directory"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        Self::start(command, "troupe listening on ", temp)
    }

    /// This tool's bare baseline, as a separate process like the server it stands for.
    fn baseline() -> Result<Server, Error> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve-baseline")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::start(command, "baseline listening on ", None)
    }

    fn start(
        mut command: Command,
        banner: &str,
        data: Option<tempfile::TempDir>,
    ) -> Result<Server, Error> {
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(addr) = line?.strip_prefix(banner) {
                        break addr.trim().to_string();
                    }
                }
                None => {
                    let _ = child.kill();
                    return Err("the server exited before listening".into());
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base,
            _data: data,
        })
    }
}

impl Drop for Server {
    /// SIGTERM (graceful shutdown, the store flushed), then SIGKILL after 10 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

fn ws_url(base: &str) -> String {
    format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1))
}

async fn connect(base: &str) -> Result<Socket, Error> {
    // Nagle off: small frames go out at once, as a latency-minded client would have it.
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(ws_url(base), None, true).await?;
    Ok(socket)
}

/// The fields of a server frame the tool looks at, borrowed from the text.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind_of_frame: &'a str,
    #[serde(default, borrow)]
    kind: Option<&'a str>,
    #[serde(default)]
    seq: u64,
}

/// Sends a frame and returns the answer with the same `id`, skipping events.
async fn request(socket: &mut Socket, frame: Value) -> Result<Value, Error> {
    let id = frame["id"].clone();
    socket.send(Message::text(frame.to_string())).await?;
    loop {
        let Some(msg) = socket.next().await else {
            return Err("socket closed".into());
        };
        if let Message::Text(text) = msg? {
            let value: Value = serde_json::from_str(&text)?;
            if value["id"] == id && value["type"] != "event" {
                if value["type"] == "error" {
                    return Err(format!("server error: {value}").into());
                }
                return Ok(value);
            }
        }
    }
}

async fn create_session(client: &reqwest::Client, base: &str, body: Value) -> Result<Value, Error> {
    let resp = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let value: Value = resp.json().await?;
    if !status.is_success() {
        return Err(format!("create session: {status} {value}").into());
    }
    Ok(value)
}

async fn echo_session(client: &reqwest::Client, base: &str) -> Result<(String, u64), Error> {
    let value = create_session(client, base, json!({"provider": "echo"})).await?;
    let id = value["session"]["id"]
        .as_str()
        .ok_or("no session id")?
        .to_string();
    Ok((id, value["session"]["last_seq"].as_u64().unwrap_or(0)))
}

fn words(n: usize) -> String {
    vec!["w"; n].join(" ")
}

// ---------------------------------------------------------------------------------------------
// ws-stream and its baseline

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Troupe,
    Baseline,
}

/// What one streaming run measured.
struct StreamFigures {
    events: u64,
    /// From the first turn sent to the last turn completed, over all sessions.
    took: Duration,
    /// When this session's streaming began and ended (connections set up before).
    span: Option<(Instant, Instant)>,
    /// Turn send → each delta, µs.
    delta_latency: Vec<u64>,
    /// Turn send → first delta, µs.
    first_delta: Vec<u64>,
}

impl StreamFigures {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64()
    }

    fn to_json(&self, args: &StreamArgs) -> Value {
        let (d50, d99) = percentiles(&mut self.delta_latency.clone());
        let (f50, f99) = percentiles(&mut self.first_delta.clone());
        json!({
            "sessions": args.sessions, "subscribers": args.subscribers, "turns": args.turns,
            "deltas": args.deltas, "events_delivered": self.events,
            "secs": round3(self.took.as_secs_f64()),
            "events_per_sec": round(self.events_per_sec()),
            "delta_latency_p50_ms": d50, "delta_latency_p99_ms": d99,
            "first_delta_p50_ms": f50, "first_delta_p99_ms": f99,
        })
    }
}

/// One session's part of a streaming run: K subscribers, turns one after another.
async fn stream_session(
    base: String,
    target: Target,
    args: StreamArgs,
    client: reqwest::Client,
) -> Result<StreamFigures, Error> {
    let (session_id, last_seq) = match target {
        Target::Troupe => echo_session(&client, &base).await?,
        Target::Baseline => (uuid::Uuid::now_v7().to_string(), 0),
    };
    let mut sockets = Vec::new();
    for k in 0..args.subscribers {
        let mut socket = connect(&base).await?;
        request(
            &mut socket,
            json!({"type": "subscribe", "id": format!("sub-{k}"), "session_id": session_id,
                   "after_seq": last_seq}),
        )
        .await?;
        sockets.push(socket);
    }
    let content = words(args.deltas);
    let mut figures = StreamFigures {
        events: 0,
        took: Duration::ZERO,
        span: None,
        delta_latency: Vec::with_capacity(args.turns * args.deltas * args.subscribers),
        first_delta: Vec::new(),
    };
    let started = Instant::now();
    for turn in 0..args.turns {
        let send = json!({"type": "send", "id": format!("send-{turn}"), "session_id": session_id,
                          "content": content, "mode": "enqueue",
                          "options": {"script": {"chunk_words": 1}}});
        let sent_at = Instant::now();
        sockets[0].send(Message::text(send.to_string())).await?;
        let readers = sockets.iter_mut().map(|socket| read_turn(socket, sent_at));
        for result in futures::future::join_all(readers).await {
            let (events, latencies) = result?;
            figures.events += events;
            if let Some(first) = latencies.first() {
                figures.first_delta.push(*first);
            }
            figures.delta_latency.extend(latencies);
        }
    }
    figures.took = started.elapsed();
    figures.span = Some((started, Instant::now()));
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    Ok(figures)
}

/// Reads one turn's events up to its `turn.completed`: (events, µs from send of each delta).
async fn read_turn(socket: &mut Socket, sent_at: Instant) -> Result<(u64, Vec<u64>), Error> {
    let mut events = 0;
    let mut latencies = Vec::new();
    while let Some(msg) = socket.next().await {
        let Message::Text(text) = msg? else { continue };
        let frame: Frame = serde_json::from_str(&text)?;
        if frame.kind_of_frame != "event" {
            continue;
        }
        events += 1;
        match frame.kind {
            Some("message.delta") => latencies.push(sent_at.elapsed().as_micros() as u64),
            Some("turn.completed") => return Ok((events, latencies)),
            _ => {}
        }
    }
    Err("socket closed mid-turn".into())
}

async fn ws_stream(base: &str, target: Target, args: StreamArgs) -> Result<StreamFigures, Error> {
    let client = reqwest::Client::new();
    let runs = (0..args.sessions).map(|_| {
        tokio::task::spawn_local(stream_session(
            base.to_string(),
            target,
            args,
            client.clone(),
        ))
    });
    let mut total = StreamFigures {
        events: 0,
        took: Duration::ZERO,
        span: None,
        delta_latency: Vec::new(),
        first_delta: Vec::new(),
    };
    for run in futures::future::join_all(runs).await {
        let figures = run.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        total.events += figures.events;
        if let Some((start, end)) = figures.span {
            total.span = Some(match total.span {
                Some((s, e)) => (s.min(start), e.max(end)),
                None => (start, end),
            });
        }
        total.delta_latency.extend(figures.delta_latency);
        total.first_delta.extend(figures.first_delta);
    }
    // Sessions set up their connections first; streaming time is first send → last completion.
    // (Sessions that finish setting up early start early: the span is the honest wall time.)
    total.took = total.span.map_or(Duration::ZERO, |(s, e)| e - s);
    Ok(total)
}

/// The bare baseline: actix-web + actix-ws, no runtime, no store. A `send` pushes the frames
/// an echo turn of the same text makes in Troupe, serialized per subscriber as Troupe does.
mod baseline {
    use super::*;

    /// Subscribers and the next seq of each session.
    #[derive(Default)]
    struct Hub {
        sessions: HashMap<String, (u64, Vec<mpsc::UnboundedSender<String>>)>,
    }

    type SharedHub = Arc<Mutex<Hub>>;

    /// An event frame in Troupe's wire shape.
    #[derive(Serialize)]
    struct EventFrame<'a> {
        r#type: &'static str,
        seq: u64,
        session_id: &'a str,
        turn_id: &'a str,
        kind: &'static str,
        ts: String,
        data: Value,
    }

    pub fn serve() -> Result<(), Error> {
        actix_web::rt::System::new().block_on(async {
            let hub: SharedHub = Arc::default();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(hub.clone()))
                    .route("/api/v1/ws", web::get().to(ws))
            })
            // As Troupe's server does.
            .tcp_nodelay(true)
            .bind("127.0.0.1:0")?;
            let addr = server.addrs()[0];
            println!("baseline listening on http://{addr}");
            server.run().await
        })?;
        Ok(())
    }

    async fn ws(
        req: HttpRequest,
        body: web::Payload,
        hub: web::Data<SharedHub>,
    ) -> actix_web::Result<HttpResponse> {
        let (response, mut session, mut stream) = actix_ws::handle(&req, body)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut writer = session.clone();
        actix_web::rt::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.text(frame).await.is_err() {
                    break;
                }
            }
        });
        let hub = hub.get_ref().clone();
        actix_web::rt::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    actix_ws::Message::Text(text) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        on_frame(&hub, &tx, &frame);
                    }
                    actix_ws::Message::Ping(bytes) => {
                        let _ = session.pong(&bytes).await;
                    }
                    actix_ws::Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = session.close(None).await;
        });
        Ok(response)
    }

    fn on_frame(hub: &SharedHub, tx: &mpsc::UnboundedSender<String>, frame: &Value) {
        let id = &frame["id"];
        let session_id = frame["session_id"].as_str().unwrap_or_default().to_string();
        let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        match frame["type"].as_str() {
            Some("subscribe") => {
                let entry = hub
                    .sessions
                    .entry(session_id.clone())
                    .or_insert((1, vec![]));
                entry.1.push(tx.clone());
                let answer = json!({"type": "subscribed", "id": id, "session_id": session_id,
                                    "last_seq": entry.0 - 1, "state": "idle"});
                let _ = tx.send(answer.to_string());
            }
            Some("send") => {
                let turn_id = uuid::Uuid::now_v7().to_string();
                let _ = tx.send(
                    json!({"type": "ack", "id": id,
                           "result": {"turn_id": turn_id, "status": "running", "position": 0}})
                    .to_string(),
                );
                let text = frame["content"].as_str().unwrap_or_default();
                let mut bodies: Vec<(&'static str, Value)> = vec![
                    (
                        "turn.accepted",
                        json!({"turn_id": turn_id, "status": "running", "position": 0,
                               "mode": "enqueue"}),
                    ),
                    (
                        "session.state",
                        json!({"state": "running", "previous": "idle", "reason": "turn"}),
                    ),
                    ("turn.started", json!({"attempt": 1, "provider": "echo"})),
                ];
                bodies.extend(
                    text.split_whitespace()
                        .map(|w| ("message.delta", json!({ "text": w }))),
                );
                bodies.push(("message", json!({"role": "assistant", "text": text})));
                bodies.push(("turn.completed", json!({"outcome": "completed"})));
                let Some((seq, subscribers)) = hub.sessions.get_mut(&session_id) else {
                    return;
                };
                for (kind, data) in bodies {
                    let ts =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    let event = EventFrame {
                        r#type: "event",
                        seq: *seq,
                        session_id: &session_id,
                        turn_id: &turn_id,
                        kind,
                        ts,
                        data,
                    };
                    *seq += 1;
                    subscribers.retain(|s| {
                        // Serialized per subscriber, as Troupe's WebSocket forwarders do.
                        s.send(serde_json::to_string(&event).expect("frames serialize"))
                            .is_ok()
                    });
                }
            }
            _ => {
                let _ = tx.send(json!({"type": "pong", "id": id}).to_string());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

async fn create_storm(bases: &[String], n: usize, load: f64) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()?;
    let key = format!("storm-{}", uuid::Uuid::now_v7());
    let started = Instant::now();
    let calls = (0..n).map(|i| {
        let client = client.clone();
        let key = key.clone();
        let base = bases[i % bases.len()].as_str();
        async move {
            let t = Instant::now();
            let value = create_session(&client, base, json!({"provider": "echo", "key": key}))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((t.elapsed().as_micros() as u64, value))
        }
    });
    let results = futures::future::join_all(calls).await;
    let took = started.elapsed();
    let mut latencies = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for result in results {
        let (latency, value) = result?;
        latencies.push(latency);
        ids.insert(
            value["session"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        created += usize::from(value["created"] == true);
    }
    let (p50, p99) = percentiles(&mut latencies);
    let one = ids.len() == 1 && created == 1;
    report(
        "create-storm",
        &json!({"requests": n, "nodes": bases.len(), "distinct_sessions": ids.len(),
                "created_true": created, "one_session": one, "secs": round3(took.as_secs_f64()),
                "p50_ms": p50, "p99_ms": p99}),
        Some(load),
    );
    if !one {
        return Err("create-storm: the key did not converge on one session".into());
    }
    Ok(())
}

async fn create_distinct(
    bases: &[String],
    n: usize,
    concurrency: usize,
    load: f64,
) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let run = format!("d-{}", uuid::Uuid::now_v7());
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let key = format!("{run}-{i}");
            let base = bases[i % bases.len()].as_str();
            async move {
                let t = Instant::now();
                create_session(&client, base, json!({"provider": "echo", "key": key}))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(t.elapsed().as_micros() as u64)
            }
        })
        .buffer_unordered(concurrency);
    while let Some(latency) = calls.next().await {
        latencies.push(latency?);
    }
    let took = started.elapsed();
    let (p50, p99) = percentiles(&mut latencies);
    report(
        "create-distinct",
        &json!({"sessions": n, "nodes": bases.len(), "concurrency": concurrency,
                "secs": round3(took.as_secs_f64()),
                "sessions_per_sec": round(n as f64 / took.as_secs_f64()),
                "p50_ms": p50, "p99_ms": p99}),
        Some(load),
    );
    Ok(())
}

async fn turn_latency(base: &str, turns: usize, load: f64) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let (session_id, last_seq) = echo_session(&client, base).await?;
    let mut socket = connect(base).await?;
    request(
        &mut socket,
        json!({"type": "subscribe", "id": "s", "session_id": session_id, "after_seq": last_seq}),
    )
    .await?;
    let url = format!("{base}/api/v1/sessions/{session_id}/turns");
    let mut first_event = Vec::with_capacity(turns);
    let mut accepted = Vec::with_capacity(turns);
    for _ in 0..turns {
        let t = Instant::now();
        let post = client.post(&url).json(&json!({"content": "hi"})).send();
        // The first event may arrive before the HTTP answer: read both at once.
        let read_first = async {
            while let Some(msg) = socket.next().await {
                if let Message::Text(text) = msg? {
                    let frame: Frame = serde_json::from_str(&text)?;
                    // The new turn's first event (events of the last turn may still trail).
                    if frame.kind == Some("turn.accepted") {
                        return Ok::<u64, Error>(t.elapsed().as_micros() as u64);
                    }
                }
            }
            Err("socket closed".into())
        };
        let (resp, first) = tokio::join!(post, read_first);
        let resp = resp?;
        accepted.push(t.elapsed().as_micros() as u64);
        if resp.status().as_u16() != 202 {
            return Err(format!("turn: {}", resp.status()).into());
        }
        first_event.push(first?);
        // Let the turn finish before the next one.
        loop {
            let Some(msg) = socket.next().await else {
                return Err("socket closed".into());
            };
            if let Message::Text(text) = msg? {
                let frame: Frame = serde_json::from_str(&text)?;
                if frame.kind == Some("turn.completed") {
                    break;
                }
            }
        }
    }
    let (p50, p99) = percentiles(&mut first_event);
    let (a50, a99) = percentiles(&mut accepted);
    report(
        "turn-latency",
        &json!({"turns": turns, "first_event_p50_ms": p50, "first_event_p99_ms": p99,
                "http_202_p50_ms": a50, "http_202_p99_ms": a99}),
        Some(load),
    );
    Ok(())
}

async fn replay(base: &str, events: usize, repeats: usize, load: f64) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let (session_id, _) = echo_session(&client, base).await?;
    // One turn of about `events` deltas fills the log.
    let mut socket = connect(base).await?;
    request(
        &mut socket,
        json!({"type": "subscribe", "id": "s", "session_id": session_id, "after_seq": 0}),
    )
    .await?;
    let deltas = events.saturating_sub(8).max(1);
    socket
        .send(Message::text(
            json!({"type": "send", "id": "fill", "session_id": session_id,
                   "content": words(deltas), "options": {"script": {"chunk_words": 1}}})
            .to_string(),
        ))
        .await?;
    read_turn(&mut socket, Instant::now()).await?;
    let _ = socket.close(None).await;
    let mut times = Vec::new();
    let mut total = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let mut socket = connect(base).await?;
        let answer = request(
            &mut socket,
            json!({"type": "subscribe", "id": "r", "session_id": session_id, "after_seq": 0}),
        )
        .await?;
        let last = answer["last_seq"].as_u64().ok_or("no last_seq")?;
        let mut seen = 0u64;
        while let Some(msg) = socket.next().await {
            match msg? {
                Message::Text(text) => {
                    let frame: Frame = serde_json::from_str(&text)?;
                    if frame.kind_of_frame == "event" {
                        seen += 1;
                        if frame.seq >= last {
                            break;
                        }
                    }
                }
                Message::Close(close) => {
                    return Err(format!("replay: closed after {seen} events: {close:?}").into())
                }
                _ => {}
            }
        }
        if seen != last {
            return Err(format!("replay: {seen} events of {last}").into());
        }
        total = last;
        times.push(t.elapsed().as_micros() as u64);
        let _ = socket.close(None).await;
    }
    let (p50, p99) = percentiles(&mut times);
    let best = times.iter().min().copied().unwrap_or(0) as f64 / 1000.0;
    report(
        "replay",
        &json!({"events": total, "repeats": repeats, "connect_to_last_event_p50_ms": p50,
                "max_ms": p99, "min_ms": round3(best)}),
        Some(load),
    );
    Ok(())
}

/// The shape of an `openai-chat` run.
#[derive(Clone, Copy, Debug)]
struct ChatShape {
    requests: usize,
    concurrency: usize,
    words: usize,
    keyed: bool,
}

/// `concurrency` clients, each sending its share of the requests one after another, request
/// `i` to node `i mod nodes`; a keyed client keeps one `X-Session-Key` (one conversation).
async fn openai_chat(bases: &[String], shape: ChatShape, load: f64) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let content = words(shape.words);
    let run = uuid::Uuid::now_v7();
    let started = Instant::now();
    let clients = (0..shape.concurrency.max(1)).map(|c| {
        let (client, content) = (client.clone(), content.clone());
        async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while i < shape.requests {
                let url = format!("{}/v1/chat/completions", bases[i % bases.len()]);
                let body = json!({"model": "echo", "stream": true,
                                  "messages": [{"role": "user", "content": content}]});
                let mut post = client.post(&url).json(&body);
                if shape.keyed {
                    post = post.header("X-Session-Key", format!("chat-{run}-{c}"));
                }
                let t = Instant::now();
                let resp = post.send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("chat: {}", resp.status()));
                }
                let text = resp.text().await.map_err(|e| e.to_string())?;
                if !text.trim_end().ends_with("data: [DONE]") {
                    return Err("chat: stream did not end with [DONE]".into());
                }
                latencies.push(t.elapsed().as_micros() as u64);
                i += shape.concurrency.max(1);
            }
            Ok::<_, String>(latencies)
        }
    });
    let mut latencies = Vec::with_capacity(shape.requests);
    for result in futures::future::join_all(clients).await {
        latencies.extend(result?);
    }
    let took = started.elapsed();
    let (p50, p99) = percentiles(&mut latencies);
    report(
        "openai-chat",
        &json!({"requests": shape.requests, "concurrency": shape.concurrency,
                "nodes": bases.len(), "keyed": shape.keyed, "reply_words": shape.words,
                "requests_per_sec": round(shape.requests as f64 / took.as_secs_f64()),
                "p50_ms": p50, "p99_ms": p99}),
        Some(load),
    );
    Ok(())
}

async fn live_actors(client: &reqwest::Client, base: &str) -> Result<u64, Error> {
    let value: Value = client
        .get(format!("{base}/api/v1/admin/actors"))
        .send()
        .await?
        .json()
        .await?;
    value["registry"]["live"]
        .as_u64()
        .ok_or_else(|| format!("no registry.live in {value}").into())
}

/// Reads each session, which goes through (and so activates) its actor.
async fn activate(client: &reqwest::Client, base: &str, ids: &[String]) -> Result<(), Error> {
    let mut reads = futures::stream::iter(ids.iter())
        .map(|id| {
            let client = client.clone();
            async move {
                client
                    .get(format!("{base}/api/v1/sessions/{id}"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
            }
        })
        .buffer_unordered(32);
    while let Some(ok) = reads.next().await {
        if !ok? {
            return Err("idle-sessions: a session read failed".into());
        }
    }
    Ok(())
}

async fn idle_sessions(base: &str, pid: u32, n: usize, load: f64) -> Result<(), Error> {
    let client = reqwest::Client::new();
    // Warm the server's allocator and pools with a few sessions first.
    for _ in 0..50 {
        echo_session(&client, base).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live_before = live_actors(&client, base).await?;
    let rss_before = rss_kib(pid)?;
    let mut ids = Vec::with_capacity(n);
    let mut calls = futures::stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            async move { echo_session(&client, base).await.map_err(|e| e.to_string()) }
        })
        .buffer_unordered(32);
    while let Some(result) = calls.next().await {
        ids.push(result?.0);
    }
    drop(calls);
    activate(&client, base, &ids).await?;
    let live = live_actors(&client, base).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_live = rss_kib(pid)?;
    let added = live.saturating_sub(live_before).max(1);
    let per_live = (rss_live as f64 - rss_before as f64) / added as f64;
    // Wait for passivation (bounded by --max-secs).
    let waited = Instant::now();
    let mut live_after = live;
    while live_after > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        live_after = live_actors(&client, base).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_passivated = rss_kib(pid)?;
    // The same sessions again: if passivation gave their memory back (to the allocator), the
    // second activation grows the resident set by little.
    activate(&client, base, &ids).await?;
    let live_again = live_actors(&client, base).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_reactivated = rss_kib(pid)?;
    report(
        "idle-sessions",
        &json!({"sessions": n, "live_actors_added": added,
                "rss_before_kib": rss_before, "rss_live_kib": rss_live,
                "rss_per_live_session_kib": round3(per_live),
                "passivated_after_secs": round3(waited.elapsed().as_secs_f64()),
                "live_after_passivation": live_after,
                "rss_after_passivation_kib": rss_passivated,
                "rss_kept_per_passivated_session_kib":
                    round3((rss_passivated as f64 - rss_before as f64) / added as f64),
                "live_after_reactivation": live_again,
                "rss_after_reactivation_kib": rss_reactivated,
                "rss_growth_per_reactivated_session_kib":
                    round3((rss_reactivated as f64 - rss_passivated as f64)
                        / live_again.max(1) as f64)}),
        Some(load),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Restart time

/// Writes `sessions` sessions with `events` events between them, through the Store API.
fn fill_store(dir: &Path, sessions: usize, events: u64) -> Result<(), Error> {
    use troupe_actors::store::Batch;
    use troupe_actors::{Event, EventBody, NewSession, SledStore, Store};
    let started = Instant::now();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir)?);
    let per_session = events / sessions.max(1) as u64;
    let mut written = 0u64;
    for i in 0..sessions {
        let (record, first) = NewSession {
            owner: "local".into(),
            provider: "echo".into(),
            key: Some(format!("fill-{i}")),
            ..NewSession::default()
        }
        .into_record();
        let (id, now) = (record.id, record.created_at);
        futures::executor::block_on(store.create(record, first, None))?;
        let mut seq = 1;
        while seq < per_session {
            let n = (per_session - seq).min(256);
            let batch: Vec<Arc<Event>> = (seq + 1..=seq + n)
                .map(|s| {
                    Arc::new(Event {
                        encoded: Default::default(),
                        seq: s,
                        session_id: id,
                        turn_id: None,
                        ts: now,
                        body: EventBody::MessageDelta {
                            text: "word ".into(),
                        },
                    })
                })
                .collect();
            futures::executor::block_on(store.commit(
                id,
                Batch {
                    events: batch,
                    ..Batch::default()
                },
            ))?;
            seq += n;
        }
        written += seq;
    }
    store.flush()?;
    report(
        "fill-store",
        &json!({"dir": dir.display().to_string(), "sessions": sessions, "events": written,
                "secs": round3(started.elapsed().as_secs_f64())}),
        Some(load_average()),
    );
    Ok(())
}

async fn restart(cli: &Cli, dir: &Path, repeats: usize) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let server = Server::troupe(cli, Some(dir), &[])?;
        let listening = t.elapsed();
        loop {
            let ready = client.get(format!("{}/readyz", server.base)).send().await;
            if matches!(ready, Ok(r) if r.status().as_u16() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = t.elapsed();
        times.push((listening, ready));
        drop(server);
    }
    let mut ready_us: Vec<u64> = times.iter().map(|t| t.1.as_micros() as u64).collect();
    let mut listen_us: Vec<u64> = times.iter().map(|t| t.0.as_micros() as u64).collect();
    let (r50, rmax) = percentiles(&mut ready_us);
    let (l50, _) = percentiles(&mut listen_us);
    report(
        "restart",
        &json!({"dir": dir.display().to_string(), "repeats": repeats,
                "start_to_listening_p50_ms": l50, "start_to_ready_p50_ms": r50,
                "start_to_ready_max_ms": rmax}),
        Some(load_average()),
    );
    Ok(())
}
