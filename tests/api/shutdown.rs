//! The real binary: graceful shutdown (a running turn ends `interrupted`, the store reopens
//! cleanly with a gapless log) and startup refusals.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn events(client: &reqwest::blocking::Client, base: &str, id: &str) -> Vec<Value> {
    let page: Value = client
        .get(format!("{base}/api/v1/sessions/{id}/events?limit=1000"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    page["events"].as_array().unwrap().clone()
}

#[test]
fn sigterm_interrupts_a_running_turn_and_the_store_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TROUPE_SHUTDOWN_GRACE_SECS", "0")];
    let server = ServerProcess::start(dir.path(), &[], &env);
    let base = server.base();
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"provider": "echo", "key": "survivor"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["session"]["id"].as_str().unwrap().to_string();
    // 100 words, two per chunk, 200 ms apart: ten seconds of streaming.
    let resp = client
        .post(format!("{base}/api/v1/sessions/{id}/turns"))
        .json(&slow_turn(100))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let turn: Value = resp.json().unwrap();
    let turn_id = turn["turn_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events(&client, &base, &id)
        .iter()
        .any(|e| e["kind"] == "message.delta")
    {
        assert!(Instant::now() < deadline, "the turn never streamed");
        std::thread::sleep(Duration::from_millis(20));
    }

    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );

    // Same data directory: sled opens (the first process released its lock), the log is there.
    let server = ServerProcess::start(dir.path(), &[], &env);
    let base = server.base();
    let log = events(&client, &base, &id);
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "gapless log after restart");
    let completions: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn_id.as_str())
        .collect();
    assert!(!completions.is_empty(), "no turn.completed in {log:?}");
    assert_eq!(completions[0]["data"]["outcome"], "interrupted");
    let session: Value = client
        .get(format!("{base}/api/v1/sessions/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(session["session"]["key"], "survivor");
    let ready = client.get(format!("{base}/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn refuses_a_non_loopback_bind_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--bind", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run troupe");
    assert!(!output.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to bind 0.0.0.0:0")
            && stderr.contains("no auth tokens are configured"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_config_file_and_environment_overrides_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("troupe.toml");
    std::fs::write(
        &file,
        "shutdown_grace_secs = 0\n[limits]\nbody_bytes = 64\n[runtime]\nmax_queue = 5\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &data,
        &["--config", file.to_str().unwrap()],
        &[("TROUPE_LIMITS__BODY_BYTES", "128")],
    );
    let client = reqwest::blocking::Client::new();
    let post = |title: &str| {
        client
            .post(format!("{}/api/v1/sessions", server.base()))
            .json(&json!({"provider": "echo", "title": title}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // The environment (128 bytes) wins over the file (64 bytes).
    assert_eq!(post(&"x".repeat(80)), 201);
    assert_eq!(post(&"x".repeat(200)), 413);
    assert!(server.terminate().success());

    std::fs::write(&file, "[limits]\nbody_limit = 64\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run troupe");
    assert!(!output.status.success(), "an unknown key is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("body_limit"), "stderr: {stderr}");
}

#[test]
fn defaults_need_no_configuration() {
    let config = troupe::config::Config::load(None).expect("defaults load");
    assert_eq!(config.bind, "127.0.0.1:7878");
    assert_eq!(config.data_dir, std::path::PathBuf::from("./troupe-data"));
    assert_eq!(config.store.kind, troupe::config::StoreKind::Sled);
    assert!(config.auth.tokens.is_empty());
    assert_eq!(config.limits.body_bytes, 1024 * 1024);
    assert!(config.checked_bind().is_ok());
}
