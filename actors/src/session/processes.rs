//! The session's side of the process group record: each attempt gets a ledger that records
//! its provider's process group durably, and a record that cannot be written stops the
//! session (fail-stop) like any other store failure.

use super::Session;
use crate::ids::TurnId;
use crate::process_groups::ProcessLedger;
use crate::store::StoreError;
use actix::prelude::*;

/// A process group of one of the session's attempts could not be recorded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ProcessRecordFailed(StoreError);

impl Session {
    /// The ledger for attempt `attempt` of `turn`.
    pub(super) fn process_ledger(
        &self,
        turn: TurnId,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) -> ProcessLedger {
        let addr = ctx.address();
        ProcessLedger::new(
            self.shared.store.clone(),
            self.id(),
            turn,
            attempt,
            move |error| addr.do_send(ProcessRecordFailed(error)),
        )
    }
}

impl Handler<ProcessRecordFailed> for Session {
    type Result = ();

    /// The store failed: stop, as for a failed journal write. The provider kills the group
    /// it could not record, without ever giving it the prompt.
    fn handle(&mut self, msg: ProcessRecordFailed, ctx: &mut Context<Self>) {
        if !self.store_failed {
            self.fail_stop(msg.0, ctx);
        }
    }
}
