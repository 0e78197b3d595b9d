//! Flat resource use: keyless OpenAI requests leave no actor behind and, after the retention
//! sweep, nothing in the store; archived sessions expire with their events and keys; a healthy
//! request logs nothing at the default level.

use crate::helpers::*;
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use troupe::actors::{ScopedKey, SessionId};
use troupe::config::{Age, Config};

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hidden sessions removed at the first sweep after their turn; a sweep every 100 ms.
fn sweep_at_once(config: &mut Config) {
    config.retention.hidden_sessions = Age::Secs(0.0);
    config.retention.sweep_interval_secs = 0.1;
}

/// Every session the store holds.
async fn stored(app: &TestApp) -> Vec<troupe::actors::record::SessionRecord> {
    app.runtime
        .store()
        .sessions_after(None, usize::MAX)
        .await
        .expect("store")
}

/// The value of metric line `name` (with its labels) in `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[actix_rt::test]
async fn two_thousand_keyless_requests_leave_no_actor_and_after_the_sweep_no_session() {
    let app = spawn_app_with(sweep_at_once).await;
    let (status, _) = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "key": "keep-me"}),
        )
        .await;
    assert_eq!(status, 201);
    let keyed = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("X-Session-Key", "kept-chat")
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "remember"}]}))
        .send()
        .await
        .expect("keyed chat");
    assert_eq!(keyed.status(), 200);
    let keyed: SessionId = keyed.headers()["x-session-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let hidden: Vec<SessionId> = futures::stream::iter(0..2000)
        .map(|i| {
            let request = app
                .client
                .post(app.url("/v1/chat/completions"))
                .json(&json!({"model": "echo", "stream": i % 2 == 0,
                              "messages": [{"role": "user", "content": format!("request {i}")}]}));
            async move {
                let resp = request.send().await.expect("chat");
                let status = resp.status();
                if status != 200 {
                    panic!(
                        "request {i}: {status} {}",
                        resp.text().await.unwrap_or_default()
                    );
                }
                let id: SessionId = resp.headers()["x-session-id"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                resp.bytes().await.expect("body");
                id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(hidden.len(), 2000);

    // Each one-off actor stops once its turn ended and its follower left: only the keyed
    // chat session (idle passivation: 900 s) stays live.
    let metrics = app.runtime.metrics().clone();
    eventually(
        "one-off actors passivated",
        Duration::from_secs(20),
        || async {
            metrics
                .live_sessions
                .load(std::sync::atomic::Ordering::Relaxed)
                <= 1
        },
    )
    .await;
    assert!(metric(&app, "troupe_session_passivations_total").await >= 2000.0);

    // The sweeper removes every one of them, and only them.
    eventually(
        "hidden sessions removed",
        Duration::from_secs(60),
        || async { stored(&app).await.iter().all(|r| !r.hidden) },
    )
    .await;
    let left = stored(&app).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|r| r.id == keyed));
    let store = app.runtime.store();
    for id in hidden.iter().take(50) {
        assert_eq!(store.get_session(*id).await.unwrap(), None);
        assert_eq!(
            store.last_seq(*id).await.unwrap(),
            0,
            "events of {id} left behind"
        );
        assert!(store.all_turns(*id).await.unwrap().is_empty());
    }
    // The counter follows once the sweeper has its deletes' confirmations.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "troupe_sessions_expired_total{kind=\"hidden\"}").await < 2000.0 {
        assert!(
            Instant::now() < deadline,
            "expired counter never reached 2000"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&app, "troupe_sessions_expired_total{kind=\"hidden\"}").await,
        2000.0
    );
    assert!(metric(&app, "troupe_store_bytes").await > 0.0);

    // The keyed session is untouched: same id for its key, its log whole, still answering.
    let again = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("X-Session-Key", "kept-chat")
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "still here?"}]}))
        .send()
        .await
        .expect("keyed chat");
    assert_eq!(
        again.headers()["x-session-id"].to_str().unwrap(),
        keyed.to_string()
    );
    let turns = store.all_turns(keyed).await.unwrap();
    let contents: Vec<&str> = turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(contents, ["remember", "still here?"]);
}

