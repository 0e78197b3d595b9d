//! Handlers of the messages that act on turns: send (by busy mode), abort, cancel, promote.

use super::journal::answered_when_durable;
use super::{
    Abort, AbortResult, AbortTurn, CancelTurn, PromoteTurn, SendTurn, Session, TurnReceipt,
};
use crate::error::RuntimeError;
use crate::event::{ErrorInfo, EventBody};
use crate::ids::TurnId;
use crate::metrics::RuntimeMetrics;
use crate::provider::Completion;
use crate::record::{BusyMode, Outcome, TurnRecord, TurnStatus};
use crate::store::Batch;
use crate::time::Timestamp;
use crate::usage::Usage;
use actix::prelude::*;
use std::time::Instant;
use tokio::sync::oneshot;

impl Session {
    fn receipt_for(&self, turn_id: TurnId) -> Result<TurnReceipt, RuntimeError> {
        if let Some(run) = &self.run {
            if run.turns.iter().any(|t| t.id == turn_id) {
                return Ok(TurnReceipt {
                    turn_id,
                    status: TurnStatus::Running,
                    position: Some(0),
                    duplicate: true,
                });
            }
        }
        if let Some(position) = self.queue.position(turn_id) {
            return Ok(TurnReceipt {
                turn_id,
                status: TurnStatus::Queued,
                position: Some(position),
                duplicate: true,
            });
        }
        Ok(TurnReceipt {
            turn_id,
            status: TurnStatus::Completed,
            position: None,
            duplicate: true,
        })
    }
}

impl Session {
    /// [`Session::accept_turn`] with its writes gathered into one: a turn accepted into an
    /// idle session is accepted and started with one store write.
    fn accept_turn_gathered(
        &mut self,
        msg: SendTurn,
        stored: Option<TurnId>,
        owner_today: Option<Usage>,
        ctx: &mut Context<Self>,
    ) -> Result<TurnReceipt, RuntimeError> {
        self.journal.hold();
        let result = self.accept_turn(msg, stored, owner_today, ctx);
        let id = self.id();
        self.journal.release(self.shared.store.as_ref(), id);
        result
    }

