//! `kill -9` safety of the real `troupe` binary: twenty sessions with slow scripted streams and
//! queued turns, the process killed at three different moments, then restarted on the same sled
//! directory. After recovery every accepted turn has exactly one `turn.completed`, every log is
//! gapless, nothing acknowledged is lost, interrupted turns ran again and the queues drained.
//! A second test measures how quickly a restarted server is ready while many sessions with open
//! turns are still being recovered in the background.

#[path = "support/server_process.rs"]
mod server_process;

use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// Sessions per kill scenario.
const SESSIONS: usize = 20;
/// Words of each session's first, long turn: 150 chunks of two words, 20 ms apart (3 s).
const FIRST_TURN_WORDS: usize = 300;
/// Words of each queued turn (1 s each).
const QUEUED_TURN_WORDS: usize = 100;
/// Short retries and no grace: the tests never wait on production durations.
const ENV: &[(&str, &str)] = &[
    ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
    ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
    ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
];

/// Starts the binary on `data` with the test environment ([`ENV`]) and `env` on top.
fn start_server(data: &Path, env: &[(&str, &str)]) -> ServerProcess {
    let env: Vec<_> = ENV.iter().chain(env).copied().collect();
    ServerProcess::start(data, &[], &env)
}

/// A client of `server`.
fn client_of(server: &ServerProcess) -> Api {
    Api {
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        base: server.base(),
    }
}

