//! Running a turn: dispatching it when a run slot is free, starting its attempts on the
//! provider, watching their limits, and taking the provider's output.

use super::{ActiveRun, AttemptOutput, Session, OUTPUT_CHUNK};
use crate::event::{Event, EventBody};
use crate::ids::TurnId;
use crate::metrics::RuntimeMetrics;
use crate::provider::{AttemptRequest, HistoryMessage, ProviderError, ProviderEvent};
use crate::record::{Handover, TurnStatus};
use crate::store::Batch;
use crate::time::Timestamp;
use actix::prelude::*;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

impl Session {
    /// Whether a turn may start now.
    fn may_dispatch(&self) -> bool {
        self.run.is_none()
            && self.waiting_for_permit.is_none()
            && !self.draining
            && !self.deleted
            && !self.record.paused
            && !self.record.failed
            && !self.record.budget_held
            && !self.record.archived
            && !self.queue.is_empty()
    }

    /// Starts the next queued turn when the session is free, waiting for a run slot if needed.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if !self.may_dispatch() {
            return;
        }
        match self.shared.limiter.clone().try_acquire_owned() {
            Ok(permit) => self.begin_turn(permit, ctx),
            Err(_) => {
                let limiter = self.shared.limiter.clone();
                let wait = async move { limiter.acquire_owned().await.ok() }
                    .into_actor(self)
                    .map(|permit, act, ctx| {
                        act.waiting_for_permit = None;
                        if let Some(permit) = permit {
                            if act.may_dispatch() {
                                act.begin_turn(permit, ctx);
                            }
                        }
                    });
                self.waiting_for_permit = Some(ctx.spawn(wait));
            }
        }
    }

    /// Takes the front turn out of the queue and starts its first attempt.
    fn begin_turn(&mut self, permit: OwnedSemaphorePermit, ctx: &mut Context<Self>) {
        let before = self.queue.len();
        let Some(mut turn) = self.queue.pop_front() else {
            return;
        };
        self.set_queue_gauge(before);
        turn.status = TurnStatus::Running;
        turn.started_at = Some(Timestamp::now());
        self.record.running_since = turn.started_at;
        let turn_id = turn.id;
        let content = turn.content.clone();
        self.run = Some(ActiveRun {
            turns: VecDeque::from([turn.clone()]),
            attempt: 0,
            attempt_id: 0,
            cancel: CancellationToken::new(),
            stream: None,
            watchdog: None,
            retry_timer: None,
            steer: None,
            started: Instant::now(),
            started_at: Timestamp::now(),
            last_output: Instant::now(),
            pid: None,
            fresh_retry_used: false,
            counted: Default::default(),
            _permit: permit,
            metrics: self.shared.metrics.clone(),
        });
        RuntimeMetrics::add(&self.metrics().running_attempts, 1);
        let batch = Batch {
            turns: vec![turn],
            record: Some(self.record.clone()),
            active: Some(true),
            ..Batch::default()
        };
        let mut events = vec![(
            Some(turn_id),
            EventBody::Message {
                role: "user".into(),
                text: content,
            },
        )];
        if before > 1 || self.record.paused {
            events.push(self.queue_updated());
        }
        self.persist(batch, events, "turn started");
        self.start_attempt(ctx);
    }

    /// Reads the conversation from the log for stateless providers, once per activation; the
    /// actor handles no other message meanwhile, then starts the attempt it was about to start.
    fn load_conversation(&mut self, ctx: &mut Context<Self>) {
        // The durable log from the store, then what was on its way there when the read began
        // (confirmations may still come in while the read is out), then anything later.
        let durable = self.log.durable_seq();
        let unconfirmed: Vec<Arc<Event>> = self.journal.unconfirmed_events().cloned().collect();
        let read = self
            .shared
            .store
            .read_events(self.id(), 0, durable as usize);
        ctx.wait(read.into_actor(self).map(move |stored, session, ctx| {
            let stored = match stored {
                Ok(stored) => stored,
                // An attempt without its conversation would answer wrongly: stop instead.
                Err(e) => return session.fail_stop(e, ctx),
            };
            let last = unconfirmed.last().map_or(durable, |e| e.seq);
            let (_, confirmed_since) = session.log.replay_after(last);
            let later: Vec<Arc<Event>> = confirmed_since
                .into_iter()
                .chain(session.journal.unconfirmed_events().cloned())
                .filter(|e| e.seq > last)
                .collect();
            let messages = stored
                .iter()
                .chain(unconfirmed.iter().chain(&later).map(|e| &**e))
                .filter_map(HistoryMessage::of_event);
            session.conversation = Some(messages.collect());
            session.start_attempt(ctx);
        }));
    }

    /// The conversation so far, without the current turn, for stateless providers.
    fn history(&self, current: TurnId) -> Vec<HistoryMessage> {
        self.conversation
            .iter()
            .flatten()
            .filter(|(turn, _)| *turn != Some(current))
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Starts the next attempt of the front turn; the budgets were checked
    /// ([`Session::start_attempt`]).
    pub(super) fn start_attempt_unchecked(&mut self, ctx: &mut Context<Self>) {
        let Some(provider) = self.shared.providers.get(&self.record.provider).cloned() else {
            let error = ProviderError::terminal(
                "unknown_provider",
                format!("provider `{}` is not configured", self.record.provider),
            );
            self.on_failure(error, ctx);
            return;
        };
        let caps = provider.capabilities();
        // A provider switch hands a fresh conversation a transcript of this one, from the log.
        let log_transcript = self.record.handover == Some(Handover::TranscriptOfLog);
        if (caps.stateless || log_transcript) && self.conversation.is_none() {
            return self.load_conversation(ctx);
        }
        if caps.stateless && self.record.provider_session_id.is_none() {
            let synthetic = format!("{}-{}", self.record.provider, self.id());
            self.map_provider_session(synthetic);
        }
        self.next_attempt_id += 1;
        let attempt_id = self.next_attempt_id;
        let Some(run) = self.run.as_mut() else { return };
        run.attempt += 1;
        run.attempt_id = attempt_id;
        run.cancel = CancellationToken::new();
        run.started = Instant::now();
        run.started_at = Timestamp::now();
        run.last_output = Instant::now();
        run.retry_timer = None;
        run.counted = Default::default();
        let turn = run.turns.front().expect("a run always has a turn").clone();
        let attempt = run.attempt;
        let cancel = run.cancel.clone();
        let (history, sent) = if caps.stateless {
            let mut history = seeded_history(&turn.options);
            history.extend(self.history(turn.id));
            let (history, sent) = provider.history_window().apply(history);
            (history, Some(sent))
        } else {
            (Vec::new(), None)
        };
        let request = AttemptRequest {
            session_id: self.id(),
            turn_id: turn.id,
            attempt,
            provider_session_id: self.record.provider_session_id.clone(),
            fork_session: self.record.handover == Some(Handover::Fork),
            prompt: match &self.record.handover {
                Some(Handover::TranscriptOfLog) => {
                    Handover::with_transcript(&transcript_of(&self.history(turn.id)), &turn.content)
                }
                other => Handover::prompt(other.as_ref(), &turn.content),
            },
            history,
            project: self.record.project.clone(),
            model: self.record.model.clone(),
            options: turn.options.clone(),
            cancel,
            processes: self.process_ledger(turn.id, attempt, ctx),
        };
        RuntimeMetrics::bump(&self.metrics().attempts);
        let mut turn_record = turn.clone();
        turn_record.attempts = attempt;
        let events = vec![(
            Some(turn.id),
            EventBody::TurnStarted {
                attempt,
                provider: self.record.provider.clone(),
                history: sent,
            },
        )];
        log::debug!(
            "session {} turn {}: attempt {attempt} on `{}`",
            self.id(),
            turn.id,
            self.record.provider
        );
        self.persist(
            Batch {
                turns: vec![turn_record],
                ..Batch::default()
            },
            events,
            "turn started",
        );
        let started = provider.start(request);
        let stream = started
            .events
            .map(move |event| AttemptOutput {
                attempt_id,
                event: Some(event),
            })
            .chain(futures::stream::once(async move {
                AttemptOutput {
                    attempt_id,
                    event: None,
                }
            }));
        let stream_handle = ctx.add_stream(stream.ready_chunks(OUTPUT_CHUNK));
        let settings = &self.shared.settings;
        let tick = settings
            .output_idle_timeout
            .min(settings.attempt_timeout)
            .div_f64(4.0)
            .clamp(Duration::from_millis(5), Duration::from_secs(5));
        let watchdog = ctx.run_interval(tick, move |act, ctx| act.check_limits(attempt_id, ctx));
        if let Some(run) = self.run.as_mut() {
            run.stream = Some(stream_handle);
            run.watchdog = Some(watchdog);
            run.steer = started.steer;
            run.pid = started.pid;
        }
    }

    /// Fails the attempt when it ran too long or went silent.
    fn check_limits(&mut self, attempt_id: u64, ctx: &mut Context<Self>) {
        let Some(run) = &self.run else { return };
        if run.attempt_id != attempt_id || run.retry_timer.is_some() {
            return;
        }
        let settings = &self.shared.settings;
        if run.started.elapsed() >= settings.attempt_timeout {
            let error = ProviderError::terminal(
                "turn_timeout",
                format!("attempt ran longer than {:?}", settings.attempt_timeout),
            );
            self.on_failure(error, ctx);
        } else if run.last_output.elapsed() >= settings.output_idle_timeout {
            let error = ProviderError::transient(
                "provider_stalled",
                format!("no output for {:?}", settings.output_idle_timeout),
            );
            self.on_failure(error, ctx);
        }
    }

    /// Records the provider's own session id and announces it.
    fn map_provider_session(&mut self, provider_session_id: String) {
        if self.record.provider_session_id.as_deref() == Some(provider_session_id.as_str()) {
            return;
        }
        self.record.provider_session_id = Some(provider_session_id.clone());
        if self.record.handover == Some(Handover::Fork) {
            // The fork has its own id now; resuming it is plain resuming.
            self.record.handover = None;
        }
        let batch = Batch {
            record: Some(self.record.clone()),
            provider_mapping: Some((self.record.provider.clone(), provider_session_id)),
            ..Batch::default()
        };
        let event = EventBody::SessionUpdated {
            session: self.view(),
            reason: "provider_session_mapped".into(),
        };
        self.persist(batch, vec![(None, event)], "provider session mapped");
    }

    /// Stops the attempt's stream, timers and provider; the run itself stays.
    pub(super) fn stop_attempt(&mut self, ctx: &mut Context<Self>) {
        if let Some(run) = self.run.as_mut() {
            run.cancel.cancel();
            run.steer = None;
            for handle in [
                run.stream.take(),
                run.watchdog.take(),
                run.retry_timer.take(),
            ]
            .into_iter()
            .flatten()
            {
                ctx.cancel_future(handle);
            }
        }
    }
}

