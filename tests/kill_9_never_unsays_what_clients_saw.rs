//! Durable before delivered, through the real binary: WebSocket clients record every event they
//! are shown while the server is killed with `kill -9` at seeded random moments. After each
//! restart, every event a client saw is in the log with the same seq and the same content
//! (nothing shown is ever rewritten), and at the end every accepted turn has exactly one
//! `turn.completed`, which the clients received by resuming with `after_seq`.
//!
//! `KILL9_SEED` replays a run; `KILL9_KILLS` sets the number of kills (default
//! [`KILLS`]). The seed is printed with every failure. (Not `TROUPE_*`: the spawned server
//! inherits the environment and refuses unknown `TROUPE_*` keys.)

#[path = "support/server_process.rs"]
mod server_process;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Kill points in one run of the suite.
const KILLS: usize = 50;
/// Sessions watched by one WebSocket client each.
const SESSIONS: usize = 3;
/// The longest a server lives before it is killed.
const MAX_LIFE_MS: u64 = 400;
/// Short retries; a restart cap that many kills in a row never reach.
const ENV: &[(&str, &str)] = &[
    ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
    ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
    ("TROUPE_RUNTIME__MAX_CONSECUTIVE_RESTARTS", "100000"),
    ("TROUPE_RUNTIME__MAX_QUEUE", "1000"),
    ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
];

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one client of one session has been shown, by seq, across every server it talked to.
#[derive(Default)]
struct Seen {
    /// Event objects (without the frame's `type`) by seq.
    events: BTreeMap<u64, Value>,
}

impl Seen {
    fn last_seq(&self) -> u64 {
        self.events.keys().next_back().copied().unwrap_or(0)
    }

    /// Records a frame; a second sighting of a seq must be the same event.
    fn record(&mut self, mut frame: Value, seed: u64) {
        if frame["type"] != "event" {
            return;
        }
        frame.as_object_mut().map(|o| o.remove("type"));
        let seq = frame["seq"].as_u64().expect("seq");
        if let Some(before) = self.events.get(&seq) {
            assert_eq!(
                before, &frame,
                "seed {seed}: seq {seq} was shown as two different events"
            );
        }
        self.events.insert(seq, frame);
    }
}

/// A small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

async fn subscribe(base: &str, session: &str, after_seq: u64) -> Socket {
    let url = format!("{}/api/v1/ws", base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    let frame = json!({"type": "subscribe", "id": "s", "session_id": session,
                       "after_seq": after_seq});
    socket
        .send(Message::text(frame.to_string()))
        .await
        .expect("subscribe");
    socket
}

/// Reads whatever frames arrive within `window`; a closed socket ends the read.
async fn read_for(socket: &mut Socket, seen: &mut Seen, window: Duration, seed: u64) {
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let Message::Text(text) = message {
            seen.record(serde_json::from_str(&text).expect("JSON frame"), seed);
        }
    }
}

/// GETs `url` as JSON. A GET is idempotent, so a request cut off by a connection the server
/// closed (a keep-alive race under load) is tried again, as any client would.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let mut tries = 0;
    loop {
        tries += 1;
        match client.get(url).send().await {
            Ok(resp) => return resp.json().await.expect("JSON body"),
            Err(e) if tries < 3 && e.is_request() => {
                eprintln!("GET {url} tried again after: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("GET {url}: {e}"),
        }
    }
}

/// The whole stored log of a session, by REST (only what the server calls durable).
async fn stored_log(client: &reqwest::Client, base: &str, session: &str) -> Vec<Value> {
    stored_log_after(client, base, session, 0).await
}

/// The stored log of a session after `from` (exclusive), by REST.
async fn stored_log_after(
    client: &reqwest::Client,
    base: &str,
    session: &str,
    from: u64,
) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map_or(from, |e: &Value| e["seq"].as_u64().unwrap());
        let page = get_json(
            client,
            &format!("{base}/api/v1/sessions/{session}/events?after_seq={after}&limit=1000"),
        )
        .await;
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

/// Checks that every event `seen` after `from` is in `log` (the stored events after `from`)
/// with the same seq and content, and that `log` is gapless from `from`; returns how many
/// events were checked.
fn check_against_log(seen: &Seen, log: &[Value], from: u64, seed: u64, kill: usize) -> usize {
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (from + 1..=from + seqs.len() as u64).collect::<Vec<_>>(),
        "seed {seed}, kill {kill}: gapless log"
    );
    let mut checked = 0;
    for (seq, event) in seen.events.range(from + 1..) {
        let stored = log.get((seq - from - 1) as usize).unwrap_or_else(|| {
            panic!("seed {seed}, kill {kill}: seq {seq} was shown but is not in the log")
        });
        assert_eq!(
            stored, event,
            "seed {seed}, kill {kill}: seq {seq} was shown as one event and stored as another"
        );
        checked += 1;
    }
    checked
}

