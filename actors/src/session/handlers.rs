//! Handlers of the messages that read or change the session as a whole: subscribe, read,
//! control, update, delete, and the runtime's snapshot, drain and interrupt.

use super::journal::answered_when_durable;
use super::{
    ActorSnapshot, Control, Cutoff, DeleteSession, Drain, EventPage, GetInfo, InjectPanic,
    Interrupt, ListTurns, ReadEvents, RunInfo, Session, Snapshot, Subscribe, TurnList,
    UpdateSession,
};
use crate::error::RuntimeError;
use crate::event::EventBody;
use crate::metrics::RuntimeMetrics;
use crate::provider::Completion;
use crate::record::{Handover, Outcome, SessionView, TurnView};
use crate::store::{Batch, Write};
use crate::subscription::Subscription;
use actix::prelude::*;
use std::time::Instant;

impl Handler<Subscribe> for Session {
    type Result = Result<Subscription, RuntimeError>;

    /// Takes the replay and registers the subscriber in one step: no gap, no duplicate. The
    /// part of the replay older than the in-memory tail is read by the subscriber from the
    /// store, outside the actor.
    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let (from_store, replay) = self.log.replay_after(msg.after_seq);
        let backlog = from_store.map(|(after, until)| crate::subscription::Backlog {
            store: self.shared.store.clone(),
            after,
            until,
            reading: None,
        });
        let channel = self.subscribers.add(self.shared.settings.subscriber_buffer);
        RuntimeMetrics::add(&self.metrics().subscribers, 1);
        self.watch_one_off_follower(ctx);
        Ok(Subscription::new(
            self.id(),
            self.log.durable_seq(),
            self.state(),
            backlog,
            replay.into(),
            channel,
            msg.after_seq,
            self.shared.metrics.clone(),
        ))
    }
}

impl Session {
    fn control_now(
        &mut self,
        msg: Control,
        ctx: &mut Context<Self>,
    ) -> Result<SessionView, RuntimeError> {
        self.last_activity = Instant::now();
        if self.record.archived {
            return Err(RuntimeError::SessionArchived);
        }
        let mut events = Vec::new();
        let reason = match msg {
            Control::Pause => {
                self.record.paused = true;
                events.push(self.queue_updated());
                "paused"
            }
            Control::Resume => {
                self.record.paused = false;
                self.record.budget_held = false;
                self.record.failed = false;
                self.record.consecutive_failures = 0;
                events.push(self.queue_updated());
                "resumed"
            }
            Control::Reset => {
                self.record.paused = false;
                self.record.failed = false;
                self.record.consecutive_failures = 0;
                self.record.provider_session_id = None;
                events.push((
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: "reset".into(),
                    },
                ));
                "reset"
            }
        };
        self.persist(
            Batch {
                record: Some(self.record.clone()),
                ..Batch::default()
            },
            events,
            reason,
        );
        self.dispatch(ctx);
        Ok(self.view())
    }
}

answered_when_durable!(Control => control_now, SessionView);

impl Handler<GetInfo> for Session {
    type Result = Result<SessionView, RuntimeError>;

    fn handle(&mut self, _msg: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.view())
    }
}

impl Handler<ListTurns> for Session {
    type Result = ResponseActFuture<Self, Result<TurnList, RuntimeError>>;

    fn handle(&mut self, _msg: ListTurns, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let read = self.shared.store.all_turns(self.id());
        Box::pin(read.into_actor(self).map(|turns, session, _| {
            let turns = turns?
                .iter()
                .map(|t| {
                    let running = session
                        .run
                        .as_ref()
                        .is_some_and(|r| r.turns.iter().any(|rt| rt.id == t.id));
                    let position = if running {
                        Some(0)
                    } else {
                        session.queue.position(t.id)
                    };
                    TurnView::new(t, position)
                })
                .collect();
            Ok(TurnList {
                turns,
                paused: session.record.paused,
            })
        }))
    }
}

impl Handler<ReadEvents> for Session {
    type Result = ResponseFuture<Result<EventPage, RuntimeError>>;

    fn handle(&mut self, msg: ReadEvents, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let read = self
            .log
            .read(self.shared.store.as_ref(), msg.after_seq, msg.limit);
        let last_seq = self.log.durable_seq();
        Box::pin(async move {
            Ok(EventPage {
                events: read.await?,
                last_seq,
            })
        })
    }
}