    /// Accepts a turn by its busy mode; the acceptance is on disk before the answer.
    /// `stored` is the turn the store holds for the message's `client_message_id`, when the
    /// caller looked it up (an id this activation has not seen); `owner_today` what the owner
    /// used today, when a daily cap is configured.
    fn accept_turn(
        &mut self,
        msg: SendTurn,
        stored: Option<TurnId>,
        owner_today: Option<Usage>,
        ctx: &mut Context<Self>,
    ) -> Result<TurnReceipt, RuntimeError> {
        self.last_activity = Instant::now();
        // The same rules as every front end (`SendTurn::parse`), for embedders' sends too.
        msg.check()?;
        if self.record.archived {
            return Err(RuntimeError::SessionArchived);
        }
        if let Some(client_id) = &msg.client_message_id {
            let known = self.client_ids.get(client_id).copied().or(stored);
            if let Some(turn_id) = known {
                return self.receipt_for(turn_id);
            }
        }
        if self.record.failed {
            return Err(RuntimeError::SessionFailed);
        }
        if let Some(why) = self.owner_cap(owner_today.as_ref(), false) {
            return Err(RuntimeError::BudgetExceeded(why));
        }
        let busy =
            self.run.is_some() || !self.queue.is_empty() || self.waiting_for_permit.is_some();
        if msg.mode == BusyMode::Reject && busy {
            return Err(RuntimeError::SessionBusy);
        }
        let steer_into = match (&self.run, msg.mode) {
            (Some(run), BusyMode::Steer) if run.retry_timer.is_none() => run.steer.clone(),
            _ => None,
        };
        if steer_into.is_none() && self.queue.len() >= self.shared.settings.max_queue {
            return Err(RuntimeError::QueueFull {
                max: self.shared.settings.max_queue,
            });
        }
        let running_order = self.run.as_ref().map(|r| r.turns[0].order);
        let front = matches!(msg.mode, BusyMode::Steer | BusyMode::Interrupt);
        let order = if front {
            self.queue.front_order(running_order)
        } else {
            self.queue.back_order(running_order)
        };
        let mut turn = TurnRecord {
            id: TurnId::new(),
            session_id: self.id(),
            content: msg.content,
            mode: msg.mode,
            client_message_id: msg.client_message_id.clone(),
            options: msg.options,
            status: TurnStatus::Queued,
            outcome: None,
            order,
            attempts: 0,
            accepted_at: Timestamp::now(),
            started_at: None,
            completed_at: None,
            usage: Default::default(),
        };
        let turn_id = turn.id;
        if let Some(client_id) = &msg.client_message_id {
            self.client_ids.insert(client_id.clone(), turn_id);
        }
        let mut batch = Batch {
            active: Some(true),
            client_ids: msg
                .client_message_id
                .map(|c| vec![(c, turn_id)])
                .unwrap_or_default(),
            ..Batch::default()
        };
        let mut events = Vec::new();
        let (status, position);
        if let Some(steer) = steer_into {
            turn.status = TurnStatus::Running;
            status = TurnStatus::Running;
            position = 0;
            batch.turns.push(turn.clone());
            events.push((
                Some(turn_id),
                EventBody::TurnAccepted {
                    turn_id,
                    status,
                    position,
                    mode: msg.mode,
                },
            ));
            events.push((
                Some(turn_id),
                EventBody::Message {
                    role: "user".into(),
                    text: turn.content.clone(),
                },
            ));
            self.persist(batch, events, "turn accepted");
            RuntimeMetrics::bump(&self.metrics().turns_accepted);
            if steer.send(turn.content.clone()).is_ok() {
                if let Some(run) = self.run.as_mut() {
                    run.turns.push_back(turn);
                }
            } else {
                // The attempt ended as the message arrived: it runs next instead.
                turn.status = TurnStatus::Queued;
                turn.order = self.queue.front_order(running_order);
                self.queue.insert(turn.clone());
                self.set_queue_gauge(self.queue.len() - 1);
                let events = vec![self.queue_updated()];
                self.persist(
                    Batch {
                        turns: vec![turn],
                        ..Batch::default()
                    },
                    events,
                    "steer fell back to the queue",
                );
            }
            return Ok(TurnReceipt {
                turn_id,
                status,
                position: Some(position),
                duplicate: false,
            });
        }
        let starts_now = !busy
            && !self.record.paused
            && !self.draining
            && self.shared.limiter.available_permits() > 0;
        let before = self.queue.len();
        self.queue.insert(turn.clone());
        self.set_queue_gauge(before);
        let queue_position = self.queue.position(turn_id).unwrap_or(1);
        (status, position) = if starts_now {
            (TurnStatus::Running, 0)
        } else {
            (TurnStatus::Queued, queue_position)
        };
        batch.turns.push(turn);
        events.push((
            Some(turn_id),
            EventBody::TurnAccepted {
                turn_id,
                status,
                position,
                mode: msg.mode,
            },
        ));
        if !starts_now {
            events.push(self.queue_updated());
        }
        self.persist(batch, events, "turn accepted");
        RuntimeMetrics::bump(&self.metrics().turns_accepted);
        if msg.mode == BusyMode::Interrupt && self.run.is_some() {
            self.end_run(
                Outcome::Aborted,
                Some(ErrorInfo {
                    code: "interrupted_by_user".into(),
                    message: format!("interrupted by turn {turn_id}"),
                }),
                ctx,
            );
        }
        self.dispatch(ctx);
        Ok(TurnReceipt {
            turn_id,
            status,
            position: Some(position),
            duplicate: false,
        })
    }
}

impl Handler<SendTurn> for Session {
    type Result = ResponseFuture<Result<TurnReceipt, RuntimeError>>;

