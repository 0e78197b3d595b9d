//! One ACP agent process and its connection: the task that owns the child, speaks ACP to it
//! through the `agent-client-protocol` crate, and runs the session's prompts one at a time.
//! The process group dies when the task ends, however it ends; it is recorded durably (through
//! the ledger of the attempt that started it) before the agent gets any message, so the reaper
//! finds it after a crash, and the record is cleared once the group is gone.

use super::updates::{prompt_end, reported_cost, update_events};
use super::{AcpSettings, Approvals};
use crate::providers::classify::{classify, redact};
use crate::providers::process::{OutputLine, RunningProcess};
use agent_client_protocol::schema::v1::{
    AuthenticateRequest, CancelNotification, ContentBlock, InitializeRequest, LoadSessionRequest,
    NewSessionRequest, PromptRequest, RequestPermissionOutcome, RequestPermissionRequest,
    RequestPermissionResponse, SelectedPermissionOutcome, SessionNotification, TextContent,
};
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::{Agent, Client, ConnectionTo, Lines, Responder};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe_actors::{
    FailureClass, PermissionAnswer, PermissionOption, PermissionRequest, ProcessLedger,
    ProviderError, ProviderEvent,
};

/// Events buffered between the agent's task and the session.
pub const EVENT_BUFFER: usize = 256;

/// How long the channel must stay quiet after `session/load` answers before the replay it sent
/// is taken to be over.
const REPLAY_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// One turn for the agent.
pub struct PromptJob {
    /// The ACP session to resume when this process does not hold it yet.
    pub resume: Option<String>,
    /// The session's working directory (absolute).
    pub cwd: PathBuf,
    /// The user's message.
    pub text: String,
    /// Where the turn's events go; closed when the session drops the run.
    pub events: mpsc::Sender<ProviderEvent>,
    /// Answers to the turn's permission requests.
    pub answers: mpsc::UnboundedReceiver<PermissionAnswer>,
    /// Fired when the turn is aborted.
    pub cancel: CancellationToken,
    /// `session … turn …`, for logs.
    pub label: String,
}

/// A live agent: where its prompts go.
#[derive(Clone)]
pub struct AgentHandle {
    /// Prompts, run one at a time.
    jobs: mpsc::UnboundedSender<PromptJob>,
    /// Ends the agent (its task kills the process group).
    stop: CancellationToken,
    /// The agent's process id.
    pid: u32,
}

impl AgentHandle {
    /// Starts the task that owns `process`; `ledger` (the starting attempt's) records its group.
    pub fn start(
        process: RunningProcess,
        ledger: ProcessLedger,
        settings: Arc<AcpSettings>,
        label: String,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let pid = process.pid;
        tokio::spawn(serve(process, ledger, rx, stop.clone(), settings, label));
        AgentHandle { jobs, stop, pid }
    }

