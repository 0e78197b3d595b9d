//! `keyless`: N keyless `/v1/chat/completions` requests (each gets a hidden one-off session)
//! against a spawned `troupe serve` at the default log level; RSS, store size and live actors
//! before, right after, and after the retention sweep, and log bytes per request.

use super::{report, rss_kib, Error, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shape of a `keyless` run.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct KeylessArgs {
    /// Requests.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Times the N requests are sent, each followed by the sweep: a store that stays flat
    /// has the same size after every round.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// `retention.hidden_sessions` of the spawned server, seconds.
    #[arg(long, default_value_t = 0.0)]
    pub retention_secs: f64,
    /// `retention.sweep_interval_secs` of the spawned server.
    #[arg(long, default_value_t = 1.0)]
    pub sweep_interval_secs: f64,
    /// The server has no retention (a build from before it): set no retention keys and wait
    /// for no sweep, to measure the "before" figures.
    #[arg(long)]
    pub no_retention: bool,
}

/// What `/metrics` and `/proc` say about the server at one moment.
struct Snapshot {
    rss_kib: u64,
    store_bytes: f64,
    live: f64,
    stored: f64,
}

/// One sample of a metric line (`name{labels} value`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(-1.0)
}

/// Bytes of the files under `dir` (the sled store: what `du --apparent-size` says).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn snapshot(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    store: &std::path::Path,
) -> Result<Snapshot, Error> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let live = metric(&text, "troupe_sessions{state=\"live\"}");
    Ok(Snapshot {
        rss_kib: rss_kib(pid)?,
        store_bytes: dir_bytes(store) as f64,
        live,
        stored: live + metric(&text, "troupe_sessions{state=\"passivated\"}"),
    })
}

impl Snapshot {
    fn json(&self, prefix: &str) -> Value {
        json!({
            format!("{prefix}_rss_kib"): self.rss_kib,
            format!("{prefix}_store_bytes"): self.store_bytes,
            format!("{prefix}_live_actors"): self.live,
            format!("{prefix}_stored_sessions"): self.stored,
        })
    }
}

/// Sends `n` keyless chat requests, `concurrency` in flight.
async fn chat(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    concurrency: usize,
) -> Result<(), Error> {
    let url = format!("{base}/v1/chat/completions");
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let request = client.post(&url).json(&json!({"model": "echo",
                "messages": [{"role": "user", "content": format!("keyless request {i}")}]}));
            async move {
                let resp = request.send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("chat: {}", resp.status()));
                }
                resp.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            }
        })
        .buffer_unordered(concurrency);
    while let Some(done) = calls.next().await {
        done?;
    }
    Ok(())
}

pub async fn run(cli: &super::Cli, args: KeylessArgs, load: f64) -> Result<(), Error> {
    let data = tempfile::tempdir()?;
    let log_path = data.path().join("troupe.log");
    let log = std::fs::File::create(&log_path)?;
    let bin = super::troupe_bin(cli)?;
    let store = data.path().join("store");
    let mut command = Command::new(bin);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(&store)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(log);
    if !args.no_retention {
        command
            .env(
                "TROUPE_RETENTION__HIDDEN_SESSIONS",
                args.retention_secs.to_string(),
            )
            .env(
                "TROUPE_RETENTION__SWEEP_INTERVAL_SECS",
                args.sweep_interval_secs.to_string(),
            );
    }
    for pair in &cli.troupe_env {
        let (k, v) = pair.split_once('=').ok_or("--troupe-env takes KEY=VALUE")?;
        command.env(k, v);
    }
    let server = Server::start(command, "troupe listening on ", None)?;
    let pid = server.child.id();
    let base = server.base.clone();
    let client = reqwest::Client::new();

    // A warm-up, swept like the rest, so pools and caches exist before the first figure.
    chat(&client, &base, 200, args.concurrency).await?;
    let before = if args.no_retention {
        settle(&client, &base, pid, &store).await?
    } else {
        wait_for_sweep(&client, &base, pid, &store).await?
    };
    let log_before = std::fs::metadata(&log_path)?.len();

    let mut took = Duration::ZERO;
    let mut rounds = Vec::new();
    let mut last = None;
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        chat(&client, &base, args.requests, args.concurrency).await?;
        took += started.elapsed();
        let after = settle(&client, &base, pid, &store).await?;
        let waited = Instant::now();
        let swept = if args.no_retention {
            settle(&client, &base, pid, &store).await?
        } else {
            wait_for_sweep(&client, &base, pid, &store).await?
        };
        rounds.push(
            json!({"after_rss_kib": after.rss_kib, "after_store_bytes": after.store_bytes,
            "swept_rss_kib": swept.rss_kib, "swept_store_bytes": swept.store_bytes,
            "sweep_waited_secs": (waited.elapsed().as_secs_f64() * 1000.0).round() / 1000.0}),
        );
        last = Some((after, swept));
    }
    let log_bytes = std::fs::metadata(&log_path)?.len() - log_before;
    let (after, swept) = last.ok_or("no round ran")?;
    let requests = args.requests * args.rounds.max(1);
    let mut figures = json!({
        "requests": requests, "rounds": rounds, "concurrency": args.concurrency,
        "retention_secs": args.retention_secs, "sweep_interval_secs": args.sweep_interval_secs,
        "requests_per_sec": (requests as f64 / took.as_secs_f64()).round(),
        "log_bytes": log_bytes,
        "log_bytes_per_request": (log_bytes as f64 / requests as f64 * 1000.0).round() / 1000.0,
    });
    for part in [
        before.json("before"),
        after.json("after"),
        swept.json("swept"),
    ] {
        if let (Value::Object(all), Value::Object(part)) = (&mut figures, part) {
            all.extend(part);
        }
    }
    figures["rss_growth_kib"] = json!(swept.rss_kib as i64 - before.rss_kib as i64);
    figures["store_growth_ratio"] =
        json!(((swept.store_bytes / before.store_bytes.max(1.0)) * 1000.0).round() / 1000.0);
    report("keyless", &figures, Some(load));
    drop(server);
    Ok(())
}

/// Waits until the store holds no session and no actor is live (every one-off session is
/// passivated and swept), bounded by `--max-secs`.
async fn wait_for_sweep(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    store: &std::path::Path,
) -> Result<Snapshot, Error> {
    loop {
        let now = snapshot(client, base, pid, store).await?;
        if now.stored <= 0.0 && now.live <= 0.0 {
            return settle(client, base, pid, store).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A snapshot after half a second, so sled's flush and the allocator settle first.
async fn settle(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    store: &std::path::Path,
) -> Result<Snapshot, Error> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    snapshot(client, base, pid, store).await
}