    /// Answered once the acceptance is durable.
    fn handle(&mut self, msg: SendTurn, ctx: &mut Context<Self>) -> Self::Result {
        let unseen = msg
            .client_message_id
            .as_ref()
            .filter(|id| !self.client_ids.contains_key(*id));
        // Whether an earlier activation accepted this id is in the store, and what the owner
        // spent today when a daily cap is configured. The actor handles nothing else until the
        // reads answer, so a repeat sent meanwhile cannot be accepted twice.
        let client_read = unseen.map(|id| self.shared.store.turn_for_client_id(self.id(), id));
        let owner_read = self.owner_today();
        if client_read.is_none() && owner_read.is_none() {
            let result = self.accept_turn_gathered(msg, None, None, ctx);
            return self.reply_when_durable(result);
        }
        let reads = async move {
            let stored = match client_read {
                Some(read) => read.await?,
                None => None,
            };
            let today = match owner_read {
                Some(read) => Some(read.await?),
                None => None,
            };
            Ok::<_, crate::store::StoreError>((stored, today))
        };
        let (tx, rx) = oneshot::channel();
        ctx.wait(reads.into_actor(self).map(move |reads, session, ctx| {
            let result = reads
                .map_err(RuntimeError::Store)
                .and_then(|(stored, today)| session.accept_turn_gathered(msg, stored, today, ctx));
            let _ = tx.send(session.reply_when_durable(result));
        }));
        Box::pin(async move {
            let reply = rx.await.map_err(|_| {
                RuntimeError::Internal("the session stopped before it answered".into())
            })?;
            reply.await
        })
    }
}

impl Session {
    /// Aborts the running attempt only while it answers this turn, so a caller that raced the
    /// turn's end never aborts the next one.
    fn abort_turn_now(
        &mut self,
        msg: AbortTurn,
        ctx: &mut Context<Self>,
    ) -> Result<AbortResult, RuntimeError> {
        Ok(self.abort_run(Some(msg.0), ctx))
    }

    /// Aborts the running attempt (also while it waits to retry); its turns end `aborted`.
    fn abort_now(
        &mut self,
        _msg: Abort,
        ctx: &mut Context<Self>,
    ) -> Result<AbortResult, RuntimeError> {
        Ok(self.abort_run(None, ctx))
    }

    /// Aborts the running attempt, when there is one and (with `only`) it answers that turn;
    /// its turns end `aborted` and the queue goes on.
    fn abort_run(&mut self, only: Option<TurnId>, ctx: &mut Context<Self>) -> AbortResult {
        self.last_activity = Instant::now();
        let target = self.run.as_ref().and_then(|run| match only {
            Some(turn) => run.turns.iter().any(|t| t.id == turn).then_some(turn),
            None => Some(run.front_id()),
        });
        let Some(turn_id) = target else {
            return AbortResult {
                aborted: false,
                turn_id: None,
            };
        };
        self.end_run(Outcome::Aborted, None, ctx);
        self.dispatch(ctx);
        AbortResult {
            aborted: true,
            turn_id: Some(turn_id),
        }
    }
}

answered_when_durable!(AbortTurn => abort_turn_now, AbortResult);
answered_when_durable!(Abort => abort_now, AbortResult);

impl Session {
    fn cancel_turn_now(
        &mut self,
        msg: CancelTurn,
        _ctx: &mut Context<Self>,
    ) -> Result<(), RuntimeError> {
        let turn = self.take_queued(msg.0)?;
        let events = vec![self.queue_updated()];
        self.finish_turns(
            vec![turn],
            Outcome::Cancelled,
            None,
            Completion::default(),
            Batch::default(),
            events,
        );
        Ok(())
    }
}

answered_when_durable!(CancelTurn => cancel_turn_now, ());

impl Session {
    /// Takes a queued turn out of the queue: `turn_running` when it runs, `turn_not_found`
    /// when it is not queued.
    fn take_queued(&mut self, turn: TurnId) -> Result<TurnRecord, RuntimeError> {
        self.last_activity = Instant::now();
        if self
            .run
            .as_ref()
            .is_some_and(|r| r.turns.iter().any(|t| t.id == turn))
        {
            return Err(RuntimeError::TurnRunning);
        }
        let before = self.queue.len();
        let taken = self.queue.remove(turn).ok_or(RuntimeError::TurnNotFound)?;
        self.set_queue_gauge(before);
        Ok(taken)
    }
}

impl Session {
    fn promote_turn_now(
        &mut self,
        msg: PromoteTurn,
        _ctx: &mut Context<Self>,
    ) -> Result<(), RuntimeError> {
        let mut turn = self.take_queued(msg.0)?;
        // It goes straight back in, at the front.
        let before = self.queue.len();
        turn.order = self.queue.front_order(None);
        self.queue.insert(turn.clone());
        self.set_queue_gauge(before);
        let events = vec![self.queue_updated()];
        self.persist(
            Batch {
                turns: vec![turn],
                ..Batch::default()
            },
            events,
            "turn promoted",
        );
        Ok(())
    }
}

answered_when_durable!(PromoteTurn => promote_turn_now, ());