impl StreamHandler<Vec<AttemptOutput>> for Session {
    /// Provider output that was ready at once, in order; output of any attempt but the current
    /// one is ignored. Consecutive plain events (text, tools, status) are persisted as one batch;
    /// the batch is written before a control event (done, failure, session id) is handled, so
    /// the log keeps the provider's order.
    fn handle(&mut self, outputs: Vec<AttemptOutput>, ctx: &mut Context<Self>) {
        let mut pending: Vec<(Option<TurnId>, EventBody)> = Vec::new();
        for output in outputs {
            let Some(run) = self.run.as_mut() else {
                continue;
            };
            if run.attempt_id != output.attempt_id || run.retry_timer.is_some() {
                continue;
            }
            run.last_output = Instant::now();
            let turn_id = Some(run.front_id());
            let body = match output.event {
                Some(ProviderEvent::Delta(text)) => EventBody::MessageDelta { text },
                Some(ProviderEvent::Message { role, text }) => EventBody::Message { role, text },
                Some(ProviderEvent::Thinking(text)) => EventBody::Thinking { text },
                Some(ProviderEvent::ToolUse {
                    tool_id,
                    name,
                    input,
                }) => EventBody::ToolUse {
                    tool_id,
                    name,
                    input,
                },
                Some(ProviderEvent::ToolResult {
                    tool_id,
                    output,
                    is_error,
                }) => EventBody::ToolResult {
                    tool_id,
                    output,
                    is_error,
                },
                Some(ProviderEvent::Status(value)) => EventBody::Status(value),
                control => {
                    self.persist_output(&mut pending);
                    match control {
                        None => self.on_failure(
                            ProviderError::transient(
                                "provider_exited",
                                "the provider ended without a result",
                            ),
                            ctx,
                        ),
                        Some(ProviderEvent::Done(completion)) => self.on_done(completion, ctx),
                        Some(ProviderEvent::Failed(error)) => self.on_failure(error, ctx),
                        Some(ProviderEvent::SessionId(id)) => self.map_provider_session(id),
                        Some(ProviderEvent::Usage(usage)) => self.on_usage(usage, ctx),
                        Some(_) => unreachable!("plain events are matched above"),
                    }
                    continue;
                }
            };
            pending.push((turn_id, body));
        }
        self.persist_output(&mut pending);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The end of an attempt's stream is an `AttemptOutput` with no event; the actor lives on.
    }
}

/// Earlier messages the sender put in the turn's `options.history` (`[{role, text}]`): the
/// conversation of a one-off session that has no log of its own (an OpenAI request without a
/// session key carries its whole conversation). They come before the session's own history.
fn seeded_history(options: &serde_json::Value) -> Vec<HistoryMessage> {
    options
        .get("history")
        .and_then(|h| serde_json::from_value(h.clone()).ok())
        .unwrap_or_default()
}

/// Messages as `role: text` paragraphs, for a provider that starts fresh.
fn transcript_of(messages: &[HistoryMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("{}: {}\n\n", m.role, m.text))
        .collect()
}
