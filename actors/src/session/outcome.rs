//! How turns end: success, failure with retries and fallback, aborts, and recovery of turns
//! cut off by a stop. Every `turn.completed` is made here.

use super::{Cutoff, Session};
use crate::event::{ErrorInfo, EventBody};
use crate::ids::TurnId;
use crate::metrics::{outcome_index, RuntimeMetrics};
use crate::provider::{Completion, FailureClass, ProviderError};
use crate::record::{Outcome, TurnRecord, TurnStatus};
use crate::settings::FailurePolicy;
use crate::store::Batch;
use crate::time::Timestamp;
use actix::prelude::*;

impl Session {
    /// Puts the steered turns of the run (all but the first) back at the front of the queue.
    pub(super) fn requeue_riders(&mut self) -> Vec<TurnRecord> {
        let Some(run) = self.run.as_mut() else {
            return Vec::new();
        };
        let riders: Vec<_> = run.turns.drain(1..).collect();
        let before = self.queue.len();
        let mut written = Vec::new();
        for mut turn in riders.into_iter().rev() {
            turn.status = TurnStatus::Queued;
            turn.order = self.queue.front_order(None);
            self.queue.insert(turn.clone());
            written.push(turn);
        }
        self.set_queue_gauge(before);
        written
    }

    /// Ends `turns` with `outcome` and persists that after `events`, in `batch`.
    pub(super) fn finish_turns(
        &mut self,
        turns: Vec<TurnRecord>,
        outcome: Outcome,
        error: Option<ErrorInfo>,
        completion: Completion,
        mut batch: Batch,
        mut events: Vec<(Option<TurnId>, EventBody)>,
    ) {
        let (turns, completed) = self.completed(turns, outcome, error, &completion);
        let used = turns.iter().any(|t| !t.usage.is_zero());
        batch.turns.extend(turns);
        events.extend(completed);
        if used {
            // The owner feed's news of the session's new totals.
            events.push(self.usage_updated());
        }
        batch.active = Some(self.has_open_turns());
        batch.record = Some(self.record.clone());
        self.persist(batch, events, "turn completed");
    }

    /// The only place `turn.completed` is made: each turn of `turns` ends with `outcome`;
    /// returns the completed records and their `turn.completed` events, to be persisted.
    fn completed(
        &mut self,
        turns: Vec<TurnRecord>,
        outcome: Outcome,
        error: Option<ErrorInfo>,
        completion: &Completion,
    ) -> (Vec<TurnRecord>, Vec<(Option<TurnId>, EventBody)>) {
        let now = Timestamp::now();
        self.ended_a_turn = true;
        let mut records = Vec::with_capacity(turns.len());
        let mut events = Vec::with_capacity(turns.len());
        for mut turn in turns {
            turn.status = TurnStatus::Completed;
            turn.outcome = Some(outcome);
            turn.completed_at = Some(now);
            // A healthy turn logs nothing at the default level; the others are failures.
            let level = if outcome == Outcome::Success {
                log::Level::Debug
            } else {
                log::Level::Info
            };
            log::log!(level, "session {} turn {}: {outcome:?}", self.id(), turn.id);
            RuntimeMetrics::bump(&self.metrics().turns_completed[outcome_index(outcome)]);
            // The turn's usage over all its attempts, as counted into the totals.
            let used = (!turn.usage.is_zero()).then_some(turn.usage);
            events.push((
                Some(turn.id),
                EventBody::TurnCompleted {
                    outcome,
                    error: error.clone(),
                    usage: used.map(|u| u.to_json()),
                    cost_usd: used.map(|u| u.cost_usd),
                    exit_code: completion.exit_code,
                },
            ));
            records.push(turn);
        }
        (records, events)
    }

    /// Ends the whole run (every turn in it) with `outcome`.
    pub(super) fn end_run(
        &mut self,
        outcome: Outcome,
        error: Option<ErrorInfo>,
        ctx: &mut Context<Self>,
    ) {
        self.stop_attempt(ctx);
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.record.running_since = None;
        let turns: Vec<_> = std::mem::take(&mut run.turns).into_iter().collect();
        self.finish_turns(
            turns,
            outcome,
            error,
            Completion::default(),
            Batch::default(),
            Vec::new(),
        );
    }