    /// Whether it still takes prompts.
    pub fn is_alive(&self) -> bool {
        !self.jobs.is_closed() && !self.stop.is_cancelled()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Hands a prompt over; the job comes back when the agent is gone.
    pub fn prompt(&self, job: PromptJob) -> Result<(), PromptJob> {
        self.jobs.send(job).map_err(|e| e.0)
    }

    /// Ends the agent and its process group.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// What the connection's handlers pass to the prompt loop, in the order they arrived.
enum Incoming {
    /// A `session/update`.
    Update(SessionNotification),
    /// A `session/request_permission` with its responder.
    Permission(
        RequestPermissionRequest,
        Responder<RequestPermissionResponse>,
    ),
}

/// Owns the process: reads its stdout into the connection, runs the connection, and kills the
/// group when the connection ends, the agent is stopped, or the process exits.
async fn serve(
    mut process: RunningProcess,
    ledger: ProcessLedger,
    mut jobs: mpsc::UnboundedReceiver<PromptJob>,
    stop: CancellationToken,
    settings: Arc<AcpSettings>,
    label: String,
) {
    // Nothing goes to the agent (not even `initialize`) before its group is durable.
    let recorded = process
        .record_then_prompt(&ledger, Vec::new(), settings.kill_grace, stop.cancelled())
        .await;
    if !recorded {
        process
            .group
            .terminate(&mut process.child, settings.kill_grace)
            .await;
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            let error = ProviderError::transient(
                "process_not_recorded",
                "the ACP agent's process group could not be recorded",
            );
            let _ = job.events.send(ProviderEvent::Failed(error)).await;
        }
        return;
    }
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<std::io::Result<String>>();
    let incoming_lines = futures::stream::poll_fn(move |cx| line_rx.poll_recv(cx));
    let stdin = process.stdin.take();
    let outgoing_lines = futures::sink::unfold(stdin, |stdin, line: String| async move {
        let sent = stdin
            .as_ref()
            .is_some_and(|s| s.send(format!("{line}\n").into_bytes()).is_ok());
        if sent {
            Ok(stdin)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the agent's stdin is closed",
            ))
        }
    });
    let (incoming_tx, incoming_rx) = mpsc::unbounded_channel::<Incoming>();
    let updates = incoming_tx.clone();
    let permissions = incoming_tx;
    let conversation_settings = settings.clone();
    let conversation_label = label.clone();
    let connection = Client
        .builder()
        .name("troupe")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                let _ = updates.send(Incoming::Update(notification));
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, _cx| {
                let _ = permissions.send(Incoming::Permission(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(
            Lines::new(Box::pin(outgoing_lines), incoming_lines),
            async move |cx: ConnectionTo<Agent>| {
                let mut conversation = Conversation {
                    cx,
                    incoming: incoming_rx,
                    settings: conversation_settings,
                    label: conversation_label,
                    acp_session: None,
                    can_load: false,
                    cost_seen: 0.0,
                    prompt_cost: None,
                };
                conversation.run(jobs).await;
                Ok(())
            },
        );
    tokio::pin!(connection);
    let mut stdout_open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ended = &mut connection => {
                if let Err(e) = ended {
                    log::debug!("{label}: ACP connection ended: {e}");
                }
                break;
            }
            line = process.stdout.next_line(), if stdout_open => match line {
                Ok(Some(OutputLine::Json(value))) => {
                    let _ = line_tx.send(Ok(value.to_string()));
                }
                Ok(Some(OutputLine::Noise(text))) => {
                    log::debug!("{label}: non-JSON output: {text}");
                }
                Ok(Some(OutputLine::Oversized(len))) => {
                    log::warn!("{label}: skipped an output line of {len} bytes");
                }
                Ok(None) | Err(_) => {
                    // The agent closed stdout: the connection sees the end and stops.
                    stdout_open = false;
                    let _ = line_tx.send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the agent closed its output",
                    )));
                }
            },
        }
    }
    process
        .group
        .terminate(&mut process.child, settings.kill_grace)
        .await;
    let stderr = redact(process.stderr.text(), &[]);
    log::info!(
        "{label}: ACP agent (pid {}) stopped{}",
        process.pid,
        if stderr.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", super::super::classify::truncate(&stderr))
        }
    );
}

/// The connection's side of a session: initialize once, then each prompt in turn.
struct Conversation {
    /// Requests to the agent.
    cx: ConnectionTo<Agent>,
    /// Updates and permission requests, in arrival order.
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// The approval policy and grace periods.
    settings: Arc<AcpSettings>,
    /// For logs.
    label: String,
    /// The ACP session this process holds.
    acp_session: Option<String>,
    /// The agent said it can `session/load`.
    can_load: bool,
    /// The session's cumulative cost (US dollars) as the agent last reported it.
    cost_seen: f64,
    /// What the running prompt cost so far, by the agent's reports.
    prompt_cost: Option<f64>,
}

/// How one prompt ended, for the loop over jobs.
enum Ended {
    /// The agent answered (any stop reason): it takes the next prompt.
    Answered,
    /// Aborted or broken: the agent process must go.
    KillAgent,
}

impl Conversation {
    async fn run(&mut self, mut jobs: mpsc::UnboundedReceiver<PromptJob>) {
        let initialized = self
            .cx
            .send_request(InitializeRequest::new(ProtocolVersion::V1))
            .block_task()
            .await;
        let mut init_error = match initialized {
            Ok(response) => {
                self.can_load = response.agent_capabilities.load_session;
                None
            }
            Err(e) => {
                log::warn!("{}: ACP initialize failed: {e}", self.label);
                Some(rpc_failure("initialize", &e))
            }
        };
        if let (None, Some(method)) = (&init_error, self.settings.auth_method.clone()) {
            let authenticated = self
                .cx
                .send_request(AuthenticateRequest::new(method.clone()))
                .block_task()
                .await;
            if let Err(e) = authenticated {
                log::warn!("{}: ACP authenticate `{method}` failed: {e}", self.label);
                init_error = Some(ProviderError::terminal(
                    "invalid_api_key",
                    format!("authenticate `{method}`: {e}"),
                ));
            }
        }
        while let Some(mut job) = jobs.recv().await {
            if let Some(error) = &init_error {
                let _ = job.events.send(ProviderEvent::Failed(error.clone())).await;
                return;
            }
            match self.prompt(&mut job).await {
                Ended::Answered => {}
                Ended::KillAgent => return,
            }
        }
    }

