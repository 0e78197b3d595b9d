//! `Write::Delete` removes everything of a session, in both stores: record, both forms of its
//! key (with the project and, after a backfill, without), every provider-id mapping it ever
//! had, turns (open and completed), idempotency keys, the open-turn mark and the event log. A
//! neighbour is untouched, and the sled store says so again after a reopen. What is not the
//! session's alone stays: the owner's daily usage totals (the money was spent) and the record of
//! an agent process group the session started (cleared only when the group is dead).

use futures::executor::block_on;
use std::sync::Arc;
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use troupe_actors::record::{BusyMode, TurnRecord, TurnStatus};
use troupe_actors::store::{Batch, Write};
use troupe_actors::usage::UsageIncrement;
use troupe_actors::{
    Event, EventBody, MemoryStore, NewSession, ScopedKey, SessionId, SledStore, Store, Timestamp,
    TurnId, Usage,
};

/// The UTC day both sessions spend on.
const DAY: &str = "2026-12-01";

fn key(project: Option<&str>, name: &str) -> ScopedKey {
    ScopedKey {
        owner: "alice".into(),
        project: project.map(str::to_string),
        key: name.into(),
    }
}

fn turn(session: SessionId, status: TurnStatus, client_id: &str) -> TurnRecord {
    TurnRecord {
        id: TurnId::new(),
        session_id: session,
        content: "hello".into(),
        mode: BusyMode::Enqueue,
        client_message_id: Some(client_id.into()),
        options: serde_json::Value::Null,
        status,
        outcome: None,
        order: 0,
        attempts: 0,
        accepted_at: Timestamp::now(),
        started_at: None,
        completed_at: None,
        usage: Default::default(),
    }
}

fn message(session: SessionId, seq: u64) -> Arc<Event> {
    Arc::new(Event {
        encoded: Default::default(),
        seq,
        session_id: session,
        turn_id: None,
        ts: Timestamp::now(),
        body: EventBody::Message {
            role: "user".into(),
            text: format!("message {seq} {}", "x".repeat(200)),
        },
    })
}

/// A session with a key (claimed with and without a project), two provider mappings, an open
/// and a completed turn with idempotency keys, 60 events, a dollar of alice's day and a
/// running agent process group (pgid 5000 + `pgid`).
fn populate(store: &dyn Store, name: &str, pgid: i32) -> SessionId {
    let id = populate_records(store, name);
    block_on(store.write(Write::ProcessGroup(ProcessGroupChange::Started(
        ProcessGroupRecord {
            pgid: 5000 + pgid,
            leader_pid: 5000 + pgid,
            leader_start: 1,
            boot_id: "boot".into(),
            kill_grace_ms: 100,
            session_id: id,
            turn_id: TurnId::new(),
            attempt: 1,
            started_at: Timestamp::now(),
        },
    ))))
    .unwrap();
    id
}

fn populate_records(store: &dyn Store, name: &str) -> SessionId {
    let (mut record, first) = NewSession {
        owner: "alice".into(),
        project: Some("/p".into()),
        key: Some(name.into()),
        provider: "echo".into(),
        ..NewSession::default()
    }
    .into_record();
    let id = record.id;
    futures::executor::block_on(async {
        store
            .create(record.clone(), first, Some(key(Some("/p"), name)))
            .await
            .unwrap();
        store.claim_key(key(None, name), id).await.unwrap();
        record.provider_session_id = Some(format!("second-{name}"));
        store
            .commit(
                id,
                Batch {
                    provider_mapping: Some(("echo".into(), format!("first-{name}"))),
                    turns: vec![turn(id, TurnStatus::Completed, "c1")],
                    client_ids: vec![("c1".into(), TurnId::new())],
                    events: (2..=30).map(|seq| message(id, seq)).collect(),
                    ..Batch::default()
                },
            )
            .await
            .unwrap();
        store
            .commit(
                id,
                Batch {
                    record: Some(record),
                    provider_mapping: Some(("echo".into(), format!("second-{name}"))),
                    turns: vec![turn(id, TurnStatus::Queued, "c2")],
                    client_ids: vec![("c2".into(), TurnId::new())],
                    events: (31..=60).map(|seq| message(id, seq)).collect(),
                    active: Some(true),
                    usage: vec![UsageIncrement {
                        owner: "alice".into(),
                        day: DAY.into(),
                        usage: Usage::new(10, 5, 0, 1.0),
                    }],
                },
            )
            .await
            .unwrap();
    });
    id
}

