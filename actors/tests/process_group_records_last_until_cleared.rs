//! The record of running agent process groups, in both stores: a recorded group is read back
//! (after reopening, for sled), a group is cleared only under its own key (id and leader start
//! time: clearing a reused pgid with another start time leaves the record alone), and a
//! ledger's record is cleared when its guard is dropped.

use std::sync::Arc;
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupKey, ProcessGroupRecord};
use troupe_actors::store::Write;
use troupe_actors::{
    MemoryStore, ProcessLedger, SessionId, SledStore, SpawnedGroup, Store, Timestamp, TurnId,
};

fn record(pgid: i32, start: u64) -> ProcessGroupRecord {
    ProcessGroupRecord {
        pgid,
        leader_pid: pgid,
        leader_start: start,
        boot_id: "boot".into(),
        kill_grace_ms: 100,
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        attempt: 2,
        started_at: Timestamp::now(),
    }
}

async fn change(store: &Arc<dyn Store>, change: ProcessGroupChange) {
    store
        .write(Write::ProcessGroup(change))
        .await
        .expect("write");
}

async fn sorted(store: &Arc<dyn Store>) -> Vec<ProcessGroupRecord> {
    let mut records = store.process_groups().await.expect("read");
    records.sort_by_key(|r| r.key());
    records
}

/// Records two groups at once, clears a same-numbered group of another start time (nothing happens),
/// then one of the two; what is left.
async fn record_and_clear(store: &Arc<dyn Store>) -> Vec<ProcessGroupRecord> {
    let (a, b) = (record(4100, 7), record(4200, 9));
    // Submitted together, so the writer can take them as one group (one transaction).
    let both = [a.clone(), b.clone()]
        .map(|r| store.write(Write::ProcessGroup(ProcessGroupChange::Started(r))));
    for written in futures::future::join_all(both).await {
        written.expect("write");
    }
    assert_eq!(sorted(store).await, vec![a.clone(), b.clone()]);
    let reused = ProcessGroupKey {
        pgid: 4100,
        leader_start: 8,
    };
    change(store, ProcessGroupChange::Ended(reused)).await;
    assert_eq!(sorted(store).await, vec![a.clone(), b.clone()]);
    change(store, ProcessGroupChange::Ended(a.key())).await;
    assert_eq!(sorted(store).await, vec![b.clone()]);
    vec![b]
}

/// A ledger records a group durably and its guard clears it on drop.
async fn ledger_round_trip(store: &Arc<dyn Store>) {
    let ledger = ProcessLedger::new(store.clone(), SessionId::new(), TurnId::new(), 1, |e| {
        panic!("no store error expected: {e}")
    });
    let before = sorted(store).await.len();
    let guard = ledger
        .record(SpawnedGroup {
            pgid: 5100,
            leader_pid: 5100,
            leader_start: 11,
            boot_id: "boot".into(),
            kill_grace_ms: 100,
        })
        .await
        .expect("recorded")
        .expect("a tracking ledger hands back a guard");
    let found = sorted(store).await;
    assert_eq!(found.len(), before + 1);
    assert!(found
        .iter()
        .any(|r| r.key() == guard.key() && r.attempt == 1));
    drop(guard);
    // The clear is submitted on drop; a later write's confirmation means it landed before.
    change(store, ProcessGroupChange::Ended(ProcessGroupKey::default())).await;
    assert_eq!(sorted(store).await.len(), before);
    assert!(ProcessLedger::untracked()
        .record(SpawnedGroup {
            pgid: 1,
            leader_pid: 1,
            leader_start: 1,
            boot_id: "boot".into(),
            kill_grace_ms: 0,
        })
        .await
        .expect("untracked")
        .is_none());
}

#[actix_rt::test]
async fn memory_store_keeps_process_groups_until_cleared() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    record_and_clear(&store).await;
    ledger_round_trip(&store).await;
}

#[actix_rt::test]
async fn sled_store_keeps_process_groups_across_reopen_until_cleared() {
    let dir = tempfile::tempdir().expect("temp dir");
    let left = {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        record_and_clear(&store).await
    };
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("reopen"));
    assert_eq!(sorted(&store).await, left);
    ledger_round_trip(&store).await;
}
