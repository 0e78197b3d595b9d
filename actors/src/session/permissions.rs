//! Tool-permission requests (DESIGN.md §12): a provider asks, the session persists
//! `permission.requested`, any client answers (or the timeout does), the session persists
//! `permission.resolved` and hands the answer to the provider. The session is the one arbiter:
//! whichever answer reaches it first wins, a second one gets `permission_resolved`.

use super::{AnswerPermission, PermissionResolution, Session};
use crate::error::RuntimeError;
use crate::event::EventBody;
use crate::ids::TurnId;
use crate::provider::{PermissionAnswer, PermissionOption, PermissionRequest};
use crate::record::TurnRecord;
use crate::store::Batch;
use actix::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Who answers a request that waited too long.
const BY_TIMEOUT: &str = "timeout";

/// Who "answers" a request whose attempt ended first (abort, failure, shutdown).
const BY_ATTEMPT_ENDED: &str = "attempt_ended";

/// Who "answers" a request whose process died with the server (startup recovery).
const BY_INTERRUPTED: &str = "interrupted";

/// A request of the running attempt that waits for its answer.
pub(super) struct PendingPermission {
    /// The answers the agent accepts; an answer must name one of them.
    options: Vec<PermissionOption>,
    /// Fires the timeout's answer.
    timer: Option<SpawnHandle>,
}

/// The running attempt's open requests, in the order they were asked.
#[derive(Default)]
pub(super) struct PendingPermissions {
    /// Request id → what waits.
    waiting: BTreeMap<String, PendingPermission>,
}

impl PendingPermissions {
    /// Whether the attempt waits for a person (the stall watchdog holds off meanwhile).
    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The ids of the open requests, for the actor table.
    pub(super) fn ids(&self) -> Vec<String> {
        self.waiting.keys().cloned().collect()
    }
}

impl Session {
    /// The provider asks: persist `permission.requested` and wait for an answer, at most the
    /// request's timeout (then its reject option answers).
    pub(super) fn on_permission_requested(
        &mut self,
        request: PermissionRequest,
        ctx: &mut Context<Self>,
    ) {
        let Some(run) = self.run.as_mut() else { return };
        let turn_id = run.front_id();
        let attempt_id = run.attempt_id;
        let timer = match (request.timeout, request.reject_option.clone()) {
            (Some(timeout), Some(reject)) => {
                let request_id = request.request_id.clone();
                Some(ctx.run_later(timeout, move |act, _ctx| {
                    if act.run.as_ref().is_some_and(|r| r.attempt_id == attempt_id) {
                        act.resolve(&request_id, reject, BY_TIMEOUT.into());
                    }
                }))
            }
            _ => None,
        };
        run.pending.waiting.insert(
            request.request_id.clone(),
            PendingPermission {
                options: request.options.clone(),
                timer,
            },
        );
        log::info!(
            "session {} turn {turn_id}: waiting for approval of `{}` ({})",
            self.id(),
            request.tool,
            request.request_id
        );
        let event = EventBody::PermissionRequested {
            request_id: request.request_id,
            tool: request.tool,
            title: request.title,
            input: request.input,
            options: request.options,
            timeout_ms: request.timeout.map(|t| t.as_millis() as u64),
        };
        self.persist(Batch::default(), vec![(Some(turn_id), event)], "permission");
    }

    /// Records the answer and hands it to the provider; the caller checked it is open.
    fn resolve(&mut self, request_id: &str, option_id: String, by: String) {
        let Some(run) = self.run.as_mut() else { return };
        let Some(pending) = run.pending.waiting.remove(request_id) else {
            return;
        };
        // The timer was cancelled by a client's answer, or is what answers now.
        drop(pending);
        run.last_output = Instant::now();
        let turn_id = run.front_id();
        if let Some(answers) = &run.permissions {
            let _ = answers.send(PermissionAnswer {
                request_id: request_id.to_string(),
                option_id: option_id.clone(),
            });
        }
        log::info!(
            "session {} turn {turn_id}: permission {request_id} answered `{option_id}` by {by}",
            self.id()
        );
        let event = EventBody::PermissionResolved {
            request_id: request_id.to_string(),
            option_id: Some(option_id),
            by,
        };
        self.persist(Batch::default(), vec![(Some(turn_id), event)], "permission");
    }