/// A turn that streams `chunks` deltas `delay_ms` apart.
fn slow_turn(label: &str, chunks: usize, delay_ms: u64) -> Value {
    let words: Vec<String> = (0..chunks).map(|i| format!("{label}-{i}")).collect();
    json!({"content": label, "options": {"script": {
        "reply": words.join(" "), "chunk_words": 1, "chunk_delay_ms": delay_ms}}})
}

#[actix_rt::test]
async fn kill_9_never_rewrites_an_event_a_client_saw() {
    let seed = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    let kills: usize = std::env::var("KILL9_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILLS);
    eprintln!("kill -9 consistency: seed {seed} (KILL9_SEED), {kills} kills");
    let mut rng = Rng(seed);
    let data = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::new();
    let mut server = ServerProcess::start(data.path(), &[], ENV);
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let created: Value = client
            .post(format!("{}/api/v1/sessions", server.base()))
            .json(&json!({"provider": "echo", "key": format!("watched-{i}")}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("session JSON");
        sessions.push(created["session"]["id"].as_str().expect("id").to_string());
    }
    let mut seen: Vec<Seen> = (0..SESSIONS).map(|_| Seen::default()).collect();
    let mut accepted: HashSet<String> = HashSet::new();
    let mut rewritten_checks = 0usize;
    let mut checked = [0u64; SESSIONS];
    let started = Instant::now();
    let mut restarts = Duration::ZERO;

    for kill in 0..kills {
        let base = server.base();
        let mut sockets = Vec::new();
        for (i, session) in sessions.iter().enumerate() {
            sockets.push(subscribe(&base, session, seen[i].last_seq()).await);
        }
        // Send a few turns, each acknowledged before the kill may come.
        for session in &sessions {
            for t in 0..rng.below(3) {
                let turn = slow_turn(&format!("k{kill}t{t}"), 20 + rng.below(30) as usize, 2);
                let resp = client
                    .post(format!("{base}/api/v1/sessions/{session}/turns"))
                    .json(&turn)
                    .send()
                    .await
                    .expect("send turn");
                assert_eq!(resp.status().as_u16(), 202, "seed {seed}");
                let receipt: Value = resp.json().await.expect("receipt");
                accepted.insert(receipt["turn_id"].as_str().expect("turn id").to_string());
            }
        }
        // Watch for a random while, then kill the server mid-flight.
        let life = Duration::from_millis(rng.below(MAX_LIFE_MS));
        let reads = sockets
            .iter_mut()
            .zip(seen.iter_mut())
            .map(|(socket, seen)| read_for(socket, seen, life, seed));
        futures::future::join_all(reads).await;
        server.kill9();
        drop(sockets);

        // Restarted: everything any client was shown since the last check is in the log,
        // unchanged, and the log goes on gapless from there (blocks are never rewritten, so
        // what was checked stays checked; the end runs one full check as well).
        let restart = Instant::now();
        server = ServerProcess::start(data.path(), &[], ENV);
        restarts += restart.elapsed();
        if (kill + 1) % 50 == 0 {
            eprintln!(
                "kill {}: {} turns acknowledged, {rewritten_checks} shown events checked, \
                 restart {:?} on average, {:?} in all",
                kill + 1,
                accepted.len(),
                restarts / (kill as u32 + 1),
                started.elapsed()
            );
        }
        for (i, session) in sessions.iter().enumerate() {
            let from = checked[i];
            let log = stored_log_after(&client, &server.base(), session, from).await;
            rewritten_checks += check_against_log(&seen[i], &log, from, seed, kill);
            checked[i] = seen[i].last_seq();
        }
    }

    // The last server runs everything to the end; the clients resume with `after_seq`.
    let base = server.base();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, session) in sessions.iter().enumerate() {
        loop {
            let turns = get_json(&client, &format!("{base}/api/v1/sessions/{session}/turns")).await;
            let open = turns["turns"]
                .as_array()
                .expect("turns")
                .iter()
                .filter(|t| t["status"] != "completed")
                .count();
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: {open} turns still open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = stored_log(&client, &base, session).await;
        check_against_log(&seen[i], &log, 0, seed, kills);
        let mut socket = subscribe(&base, session, seen[i].last_seq()).await;
        let last = log.last().map_or(0, |e| e["seq"].as_u64().unwrap());
        while seen[i].last_seq() < last {
            read_for(&mut socket, &mut seen[i], Duration::from_millis(200), seed).await;
            assert!(Instant::now() < deadline, "seed {seed}: resume stalled");
        }
        // Exactly one `turn.completed` per accepted turn, in the log and as the client saw it.
        let accepted_here: Vec<&str> = log
            .iter()
            .filter(|e| e["kind"] == "turn.accepted")
            .map(|e| e["data"]["turn_id"].as_str().unwrap())
            .collect();
        for events in [
            log.iter().collect::<Vec<_>>(),
            seen[i].events.values().collect(),
        ] {
            let mut completions: HashMap<&str, usize> = HashMap::new();
            for e in events.iter().filter(|e| e["kind"] == "turn.completed") {
                *completions
                    .entry(e["turn_id"].as_str().unwrap())
                    .or_default() += 1;
            }
            for turn in &accepted_here {
                assert_eq!(
                    completions.get(turn).copied().unwrap_or(0),
                    1,
                    "seed {seed}: turn {turn} must complete exactly once"
                );
            }
            assert_eq!(completions.len(), accepted_here.len(), "seed {seed}");
        }
        for turn in &accepted {
            if log.iter().any(|e| e["turn_id"] == turn.as_str()) {
                assert!(
                    accepted_here.contains(&turn.as_str()),
                    "seed {seed}: acknowledged turn {turn} lost its acceptance"
                );
            }
        }
    }
    let in_logs: usize = accepted
        .iter()
        .filter(|t| {
            seen.iter().any(|s| {
                s.events
                    .values()
                    .any(|e| e["kind"] == "turn.accepted" && e["data"]["turn_id"] == t.as_str())
            })
        })
        .count();
    assert_eq!(
        in_logs,
        accepted.len(),
        "seed {seed}: every acknowledged turn was accepted in a log a client saw"
    );
    eprintln!(
        "kill -9 consistency: seed {seed}: {kills} kills, {} acknowledged turns, {rewritten_checks} \
         shown events checked against the log, 0 rewritten, in {:.1?}",
        accepted.len(),
        started.elapsed()
    );
}

/// Distinct keys created concurrently.
const DISTINCT_KEYS: usize = 1000;
/// Concurrent calls on one key.
const SAME_KEY_CALLS: usize = 1000;

#[actix_rt::test]
async fn every_acknowledged_create_survives_kill_9_one_session_per_key() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(data.path(), &[], ENV);
    let base = server.base();
    let client = reqwest::Client::new();
    // Interleave the distinct keys with the calls on one key, 64 in flight at a time.
    let keys: Vec<String> = (0..DISTINCT_KEYS.max(SAME_KEY_CALLS))
        .flat_map(|i| {
            let mut k = Vec::new();
            if i < DISTINCT_KEYS {
                k.push(format!("distinct-{i}"));
            }
            if i < SAME_KEY_CALLS {
                k.push("same".to_string());
            }
            k
        })
        .collect();
    let acknowledged: Vec<(String, String, bool)> = futures::stream::iter(keys)
        .map(|key| {
            let client = client.clone();
            let url = format!("{base}/api/v1/sessions");
            async move {
                let resp = client
                    .post(url)
                    .json(&json!({"provider": "echo", "key": key}))
                    .send()
                    .await
                    .expect("create");
                let status = resp.status().as_u16();
                assert!(status == 201 || status == 200, "create answered {status}");
                let body: Value = resp.json().await.expect("JSON");
                let id = body["session"]["id"].as_str().expect("id").to_string();
                (key, id, body["created"] == true)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    server.kill9();

    let same: HashSet<&str> = acknowledged
        .iter()
        .filter(|(k, _, _)| k == "same")
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(same.len(), 1, "one session for one key");
    let created_same = acknowledged
        .iter()
        .filter(|(k, _, created)| k == "same" && *created)
        .count();
    assert_eq!(created_same, 1, "exactly one call created it");

    let server = ServerProcess::start(data.path(), &[], ENV);
    let base = server.base();
    let checks: Vec<(String, String)> = acknowledged
        .iter()
        .filter(|(k, _, created)| k != "same" || *created)
        .map(|(k, id, _)| (k.clone(), id.clone()))
        .collect();
    assert_eq!(checks.len(), DISTINCT_KEYS + 1);
    futures::stream::iter(checks)
        .for_each_concurrent(32, |(key, id)| {
            let client = client.clone();
            let base = base.clone();
            async move {
                let resp = client
                    .post(format!("{base}/api/v1/sessions"))
                    .json(&json!({"provider": "echo", "key": key}))
                    .send()
                    .await
                    .expect("create again");
                assert_eq!(resp.status().as_u16(), 200, "key {key} survived the kill");
                let body: Value = resp.json().await.expect("JSON");
                assert_eq!(
                    body["session"]["id"],
                    id.as_str(),
                    "key {key} names its session"
                );
                let got = client
                    .get(format!("{base}/api/v1/sessions/{id}"))
                    .send()
                    .await
                    .expect("GET session");
                assert_eq!(got.status().as_u16(), 200, "session {id} survived");
            }
        })
        .await;
}