/// Typed requests against one server.
struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn create_session(&self) -> String {
        let (status, body) = self.post("/api/v1/sessions", json!({"provider": "echo"}));
        assert_eq!(status, 201, "{body}");
        body["session"]["id"].as_str().expect("id").to_string()
    }

    /// Sends a slow scripted echo turn; its id.
    fn send_slow(&self, session: &str, content: &str) -> String {
        let body = json!({"content": content, "options": {"script": {"chunk_delay_ms": 20}}});
        let (status, body) = self.post(&format!("/api/v1/sessions/{session}/turns"), body);
        assert_eq!(status, 202, "{body}");
        body["turn_id"].as_str().expect("turn_id").to_string()
    }

    /// Every event of `session`, paging through the log.
    fn events(&self, session: &str) -> Vec<Value> {
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

    /// Every turn of `session`.
    fn turns(&self, session: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/v1/sessions/{session}/turns"));
        assert_eq!(status, 200, "{body}");
        body["turns"].as_array().expect("turns").clone()
    }

    fn ready(&self) -> bool {
        self.client
            .get(format!("{}/readyz", self.base))
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// `(sessions, events)` in the store, from the session listing (which reads the store and
    /// activates nothing).
    fn stored_figures(&self) -> (usize, u64) {
        let (mut sessions, mut events, mut after) = (0, 0, None::<String>);
        loop {
            let path = match &after {
                Some(a) => format!("/api/v1/sessions?limit=500&after={a}"),
                None => "/api/v1/sessions?limit=500".to_string(),
            };
            let (status, body) = self.get(&path);
            assert_eq!(status, 200, "{body}");
            for s in body["sessions"].as_array().expect("sessions") {
                sessions += 1;
                events += s["last_seq"].as_u64().expect("last_seq");
            }
            match body["next_after"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return (sessions, events),
            }
        }
    }

    /// A counter of `GET /metrics` with exactly these labels (0 when absent).
    fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `words` words naming the session and turn, so every turn's content is unique.
fn content(session: usize, turn: usize, words: usize) -> String {
    let mut text = format!("s{session} t{turn}");
    for _ in 2..words {
        text.push_str(" word");
    }
    text
}

/// When the process is killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// As soon as the last turn was acknowledged: the first turns have just started.
    AfterAcceptance,
    /// While every session's first turn streams.
    MidStream,
    /// After every first turn completed, while the queued turns run.
    QueueDraining,
}

/// One session's accepted turns: `(turn id, content)`, in sending order.
type Accepted = Vec<(String, String)>;

fn kill_and_recover(moment: Moment) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &[]);
    let api = client_of(&server);
    let mut sessions: BTreeMap<String, Accepted> = BTreeMap::new();
    for s in 0..SESSIONS {
        let id = api.create_session();
        let mut accepted = Vec::new();
        for (t, words) in [FIRST_TURN_WORDS, QUEUED_TURN_WORDS, QUEUED_TURN_WORDS]
            .into_iter()
            .enumerate()
        {
            let text = content(s, t, words);
            accepted.push((api.send_slow(&id, &text), text));
        }
        sessions.insert(id, accepted);
    }
    match moment {
        Moment::AfterAcceptance => {}
        Moment::MidStream => wait_until(
            Duration::from_secs(10),
            "every first turn to stream",
            || {
                sessions.iter().all(|(id, turns)| {
                    api.events(id).iter().any(|e| {
                        e["kind"] == "message.delta" && e["turn_id"] == turns[0].0.as_str()
                    })
                })
            },
        ),
        Moment::QueueDraining => {
            wait_until(Duration::from_secs(20), "every first turn to end", || {
                sessions.iter().all(|(id, turns)| {
                    api.events(id).iter().any(|e| {
                        e["kind"] == "turn.completed" && e["turn_id"] == turns[0].0.as_str()
                    })
                })
            })
        }
    }
    server.kill9();

    let restarting = Instant::now();
    let server = start_server(dir.path(), &[]);
    let api = client_of(&server);
    wait_until(Duration::from_secs(10), "/readyz", || api.ready());
    let ready_after = restarting.elapsed();
    let (stored_sessions, stored_events) = api.stored_figures();
    wait_until(Duration::from_secs(30), "every turn to end", || {
        sessions
            .keys()
            .all(|id| api.turns(id).iter().all(|t| t["status"] == "completed"))
    });
    let recovered_after = restarting.elapsed();
    println!(
        "{moment:?}: {stored_sessions} sessions, {stored_events} events in the store; \
         ready after {ready_after:?}, every turn done after {recovered_after:?}"
    );

    let mut interrupted_total = 0;
    for (id, accepted) in &sessions {
        let log = api.events(id);
        let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "session {id}: seqs gapless, no duplicates");

        let turns = api.turns(id);
        let by_id: HashMap<&str, &Value> = turns
            .iter()
            .map(|t| (t["turn_id"].as_str().unwrap(), t))
            .collect();
        for (turn_id, _) in accepted {
            assert!(
                by_id.contains_key(turn_id.as_str()),
                "session {id}: acknowledged turn {turn_id} lost; turns: {turns:?}"
            );
        }
        let mut accepted_in_log: Vec<&str> = log
            .iter()
            .filter(|e| e["kind"] == "turn.accepted")
            .map(|e| e["turn_id"].as_str().unwrap())
            .collect();
        accepted_in_log.sort_unstable();
        let mut listed: Vec<&str> = by_id.keys().copied().collect();
        listed.sort_unstable();
        assert_eq!(
            accepted_in_log, listed,
            "session {id}: the log and the turn list agree"
        );
        for turn_id in &listed {
            let completions: Vec<&Value> = log
                .iter()
                .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == *turn_id)
                .collect();
            assert_eq!(
                completions.len(),
                1,
                "session {id} turn {turn_id}: exactly one turn.completed; log: {log:?}"
            );
            assert_eq!(
                completions[0]["data"]["outcome"], by_id[turn_id]["outcome"],
                "session {id} turn {turn_id}: the log and the turn list agree on the outcome"
            );
        }
        for (turn_id, text) in accepted {
            let outcome = by_id[turn_id.as_str()]["outcome"].as_str().unwrap();
            match outcome {
                "success" => {}
                "interrupted" => {
                    interrupted_total += 1;
                    let reran = turns.iter().any(|t| {
                        t["content"] == text.as_str()
                            && t["turn_id"] != turn_id.as_str()
                            && t["outcome"] == "success"
                    });
                    assert!(
                        reran,
                        "session {id}: interrupted turn {turn_id} never re-ran; turns: {turns:?}"
                    );
                }
                other => panic!("session {id} turn {turn_id}: unexpected outcome {other}"),
            }
        }
        let (status, session) = api.get(&format!("/api/v1/sessions/{id}"));
        assert_eq!(status, 200);
        assert_eq!(session["session"]["state"], "idle", "{session}");
        assert_eq!(session["session"]["queue_len"], 0, "{session}");
    }
    assert!(
        interrupted_total >= SESSIONS,
        "{moment:?}: the kill interrupted only {interrupted_total} turns"
    );
    assert!(server.terminate().success());
}

#[test]
fn kill_9_right_after_acceptance_loses_nothing() {
    kill_and_recover(Moment::AfterAcceptance);
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    kill_and_recover(Moment::MidStream);
}

#[test]
fn kill_9_while_the_queue_drains_loses_nothing() {
    kill_and_recover(Moment::QueueDraining);
}

/// Sessions with a running turn when the process is killed, for the readiness measurement.
const OPEN_SESSIONS: usize = 200;

