//! Usage and budgets in the session: counting what attempts report into the turn, the session's
//! totals and the owner's day (in the batch of the event that reports it), and the budget
//! checks before an attempt, while it streams, and when a turn is sent.

use super::Session;
use crate::event::{ErrorInfo, EventBody};
use crate::ids::TurnId;
use crate::provider::{Completion, ProviderError};
use crate::store::{Batch, StoreRead};
use crate::usage::{utc_day, Budget, TurnUsage, Usage, UsageIncrement};
use actix::prelude::*;
use serde_json::json;

impl Session {
    /// The session's budget: its own, else the configured one of its provider (the tighter of
    /// the global and the provider's).
    pub(super) fn session_budget(&self) -> Budget {
        self.record.budget.unwrap_or_else(|| {
            self.shared
                .settings
                .usage
                .configured_session_budget(&self.record.provider)
        })
    }

    /// The owner's usage today, read from the store: the one read usage needs, made only when
    /// an owner's daily cap is configured (`None` otherwise).
    pub(super) fn owner_today(&self) -> Option<StoreRead<Usage>> {
        let cap = self
            .shared
            .settings
            .usage
            .owner_daily_budget(&self.record.owner);
        if cap.is_unlimited() {
            return None;
        }
        let day = utc_day();
        let read = self
            .shared
            .store
            .usage_days(Some(&self.record.owner), &day, &day);
        Some(Box::pin(async move {
            Ok(read
                .await?
                .into_iter()
                .next()
                .map(|d| d.usage)
                .unwrap_or_default())
        }))
    }

    /// Why the owner's daily cap leaves nothing more to spend, given what the owner used
    /// `today` (`None`: no cap, nothing read); `passed`: only once gone past it (the check
    /// while a turn streams).
    pub(super) fn owner_cap(&self, today: Option<&Usage>, passed: bool) -> Option<String> {
        let today = today?;
        let cap = self
            .shared
            .settings
            .usage
            .owner_daily_budget(&self.record.owner);
        let what = "the owner's daily";
        if passed {
            cap.passed(today, what)
        } else {
            cap.reached(today, what)
        }
    }

    /// Why an attempt may not start: the session's budget is spent.
    fn session_budget_reached(&self) -> Option<String> {
        self.session_budget()
            .reached(&self.record.usage.total, "the session's")
    }

    /// Checks the budgets, then starts the next attempt of the front turn, or fails the turn
    /// `budget_exceeded` when one is spent. The owner's day is read first when a daily cap is
    /// configured; the actor handles nothing else meanwhile, so the run it checked is the run
    /// it starts.
    pub(super) fn start_attempt(&mut self, ctx: &mut Context<Self>) {
        if let Some(why) = self.session_budget_reached() {
            return self.fail_over_budget(why, ctx);
        }
        let Some(read) = self.owner_today() else {
            return self.start_attempt_unchecked(ctx);
        };
        ctx.wait(read.into_actor(self).map(|today, session, ctx| {
            if session.run.is_none() {
                return;
            }
            match today {
                Ok(today) => match session.owner_cap(Some(&today), false) {
                    Some(why) => session.fail_over_budget(why, ctx),
                    None => session.start_attempt_unchecked(ctx),
                },
                Err(e) => session.fail_stop(e, ctx),
            }
        }));
    }

    /// Fills in the cost from the configured price table when the provider gave none.
    fn priced(&self, usage: Usage) -> Usage {
        if usage.cost_usd > 0.0 {
            return usage;
        }
        self.shared.settings.usage.priced(
            &self.record.provider,
            self.record.model.as_deref(),
            usage,
        )
    }

    /// What `reported` (the attempt's cumulative usage; `None`: nothing new) adds to what was
    /// counted of the attempt so far; remembers it as counted.
    fn take_attempt_usage(&mut self, reported: Option<Usage>) -> Usage {
        let reported = reported.map(|u| self.priced(u));
        let Some(run) = self.run.as_mut() else {
            return Usage::default();
        };
        let Some(reported) = reported else {
            return Usage::default();
        };
        let delta = reported.beyond(&run.counted);
        run.counted = run.counted.max(&reported);
        delta
    }

    /// Books `delta` of turn `turn_id` (whose usage is now `turn_usage`) into the session's
    /// totals and the owner's day, both written by `batch`, and into the metrics.
    fn book_usage(&mut self, turn_id: TurnId, turn_usage: Usage, delta: Usage, batch: &mut Batch) {
        self.record.usage.total = self.record.usage.total.plus(&delta);
        self.record.usage.turn = Some(TurnUsage {
            turn_id,
            usage: turn_usage,
        });
        batch.record = Some(self.record.clone());
        batch.usage.push(UsageIncrement {
            owner: self.record.owner.clone(),
            day: utc_day(),
            usage: delta,
        });
        self.metrics().add_usage(&self.record.provider, &delta);
    }