    /// The front turn was answered; the run goes on while steered turns remain.
    pub(super) fn on_done(&mut self, completion: Completion, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_mut() else { return };
        let mut turn = run.turns.pop_front().expect("a run always has a turn");
        let finished = run.turns.is_empty();
        self.record.consecutive_failures = 0;
        // The provider has the conversation now (forked, or told by the transcript).
        self.record.handover = None;
        let mut batch = Batch::default();
        if finished {
            self.stop_attempt(ctx);
        }
        self.settle_answer(&mut turn, &completion, &mut batch);
        // The run (and its slot of `max_concurrent_runs`) goes once its turn's end is written,
        // so no other session's attempt starts before this turn's `turn.completed`.
        let ended = if finished { self.run.take() } else { None };
        if finished {
            self.record.running_since = None;
        }
        self.finish_turns(
            vec![turn],
            Outcome::Success,
            None,
            completion,
            batch,
            Vec::new(),
        );
        drop(ended);
        if finished {
            self.dispatch(ctx);
        }
    }

    /// Handles a failed attempt by its class: retry, fresh start, or fail the turn.
    pub(super) fn on_failure(&mut self, error: ProviderError, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_ref() else { return };
        let turn_id = run.front_id();
        let attempt = run.attempt;
        let fresh_retry_used = run.fresh_retry_used;
        log::warn!(
            "session {} turn {turn_id}: attempt {attempt} failed ({:?}): {error}",
            self.id(),
            error.class
        );
        self.stop_attempt(ctx);
        let riders = self.requeue_riders();
        let info = ErrorInfo {
            code: error.code.clone(),
            message: error.message.clone(),
        };
        let completion = Completion {
            exit_code: error.exit_code,
            ..Completion::default()
        };
        let mut batch = Batch {
            turns: riders,
            ..Batch::default()
        };
        match error.class {
            FailureClass::ResumeLost
                if !fresh_retry_used && self.record.provider_session_id.is_some() =>
            {
                self.record.provider_session_id = None;
                if let Some(run) = self.run.as_mut() {
                    run.fresh_retry_used = true;
                }
                batch.record = Some(self.record.clone());
                let events = vec![(
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: "provider_session_reset".into(),
                    },
                )];
                self.persist(batch, events, "provider session reset");
                self.start_attempt(ctx);
            }
            FailureClass::Transient => {
                self.record.consecutive_failures += 1;
                let n = self.record.consecutive_failures;
                let settings = &self.shared.settings;
                if n > settings.max_consecutive_restarts {
                    let exhausted = ErrorInfo {
                        code: "retries_exhausted".into(),
                        message: format!("{} attempts failed in a row; last: {}", n, error.message),
                    };
                    self.record.failed = true;
                    self.fail_run(&error, exhausted, completion, batch);
                    self.after_session_failed(ctx);
                } else {
                    let delay = settings
                        .retry_delay(n)
                        .max(error.retry_after.unwrap_or_default());
                    RuntimeMetrics::bump(&self.metrics().retries);
                    batch.record = Some(self.record.clone());
                    let events = vec![
                        (
                            Some(turn_id),
                            EventBody::Error {
                                code: error.code.clone(),
                                message: error.message.clone(),
                                retryable: true,
                            },
                        ),
                        (
                            Some(turn_id),
                            EventBody::TurnRetrying {
                                attempt: attempt + 1,
                                delay_ms: delay.as_millis() as u64,
                                reason: error.code.clone(),
                            },
                        ),
                    ];
                    self.persist(batch, events, "retrying");
                    let timer = ctx.run_later(delay, |act, ctx| {
                        if act.run.as_ref().is_some_and(|r| r.retry_timer.is_some()) {
                            act.start_attempt(ctx);
                        }
                    });
                    if let Some(run) = self.run.as_mut() {
                        run.retry_timer = Some(timer);
                    }
                }
            }
            FailureClass::Terminal | FailureClass::ResumeLost => {
                self.fail_run(&error, info, completion, batch);
                self.dispatch(ctx);
            }
        }
    }

    /// Ends every turn of the run `failed` with `info`, after an `error` event naming the
    /// provider's own failure (not retryable).
    pub(super) fn fail_run(
        &mut self,
        error: &ProviderError,
        info: ErrorInfo,
        completion: Completion,
        batch: Batch,
    ) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.record.running_since = None;
        let events = vec![(
            Some(run.front_id()),
            EventBody::Error {
                code: error.code.clone(),
                message: error.message.clone(),
                retryable: false,
            },
        )];
        let turns = std::mem::take(&mut run.turns).into_iter().collect();
        self.finish_turns(
            turns,
            Outcome::Failed,
            Some(info),
            completion,
            batch,
            events,
        );
    }

    /// After the restart cap: switch to the fallback provider, abandon, or hold the queue.
    fn after_session_failed(&mut self, ctx: &mut Context<Self>) {
        let settings = self.shared.settings.clone();
        let fallback = settings
            .fallbacks
            .get(&self.record.provider)
            .filter(|f| self.shared.providers.get(f).is_some())
            .cloned();
        if let Some(fallback) = fallback {
            log::warn!(
                "session {}: provider `{}` failed; falling back to `{fallback}`",
                self.id(),
                self.record.provider
            );
            self.record.provider = fallback;
            self.record.provider_session_id = None;
            self.record.failed = false;
            self.record.consecutive_failures = 0;
            let event = EventBody::SessionUpdated {
                session: self.view(),
                reason: "provider_fallback".into(),
            };
            self.persist(
                Batch {
                    record: Some(self.record.clone()),
                    ..Batch::default()
                },
                vec![(None, event)],
                "provider_fallback",
            );
            self.dispatch(ctx);
        } else if settings.on_failure == FailurePolicy::Abandon {
            let before = self.queue.len();
            let turns = self.queue.drain();
            self.set_queue_gauge(before);
            let events = vec![self.queue_updated()];
            self.finish_turns(
                turns,
                Outcome::Abandoned,
                Some(ErrorInfo {
                    code: "session_failed".into(),
                    message: "the session failed; queued turns abandoned".into(),
                }),
                Completion::default(),
                Batch::default(),
                events,
            );
        }
    }

    /// Turns that were running when the previous actor or process died, or that a graceful
    /// shutdown cut off: each ends `interrupted` and runs again at the front. After a death
    /// that is only while within the restart cap and not stale; a shutdown always re-queues.
    pub(super) fn recover_orphans(&mut self, cutoff: Cutoff) {
        let orphans = std::mem::take(&mut self.orphans);
        if orphans.is_empty() {
            return;
        }
        let settings = self.shared.settings.clone();
        let requeue = match cutoff {
            Cutoff::Died => {
                // A clock that stepped backwards gives a negative age: not stale.
                let stale = self.record.running_since.is_some_and(|since| {
                    let age = Timestamp::now().millis().saturating_sub(since.millis());
                    u128::try_from(age).unwrap_or(0) >= settings.stale_running.as_millis()
                });
                self.record.consecutive_failures += 1;
                !stale && self.record.consecutive_failures <= settings.max_consecutive_restarts
            }
            Cutoff::Shutdown => true,
        };
        self.record.running_since = None;
        if !requeue {
            self.record.failed = true;
        }
        let mut batch = Batch::default();
        let mut events = Vec::new();
        if requeue {
            let before = self.queue.len();
            for orphan in orphans.iter().rev() {
                let retry = TurnRecord {
                    id: TurnId::new(),
                    status: TurnStatus::Queued,
                    outcome: None,
                    order: self.queue.front_order(None),
                    attempts: 0,
                    accepted_at: Timestamp::now(),
                    started_at: None,
                    completed_at: None,
                    client_message_id: None,
                    usage: Default::default(),
                    ..orphan.clone()
                };
                self.queue.insert(retry.clone());
                events.push((
                    Some(retry.id),
                    EventBody::TurnAccepted {
                        turn_id: retry.id,
                        status: TurnStatus::Queued,
                        position: self.queue.position(retry.id).unwrap_or(1),
                        mode: retry.mode,
                    },
                ));
                batch.turns.push(retry);
            }
            self.set_queue_gauge(before);
            events.push(self.queue_updated());
        }
        log::warn!(
            "session {}: {} turn(s) interrupted by a stop; {}",
            self.id(),
            orphans.len(),
            if requeue {
                "re-queued"
            } else {
                "session failed"
            }
        );
        let interrupted = ErrorInfo {
            code: "interrupted".into(),
            message: "the process running this turn stopped".into(),
        };
        // What the cut-off turn used is in the session's record (written with each report),
        // not in its turn record: its `turn.completed` carries it.
        let mut orphans = orphans;
        if let Some(latest) = &self.record.usage.turn {
            for orphan in orphans.iter_mut().filter(|o| o.id == latest.turn_id) {
                orphan.usage = latest.usage;
            }
        }
        // The interrupted turns complete first, so the re-queued copies follow them in the log;
        // both land in one batch, so a crash never leaves one without the other.
        let (mut completed_turns, mut completed_events) = self.completed(
            orphans,
            Outcome::Interrupted,
            Some(interrupted),
            &Completion::default(),
        );
        completed_turns.extend(batch.turns);
        completed_events.extend(events);
        let batch = Batch {
            turns: completed_turns,
            record: Some(self.record.clone()),
            active: Some(self.has_open_turns()),
            ..Batch::default()
        };
        self.persist(batch, completed_events, "recovered after a stop");
    }
}
