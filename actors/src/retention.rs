//! Retention: sessions that have outlived their configured age are removed from the store by
//! a background sweeper, so a gateway that serves scripts and bots does not grow forever.
//!
//! Three kinds of session can expire, each with its own age ([`Retention`]): hidden one-off
//! sessions (an OpenAI request without a key; on by default, 24 h), archived sessions and idle
//! sessions (both opt-in). A session's age is the time since its record last changed
//! (`updated_at`: its last turn started or ended, it was archived or renamed).
//!
//! The sweeper walks the store a page at a time on a thread of its own (an arbiter), and its
//! deletes go through the store's writer ([`Write::Delete`]), so it never blocks a request or
//! an actor thread. A session is expired only when it has no live actor and
//! no open turn; while its delete is in flight the registry refuses to activate it
//! ([`BeginExpire`]), so nothing can write to a session being removed.
//!
//! [`Write::Delete`]: crate::store::Write::Delete

use crate::error::RuntimeError;
use crate::ids::SessionId;
use crate::metrics::RuntimeMetrics;
use crate::record::SessionRecord;
use crate::registry::SessionRegistry;
use crate::shared::RuntimeShared;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// How long sessions are kept, per kind; `None` keeps them forever.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// Hidden one-off sessions (OpenAI requests without a key), after their last change.
    /// Default 24 h; zero removes them at the first sweep after their turn ended.
    pub hidden: Option<Duration>,
    /// Archived sessions, after their last change (opt-in).
    pub archived: Option<Duration>,
    /// Any other session with no change for this long (opt-in).
    pub idle: Option<Duration>,
    /// How often the sweeper looks for sessions to remove.
    pub sweep_interval: Duration,
    /// The least age of a session that never changed after it was created: its creator may
    /// not have sent its first turn yet (a keyless request creates, then sends).
    pub creation_grace: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hidden: Some(Duration::from_secs(24 * 3600)),
            archived: None,
            idle: None,
            sweep_interval: Duration::from_secs(60),
            creation_grace: Duration::from_secs(60),
        }
    }
}

/// Why a session expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A hidden one-off session past `retention.hidden_sessions`.
    Hidden,
    /// An archived session past `retention.archived_sessions`.
    Archived,
    /// A session idle past `retention.idle_sessions`.
    Idle,
}

impl Expiry {
    /// Every kind, in the order of [`RuntimeMetrics::sessions_expired`].
    pub const ALL: [Expiry; 3] = [Expiry::Hidden, Expiry::Archived, Expiry::Idle];

    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Expiry::Hidden => "hidden",
            Expiry::Archived => "archived",
            Expiry::Idle => "idle",
        }
    }

    fn index(&self) -> usize {
        Expiry::ALL.iter().position(|e| e == self).unwrap_or(0)
    }
}

impl Retention {
    /// Whether any kind of session expires at all.
    pub fn enabled(&self) -> bool {
        self.hidden.is_some() || self.archived.is_some() || self.idle.is_some()
    }

    /// Why `record` has expired at `now`, if it has. `never_used`: no turn was ever sent to
    /// it, so its creator may be about to send the first one; it is kept for the creation
    /// grace at least. A session whose turn is running never expires (open queued turns are
    /// checked by the sweeper before it deletes).
    pub fn expiry(
        &self,
        record: &SessionRecord,
        now: Timestamp,
        never_used: bool,
    ) -> Option<Expiry> {
        if record.running_since.is_some() {
            return None;
        }
        let age = Duration::from_millis(
            u64::try_from(now.millis() - record.updated_at.millis()).unwrap_or(0),
        );
        let floor = if never_used {
            self.creation_grace
        } else {
            Duration::ZERO
        };
        let past = |limit: Option<Duration>| limit.is_some_and(|limit| age >= limit.max(floor));
        if record.hidden {
            return past(self.hidden).then_some(Expiry::Hidden);
        }
        if record.archived && past(self.archived) {
            return Some(Expiry::Archived);
        }
        past(self.idle).then_some(Expiry::Idle)
    }
}

