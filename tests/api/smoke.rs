//! The server starts on port 0, answers `/healthz`, and shuts down cleanly.

use crate::helpers::*;

#[actix_rt::test]
async fn healthz_answers_and_shutdown_is_clean() {
    let mut app = spawn_app().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    app.shutdown().await;
}

#[test]
fn binary_serves_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let body: serde_json::Value = reqwest::blocking::get(format!("{}/healthz", server.base()))
        .expect("GET /healthz")
        .json()
        .expect("JSON body");
    assert_eq!(body["status"], "ok");
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}
