//! `troupe acp` driven the way an editor drives an agent: the real binary on stdio, an ACP client
//! written with the `agent-client-protocol` crate, and a real `troupe serve` behind it. A new
//! session, a prompt whose answer streams back as `session/update`, a tool-permission round trip
//! (the server's `permission.requested` becomes `session/request_permission`, the editor's choice
//! goes back), a cancel, and `session/load` of the same session after the server restarted.

#[path = "support/server_process.rs"]
mod server_process;

use agent_client_protocol::schema::v1::{
    CancelNotification, ContentBlock, InitializeRequest, LoadSessionRequest, NewSessionRequest,
    PromptRequest, RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse,
    SelectedPermissionOutcome, SessionNotification, StopReason, TextContent,
};
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::{Agent, Client, ConnectionTo, Lines};
use serde_json::Value;
use server_process::ServerProcess;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// What the editor saw: every update's JSON and every permission request's JSON.
#[derive(Clone, Default)]
struct Seen {
    updates: Arc<Mutex<Vec<Value>>>,
    permissions: Arc<Mutex<Vec<Value>>>,
}

impl Seen {
    /// The text of the agent's message chunks since `from`.
    fn agent_text(&self, from: usize) -> String {
        self.updates.lock().unwrap()[from..]
            .iter()
            .filter(|u| u["sessionUpdate"] == "agent_message_chunk")
            .filter_map(|u| u["content"]["text"].as_str().map(str::to_string))
            .collect()
    }

    fn len(&self) -> usize {
        self.updates.lock().unwrap().len()
    }
}

/// `troupe acp --url URL --provider echo` with its stdio piped.
fn spawn_editor_agent(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["acp", "--url", url, "--provider", "echo"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("troupe acp starts")
}

/// Runs `body` as an ACP client of `child`, recording into `seen`; the editor allows every tool.
async fn as_editor(
    child: &mut Child,
    seen: Seen,
    body: impl AsyncFnOnce(ConnectionTo<Agent>) -> Result<(), agent_client_protocol::Error>,
) {
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let incoming =
        futures::stream::unfold(BufReader::new(stdout).lines(), |mut lines| async move {
            match lines.next_line().await {
                Ok(Some(line)) => Some((Ok(line), lines)),
                Ok(None) => None,
                Err(e) => Some((Err(e), lines)),
            }
        });
    let outgoing = futures::sink::unfold(stdin, |mut stdin, line: String| async move {
        stdin.write_all(line.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        Ok::<_, std::io::Error>(stdin)
    });
    let updates = seen.updates.clone();
    let permissions = seen.permissions.clone();
    let run = Client
        .builder()
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                let update = serde_json::to_value(&notification.update).unwrap();
                updates.lock().unwrap().push(update);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, _cx| {
                permissions
                    .lock()
                    .unwrap()
                    .push(serde_json::to_value(&request).unwrap());
                let allow = request
                    .options
                    .iter()
                    .find(|o| serde_json::to_value(o.kind).unwrap() == "allow_once")
                    .expect("an allow option");
                responder.respond(RequestPermissionResponse::new(
                    RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                        allow.option_id.clone(),
                    )),
                ))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(Lines::new(Box::pin(outgoing), Box::pin(incoming)), body);
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the editor session finished in time")
        .expect("the ACP connection worked");
}

fn text(prompt: &str) -> Vec<ContentBlock> {
    vec![ContentBlock::Text(TextContent::new(prompt))]
}

#[tokio::test]
async fn an_editor_drives_a_durable_session_through_troupe_acp() {
    let data = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let cwd = project.path().to_path_buf();
    let server = ServerProcess::start(data.path(), &[], &[]);
    let seen = Seen::default();
    let session = Arc::new(Mutex::new(String::new()));

    let mut editor = spawn_editor_agent(&server.base());
    let (s, id_out) = (seen.clone(), session.clone());
    as_editor(&mut editor, seen.clone(), async move |cx: ConnectionTo<Agent>| {
        let init = cx
            .send_request(InitializeRequest::new(ProtocolVersion::V1))
            .block_task()
            .await?;
        assert!(init.agent_capabilities.load_session);
        let created = cx
            .send_request(NewSessionRequest::new(cwd))
            .block_task()
            .await?;
        let id = created.session_id.clone();
        *id_out.lock().unwrap() = id.0.to_string();

        // A prompt streams its answer back.
        let from = s.len();
        let answer = cx
            .send_request(PromptRequest::new(id.clone(), text("Hello from the editor")))
            .block_task()
            .await?;
        assert_eq!(answer.stop_reason, StopReason::EndTurn);
        assert_eq!(s.agent_text(from), "Hello from the editor");

        // The provider asks; the editor is asked; its allow lets the tool run.
        let from = s.len();
        let asking = r#"{"script": {"ask_permission": true}, "text": "tool time"}"#;
        let answer = cx
            .send_request(PromptRequest::new(id.clone(), text(asking)))
            .block_task()
            .await?;
        assert_eq!(answer.stop_reason, StopReason::EndTurn);
        assert_eq!(s.permissions.lock().unwrap().len(), 1, "the editor was asked once");
        let updates = s.updates.lock().unwrap()[from..].to_vec();
        assert!(
            updates
                .iter()
                .any(|u| u["sessionUpdate"] == "tool_call_update" && u["status"] == "completed"),
            "the allowed tool ran: {updates:#?}"
        );
        assert_eq!(s.agent_text(from), "tool time");

        // A cancel ends a running prompt `cancelled`.
        let slow = r#"{"script": {"chunk_delay_ms": 300, "chunk_words": 1}, "text": "a b c d e f g h i j"}"#;
        let pending = cx.send_request(PromptRequest::new(id.clone(), text(slow))).block_task();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            cx.send_notification(CancelNotification::new(id.clone()))
        };
        let (answer, cancelled) = tokio::join!(pending, cancel);
        cancelled?;
        assert_eq!(answer?.stop_reason, StopReason::Cancelled);
        Ok(())
    })
    .await;
    let _ = editor.kill().await;

    // The server restarts; a new editor process loads the same session and goes on.
    assert!(server.terminate().success());
    let server = ServerProcess::start(data.path(), &[], &[]);
    let id = session.lock().unwrap().clone();
    let mut editor = spawn_editor_agent(&server.base());
    let cwd = project.path().to_path_buf();
    let s = seen.clone();
    as_editor(
        &mut editor,
        seen.clone(),
        async move |cx: ConnectionTo<Agent>| {
            cx.send_request(InitializeRequest::new(ProtocolVersion::V1))
                .block_task()
                .await?;
            let from = s.len();
            cx.send_request(LoadSessionRequest::new(id.clone(), cwd))
                .block_task()
                .await?;
            let replayed = s.updates.lock().unwrap()[from..].to_vec();
            assert!(
                replayed
                    .iter()
                    .any(|u| u["sessionUpdate"] == "user_message_chunk"
                        && u["content"]["text"] == "Hello from the editor"),
                "the conversation is replayed: {replayed:#?}"
            );
            let from = s.len();
            let answer = cx
                .send_request(PromptRequest::new(id.clone(), text("After the restart")))
                .block_task()
                .await?;
            assert_eq!(answer.stop_reason, StopReason::EndTurn);
            assert_eq!(s.agent_text(from), "After the restart");
            Ok(())
        },
    )
    .await;
    let _ = editor.kill().await;
    assert!(server.terminate().success());
}