#[actix_rt::test]
async fn a_background_response_stays_retrievable_while_its_one_off_session_is_retained() {
    // Kept for an hour: passivated at once, removed only after its retention.
    let app = spawn_app_with(|c| c.retention.sweep_interval_secs = 0.1).await;
    let (status, body) = app
        .post(
            "/v1/responses",
            json!({"model": "echo", "input": "later, please", "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let metrics = app.runtime.metrics().clone();
    eventually(
        "the one-off actor passivated",
        Duration::from_secs(10),
        || async {
            metrics
                .live_sessions
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        },
    )
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = app.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(
        body["output"][0]["content"][0]["text"], "later, please",
        "{body}"
    );
}

#[actix_rt::test]
async fn archived_sessions_expire_with_their_events_and_keys_and_the_key_starts_afresh() {
    let app = spawn_app_with(|c| {
        c.retention.archived_sessions = Age::Secs(0.0);
        c.retention.sweep_interval_secs = 0.1;
        c.runtime.idle_passivate_secs = 0.2;
    })
    .await;
    let mut ids = Vec::new();
    for key in ["archived", "active"] {
        let (status, body) = app
            .post("/api/v1/sessions", json!({"provider": "echo", "key": key}))
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["session"]["id"].as_str().unwrap().to_string();
        let (status, _) = app
            .post(
                &format!("/api/v1/sessions/{id}/turns"),
                json!({"content": "hello there", "client_message_id": "m1"}),
            )
            .await;
        assert_eq!(status, 202);
        ids.push(id);
    }
    let (archived, active) = (ids[0].clone(), ids[1].clone());
    let store = app.runtime.store().clone();
    let archived_id: SessionId = archived.parse().unwrap();
    eventually("the turn ended", Duration::from_secs(10), || async {
        store
            .all_turns(archived_id)
            .await
            .unwrap()
            .iter()
            .all(|t| t.outcome.is_some())
    })
    .await;
    let resp = app
        .client
        .patch(app.url(&format!("/api/v1/sessions/{archived}")))
        .json(&json!({"archived": true}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 200);

    eventually(
        "the archived session removed",
        Duration::from_secs(20),
        || async { store.get_session(archived_id).await.unwrap().is_none() },
    )
    .await;
    assert_eq!(store.last_seq(archived_id).await.unwrap(), 0);
    assert!(store.all_turns(archived_id).await.unwrap().is_empty());
    assert_eq!(
        store.turn_for_client_id(archived_id, "m1").await.unwrap(),
        None
    );
    let key = ScopedKey {
        owner: "local".into(),
        project: None,
        key: "archived".into(),
    };
    assert_eq!(store.lookup_key(&key).await.unwrap(), None);
    let (status, body) = app
        .get(&format!("/api/v1/sessions/{archived}/events"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "session_not_found");

    // The session that was not archived stays, with its log.
    let (status, body) = app.get(&format!("/api/v1/sessions/{active}")).await;
    assert_eq!(status, 200, "{body}");

    // The key names nothing now: a new session on it starts its log at seq 1.
    let (status, body) = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "key": "archived"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    let fresh = body["session"]["id"].as_str().unwrap().to_string();
    assert_ne!(fresh, archived);
    let (status, body) = app
        .get(&format!("/api/v1/sessions/{fresh}/events?after_seq=0"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["events"][0]["seq"], 1);
    assert_eq!(body["events"][0]["kind"], "session.created");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "troupe_sessions_expired_total{kind=\"archived\"}").await < 1.0 {
        assert!(Instant::now() < deadline, "expired counter never reached 1");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&app, "troupe_sessions_expired_total{kind=\"archived\"}").await,
        1.0
    );
}

#[actix_rt::test]
async fn a_healthy_keyless_request_logs_nothing_at_the_default_level() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data.path().join("store"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn troupe");
    let stdout = child.stdout.take().unwrap();
    let address = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let address = loop {
            let line = lines.next().expect("listening line").unwrap();
            if let Some(rest) = line.strip_prefix("troupe listening on http://") {
                break rest.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        address
    };
    let client = reqwest::Client::new();
    let chat = |i: usize| {
        client
            .post(format!("http://{address}/v1/chat/completions"))
            .json(&json!({"model": "echo",
                          "messages": [{"role": "user", "content": format!("request {i}")}]}))
            .send()
    };
    // One request first, so one-time lines (if any) are not counted against the rest.
    assert_eq!(chat(0).await.unwrap().status(), 200);
    let before = std::fs::metadata(&log_path).unwrap().len();
    const N: usize = 200;
    for i in 1..=N {
        let resp = chat(i).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let after = std::fs::metadata(&log_path).unwrap().len();
    let _ = child.kill();
    let _ = child.wait();
    let per_request = (after - before) as f64 / N as f64;
    assert!(
        per_request <= 20.0,
        "{per_request} log bytes per request at the default level:\n{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
}
