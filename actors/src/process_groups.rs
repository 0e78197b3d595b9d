//! The durable record of the agent process groups that are running, so that a server that dies
//! without stopping them (`kill -9`, an OOM kill) can find and kill them when it starts again,
//! before startup recovery runs their turns a second time.
//!
//! An attempt that starts a process group records it through its [`ProcessLedger`] and waits
//! until the record is durable before it hands the agent its prompt; the [`RecordedGroup`] it
//! gets back clears the record when it is dropped, which the provider does once the whole
//! group is gone. What to do with the records at startup (check that the leader is still the
//! same process, kill the group) is the provider's business: this crate only keeps them.

use crate::ids::{SessionId, TurnId};
use crate::store::{Store, StoreError, Write};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One running process group of an attempt, as recorded before its agent got any work.
///
/// A group is named by its id and its leader's start time together: a pid (and so a group id)
/// can be reused by an unrelated process once the group is gone, but not with the same start
/// time since boot, and never on the same boot id after a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGroupRecord {
    /// The process group id; the leader's pid when the group was started.
    pub pgid: i32,
    /// The group leader: the agent process the provider spawned.
    pub leader_pid: i32,
    /// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): tells
    /// the recorded process from a later one that got the same pid.
    pub leader_start: u64,
    /// The kernel's boot id when the group started: after a reboot no recorded group can be
    /// alive, whatever the pids say.
    pub boot_id: String,
    /// How long the provider gives the group between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
    /// The session the attempt belongs to.
    pub session_id: SessionId,
    /// The turn being attempted.
    pub turn_id: TurnId,
    /// Which attempt of the turn.
    pub attempt: u32,
    /// When the group was recorded.
    pub started_at: Timestamp,
}

impl ProcessGroupRecord {
    /// The key the record is stored and cleared under.
    pub fn key(&self) -> ProcessGroupKey {
        ProcessGroupKey {
            pgid: self.pgid,
            leader_start: self.leader_start,
        }
    }
}

/// What names a recorded group: its id and its leader's start time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ProcessGroupKey {
    /// The process group id.
    pub pgid: i32,
    /// The leader's start time in clock ticks since boot.
    pub leader_start: u64,
}

/// A change to the record of running process groups ([`Write::ProcessGroup`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessGroupChange {
    /// A group started: record it.
    Started(ProcessGroupRecord),
    /// A group is gone: forget it (nothing happens when it is not recorded).
    Ended(ProcessGroupKey),
}

/// Where one attempt records the process group it starts. Cheap to clone; an untracked ledger
/// (the default, for providers driven outside a runtime) records nothing.
#[derive(Clone, Default)]
pub struct ProcessLedger {
    /// The store and the attempt's identity; `None` when untracked.
    tracked: Option<Arc<Tracked>>,
}

/// What a tracking ledger needs.
struct Tracked {
    /// Where records go.
    store: Arc<dyn Store>,
    /// The attempt's session.
    session_id: SessionId,
    /// The attempt's turn.
    turn_id: TurnId,
    /// Which attempt.
    attempt: u32,
    /// Told when a record could not be written, so the session stops (fail-stop) instead of
    /// running an agent nobody could find after a crash.
    on_store_error: Box<dyn Fn(StoreError) + Send + Sync>,
}

/// The process group facts a provider knows right after it spawned the leader.
#[derive(Clone, Debug)]
pub struct SpawnedGroup {
    /// The process group id.
    pub pgid: i32,
    /// The leader's pid.
    pub leader_pid: i32,
    /// The leader's start time in clock ticks since boot.
    pub leader_start: u64,
    /// The kernel's boot id.
    pub boot_id: String,
    /// The provider's SIGTERM → SIGKILL grace.
    pub kill_grace_ms: u64,
}

impl ProcessLedger {
    /// A ledger that records nothing.
    pub fn untracked() -> Self {
        Self::default()
    }

    /// A ledger that records the groups of one attempt in `store`; `on_store_error` is called
    /// when a record could not be written.
    pub fn new(
        store: Arc<dyn Store>,
        session_id: SessionId,
        turn_id: TurnId,
        attempt: u32,
        on_store_error: impl Fn(StoreError) + Send + Sync + 'static,
    ) -> Self {
        ProcessLedger {
            tracked: Some(Arc::new(Tracked {
                store,
                session_id,
                turn_id,
                attempt,
                on_store_error: Box::new(on_store_error),
            })),
        }
    }

    /// Whether this ledger records anything.
    pub fn is_tracked(&self) -> bool {
        self.tracked.is_some()
    }

    /// Records `group` and resolves once the record is durable, with the guard that clears it.
    /// An untracked ledger resolves at once with `None`. On a store error the session was told
    /// (it stops) and the caller must kill the group without giving it work.
    pub async fn record(&self, group: SpawnedGroup) -> Result<Option<RecordedGroup>, StoreError> {
        let Some(tracked) = &self.tracked else {
            return Ok(None);
        };
        let record = ProcessGroupRecord {
            pgid: group.pgid,
            leader_pid: group.leader_pid,
            leader_start: group.leader_start,
            boot_id: group.boot_id,
            kill_grace_ms: group.kill_grace_ms,
            session_id: tracked.session_id,
            turn_id: tracked.turn_id,
            attempt: tracked.attempt,
            started_at: Timestamp::now(),
        };
        let key = record.key();
        let written = tracked
            .store
            .write(Write::ProcessGroup(ProcessGroupChange::Started(record)))
            .await;
        match written {
            Ok(_) => Ok(Some(RecordedGroup {
                store: tracked.store.clone(),
                key,
            })),
            Err(e) => {
                (tracked.on_store_error)(e.clone());
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for ProcessLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tracked {
            Some(t) => write!(
                f,
                "ProcessLedger(session {} turn {} attempt {})",
                t.session_id, t.turn_id, t.attempt
            ),
            None => f.write_str("ProcessLedger(untracked)"),
        }
    }
}

/// A durable record of a running group. Dropping it clears the record: drop it only once the
/// whole group is gone.
pub struct RecordedGroup {
    /// Where the record is.
    store: Arc<dyn Store>,
    /// Which record.
    key: ProcessGroupKey,
}

impl RecordedGroup {
    /// The record's key.
    pub fn key(&self) -> ProcessGroupKey {
        self.key
    }
}

impl std::fmt::Debug for RecordedGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordedGroup({:?})", self.key)
    }
}

impl Drop for RecordedGroup {
    fn drop(&mut self) {
        let key = self.key;
        self.store.submit(
            Write::ProcessGroup(ProcessGroupChange::Ended(key)),
            Box::new(move |result| {
                // A record left behind is harmless: at the next start its leader is gone (or
                // another process), so it is only cleared, never acted on wrongly.
                if let Err(e) = result {
                    log::warn!(
                        "process group {}: clearing its record failed: {e}",
                        key.pgid
                    );
                }
            }),
        );
    }
}