    /// A client's answer: the request must wait in the running attempt and the option must be
    /// one it offered.
    fn answer_now(
        &mut self,
        msg: AnswerPermission,
        ctx: &mut Context<Self>,
    ) -> Result<PermissionResolution, RuntimeError> {
        self.last_activity = Instant::now();
        let waiting = self
            .run
            .as_ref()
            .and_then(|r| r.pending.waiting.get(&msg.request_id));
        let Some(pending) = waiting else {
            return Err(if self.was_requested(&msg.request_id) {
                RuntimeError::PermissionResolved
            } else {
                RuntimeError::PermissionNotFound
            });
        };
        if !pending.options.iter().any(|o| o.id == msg.option_id) {
            let offered: Vec<&str> = pending.options.iter().map(|o| o.id.as_str()).collect();
            return Err(RuntimeError::InvalidField {
                field: "option_id",
                message: format!("`option_id` must be one of {offered:?}"),
            });
        }
        if let Some(timer) = self
            .run
            .as_mut()
            .and_then(|r| r.pending.waiting.get_mut(&msg.request_id))
            .and_then(|p| p.timer.take())
        {
            ctx.cancel_future(timer);
        }
        self.resolve(&msg.request_id, msg.option_id.clone(), msg.by.clone());
        Ok(PermissionResolution {
            request_id: msg.request_id,
            option_id: msg.option_id,
            by: msg.by,
        })
    }

    /// Whether the log's tail holds a request of this id (answered, or ended with its turn).
    fn was_requested(&self, request_id: &str) -> bool {
        self.log.tail().any(|e| {
            matches!(&e.body, EventBody::PermissionRequested { request_id: r, .. } if r == request_id)
        })
    }

    /// The attempt ends: its open requests end unanswered (`permission.resolved` with no option),
    /// so no client is left with a question nobody will read.
    pub(super) fn end_pending_permissions(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_mut() else { return };
        if !run.pending.is_waiting() {
            return;
        }
        let turn_id = run.front_id();
        let waiting = std::mem::take(&mut run.pending.waiting);
        let mut events = Vec::with_capacity(waiting.len());
        for (request_id, pending) in waiting {
            if let Some(timer) = pending.timer {
                ctx.cancel_future(timer);
            }
            events.push((
                Some(turn_id),
                EventBody::PermissionResolved {
                    request_id,
                    option_id: None,
                    by: BY_ATTEMPT_ENDED.into(),
                },
            ));
        }
        self.persist(Batch::default(), events, "permission");
    }

    /// Requests of `turns` (cut off by a crash) that the log's tail shows unanswered: each gets a
    /// `permission.resolved` by `interrupted`, to be persisted before the turns complete.
    pub(super) fn dangling_permissions(
        &self,
        turns: &[TurnRecord],
    ) -> Vec<(Option<TurnId>, EventBody)> {
        let ids: HashSet<TurnId> = turns.iter().map(|t| t.id).collect();
        let mut open: Vec<(TurnId, String)> = Vec::new();
        for event in self.log.tail() {
            let Some(turn_id) = event.turn_id.filter(|t| ids.contains(t)) else {
                continue;
            };
            match &event.body {
                EventBody::PermissionRequested { request_id, .. } => {
                    open.push((turn_id, request_id.clone()))
                }
                EventBody::PermissionResolved { request_id, .. } => {
                    open.retain(|(_, r)| r != request_id)
                }
                _ => {}
            }
        }
        open.into_iter()
            .map(|(turn_id, request_id)| {
                (
                    Some(turn_id),
                    EventBody::PermissionResolved {
                        request_id,
                        option_id: None,
                        by: BY_INTERRUPTED.into(),
                    },
                )
            })
            .collect()
    }
}

super::journal::answered_when_durable!(AnswerPermission => answer_now, PermissionResolution);
