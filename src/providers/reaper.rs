//! At startup, before any turn runs again: kill the agent process groups a server that died
//! without stopping them (`kill -9`, an OOM kill) left behind, so startup recovery never runs a
//! second copy of an agent next to the first.
//!
//! Every attempt's process group is recorded durably before its agent gets its prompt
//! ([`troupe_actors::process_groups`]). A record names the group by its id and its leader's
//! start time; a group is killed only when that identity still holds:
//! - the leader runs and started at the recorded time: the group is the recorded one;
//! - the leader is gone (the parent-death signal killed it) and what is left in the group
//!   started no earlier than it: Linux never hands out a pid while a group of that id still
//!   has members, so those are the leader's descendants;
//! - a leader pid that now belongs to a process with another start time, or a record from
//!   another boot, means the recorded group is gone: it is left alone.
//!
//! Killing is SIGTERM to the whole group, then SIGKILL to what is left after the group's own
//! grace (the provider's `kill_grace_ms`). Every record is cleared afterwards.

use super::proc_table::{self, ProcStat};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use troupe_actors::store::{StoreError, Write};
use troupe_actors::Store;

/// How often the groups are looked at while they die.
const POLL: Duration = Duration::from_millis(10);

/// How long processes get to vanish after SIGKILL (only a process stuck in the kernel takes
/// any time at all).
const AFTER_KILL: Duration = Duration::from_secs(2);

/// What one startup's reaping did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Process groups that were recorded.
    pub recorded: usize,
    /// Recorded groups that were still alive and were killed.
    pub reaped_groups: usize,
    /// Processes in those groups when reaping began.
    pub reaped_processes: usize,
    /// Records whose leader pid now names another process: left alone.
    pub pid_reused: usize,
    /// Processes still there after SIGKILL (stuck in the kernel); normally 0.
    pub survivors: usize,
    /// How long reaping took, from reading the records to the last group gone.
    pub elapsed: Duration,
}

/// What became of a recorded group.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Still alive and still the recorded group: these processes are in it.
    Alive(Vec<i32>),
    /// Nothing of it is left.
    Gone,
    /// Its leader's pid belongs to another process now.
    PidReused,
}

/// Kills every recorded group that is still alive (see the module docs), clears every
/// record, and says what it did. Runs before the runtime starts; it takes at most the longest
/// recorded `kill_grace_ms` plus a moment.
///
/// On a store shared by several nodes, the groups of a session whose lease another node
/// holds (`node` is this one's id) belong to that node's running attempts: they are neither
/// killed nor forgotten.
pub async fn reap_orphans(store: &Arc<dyn Store>, node: &str) -> Result<ReapReport, StoreError> {
    let started = Instant::now();
    let mut records = Vec::new();
    for record in store.process_groups().await? {
        match store.lease_holder(record.session_id).await? {
            Some(holder) if holder != node => {}
            _ => records.push(record),
        }
    }
    let mut report = ReapReport {
        recorded: records.len(),
        ..ReapReport::default()
    };
    if records.is_empty() {
        return Ok(report);
    }
    let boot = proc_table::boot_id();
    let mut targets: Vec<&ProcessGroupRecord> = Vec::new();
    for record in &records {
        match verdict(record, boot.as_deref()) {
            Verdict::Alive(pids) => {
                log::warn!(
                    "session {} turn {}: process group {} (attempt {}) outlived the previous \
                     server; killing its {} process(es)",
                    record.session_id,
                    record.turn_id,
                    record.pgid,
                    record.attempt,
                    pids.len()
                );
                report.reaped_groups += 1;
                report.reaped_processes += pids.len();
                targets.push(record);
            }
            Verdict::PidReused => {
                log::info!(
                    "session {} turn {}: pid {} of a recorded process group now belongs to \
                     another process; left alone",
                    record.session_id,
                    record.turn_id,
                    record.leader_pid
                );
                report.pid_reused += 1;
            }
            Verdict::Gone => {}
        }
    }
    for record in &targets {
        let _ = killpg(Pid::from_raw(record.pgid), Signal::SIGTERM);
    }
    let grace = targets
        .iter()
        .map(|r| Duration::from_millis(r.kill_grace_ms))
        .max()
        .unwrap_or_default();
    wait_gone(&targets, grace).await;
    for record in targets.iter().filter(|r| !members(r).is_empty()) {
        let _ = killpg(Pid::from_raw(record.pgid), Signal::SIGKILL);
    }
    report.survivors = wait_gone(&targets, AFTER_KILL).await;
    report.elapsed = started.elapsed();
    for record in &records {
        store
            .write(Write::ProcessGroup(ProcessGroupChange::Ended(record.key())))
            .await?;
    }
    if report.reaped_groups > 0 || report.pid_reused > 0 {
        log::warn!(
            "startup: reaped {} agent process group(s) ({} process(es)) left by the previous \
             server in {} ms; {} record(s) named a reused pid and were left alone",
            report.reaped_groups,
            report.reaped_processes,
            report.elapsed.as_millis(),
            report.pid_reused
        );
    }
    if report.survivors > 0 {
        log::error!(
            "startup: {} agent process(es) still alive after SIGKILL",
            report.survivors
        );
    }
    Ok(report)
}

/// Whether `record` still names a live group, and which processes are in it.
fn verdict(record: &ProcessGroupRecord, boot: Option<&str>) -> Verdict {
    if boot != Some(record.boot_id.as_str()) {
        // Another boot: every process of that one is gone, whatever its pid was.
        return Verdict::Gone;
    }
    match proc_table::stat(record.leader_pid) {
        Some(leader) if leader.start != record.leader_start => Verdict::PidReused,
        _ => match members(record) {
            pids if pids.is_empty() => Verdict::Gone,
            pids => Verdict::Alive(pids),
        },
    }
}

/// The running processes of the recorded group: in its process group and started no earlier
/// than its leader (anything older cannot descend from it). Empty when any member is older:
/// then the group id was reused and this is not the recorded group.
fn members(record: &ProcessGroupRecord) -> Vec<i32> {
    let found: Vec<(i32, ProcStat)> = proc_table::group_members(record.pgid);
    if found.iter().any(|(_, s)| s.start < record.leader_start) {
        return Vec::new();
    }
    found.into_iter().map(|(pid, _)| pid).collect()
}

/// Waits up to `limit` for every target group to be gone; how many processes are left.
async fn wait_gone(targets: &[&ProcessGroupRecord], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let left: usize = targets.iter().map(|r| members(r).len()).sum();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}