#[test]
fn a_restarted_server_is_ready_before_recovery_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &[]);
    let api = client_of(&server);
    for s in 0..OPEN_SESSIONS {
        let id = api.create_session();
        // Runs for minutes: it is certainly running at the kill.
        let body =
            json!({"content": content(s, 0, 400), "options": {"script": {"chunk_delay_ms": 1000}}});
        let (status, body) = api.post(&format!("/api/v1/sessions/{id}/turns"), body);
        assert_eq!(status, 202, "{body}");
    }
    server.kill9();

    let restarting = Instant::now();
    let server = start_server(dir.path(), &[]);
    let api = client_of(&server);
    wait_until(Duration::from_secs(10), "/readyz", || api.ready());
    let ready_after = restarting.elapsed();
    let interrupted_at_ready = api.metric("troupe_turns_completed_total{outcome=\"interrupted\"}");
    wait_until(
        Duration::from_secs(20),
        "every session to be recovered",
        || {
            api.metric("troupe_turns_completed_total{outcome=\"interrupted\"}")
                >= OPEN_SESSIONS as f64
        },
    );
    let recovered_after = restarting.elapsed();
    let (stored_sessions, stored_events) = api.stored_figures();
    println!(
        "lazy recovery: {stored_sessions} sessions with open turns, {stored_events} events; \
         ready after {ready_after:?} ({interrupted_at_ready} recovered by then), \
         all recovered after {recovered_after:?}"
    );
    assert_eq!(stored_sessions, OPEN_SESSIONS);
    assert!(
        ready_after < Duration::from_secs(3),
        "readiness took {ready_after:?}"
    );
    assert!(server.terminate().success());
}

#[test]
fn a_session_running_too_long_before_the_crash_fails_instead_of_rerunning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &[]);
    let api = client_of(&server);
    let id = api.create_session();
    let running = api.send_slow(&id, &content(0, 0, FIRST_TURN_WORDS));
    let queued = api.send_slow(&id, &content(0, 1, QUEUED_TURN_WORDS));
    wait_until(Duration::from_secs(10), "the first turn to start", || {
        api.events(&id).iter().any(|e| e["kind"] == "turn.started")
    });
    server.kill9();

    // Every running session counts as stale now.
    let server = start_server(dir.path(), &[("TROUPE_RUNTIME__STALE_RUNNING_HOURS", "0")]);
    let api = client_of(&server);
    wait_until(Duration::from_secs(10), "the stale session to fail", || {
        let (_, body) = api.get(&format!("/api/v1/sessions/{id}"));
        body["session"]["state"] == "failed"
    });
    let turns = api.turns(&id);
    assert_eq!(turns.len(), 2, "interrupted, not re-queued: {turns:?}");
    let find = |turn_id: &str| turns.iter().find(|t| t["turn_id"] == turn_id).unwrap();
    assert_eq!(find(&running)["outcome"], "interrupted");
    assert_eq!(find(&queued)["status"], "queued", "held, not dropped");
    let log = api.events(&id);
    let completions = log
        .iter()
        .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == running.as_str())
        .count();
    assert_eq!(completions, 1);

    let (status, body) = api.post(&format!("/api/v1/sessions/{id}/reset"), json!({}));
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), "the held turn to run", || {
        api.turns(&id)
            .iter()
            .any(|t| t["turn_id"] == queued.as_str() && t["outcome"] == "success")
    });
    assert!(server.terminate().success());
}

#[test]
fn graceful_restarts_do_not_use_up_the_restart_cap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_server(dir.path(), &[]);
    let id = client_of(&server).create_session();
    let text = content(0, 0, FIRST_TURN_WORDS);
    client_of(&server).send_slow(&id, &text);
    // One more deploy than the restart cap (3), each while the turn streams.
    for _ in 0..4 {
        let api = client_of(&server);
        let streamed = api.events(&id).len();
        wait_until(Duration::from_secs(10), "the turn to stream", || {
            let log = api.events(&id);
            log.len() > streamed && log.last().unwrap()["kind"] == "message.delta"
        });
        assert!(server.terminate().success());
        server = start_server(dir.path(), &[]);
    }
    let api = client_of(&server);
    wait_until(Duration::from_secs(15), "the turn to finish", || {
        api.turns(&id)
            .iter()
            .any(|t| t["content"] == text.as_str() && t["outcome"] == "success")
    });
    let turns = api.turns(&id);
    let interrupted = turns
        .iter()
        .filter(|t| t["outcome"] == "interrupted")
        .count();
    assert_eq!(interrupted, 4, "{turns:?}");
    let (_, session) = api.get(&format!("/api/v1/sessions/{id}"));
    assert_eq!(session["session"]["state"], "idle", "{session}");
    assert!(server.terminate().success());
}