impl Session {
    fn update_now(
        &mut self,
        msg: UpdateSession,
        ctx: &mut Context<Self>,
    ) -> Result<SessionView, RuntimeError> {
        self.last_activity = Instant::now();
        let mut reasons = Vec::new();
        if let Some(project) = msg.project {
            if self.record.project.is_none() {
                self.record.project = Some(project);
                reasons.push("project_backfilled");
            }
        }
        // Every refusal comes before any change, so a refused update changes nothing: an
        // archived session takes no change but unarchiving (in the same update, or before).
        let changes = msg.model.is_some()
            || msg.provider.is_some()
            || msg.title.is_some()
            || msg.budget.is_some();
        if changes && self.record.archived && msg.archived != Some(false) {
            return Err(RuntimeError::SessionArchived);
        }
        if let Some(provider) = msg.provider.filter(|p| *p != self.record.provider) {
            self.switch_provider(provider)?;
            reasons.push("provider_changed");
        }
        if let Some(model) = msg.model.filter(|m| self.record.model.as_ref() != Some(m)) {
            self.record.model = Some(model);
            reasons.push("model_changed");
        }
        if let Some(title) = msg.title {
            self.record.title = Some(title);
            reasons.push("renamed");
        }
        match msg.archived {
            Some(true) if !self.record.archived => {
                if self.run.is_some() {
                    self.end_run(Outcome::Aborted, None, ctx);
                }
                let before = self.queue.len();
                let queued = self.queue.drain();
                self.set_queue_gauge(before);
                if !queued.is_empty() {
                    let events = vec![self.queue_updated()];
                    self.finish_turns(
                        queued,
                        Outcome::Cancelled,
                        None,
                        Completion::default(),
                        Batch::default(),
                        events,
                    );
                }
                self.record.archived = true;
                reasons.push("archived");
            }
            Some(false) if self.record.archived => {
                self.record.archived = false;
                reasons.push("unarchived");
            }
            _ => {}
        }
        if let Some(budget) = msg.budget {
            self.set_budget(budget);
            reasons.push("budget");
        }
        if reasons.is_empty() {
            return Ok(self.view());
        }
        let events = reasons
            .iter()
            .map(|reason| {
                (
                    None,
                    EventBody::SessionUpdated {
                        session: self.view(),
                        reason: reason.to_string(),
                    },
                )
            })
            .collect();
        self.persist(
            Batch {
                record: Some(self.record.clone()),
                ..Batch::default()
            },
            events,
            reasons[0],
        );
        self.dispatch(ctx);
        Ok(self.view())
    }
}

answered_when_durable!(UpdateSession => update_now, SessionView);

impl Session {
    /// Hands the session to another provider from the next attempt on: a stateless one reads
    /// the history from the log; any other starts fresh with a transcript of the conversation.
    fn switch_provider(&mut self, provider: String) -> Result<(), RuntimeError> {
        let caps = self
            .shared
            .providers
            .get(&provider)
            .ok_or_else(|| RuntimeError::UnknownProvider(provider.clone()))?
            .capabilities();
        // The transcript is made from the log when the next attempt starts.
        let handover = (!caps.stateless).then_some(Handover::TranscriptOfLog);
        self.record.provider = provider;
        self.record.provider_session_id = None;
        self.record.model = None;
        self.record.handover = handover;
        Ok(())
    }
}

impl Handler<DeleteSession> for Session {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    /// Stops the session and deletes it from the store; answered once the deletion is durable.
    /// The store's writer applies it after every write of the session still in flight.
    fn handle(&mut self, _msg: DeleteSession, ctx: &mut Context<Self>) -> Self::Result {
        self.stop_attempt(ctx);
        // Dropping the run stops its provider.
        self.run = None;
        let deleted = self.shared.store.write(Write::Delete(self.id()));
        self.deleted = true;
        log::info!("session {}: deleted", self.id());
        self.stop_requested = true;
        ctx.stop();
        Box::pin(async move {
            deleted.await?;
            Ok(())
        })
    }
}

impl Handler<Snapshot> for Session {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let run = self.run.as_ref().map(|r| RunInfo {
            turn_id: r.front_id(),
            attempt: r.attempt,
            started_at: r.started_at,
            pid: r.pid,
        });
        MessageResult(ActorSnapshot {
            session_id: self.id(),
            owner: self.record.owner.clone(),
            state: self.state(),
            subscribers: self.subscribers.live(),
            queue_len: self.queue.len(),
            restarts: self.restarts,
            run,
            last_seq: self.log.durable_seq(),
            last_event_at: self.log.last_event_at,
        })
    }
}

impl Handler<Drain> for Session {
    type Result = bool;

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) -> bool {
        self.draining = true;
        if let Some(handle) = self.waiting_for_permit.take() {
            ctx.cancel_future(handle);
        }
        self.run.is_some()
    }
}

impl Handler<Interrupt> for Session {
    type Result = ResponseActFuture<Self, ()>;

    /// Ends the running turns `interrupted` and stops once that is durable; the turns run
    /// again at the next start.
    fn handle(&mut self, _msg: Interrupt, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(run) = self.run.as_ref() {
            // They end `interrupted` now and their re-queued copies run at the next start;
            // a deploy is not the turn's failure, so it does not use up the restart cap.
            run.cancel.cancel();
            let turns: Vec<_> = run.turns.iter().cloned().collect();
            self.stop_attempt(ctx);
            self.run = None;
            self.orphans = turns;
            self.recover_orphans(Cutoff::Shutdown);
        }
        let durable = self.journal.wait_for_all();
        Box::pin(
            async move {
                if let Some(durable) = durable {
                    let _ = durable.await;
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.stop_requested = true;
                ctx.stop();
            }),
        )
    }
}

impl Handler<InjectPanic> for Session {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected panic in session {}", self.id());
    }
}