/// Sessions the store holds are read this many at a time.
const SWEEP_PAGE: usize = 512;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepFigures {
    /// Sessions looked at.
    pub scanned: u64,
    /// Sessions removed.
    pub expired: u64,
}

/// Asks the registry to hold these sessions for expiry: it answers the ones that have no live
/// actor, and refuses to activate them until [`EndExpire`].
#[derive(Message)]
#[rtype(result = "Vec<SessionId>")]
pub struct BeginExpire(pub Vec<SessionId>);

/// The expiry of these sessions is over (deleted, or left alone after all).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EndExpire(pub Vec<SessionId>);

/// Starts the sweeper in the current arbiter: one sweep per `sweep_interval`, for as long as the
/// registry runs. Nothing is started when no kind of session expires.
pub(crate) fn start(shared: &Arc<RuntimeShared>, registry: &Addr<SessionRegistry>) {
    let retention = shared.settings.retention.clone();
    if !retention.enabled() {
        return;
    }
    // Weak: the sweeper never keeps a runtime (and its store, and sled's lock on the data
    // directory) alive; it ends with the runtime.
    let weak_shared = Arc::downgrade(shared);
    let weak_registry = registry.downgrade();
    // A thread of its own: an embedded store answers its reads on the thread that asks, so
    // the sweeper's reads never hold up a request or an actor.
    let arbiter = Arbiter::new();
    arbiter.spawn(async move {
        let mut ticks = tokio::time::interval(retention.sweep_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (Some(shared), Some(registry)) = (weak_shared.upgrade(), weak_registry.upgrade())
            else {
                break;
            };
            if !registry.connected() {
                break;
            }
            match sweep(&shared, &registry).await {
                Ok(figures) if figures.expired > 0 => log::debug!(
                    "retention: removed {} of {} session(s)",
                    figures.expired,
                    figures.scanned
                ),
                Ok(_) => {}
                // The store failed; nothing was half-removed that the next sweep cannot
                // finish (a delete removes the record last), so try again then.
                Err(e) => log::error!("retention sweep failed: {e}"),
            }
        }
        // The runtime is gone: so is the sweeper's thread.
        actix_rt::Arbiter::current().stop();
    });
}

/// One pass over every session in the store, removing the expired ones.
pub(crate) async fn sweep(
    shared: &Arc<RuntimeShared>,
    registry: &Addr<SessionRegistry>,
) -> Result<SweepFigures, RuntimeError> {
    let store = shared.store.as_ref();
    let retention = &shared.settings.retention;
    let mut figures = SweepFigures::default();
    let mut after = None;
    loop {
        let page = store.sessions_after(after, SWEEP_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(figures);
        };
        after = Some(last.id);
        figures.scanned += page.len() as u64;
        let now = Timestamp::now();
        let mut due = Vec::new();
        for record in &page {
            if let Some(why) = due_now(store, retention, record, now).await? {
                due.push((record.id, why));
            }
        }
        if due.is_empty() {
            continue;
        }
        let held = registry
            .send(BeginExpire(due.iter().map(|(id, _)| *id).collect()))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let result = expire_held(shared, &due, &held).await;
        registry.do_send(EndExpire(held));
        figures.expired += result?;
    }
}

/// Deletes the held sessions that are still due when read again (an actor may have changed
/// one between the page read and the hold), have no open turn and run on no node; how many
/// were deleted.
async fn expire_held(
    shared: &Arc<RuntimeShared>,
    due: &[(SessionId, Expiry)],
    held: &[SessionId],
) -> Result<u64, RuntimeError> {
    let store = shared.store.as_ref();
    let retention = &shared.settings.retention;
    let now = Timestamp::now();
    let mut confirmed = Vec::new();
    for (id, why) in due.iter().filter(|(id, _)| held.contains(id)) {
        let Some(record) = store.get_session(*id).await? else {
            continue;
        };
        // A session another node runs (it holds the lease) is left to that node's sweeper.
        if due_now(store, retention, &record, now).await? == Some(*why)
            && store.open_turns(*id).await?.is_empty()
            && store.lease_holder(*id).await?.is_none()
        {
            confirmed.push((*id, *why));
        }
    }
    // Submitted together, so the writer removes them in few groups.
    let deletes = confirmed.iter().map(|(id, _)| store.delete(*id));
    for (result, (id, why)) in futures::future::join_all(deletes)
        .await
        .into_iter()
        .zip(&confirmed)
    {
        result?;
        RuntimeMetrics::bump(&shared.metrics.sessions_expired[why.index()]);
        log::debug!("session {id}: removed by retention ({})", why.as_str());
    }
    Ok(confirmed.len() as u64)
}

