//! Usage totals of the real `troupe` binary on sled survive `kill -9` and restarts: a retried
//! turn counts both attempts, a turn killed mid-stream keeps exactly the usage its durable
//! reports said, and after every restart the session's total and the owner's day equal the sum
//! of the turns' `turn.completed` usage: nothing acknowledged is lost, nothing counted twice.

#[path = "support/server_process.rs"]
mod server_process;

use serde_json::{json, Value};
use server_process::ServerProcess;
use std::time::{Duration, Instant};

const ENV: &[(&str, &str)] = &[
    ("TROUPE_RUNTIME__RETRY_BASE_MS", "10"),
    ("TROUPE_RUNTIME__RETRY_MAX_MS", "50"),
    ("TROUPE_SHUTDOWN_GRACE_SECS", "0"),
];

struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn of(server: &ServerProcess) -> Api {
        Api {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: server.base(),
        }
    }

    fn get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.json().expect("JSON")
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json().expect("JSON")
    }

    fn events(&self, id: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().unwrap());
            let page = self.get(&format!(
                "/api/v1/sessions/{id}/events?after_seq={after}&limit=1000"
            ));
            let page = page["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// Polls until `done` holds for the session's log (20 s at most).
    fn wait(&self, id: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events(id);
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// (total tokens, cost) of a usage object.
fn figures(usage: &Value) -> (u64, f64) {
    (
        usage["total_tokens"].as_u64().unwrap_or(0),
        usage["cost_usd"].as_f64().unwrap_or(0.0),
    )
}

/// The sum of every `turn.completed` usage in the log.
fn sum_of_turns(events: &[Value]) -> (u64, f64) {
    events
        .iter()
        .filter(|e| e["kind"] == "turn.completed")
        .map(|e| figures(&e["data"]["usage"]))
        .fold((0, 0.0), |(t, c), (t2, c2)| (t + t2, c + c2))
}

/// The session's total and the owner's day agree with the turns.
fn assert_totals(api: &Api, id: &str, expected: (u64, f64)) {
    let session = api.get(&format!("/api/v1/sessions/{id}"));
    let total = figures(&session["session"]["usage"]["total"]);
    let day = figures(&api.get("/api/v1/usage")["total"]);
    for (what, got) in [("session", total), ("owner's day", day)] {
        assert_eq!(got.0, expected.0, "{what} tokens");
        assert!((got.1 - expected.1).abs() < 1e-9, "{what} cost {got:?}");
    }
}

fn ended(events: &[Value], turn: &str) -> bool {
    events
        .iter()
        .any(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn)
}

#[test]
fn retried_and_cut_off_attempts_are_counted_once_across_kill_9_and_restarts() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(data.path(), &[], ENV);
    let api = Api::of(&server);
    let id = api.post("/api/v1/sessions", json!({"provider": "echo"}))["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A transient failure after 110 tokens and $0.25, then a success that costs the same.
    let retried = api.post(
        &format!("/api/v1/sessions/{id}/turns"),
        json!({"content": "retry me", "options": {"script": {
            "fail": "transient", "fail_attempts": 1,
            "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.25}}}}),
    );
    let retried = retried["turn_id"].as_str().unwrap().to_string();
    let events = api.wait(&id, "the retried turn's end", |e| ended(e, &retried));
    let completed = events
        .iter()
        .find(|e| e["kind"] == "turn.completed" && e["turn_id"] == retried)
        .unwrap();
    assert_eq!(completed["data"]["outcome"], "success");
    assert_eq!(figures(&completed["data"]["usage"]), (220, 0.5));
    assert_totals(&api, &id, (220, 0.5));

    // A slow turn reporting usage after every chunk, killed mid-stream.
    let words = vec!["w"; 200].join(" ");
    let slow = api.post(
        &format!("/api/v1/sessions/{id}/turns"),
        json!({"content": words, "options": {"script": {"chunk_delay_ms": 20,
            "usage_per_chunk": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.001}}}}),
    );
    let slow = slow["turn_id"].as_str().unwrap().to_string();
    api.wait(&id, "usage reports of the slow turn", |e| {
        e.iter()
            .filter(|e| e["kind"] == "status" && e["turn_id"] == slow)
            .count()
            >= 5
    });
    server.kill9();

    // Restarted: the cut-off turn ends `interrupted` with what its durable reports said, its
    // copy runs to the end, and the totals are the sum of the turns.
    let server = ServerProcess::start(data.path(), &[], ENV);
    let api = Api::of(&server);
    let events = api.wait(&id, "recovery and the re-run", |e| {
        let completed = e.iter().filter(|e| e["kind"] == "turn.completed").count();
        let accepted = e.iter().filter(|e| e["kind"] == "turn.accepted").count();
        ended(e, &slow) && completed == accepted
    });
    let cut_off = events
        .iter()
        .find(|e| e["kind"] == "turn.completed" && e["turn_id"] == slow)
        .unwrap();
    assert_eq!(cut_off["data"]["outcome"], "interrupted");
    let last_report = events
        .iter()
        .rfind(|e| e["kind"] == "status" && e["turn_id"] == slow)
        .expect("a durable usage report");
    assert_eq!(
        figures(&cut_off["data"]["usage"]),
        figures(&last_report["data"]["turn_usage"]),
        "the interrupted turn keeps exactly its durable usage"
    );
    assert!(figures(&cut_off["data"]["usage"]).0 >= 10);
    let sum = sum_of_turns(&events);
    assert!(sum.0 > 220 + 200, "the re-run counted too: {sum:?}");
    assert_totals(&api, &id, sum);

    // A graceful restart changes nothing.
    assert!(server.terminate().success());
    let server = ServerProcess::start(data.path(), &[], ENV);
    let api = Api::of(&server);
    assert_totals(&api, &id, sum);
    assert_eq!(sum_of_turns(&api.events(&id)), sum);
}