fn assert_whole(store: &dyn Store, id: SessionId, name: &str) {
    assert!(block_on(store.get_session(id)).unwrap().is_some());
    assert_eq!(
        block_on(store.lookup_key(&key(Some("/p"), name))).unwrap(),
        Some(id)
    );
    assert_eq!(
        block_on(store.lookup_key(&key(None, name))).unwrap(),
        Some(id)
    );
    for mapping in ["first", "second"] {
        let provider_id = format!("{mapping}-{name}");
        assert_eq!(
            block_on(store.session_for_provider_id("echo", &provider_id)).unwrap(),
            Some(id)
        );
    }
    assert_eq!(block_on(store.last_seq(id)).unwrap(), 60);
    assert_eq!(block_on(store.all_turns(id)).unwrap().len(), 2);
    assert!(block_on(store.turn_for_client_id(id, "c1"))
        .unwrap()
        .is_some());
    assert!(block_on(store.active_sessions()).unwrap().contains(&id));
}

fn assert_gone(store: &dyn Store, id: SessionId, name: &str) {
    assert_eq!(block_on(store.get_session(id)).unwrap(), None);
    assert_eq!(
        block_on(store.lookup_key(&key(Some("/p"), name))).unwrap(),
        None
    );
    assert_eq!(block_on(store.lookup_key(&key(None, name))).unwrap(), None);
    for mapping in ["first", "second"] {
        let provider_id = format!("{mapping}-{name}");
        assert_eq!(
            block_on(store.session_for_provider_id("echo", &provider_id)).unwrap(),
            None
        );
    }
    assert_eq!(block_on(store.last_seq(id)).unwrap(), 0);
    assert!(block_on(store.read_events(id, 0, 1000)).unwrap().is_empty());
    assert!(block_on(store.all_turns(id)).unwrap().is_empty());
    assert!(block_on(store.open_turns(id)).unwrap().is_empty());
    assert_eq!(block_on(store.turn_for_client_id(id, "c1")).unwrap(), None);
    assert_eq!(block_on(store.turn_for_client_id(id, "c2")).unwrap(), None);
    assert!(!block_on(store.active_sessions()).unwrap().contains(&id));
    assert!(block_on(store.sessions_after(None, usize::MAX))
        .unwrap()
        .iter()
        .all(|r| r.id != id));
}

/// Alice's day (spent by both sessions) and the sessions whose process groups are recorded.
fn kept(store: &dyn Store) -> (f64, Vec<SessionId>) {
    let days = block_on(store.usage_days(Some("alice"), DAY, DAY)).unwrap();
    let mut groups: Vec<_> = block_on(store.process_groups())
        .unwrap()
        .into_iter()
        .map(|g| g.session_id)
        .collect();
    groups.sort();
    (days.iter().map(|d| d.usage.cost_usd).sum(), groups)
}

fn delete_and_check(store: &dyn Store) -> (SessionId, SessionId) {
    let doomed = populate(store, "doomed", 1);
    let neighbour = populate(store, "neighbour", 2);
    let mut both = vec![doomed, neighbour];
    both.sort();
    assert_eq!(kept(store), (2.0, both.clone()));
    assert_whole(store, doomed, "doomed");
    futures::executor::block_on(store.delete(doomed)).unwrap();
    assert_gone(store, doomed, "doomed");
    assert_whole(store, neighbour, "neighbour");
    assert_eq!(kept(store), (2.0, both));
    // Deleting again is harmless.
    futures::executor::block_on(store.delete(doomed)).unwrap();
    assert_eq!(block_on(store.stats()).unwrap().sessions, 1);
    (doomed, neighbour)
}

#[test]
fn the_memory_store_removes_everything_of_a_session_and_nothing_else() {
    delete_and_check(&MemoryStore::new());
}

#[test]
fn the_sled_store_removes_everything_of_a_session_and_nothing_else_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (doomed, neighbour) = {
        let store = SledStore::open(dir.path()).unwrap();
        delete_and_check(&store)
    };
    let store = SledStore::open(dir.path()).unwrap();
    assert_gone(&store, doomed, "doomed");
    assert_whole(&store, neighbour, "neighbour");
    let mut both = vec![doomed, neighbour];
    both.sort();
    assert_eq!(kept(&store), (2.0, both));
    let page: Vec<SessionId> = block_on(store.sessions_after(None, 10))
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, [neighbour]);
    assert!(block_on(store.sessions_after(Some(neighbour), 10))
        .unwrap()
        .is_empty());
}