    /// The attempt reported its usage so far: counted (with a `status` event that carries it),
    /// then checked against the budgets; past one, the attempt is stopped and the turn fails
    /// `budget_exceeded`.
    pub(super) fn on_usage(&mut self, reported: Usage, ctx: &mut Context<Self>) {
        let delta = self.take_attempt_usage(Some(reported));
        let Some(run) = self.run.as_mut() else { return };
        let attempt_usage = run.counted;
        let turn = run.turns.front_mut().expect("a run always has a turn");
        turn.usage = turn.usage.plus(&delta);
        let (turn_id, turn_usage) = (turn.id, turn.usage);
        if !delta.is_zero() {
            let mut batch = Batch::default();
            self.book_usage(turn_id, turn_usage, delta, &mut batch);
            let status = EventBody::Status(json!({
                "usage": attempt_usage,
                "turn_usage": turn_usage,
                "session_usage": self.record.usage.total,
            }));
            self.persist(batch, vec![(Some(turn_id), status)], "usage");
        }
        if let Some(why) = self
            .session_budget()
            .passed(&self.record.usage.total, "the session's")
        {
            return self.fail_over_budget(why, ctx);
        }
        let Some(read) = self.owner_today() else {
            return;
        };
        let attempt_id = self.run.as_ref().map(|r| r.attempt_id);
        ctx.wait(read.into_actor(self).map(move |today, session, ctx| {
            if session.run.as_ref().map(|r| r.attempt_id) != attempt_id {
                return;
            }
            match today {
                Ok(today) => {
                    if let Some(why) = session.owner_cap(Some(&today), true) {
                        session.fail_over_budget(why, ctx);
                    }
                }
                Err(e) => session.fail_stop(e, ctx),
            }
        }));
    }

    /// The attempt answered the front turn: what its result reports beyond what was counted
    /// is booked in `batch`. Counting starts over for the next message of a steered run.
    pub(super) fn settle_answer(
        &mut self,
        turn: &mut crate::record::TurnRecord,
        completion: &Completion,
        batch: &mut Batch,
    ) {
        let reported = Usage::from_provider(completion.usage.as_ref(), completion.cost_usd);
        let delta = self.take_attempt_usage(reported);
        if let Some(run) = self.run.as_mut() {
            run.counted = Usage::default();
        }
        turn.usage = turn.usage.plus(&delta);
        if !delta.is_zero() {
            self.book_usage(turn.id, turn.usage, delta, batch);
        }
    }

    /// `session.updated` with reason `usage`: the owner feed's news of new totals, made when a
    /// turn that used something ends.
    pub(super) fn usage_updated(&self) -> (Option<TurnId>, EventBody) {
        (
            None,
            EventBody::SessionUpdated {
                session: self.view(),
                reason: "usage".into(),
            },
        )
    }

    /// A budget is spent: the running turn fails `budget_exceeded` (terminal: no retry, no
    /// fallback) and the queue is held until the budget is raised or the session resumed.
    pub(super) fn fail_over_budget(&mut self, why: String, ctx: &mut Context<Self>) {
        if self.run.is_none() {
            return;
        }
        log::warn!("session {}: {why}; holding the queue", self.id());
        self.stop_attempt(ctx);
        let riders = self.requeue_riders();
        self.record.budget_held = true;
        self.persist(
            Batch {
                record: Some(self.record.clone()),
                ..Batch::default()
            },
            Vec::new(),
            "budget_exceeded",
        );
        let error = ProviderError::terminal("budget_exceeded", why);
        let info = ErrorInfo {
            code: error.code.clone(),
            message: error.message.clone(),
        };
        self.fail_run(
            &error,
            info,
            Completion::default(),
            Batch {
                turns: riders,
                ..Batch::default()
            },
        );
    }

    /// A new budget (`None`: back to the configured one); a held queue is released when the
    /// session's budget leaves something to spend (the caller dispatches once this is
    /// persisted; an owner's spent daily cap fails the next turn again).
    pub(super) fn set_budget(&mut self, budget: Option<Budget>) {
        self.record.budget = budget;
        if self.record.budget_held && self.session_budget_reached().is_none() {
            self.record.budget_held = false;
        }
    }
}