    /// Makes sure this process holds the job's ACP session: the one it has, a loaded one, or a
    /// new one. `Err` is the attempt's failure.
    async fn ensure_session(&mut self, job: &PromptJob) -> Result<(), ProviderError> {
        match (&job.resume, &self.acp_session) {
            (Some(wanted), Some(held)) if wanted == held => return Ok(()),
            (Some(wanted), _) => {
                if !self.can_load {
                    return Err(ProviderError::new(
                        FailureClass::ResumeLost,
                        "provider_session_lost",
                        format!("the agent cannot load session {wanted}"),
                    ));
                }
                let load = LoadSessionRequest::new(wanted.clone(), job.cwd.clone());
                let loaded = self.cx.send_request(load).block_task().await;
                // `session/load` replays the conversation as updates before it answers: they
                // were shown long ago (a replayed cost is where this process's count starts).
                // The connection hands notifications over on tasks of their own, so some of the
                // replay can come in after the answer; nothing the prompt causes can come
                // before the prompt is sent, so whatever arrives until the channel has been
                // quiet for a moment is replay.
                while let Ok(Some(replayed)) =
                    tokio::time::timeout(REPLAY_SETTLE, self.incoming.recv()).await
                {
                    if let Incoming::Update(n) = replayed {
                        self.cost_seen = reported_cost(&n.update).unwrap_or(self.cost_seen);
                    }
                }
                return match loaded {
                    Ok(_) => {
                        self.acp_session = Some(wanted.clone());
                        Ok(())
                    }
                    Err(e) => Err(ProviderError::new(
                        FailureClass::ResumeLost,
                        "provider_session_lost",
                        format!("session/load {wanted}: {e}"),
                    )),
                };
            }
            (None, _) => {}
        }
        let created = self
            .cx
            .send_request(NewSessionRequest::new(job.cwd.clone()))
            .block_task()
            .await
            .map_err(|e| rpc_failure("session/new", &e))?;
        let id = created.session_id.0.to_string();
        self.acp_session = Some(id.clone());
        if job.events.send(ProviderEvent::SessionId(id)).await.is_err() {
            return Err(ProviderError::transient("aborted", "the run was dropped"));
        }
        Ok(())
    }

    /// Runs one prompt to its stop reason, forwarding updates and permission requests.
    async fn prompt(&mut self, job: &mut PromptJob) -> Ended {
        if let Err(error) = self.ensure_session(job).await {
            let kill = error.code == "aborted";
            let _ = job.events.send(ProviderEvent::Failed(error)).await;
            return if kill {
                Ended::KillAgent
            } else {
                Ended::Answered
            };
        }
        let Some(session) = self.acp_session.clone() else {
            return Ended::KillAgent;
        };
        self.prompt_cost = None;
        let request = PromptRequest::new(
            session.clone(),
            vec![ContentBlock::Text(TextContent::new(job.text.clone()))],
        );
        let answer = self.cx.send_request(request).block_task();
        tokio::pin!(answer);
        let mut waiting: HashMap<
            String,
            (Responder<RequestPermissionResponse>, Vec<PermissionOption>),
        > = HashMap::new();
        let mut tools: HashMap<String, String> = HashMap::new();
        let result = loop {
            tokio::select! {
                biased;
                _ = job.cancel.cancelled() => break None,
                _ = job.events.closed() => break None,
                Some(incoming) = self.incoming.recv() => {
                    if !self.take(incoming, job, &mut waiting, &mut tools).await {
                        break None;
                    }
                }
                Some(reply) = job.answers.recv() => {
                    if let Some((responder, _)) = waiting.remove(&reply.request_id) {
                        let _ = responder.respond(selected(&reply.option_id));
                    }
                }
                answered = &mut answer => break Some(answered),
            }
        };
        let Some(answered) = result else {
            // Aborted: tell the agent, answer what it still asks, give it the grace period to
            // stop, then the process goes (the next turn resumes the session in a new one).
            log::info!("{}: cancelling the ACP prompt", job.label);
            let _ = self.cx.send_notification(CancelNotification::new(session));
            for (_, (responder, _)) in waiting.drain() {
                let _ = responder.respond(RequestPermissionResponse::new(
                    RequestPermissionOutcome::Cancelled,
                ));
            }
            let _ = tokio::time::timeout(self.settings.kill_grace, &mut answer).await;
            return Ended::KillAgent;
        };
        // Updates sent before the answer are already queued: they come first.
        while let Ok(incoming) = self.incoming.try_recv() {
            if !self.take(incoming, job, &mut waiting, &mut tools).await {
                return Ended::KillAgent;
            }
        }
        for (_, (responder, _)) in waiting.drain() {
            let _ = responder.respond(RequestPermissionResponse::new(
                RequestPermissionOutcome::Cancelled,
            ));
        }
        match answered {
            Ok(response) => {
                let end = prompt_end(&response, self.prompt_cost);
                let _ = job.events.send(end).await;
                Ended::Answered
            }
            Err(e) => {
                let error = rpc_failure("session/prompt", &e);
                let _ = job.events.send(ProviderEvent::Failed(error)).await;
                Ended::KillAgent
            }
        }
    }