/// Why `record` has expired at `now`, if it has, as [`Retention::expiry`] with what the store
/// says about its use: a record that never changed after it was created (to the millisecond)
/// may still have run a turn, which its log tells.
async fn due_now(
    store: &dyn Store,
    retention: &Retention,
    record: &SessionRecord,
    now: Timestamp,
) -> Result<Option<Expiry>, StoreError> {
    let never_used = record.updated_at.millis() <= record.created_at.millis()
        && store.last_seq(record.id).await? <= 1;
    Ok(retention.expiry(record, now, never_used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NewSession;

    fn record(hidden: bool, archived: bool, age: Duration) -> SessionRecord {
        let (mut record, _) = NewSession {
            owner: "o".into(),
            provider: "echo".into(),
            hidden,
            ..NewSession::default()
        }
        .into_record();
        record.archived = archived;
        let then = record.updated_at.0 - chrono::Duration::from_std(age).unwrap();
        record.created_at = Timestamp(then - chrono::Duration::milliseconds(1));
        record.updated_at = Timestamp(then);
        record
    }

    #[test]
    fn each_kind_expires_after_its_own_age_and_a_running_one_never() {
        let r = Retention {
            hidden: Some(Duration::from_secs(10)),
            archived: Some(Duration::from_secs(100)),
            idle: None,
            sweep_interval: Duration::from_secs(1),
            creation_grace: Duration::from_secs(30),
        };
        let now = Timestamp::now();
        assert_eq!(
            r.expiry(&record(true, false, Duration::from_secs(11)), now, false),
            Some(Expiry::Hidden)
        );
        assert_eq!(
            r.expiry(&record(true, false, Duration::from_secs(5)), now, false),
            None
        );
        assert_eq!(
            r.expiry(&record(false, true, Duration::from_secs(50)), now, false),
            None
        );
        assert_eq!(
            r.expiry(&record(false, true, Duration::from_secs(101)), now, false),
            Some(Expiry::Archived)
        );
        assert_eq!(
            r.expiry(&record(false, false, Duration::from_secs(1000)), now, false),
            None
        );
        let mut running = record(true, false, Duration::from_secs(11));
        running.running_since = Some(running.updated_at);
        assert_eq!(r.expiry(&running, now, false), None);
        let idle = Retention {
            idle: Some(Duration::from_secs(60)),
            ..r
        };
        assert_eq!(
            idle.expiry(&record(false, false, Duration::from_secs(61)), now, false),
            Some(Expiry::Idle)
        );
    }

    #[test]
    fn a_session_never_sent_a_turn_waits_for_the_creation_grace() {
        let r = Retention {
            hidden: Some(Duration::ZERO),
            creation_grace: Duration::from_secs(30),
            ..Retention::default()
        };
        let now = Timestamp::now();
        let mut fresh = record(true, false, Duration::from_secs(10));
        fresh.created_at = fresh.updated_at;
        assert_eq!(r.expiry(&fresh, now, true), None);
        let mut old = record(true, false, Duration::from_secs(31));
        old.created_at = old.updated_at;
        assert_eq!(r.expiry(&old, now, true), Some(Expiry::Hidden));
        assert_eq!(
            r.expiry(&record(true, false, Duration::ZERO), now, false),
            Some(Expiry::Hidden)
        );
    }
}
