//! AG-UI: a run with a tool call streams the AG-UI events derived from the session's log, the
//! same `runId` replays the run instead of starting a new turn, and `Last-Event-ID` resumes
//! exactly after what was seen; driven over raw SSE and by the official `@ag-ui/client`
//! (tests/node/agui_client.js) against the real binary.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::Command;

/// A prompt the echo provider answers with a tool call (`echo`) and then the text.
fn tool_prompt(text: &str) -> String {
    json!({"script": {"tool_use": true}, "text": text}).to_string()
}

fn input(thread: &str, run: &str, prompt: &str) -> Value {
    json!({
        "threadId": thread, "runId": run, "state": {}, "tools": [], "context": [],
        "forwardedProps": {},
        "messages": [{"id": "m1", "role": "user", "content": prompt}],
    })
}

/// POSTs a run; status and the SSE frames as (id, event).
async fn post_run(
    app: &TestApp,
    body: Value,
    last_event_id: Option<u64>,
) -> (u16, Vec<(u64, Value)>) {
    let mut request = app
        .client
        .post(app.url("/api/v1/agui"))
        .header("accept", "text/event-stream")
        .json(&body);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let mut frames = Vec::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str::<Value>(v).ok();
            }
        }
        match (id, data) {
            (Some(id), Some(data)) => frames.push((id, data)),
            (None, Some(_)) if status == 200 => panic!("a frame without an id: {block}"),
            _ => {}
        }
    }
    (status, frames)
}

fn types(frames: &[(u64, Value)]) -> Vec<String> {
    frames
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[actix_rt::test]
async fn an_agui_run_with_a_tool_call_streams_and_resumes() {
    let app = spawn_app().await;
    let (status, frames) = post_run(
        &app,
        input("agui-1", "run-1", &tool_prompt("hi there agui")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        types(&frames),
        [
            "RUN_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    let ids: Vec<u64> = frames.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids only grow: {ids:?}"
    );
    let (_, started) = &frames[0];
    assert_eq!(started["threadId"], "agui-1");
    assert_eq!(started["runId"], "run-1");
    assert_eq!(frames[1].1["toolCallName"], "echo");
    assert_eq!(
        frames[2].1["delta"],
        json!({"text": "hi there agui"}).to_string()
    );
    assert_eq!(frames[4].1["content"], "hi there agui");
    let text: String = frames
        .iter()
        .filter(|(_, e)| e["type"] == "TEXT_MESSAGE_CONTENT")
        .map(|(_, e)| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "hi there agui");

    // The thread is a session keyed `agui-1`; the run is one turn of it.
    let sessions = app.get("/api/v1/sessions").await.1;
    let session = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "agui-1")
        .expect("the thread's session")
        .clone();
    let id = session["id"].as_str().unwrap().to_string();

    // The same run again: no new turn, the same events; after an id: exactly the rest.
    let (status, again) = post_run(&app, input("agui-1", "run-1", "ignored"), None).await;
    assert_eq!(status, 200);
    assert_eq!(again, frames);
    let cut = frames[4].0;
    let (_, rest) = post_run(&app, input("agui-1", "run-1", "ignored"), Some(cut)).await;
    assert_eq!(rest, frames[5..].to_vec());
    let (_, turns) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    assert_eq!(turns["turns"].as_array().unwrap().len(), 1);

    // The session id works as the thread too; a new run is a new turn with the history.
    let (_, frames) = post_run(&app, input(&id, "run-2", "second"), None).await;
    assert_eq!(types(&frames).last().unwrap(), "RUN_FINISHED");
    let (_, turns) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    assert_eq!(turns["turns"].as_array().unwrap().len(), 2);

    // A failed turn ends with RUN_ERROR carrying its code.
    let failing =
        json!({"script": {"fail": "terminal", "fail_code": "prompt_too_long"}, "text": "x"});
    let (_, frames) = post_run(&app, input("agui-1", "run-3", &failing.to_string()), None).await;
    let (_, last) = frames.last().unwrap();
    assert_eq!(last["type"], "RUN_ERROR");
    assert_eq!(last["code"], "prompt_too_long");

    // Nothing to run, a bad cursor: 400 before any stream.
    let nothing = json!({"threadId": "agui-1", "runId": "run-4", "messages": []});
    let answer = app.post("/api/v1/agui", nothing).await;
    assert_error(&answer, 400, "invalid_request");
    let resp = app
        .client
        .post(app.url("/api/v1/agui"))
        .header("last-event-id", "soon")
        .json(&input("agui-1", "run-5", "x"))
        .send()
        .await
        .unwrap();
    assert_error(&status_json(resp).await, 400, "invalid_request");
}

const TOKEN: &str = "agui-client-token";

#[test]
fn the_official_agui_client_runs_and_replays_against_troupe() {
    let test = "the_official_agui_client_runs_and_replays_against_troupe";
    let Some(node) = crate::external::require_program(test, "node", "apt-get install nodejs")
    else {
        return;
    };
    let modules = crate::external::repo_root().join(".ci/npm/node_modules");
    if !modules.join("@ag-ui/client").is_dir() {
        crate::external::missing(
            test,
            "the npm package @ag-ui/client",
            "npm install --prefix .ci/npm @ag-ui/client@1.0.0 (as .ci/run does)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        format!("[[auth.tokens]]\ntoken = \"{TOKEN}\"\nowner = \"frontend\"\n"),
    )
    .unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let script = crate::external::repo_root().join("tests/node/agui_client.js");
    let out = Command::new(node)
        .arg(script)
        .env("NODE_PATH", &modules)
        .env("TROUPE_URL", format!("{}/api/v1/agui", server.base()))
        .env("TROUPE_TOKEN", TOKEN)
        .env("THREAD", "copilot-thread")
        .env("PROMPT", tool_prompt("from the frontend"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the AG-UI client failed:\n{stdout}\n{stderr}"
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    let first = &result["first"];
    assert_eq!(
        first["types"],
        json!([
            "RUN_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED"
        ]),
        "{result}"
    );
    // The client assembled the conversation from the events: the tool call with its
    // arguments, the tool's answer, the assistant's text.
    let messages = first["messages"].as_array().unwrap();
    let call = messages
        .iter()
        .find(|m| m["toolCalls"].is_array())
        .expect("an assistant message with the tool call");
    assert_eq!(call["toolCalls"][0]["function"]["name"], "echo");
    assert_eq!(
        call["toolCalls"][0]["function"]["arguments"],
        json!({"text": "from the frontend"}).to_string()
    );
    assert!(messages
        .iter()
        .any(|m| m["role"] == "tool" && m["content"] == "from the frontend"));
    assert!(messages
        .iter()
        .any(|m| m["role"] == "assistant" && m["content"] == "from the frontend"));
    // The replayed run: the same events, no new turn.
    assert_eq!(result["replay"]["types"], first["types"]);
}