    /// Handles one update or permission request of the running prompt; `false` when the run is
    /// gone.
    async fn take(
        &mut self,
        incoming: Incoming,
        job: &PromptJob,
        waiting: &mut HashMap<
            String,
            (Responder<RequestPermissionResponse>, Vec<PermissionOption>),
        >,
        tools: &mut HashMap<String, String>,
    ) -> bool {
        match incoming {
            Incoming::Update(notification) => {
                if let Some(amount) = reported_cost(&notification.update) {
                    self.count_cost(amount);
                }
                for event in update_events(&notification.update, tools) {
                    if job.events.send(event).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Incoming::Permission(request, responder) => {
                self.ask(request, responder, job, waiting).await
            }
        }
    }

    /// Counts a reported cumulative cost into the running prompt's: what it adds to the last
    /// report, or all of it when it went down (an agent that reports per prompt).
    fn count_cost(&mut self, amount: f64) {
        let added = if amount >= self.cost_seen {
            amount - self.cost_seen
        } else {
            amount
        };
        self.cost_seen = amount;
        self.prompt_cost = Some(self.prompt_cost.unwrap_or(0.0) + added);
    }

    /// Applies the policy to a permission request; asks the session's clients when it says so.
    async fn ask(
        &mut self,
        request: RequestPermissionRequest,
        responder: Responder<RequestPermissionResponse>,
        job: &PromptJob,
        waiting: &mut HashMap<
            String,
            (Responder<RequestPermissionResponse>, Vec<PermissionOption>),
        >,
    ) -> bool {
        let call = serde_json::to_value(&request.tool_call).unwrap_or(Value::Null);
        let options: Vec<PermissionOption> = request
            .options
            .iter()
            .map(|o| PermissionOption {
                id: o.option_id.0.to_string(),
                name: o.name.clone(),
                kind: serde_json::to_value(o.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect();
        let text = |key: &str| call[key].as_str().unwrap_or_default().to_string();
        let (title, kind) = (text("title"), text("kind"));
        let tool = call["name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| title.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| kind.clone());
        let first_of = |kinds: &[&str]| {
            kinds
                .iter()
                .find_map(|k| options.iter().find(|o| o.kind == *k))
                .map(|o| o.id.clone())
        };
        let allow = first_of(&["allow_once", "allow_always"]);
        let reject = first_of(&["reject_once", "reject_always"]);
        let policy = &self.settings.approvals;
        let decision = policy.decide(&[tool.as_str(), kind.as_str(), title.as_str()]);
        let automatic = match decision {
            Approvals::Allow => Some(allow),
            Approvals::Deny => Some(reject.clone()),
            Approvals::Ask => None,
        };
        if let Some(option) = automatic {
            log::info!("{}: `{tool}` {:?} by policy", job.label, decision);
            let outcome = match option {
                Some(id) => selected(&id),
                None => RequestPermissionResponse::new(RequestPermissionOutcome::Cancelled),
            };
            let _ = responder.respond(outcome);
            return true;
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let input = match &call["rawInput"] {
            Value::Null => call.get("content").cloned().unwrap_or(Value::Null),
            raw => raw.clone(),
        };
        let ask = PermissionRequest {
            request_id: request_id.clone(),
            tool,
            title,
            input,
            options: options.clone(),
            timeout: reject.as_ref().map(|_| policy.timeout),
            reject_option: reject,
        };
        waiting.insert(request_id, (responder, options));
        job.events
            .send(ProviderEvent::PermissionRequested(ask))
            .await
            .is_ok()
    }
}

/// The answer that picks `option_id`.
fn selected(option_id: &str) -> RequestPermissionResponse {
    RequestPermissionResponse::new(RequestPermissionOutcome::Selected(
        SelectedPermissionOutcome::new(option_id.to_string()),
    ))
}

/// A JSON-RPC error of `method` as a classified failure: a known cause by its text (bad key,
/// prompt too long, rate limit), else transient.
fn rpc_failure(method: &str, error: &agent_client_protocol::Error) -> ProviderError {
    let text = format!("{method}: {error}");
    let classified = classify(None, &text);
    if classified.code == "provider_error" {
        ProviderError::transient("provider_error", text)
    } else {
        classified
    }
}
