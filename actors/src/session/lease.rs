//! Keeping the session's lease on a store shared by several nodes: renewed by every write
//! and, when the session writes nothing, by an empty commit every quarter of the TTL; when no
//! renewal was confirmed for [`Settings::lease_stop_after`](crate::settings::Settings) the
//! session stops (fail-stop) before the server could let another node take the lease.

use super::Session;
use crate::store::{Batch, StoreError};
use actix::prelude::*;

impl Session {
    /// Starts the lease checks, on a store whose leases expire.
    pub(super) fn keep_lease(&mut self, ctx: &mut Context<Self>) {
        if !self.shared.store.leases_expire() {
            return;
        }
        let every = self.shared.settings.lease_check_interval();
        ctx.run_interval(every, |act, ctx| act.check_lease(ctx));
    }

    /// Stops the session when its lease may be about to expire; renews it when nothing else
    /// did for a while.
    ///
    /// The deadline counts from when the last confirmed renewal was *sent*: the server
    /// received it no earlier, so its TTL runs out no earlier than that plus the TTL, and the
    /// session stops well before (a paused process stops here, on its first tick after it
    /// resumes, if the store has not refused its writes first).
    pub(super) fn check_lease(&mut self, ctx: &mut Context<Self>) {
        if self.deleted || self.store_failed {
            return;
        }
        let settings = &self.shared.settings;
        let since = self.lease_sent.elapsed();
        if since >= settings.lease_stop_after() {
            log::error!(
                "session {}: no lease renewal confirmed for {since:?} (TTL {:?}); stopping \
                 before another node can take it over",
                self.id(),
                settings.lease_ttl
            );
            let error = StoreError::LeaseLost { session: self.id() };
            self.fail_stop(error, ctx);
            return;
        }
        if since >= settings.lease_renew_interval() && self.journal.is_idle() {
            let id = self.id();
            self.journal
                .submit(self.shared.store.as_ref(), id, Batch::default());
        }
    }
}
