//! Supervision through the server: a crash loop hands its queue to the fallback provider,
//! `abandon` ends it, the default `hold` keeps it until `reset`; `max_concurrent_runs` makes
//! further turns wait queued; and no provider process outlives abort, delete or shutdown.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use troupe::config::OnFailure;

/// A turn the echo provider fails transiently on every attempt, slowly enough (two chunks,
/// 50 ms apart, per attempt) that turns sent right after it are queued behind it.
fn crash_looping_turn() -> Value {
    json!({"content": "doomed turn", "options": {"script": {"fail": "transient", "chunk_delay_ms": 50}}})
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking client of a [`ServerProcess`].
struct Blocking {
    client: reqwest::blocking::Client,
    base: String,
}

impl Blocking {
    fn new(server: &ServerProcess) -> Self {
        Blocking {
            client: reqwest::blocking::Client::new(),
            base: server.base(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn create_session(&self, provider: &str) -> String {
        let (status, body) = self.post("/api/v1/sessions", json!({ "provider": provider }));
        assert_eq!(status, 201, "{body}");
        body["session"]["id"].as_str().expect("id").to_string()
    }

    fn send_turn(&self, id: &str, body: Value) -> Value {
        let (status, body) = self.post(&format!("/api/v1/sessions/{id}/turns"), body);
        assert_eq!(status, 202, "{body}");
        body
    }

    fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.call(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{id}/events?limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("events").clone()
    }

    fn outcome(&self, id: &str, turn_id: &str) -> Value {
        let mut completed = Value::Null;
        wait_until(Duration::from_secs(10), "turn.completed", || {
            completed = self
                .events(id)
                .into_iter()
                .find(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn_id)
                .unwrap_or(Value::Null);
            !completed.is_null()
        });
        completed["data"].clone()
    }
}

#[test]
fn a_crash_loop_hands_the_queued_turns_to_the_fallback_provider() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("troupe.toml");
    std::fs::write(
        &file,
        r#"
shutdown_grace_secs = 0
[runtime]
retry_base_ms = 10
retry_max_ms = 40
[providers.echo]
kind = "echo"
[providers.flaky]
kind = "echo"
fallback = "echo"
"#,
    )
    .unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--config", file.to_str().unwrap()],
        &[],
    );
    let api = Blocking::new(&server);
    let id = api.create_session("flaky");
    let doomed = api.send_turn(&id, crash_looping_turn());
    let queued: Vec<String> = ["first after the crash", "second after the crash"]
        .into_iter()
        .map(|content| {
            let accepted = api.send_turn(&id, json!({ "content": content }));
            assert_eq!(accepted["status"], "queued", "{accepted}");
            accepted["turn_id"].as_str().unwrap().to_string()
        })
        .collect();

    let doomed_id = doomed["turn_id"].as_str().unwrap();
    let data = api.outcome(&id, doomed_id);
    assert_eq!(data["outcome"], "failed", "{data}");
    assert_eq!(data["error"]["code"], "retries_exhausted", "{data}");
    for turn_id in &queued {
        assert_eq!(api.outcome(&id, turn_id)["outcome"], "success");
    }

    let log = api.events(&id);
    let starts = |turn_id: &str| -> Vec<String> {
        log.iter()
            .filter(|e| e["kind"] == "turn.started" && e["turn_id"] == turn_id)
            .map(|e| e["data"]["provider"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(starts(doomed_id), vec!["flaky"; 4], "1 + 3 attempts");
    for turn_id in &queued {
        assert_eq!(
            starts(turn_id),
            vec!["echo"],
            "queued turns run on the fallback"
        );
    }
    let fallback = log
        .iter()
        .position(|e| e["kind"] == "session.updated" && e["data"]["reason"] == "provider_fallback")
        .expect("session.updated provider_fallback");
    assert_eq!(log[fallback]["data"]["session"]["provider"], "echo");
    let failed_at = log
        .iter()
        .position(|e| e["kind"] == "turn.completed" && e["turn_id"] == doomed_id)
        .unwrap();
    assert!(failed_at < fallback, "the fallback follows the failure");
    let (_, session) = api.call(
        reqwest::Method::GET,
        &format!("/api/v1/sessions/{id}"),
        None,
    );
    assert_eq!(session["session"]["provider"], "echo");
    assert_eq!(session["session"]["state"], "idle");
    assert!(server.terminate().success());
}

#[actix_rt::test]
async fn on_failure_abandon_ends_the_queued_turns_abandoned() {
    let app = spawn_app_with(|c| c.runtime.on_failure = OnFailure::Abandon).await;
    let id = app.create_session().await;
    let (status, doomed) = app.send_turn(&id, crash_looping_turn()).await;
    assert_eq!(status, 202);
    let (status, queued) = app.send_turn(&id, json!({"content": "never runs"})).await;
    assert_eq!(status, 202);
    assert_eq!(queued["status"], "queued");

    let doomed_id = doomed["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&id, doomed_id).await, "failed");
    let queued_id = queued["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&id, queued_id).await, "abandoned");
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["state"], "failed");
    assert_eq!(session["session"]["queue_len"], 0);
}

#[actix_rt::test]
async fn a_failed_session_holds_its_queue_until_reset() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (_, doomed) = app.send_turn(&id, crash_looping_turn()).await;
    let (_, held) = app.send_turn(&id, json!({"content": "held"})).await;
    assert_eq!(held["status"], "queued");
    let doomed_id = doomed["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&id, doomed_id).await, "failed");

    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["state"], "failed");
    assert_eq!(session["session"]["queue_len"], 1);
    let (_, turns) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    let held_id = held["turn_id"].as_str().unwrap();
    let listed = turns["turns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["turn_id"] == held_id)
        .expect("the held turn is listed")
        .clone();
    assert_eq!(listed["status"], "queued", "{listed}");
    assert_eq!(listed["position"], 1, "{listed}");
    assert_error(
        &app.send_turn(&id, json!({"content": "refused"})).await,
        409,
        "session_failed",
    );

    let (status, reset) = app
        .post_empty(&format!("/api/v1/sessions/{id}/reset"))
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(app.wait_for_outcome(&id, held_id).await, "success");
    let (_, session) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["session"]["state"], "idle");
}

#[actix_rt::test]
async fn max_concurrent_runs_makes_further_turns_wait_queued() {
    let app = spawn_app_with(|c| c.runtime.max_concurrent_runs = 1).await;
    let first = app.create_session().await;
    let second = app.create_session().await;
    let slow = json!({"content": "one two three four five six", "options": {"script": {"chunk_delay_ms": 100}}});
    let (status, a) = app.send_turn(&first, slow.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(a["status"], "running", "{a}");
    let (status, b) = app.send_turn(&second, slow).await;
    assert_eq!(status, 202);
    assert_eq!(b["status"], "queued", "{b}");
    assert_eq!(b["position"], 1, "{b}");
    let b_id = b["turn_id"].as_str().unwrap();
    let (_, turns) = app.get(&format!("/api/v1/sessions/{second}/turns")).await;
    assert_eq!(turns["turns"][0]["status"], "queued", "{turns}");

    let a_id = a["turn_id"].as_str().unwrap();
    assert_eq!(app.wait_for_outcome(&first, a_id).await, "success");
    assert_eq!(app.wait_for_outcome(&second, b_id).await, "success");
    let a_done = app
        .wait_for_event(&first, |e| e["kind"] == "turn.completed")
        .await;
    let b_started = app
        .wait_for_event(&second, |e| e["kind"] == "turn.started")
        .await;
    assert!(
        b_started["ts"].as_str().unwrap() >= a_done["ts"].as_str().unwrap(),
        "the second turn started ({}) before the first ended ({})",
        b_started["ts"],
        a_done["ts"]
    );
    let (_, turns) = app.get(&format!("/api/v1/sessions/{second}/turns")).await;
    assert_eq!(
        turns["turns"].as_array().unwrap().len(),
        1,
        "nothing lost, nothing doubled"
    );
}

/// Whether `pid` names a live process (a zombie is dead: it only waits to be reaped).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Starts a turn the fake `claude` answers by spawning a grandchild and hanging; returns the
/// pids of the child and the grandchild once both run.
fn start_hanging_turn(api: &Blocking, id: &str, pids: &Path) -> [u64; 2] {
    let _ = std::fs::remove_file(pids);
    api.send_turn(id, json!({"content": "spawn and hang"}));
    let mut found = None;
    wait_until(Duration::from_secs(10), "the fake CLI's pid file", || {
        found = std::fs::read_to_string(pids)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| Some([v["pid"].as_u64()?, v["grandchild"].as_u64()?]));
        found.is_some()
    });
    let pids = found.unwrap();
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?} run");
    pids
}

fn assert_gone(pids: [u64; 2], after: &str) {
    wait_until(Duration::from_secs(5), after, || {
        pids.iter().all(|&p| !alive(p))
    });
}

#[test]
fn no_provider_process_outlives_abort_delete_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids.json");
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_clis/claude");
    let file = dir.path().join("troupe.toml");
    std::fs::write(
        &file,
        format!(
            r#"
shutdown_grace_secs = 0
[providers.fake]
kind = "claude-cli"
command = "{}"
env = {{ FAKE_PIDS = "{}" }}
timeouts = {{ kill_grace_ms = 500 }}
"#,
            fake.display(),
            pids.display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--config", file.to_str().unwrap()],
        &[],
    );
    let api = Blocking::new(&server);

    let id = api.create_session("fake");
    let running = start_hanging_turn(&api, &id, &pids);
    let (status, aborted) = api.post(&format!("/api/v1/sessions/{id}/abort"), json!({}));
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["aborted"], true);
    assert_gone(running, "the processes to end after abort");

    let id = api.create_session("fake");
    let running = start_hanging_turn(&api, &id, &pids);
    let (status, _) = api.call(
        reqwest::Method::DELETE,
        &format!("/api/v1/sessions/{id}"),
        None,
    );
    assert_eq!(status, 204);
    assert_gone(running, "the processes to end after delete");

    let id = api.create_session("fake");
    let running = start_hanging_turn(&api, &id, &pids);
    assert!(server.terminate().success());
    assert_gone(running, "the processes to end after shutdown");
}
