//! The store's contract, one suite run against every store: memory, sled and NATS JetStream
//! (a real `nats-server -js` per test). Whatever a session actor or the registry relies on is
//! pinned here, so a store that passes can back the runtime.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;

use nats_server::NatsServer;
use std::sync::Arc;
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use troupe_actors::record::{SessionRecord, TurnRecord};
use troupe_actors::store::{Batch, CreateOutcome, StoreError, Write};
use troupe_actors::usage::UsageIncrement;
use troupe_actors::{
    BusyMode, Event, EventBody, MemoryStore, NatsOptions, NatsStore, NewSession, Outcome,
    ScopedKey, SessionId, SledStore, Store, Timestamp, TurnId, TurnStatus, Usage,
};

/// A store under test, and how to open it again (a restart).
enum Backend {
    Memory(Arc<dyn Store>),
    Sled(tempfile::TempDir),
    Nats {
        /// Kept running for the test; killed when dropped.
        _server: Box<NatsServer>,
        options: NatsOptions,
    },
}

impl Backend {
    fn memory() -> Option<Backend> {
        Some(Backend::Memory(Arc::new(MemoryStore::new())))
    }

    fn sled() -> Option<Backend> {
        Some(Backend::Sled(tempfile::tempdir().expect("temp dir")))
    }

    fn nats(test: &str) -> Option<Backend> {
        let server = NatsServer::start(test)?;
        let options = NatsOptions {
            url: server.url(),
            ..NatsOptions::default()
        };
        Some(Backend::Nats {
            _server: Box::new(server),
            options,
        })
    }

    /// Opens the store (again: what was written before must all be there).
    fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Memory(store) => store.clone(),
            Backend::Sled(dir) => Arc::new(SledStore::open(dir.path()).expect("open sled")),
            Backend::Nats { options, .. } => Arc::new(NatsStore::open(options).expect("open nats")),
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                if let Some(backend) = super::Backend::memory() {
                    super::$name(backend).await;
                }
            })*
        }
        mod sled {
            $(#[tokio::test]
            async fn $name() {
                if let Some(backend) = super::Backend::sled() {
                    super::$name(backend).await;
                }
            })*
        }
        mod nats {
            $(#[tokio::test]
            async fn $name() {
                if let Some(backend) = super::Backend::nats(concat!("store_contract::nats::", stringify!($name))) {
                    super::$name(backend).await;
                }
            })*
        }
    };
}

contract!(
    a_key_names_one_session_and_a_taken_key_writes_nothing,
    a_commit_lands_whole,
    an_append_that_does_not_follow_the_log_is_refused_and_writes_nothing,
    events_are_read_by_range_and_limit,
    open_and_completed_turns_are_told_apart,
    the_active_index_holds_sessions_with_open_turns,
    owner_days_add_up_across_commits,
    process_groups_are_recorded_and_forgotten,
    a_delete_removes_the_session_and_frees_its_key,
    an_owner_lists_their_sessions_oldest_first,
    a_reopened_store_has_everything_and_the_log_goes_on,
    concurrent_creates_of_one_key_converge,
    pipelined_commits_of_one_session_land_in_order,
    a_commit_of_thousands_of_events_lands,
    a_create_with_its_rest_lands_whole,
);

fn new_session(owner: &str, key: Option<&str>) -> (SessionRecord, Arc<Event>, Option<ScopedKey>) {
    let spec = NewSession {
        owner: owner.into(),
        project: Some("/srv/p".into()),
        provider: "echo".into(),
        key: key.map(String::from),
        ..NewSession::default()
    };
    let key = spec.scoped_key();
    let (record, first) = spec.into_record();
    (record, first, key)
}

async fn create(store: &Arc<dyn Store>, owner: &str, key: Option<&str>) -> SessionId {
    let (record, first, key) = new_session(owner, key);
    let id = record.id;
    assert_eq!(
        store.create(record, first, key).await.expect("create"),
        CreateOutcome::Created
    );
    id
}

fn delta(session: SessionId, seq: u64) -> Arc<Event> {
    Arc::new(Event {
        seq,
        session_id: session,
        turn_id: None,
        ts: Timestamp::now(),
        body: EventBody::MessageDelta {
            text: format!("delta {seq}"),
        },
        encoded: Default::default(),
    })
}

fn deltas(session: SessionId, seqs: std::ops::RangeInclusive<u64>) -> Batch {
    Batch {
        events: seqs.map(|seq| delta(session, seq)).collect(),
        ..Batch::default()
    }
}

fn turn(session: SessionId, status: TurnStatus, order: i64) -> TurnRecord {
    TurnRecord {
        id: TurnId::new(),
        session_id: session,
        content: format!("turn {order}"),
        mode: BusyMode::Enqueue,
        client_message_id: None,
        options: serde_json::Value::Null,
        status,
        outcome: (status == TurnStatus::Completed).then_some(Outcome::Success),
        order,
        attempts: 0,
        accepted_at: Timestamp::now(),
        started_at: None,
        completed_at: None,
        usage: Usage::default(),
    }
}

async fn seqs(store: &Arc<dyn Store>, session: SessionId, after: u64, limit: usize) -> Vec<u64> {
    store
        .read_events(session, after, limit)
        .await
        .expect("read events")
        .iter()
        .map(|e| e.seq)
        .collect()
}

async fn a_key_names_one_session_and_a_taken_key_writes_nothing(backend: Backend) {
    let store = backend.open();
    let (a, first_a, key) = new_session("alice", Some("chat-1"));
    let (b, first_b, _) = new_session("alice", Some("chat-1"));
    let (a_id, b_id) = (a.id, b.id);
    assert_eq!(
        store
            .create(a.clone(), first_a.clone(), key.clone())
            .await
            .expect("create a"),
        CreateOutcome::Created
    );
    assert_eq!(
        store
            .create(b, first_b, key.clone())
            .await
            .expect("create b"),
        CreateOutcome::Existing(a_id)
    );
    let key = key.expect("a key");
    assert_eq!(store.lookup_key(&key).await.expect("lookup"), Some(a_id));
    assert_eq!(store.get_session(a_id).await.expect("get"), Some(a));
    assert_eq!(
        store.get_session(b_id).await.expect("get b"),
        None,
        "the loser wrote nothing"
    );
    assert_eq!(store.last_seq(b_id).await.expect("last b"), 0);
    let events = store.read_events(a_id, 0, 10).await.expect("events");
    assert_eq!(events, vec![(*first_a).clone()]);
    assert_eq!(store.last_seq(a_id).await.expect("last"), 1);
    // Scopes are apart: the same key of another owner or project is another key.
    let other_owner = ScopedKey {
        owner: "bob".into(),
        ..key.clone()
    };
    let other_project = ScopedKey {
        project: None,
        ..key.clone()
    };
    assert_eq!(store.lookup_key(&other_owner).await.expect("lookup"), None);
    assert_eq!(
        store.lookup_key(&other_project).await.expect("lookup"),
        None
    );
    // A claim is compare-and-set from nothing.
    let alias = ScopedKey {
        key: "alias with spaces.and*dots>".into(),
        ..key.clone()
    };
    assert_eq!(
        store.claim_key(alias.clone(), a_id).await.expect("claim"),
        a_id
    );
    assert_eq!(
        store
            .claim_key(alias.clone(), b_id)
            .await
            .expect("claim again"),
        a_id
    );
    assert_eq!(
        store.lookup_key(&alias).await.expect("lookup alias"),
        Some(a_id)
    );
}

async fn a_commit_lands_whole(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    let mut record = store.get_session(id).await.expect("get").expect("record");
    record.title = Some("renamed".into());
    record.provider_session_id = Some("native-1".into());
    let queued = turn(id, TurnStatus::Queued, 1);
    let done = turn(id, TurnStatus::Completed, 0);
    let usage = Usage::new(10, 20, 5, 0.25);
    store
        .commit(
            id,
            Batch {
                record: Some(record.clone()),
                turns: vec![queued.clone(), done.clone()],
                events: vec![delta(id, 2), delta(id, 3)],
                client_ids: vec![("client-1".into(), queued.id)],
                provider_mapping: Some(("echo".into(), "native-1".into())),
                active: Some(true),
                usage: vec![UsageIncrement {
                    owner: "alice".into(),
                    day: "2026-12-01".into(),
                    usage,
                }],
            },
        )
        .await
        .expect("commit");
    assert_eq!(store.get_session(id).await.expect("get"), Some(record));
    assert_eq!(seqs(&store, id, 0, 10).await, vec![1, 2, 3]);
    assert_eq!(store.last_seq(id).await.expect("last"), 3);
    assert_eq!(
        store.open_turns(id).await.expect("open"),
        vec![queued.clone()]
    );
    assert_eq!(store.get_turn(id, done.id).await.expect("turn"), Some(done));
    assert_eq!(
        store
            .turn_for_client_id(id, "client-1")
            .await
            .expect("client id"),
        Some(queued.id)
    );
    assert_eq!(
        store
            .turn_for_client_id(id, "client-2")
            .await
            .expect("client id"),
        None
    );
    assert_eq!(
        store
            .session_for_provider_id("echo", "native-1")
            .await
            .expect("mapping"),
        Some(id)
    );
    assert_eq!(
        store
            .session_for_provider_id("other", "native-1")
            .await
            .expect("mapping"),
        None
    );
    assert_eq!(store.active_sessions().await.expect("active"), vec![id]);
    let days = store
        .usage_days(Some("alice"), "2026-12-01", "2026-12-01")
        .await
        .expect("usage");
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].usage, usage);
}

async fn an_append_that_does_not_follow_the_log_is_refused_and_writes_nothing(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    store
        .commit(id, deltas(id, 2..=3))
        .await
        .expect("append 2..=3");
    for (first, what) in [
        (3, "a seq already written"),
        (5, "a gap"),
        (2, "an older seq"),
    ] {
        let t = turn(id, TurnStatus::Queued, 9);
        let mut batch = deltas(id, first..=first + 1);
        batch.turns.push(t.clone());
        batch.active = Some(true);
        match store.commit(id, batch).await {
            Err(StoreError::SeqConflict {
                session,
                expected,
                actual,
            }) => {
                assert_eq!((session, expected, actual), (id, first, 3), "{what}");
            }
            other => panic!("{what}: expected a seq conflict, got {other:?}"),
        }
        assert_eq!(
            store.get_turn(id, t.id).await.expect("turn"),
            None,
            "{what}: no turn"
        );
        assert!(
            store.active_sessions().await.expect("active").is_empty(),
            "{what}"
        );
    }
    assert_eq!(seqs(&store, id, 0, 100).await, vec![1, 2, 3]);
    store
        .commit(id, deltas(id, 4..=4))
        .await
        .expect("the right seq goes on");
    assert_eq!(store.last_seq(id).await.expect("last"), 4);
}

async fn events_are_read_by_range_and_limit(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    let other = create(&store, "alice", None).await;
    for start in (2..=50).step_by(7) {
        store
            .commit(id, deltas(id, start..=(start + 6).min(50)))
            .await
            .expect("append");
        store.commit(other, deltas(other, start..=start)).await.ok();
    }
    assert_eq!(seqs(&store, id, 0, 10).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        seqs(&store, id, 45, 100).await,
        (46..=50).collect::<Vec<_>>()
    );
    assert_eq!(seqs(&store, id, 10, 1).await, vec![11]);
    assert_eq!(seqs(&store, id, 20, 5).await, (21..=25).collect::<Vec<_>>());
    assert!(seqs(&store, id, 50, 10).await.is_empty());
    assert!(seqs(&store, id, 0, 0).await.is_empty());
    assert_eq!(store.last_seq(id).await.expect("last"), 50);
    let events = store.read_events(id, 30, 1).await.expect("read");
    assert_eq!(
        events[0].body,
        EventBody::MessageDelta {
            text: "delta 31".into()
        }
    );
    assert!(seqs(&store, SessionId::new(), 0, 10).await.is_empty());
    assert_eq!(store.last_seq(SessionId::new()).await.expect("last"), 0);

    // A longer log, appended in uneven pieces, read from every kind of place (a store may
    // keep events in blocks: the edges of a block are where reads go wrong).
    let long = create(&store, "alice", None).await;
    for start in (2..=300).step_by(37) {
        store
            .commit(long, deltas(long, start..=(start + 36).min(300)))
            .await
            .expect("append");
    }
    for after in [0, 1, 62, 63, 64, 65, 127, 128, 129, 200, 255, 256, 299] {
        for limit in [1, 2, 63, 64, 65, 130, 1000] {
            let want: Vec<u64> = (after + 1..=300).take(limit).collect();
            assert_eq!(
                seqs(&store, long, after, limit).await,
                want,
                "after {after}, limit {limit}"
            );
        }
    }
    assert_eq!(store.last_seq(long).await.expect("last"), 300);
}

async fn open_and_completed_turns_are_told_apart(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    let mut first = turn(id, TurnStatus::Queued, 1);
    let second = turn(id, TurnStatus::Running, 0);
    store
        .commit(
            id,
            Batch {
                turns: vec![first.clone(), second.clone()],
                ..Batch::default()
            },
        )
        .await
        .expect("turns");
    let mut open = store.open_turns(id).await.expect("open");
    open.sort_by_key(|t| t.id);
    assert_eq!(open, vec![first.clone(), second.clone()]);
    first.status = TurnStatus::Completed;
    first.outcome = Some(Outcome::Cancelled);
    store
        .commit(
            id,
            Batch {
                turns: vec![first.clone()],
                ..Batch::default()
            },
        )
        .await
        .expect("complete");
    assert_eq!(
        store.open_turns(id).await.expect("open"),
        vec![second.clone()]
    );
    assert_eq!(
        store.all_turns(id).await.expect("all"),
        vec![first.clone(), second]
    );
    assert_eq!(
        store.get_turn(id, first.id).await.expect("get"),
        Some(first)
    );
    assert_eq!(store.get_turn(id, TurnId::new()).await.expect("get"), None);
}

async fn the_active_index_holds_sessions_with_open_turns(backend: Backend) {
    let store = backend.open();
    let (a, b) = (
        create(&store, "alice", None).await,
        create(&store, "bob", None).await,
    );
    for id in [a, b] {
        store
            .commit(
                id,
                Batch {
                    active: Some(true),
                    ..Batch::default()
                },
            )
            .await
            .expect("active");
    }
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(store.active_sessions().await.expect("active"), both);
    store
        .commit(
            a,
            Batch {
                active: Some(false),
                ..Batch::default()
            },
        )
        .await
        .expect("inactive");
    assert_eq!(store.active_sessions().await.expect("active"), vec![b]);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.sessions, stats.active_sessions), (2, 1));
}

async fn owner_days_add_up_across_commits(backend: Backend) {
    let store = backend.open();
    let (a, b) = (
        create(&store, "alice", None).await,
        create(&store, "alice", None).await,
    );
    let add = |owner: &str, day: &str, tokens: u64| UsageIncrement {
        owner: owner.into(),
        day: day.into(),
        usage: Usage::new(tokens, tokens, 0, tokens as f64 / 100.0),
    };
    // Submitted together: several sessions add to one owner's day at once.
    let writes: Vec<_> = [
        (a, add("alice", "2026-11-30", 1)),
        (b, add("alice", "2026-11-30", 2)),
        (a, add("alice", "2026-12-01", 4)),
        (b, add("bob", "2026-12-01", 8)),
    ]
    .into_iter()
    .map(|(id, inc)| {
        store.write(Write::Commit {
            session: id,
            batch: Batch {
                usage: vec![inc],
                ..Batch::default()
            },
        })
    })
    .collect();
    for write in writes {
        write.await.expect("usage commit");
    }
    let alice = store
        .usage_days(Some("alice"), "2026-11-01", "2026-12-31")
        .await
        .expect("usage");
    let summary: Vec<_> = alice
        .iter()
        .map(|d| (d.day.as_str(), d.usage.input_tokens))
        .collect();
    assert_eq!(summary, vec![("2026-11-30", 3), ("2026-12-01", 4)]);
    let all = store
        .usage_days(None, "2026-12-01", "2026-12-01")
        .await
        .expect("usage");
    let summary: Vec<_> = all
        .iter()
        .map(|d| (d.owner.as_str(), d.usage.input_tokens))
        .collect();
    assert_eq!(summary, vec![("alice", 4), ("bob", 8)]);
}

async fn process_groups_are_recorded_and_forgotten(backend: Backend) {
    let store = backend.open();
    let group = |pgid: i32| ProcessGroupRecord {
        pgid,
        leader_pid: pgid,
        leader_start: 1000 + pgid as u64,
        boot_id: "boot".into(),
        kill_grace_ms: 100,
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        attempt: 1,
        started_at: Timestamp::now(),
    };
    let (one, two) = (group(41), group(42));
    for g in [&one, &two] {
        store
            .write(Write::ProcessGroup(ProcessGroupChange::Started(g.clone())))
            .await
            .expect("record");
    }
    assert_eq!(
        store.process_groups().await.expect("groups"),
        vec![one.clone(), two.clone()]
    );
    store
        .write(Write::ProcessGroup(ProcessGroupChange::Ended(one.key())))
        .await
        .expect("forget");
    assert_eq!(store.process_groups().await.expect("groups"), vec![two]);
}

async fn a_delete_removes_the_session_and_frees_its_key(backend: Backend) {
    let store = backend.open();
    let (record, first, key) = new_session("alice", Some("doomed"));
    let id = record.id;
    store
        .create(record, first, key.clone())
        .await
        .expect("create");
    let key = key.expect("key");
    let t = turn(id, TurnStatus::Queued, 0);
    store
        .commit(
            id,
            Batch {
                turns: vec![t.clone()],
                events: vec![delta(id, 2)],
                client_ids: vec![("c".into(), t.id)],
                provider_mapping: Some(("echo".into(), "native".into())),
                active: Some(true),
                ..Batch::default()
            },
        )
        .await
        .expect("commit");
    let keeper = create(&store, "alice", Some("kept")).await;
    store.delete(id).await.expect("delete");
    assert_eq!(store.get_session(id).await.expect("get"), None);
    assert_eq!(store.lookup_key(&key).await.expect("lookup"), None);
    assert!(seqs(&store, id, 0, 10).await.is_empty());
    assert_eq!(store.last_seq(id).await.expect("last"), 0);
    assert!(store.all_turns(id).await.expect("turns").is_empty());
    assert_eq!(store.turn_for_client_id(id, "c").await.expect("cid"), None);
    assert_eq!(
        store
            .session_for_provider_id("echo", "native")
            .await
            .expect("pid"),
        None
    );
    assert!(store.active_sessions().await.expect("active").is_empty());
    let listed: Vec<_> = store
        .list_sessions("alice")
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![keeper]);
    // The key is free again.
    let (again, first, _) = new_session("alice", Some("doomed"));
    assert_eq!(
        store
            .create(again, first, Some(key))
            .await
            .expect("create again"),
        CreateOutcome::Created
    );
}

async fn an_owner_lists_their_sessions_oldest_first(backend: Backend) {
    let store = backend.open();
    let first = create(&store, "owner with spaces", None).await;
    let second = create(&store, "owner with spaces", Some("k")).await;
    let other = create(&store, "someone.else", None).await;
    let listed: Vec<_> = store
        .list_sessions("owner with spaces")
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![first, second]);
    let listed: Vec<_> = store
        .list_sessions("someone.else")
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![other]);
    assert!(store
        .list_sessions("nobody")
        .await
        .expect("list")
        .is_empty());
}

async fn a_reopened_store_has_everything_and_the_log_goes_on(backend: Backend) {
    let store = backend.open();
    let (record, first, key) = new_session("alice", Some("durable"));
    let id = record.id;
    store
        .create(record.clone(), first, key.clone())
        .await
        .expect("create");
    let t = turn(id, TurnStatus::Running, 0);
    store
        .commit(
            id,
            Batch {
                turns: vec![t.clone()],
                events: (2..=20).map(|seq| delta(id, seq)).collect(),
                client_ids: vec![("c1".into(), t.id)],
                active: Some(true),
                usage: vec![UsageIncrement {
                    owner: "alice".into(),
                    day: "2026-12-01".into(),
                    usage: Usage::new(1, 2, 3, 0.5),
                }],
                ..Batch::default()
            },
        )
        .await
        .expect("commit");
    drop(store);
    let store = backend.open();
    assert_eq!(store.get_session(id).await.expect("get"), Some(record));
    assert_eq!(
        store.lookup_key(&key.expect("key")).await.expect("lookup"),
        Some(id)
    );
    assert_eq!(seqs(&store, id, 0, 100).await, (1..=20).collect::<Vec<_>>());
    assert_eq!(store.open_turns(id).await.expect("open"), vec![t.clone()]);
    assert_eq!(
        store.turn_for_client_id(id, "c1").await.expect("cid"),
        Some(t.id)
    );
    assert_eq!(store.active_sessions().await.expect("active"), vec![id]);
    assert_eq!(
        store
            .usage_days(None, "2026-12-01", "2026-12-01")
            .await
            .expect("usage")
            .len(),
        1
    );
    // A fresh writer learns where the log ends from the store.
    assert!(matches!(
        store.commit(id, deltas(id, 20..=20)).await,
        Err(StoreError::SeqConflict { actual: 20, .. })
    ));
    store
        .commit(id, deltas(id, 21..=22))
        .await
        .expect("the log goes on");
    assert_eq!(store.last_seq(id).await.expect("last"), 22);
}

async fn concurrent_creates_of_one_key_converge(backend: Backend) {
    let store = backend.open();
    let writes: Vec<_> = (0..50)
        .map(|_| {
            let (record, first, key) = new_session("alice", Some("contested"));
            let id = record.id;
            (
                id,
                store.write(Write::Create {
                    record,
                    first,
                    key,
                    rest: Box::default(),
                }),
            )
        })
        .collect();
    let mut created = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (id, write) in writes {
        match write.await.expect("create") {
            troupe_actors::store::Written::Created(CreateOutcome::Created) => {
                created.push(id);
                named.insert(id);
            }
            troupe_actors::store::Written::Created(CreateOutcome::Existing(winner)) => {
                named.insert(winner);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create made the session");
    assert_eq!(named.len(), 1, "every create names the same session");
    assert_eq!(store.list_sessions("alice").await.expect("list").len(), 1);
}

async fn pipelined_commits_of_one_session_land_in_order(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    let writes: Vec<_> = (2..=501)
        .map(|seq| {
            store.write(Write::Commit {
                session: id,
                batch: deltas(id, seq..=seq),
            })
        })
        .collect();
    for write in writes {
        write.await.expect("append");
    }
    assert_eq!(
        seqs(&store, id, 0, 1000).await,
        (1..=501).collect::<Vec<_>>()
    );
}

/// A long drain of provider output is one commit; NATS's atomic batches hold at most 1,000
/// messages (of 64 events each), so the store must still land it (and its turn) whole.
async fn a_commit_of_thousands_of_events_lands(backend: Backend) {
    let store = backend.open();
    let id = create(&store, "alice", None).await;
    let t = turn(id, TurnStatus::Running, 0);
    let mut batch = deltas(id, 2..=60_001);
    batch.turns.push(t.clone());
    store.commit(id, batch).await.expect("a big commit");
    assert_eq!(
        seqs(&store, id, 0, 100_000).await,
        (1..=60_001).collect::<Vec<_>>()
    );
    assert_eq!(store.get_turn(id, t.id).await.expect("turn"), Some(t));
    store
        .commit(id, deltas(id, 60_002..=60_002))
        .await
        .expect("the log goes on");
    assert_eq!(store.last_seq(id).await.expect("last"), 60_002);
}

/// A fork or an import is created with the rest of its content (later events, turns,
/// idempotency keys) in one write: it is read back whole, small or beyond one NATS atomic
/// batch, and a create whose key is taken leaves nothing of its rest behind.
async fn a_create_with_its_rest_lands_whole(backend: Backend) {
    let store = backend.open();
    for (key, last) in [("fork-small", 4), ("fork-big", 2501)] {
        let (record, first, scoped) = new_session("alice", Some(key));
        let id = record.id;
        let done = turn(id, TurnStatus::Completed, 0);
        let queued = turn(id, TurnStatus::Queued, 1);
        let mut rest = deltas(id, 2..=last);
        rest.turns = vec![done.clone(), queued.clone()];
        rest.client_ids = vec![("client-1".into(), done.id)];
        assert_eq!(
            store
                .create_with(record.clone(), first, scoped.clone(), rest)
                .await
                .expect("create with rest"),
            CreateOutcome::Created,
            "{key}"
        );
        assert_eq!(store.get_session(id).await.expect("get"), Some(record));
        assert_eq!(
            store
                .lookup_key(scoped.as_ref().expect("a key"))
                .await
                .expect("lookup"),
            Some(id)
        );
        assert_eq!(
            seqs(&store, id, 0, 5000).await,
            (1..=last).collect::<Vec<_>>(),
            "{key}"
        );
        assert_eq!(
            store.get_turn(id, done.id).await.expect("turn"),
            Some(done.clone())
        );
        assert_eq!(store.open_turns(id).await.expect("open"), vec![queued]);
        assert_eq!(
            store
                .turn_for_client_id(id, "client-1")
                .await
                .expect("client id"),
            Some(done.id)
        );
        store
            .commit(id, deltas(id, last + 1..=last + 1))
            .await
            .expect("the log goes on");

        let (loser, loser_first, _) = new_session("alice", Some(key));
        let loser_id = loser.id;
        let loser_turn = turn(loser_id, TurnStatus::Completed, 0);
        let mut loser_rest = deltas(loser_id, 2..=last);
        loser_rest.turns = vec![loser_turn.clone()];
        assert_eq!(
            store
                .create_with(loser, loser_first, scoped, loser_rest)
                .await
                .expect("create with a taken key"),
            CreateOutcome::Existing(id),
            "{key}"
        );
        assert_eq!(store.get_session(loser_id).await.expect("get"), None);
        assert!(seqs(&store, loser_id, 0, 5000).await.is_empty(), "{key}");
        assert_eq!(
            store.get_turn(loser_id, loser_turn.id).await.expect("turn"),
            None
        );
    }
}

/// Two nodes on one NATS stream append to one session: whoever appends from a stale end is
/// refused whole (the block it would rewrite moved on), so the log never interleaves.
#[tokio::test]
async fn nats_two_writers_never_interleave_one_log() {
    let Some(backend) = Backend::nats("store_contract::nats_two_writers_never_interleave_one_log")
    else {
        return;
    };
    let (a, b) = (backend.open(), backend.open());
    let id = create(&a, "alice", None).await;
    a.commit(id, deltas(id, 2..=60)).await.expect("a appends");
    // b reads where the log ends and goes on, across a block's edge.
    b.commit(id, deltas(id, 61..=70)).await.expect("b appends");
    // a still thinks the log ends at 60.
    for (first, last) in [(61, 62), (61, 64), (61, 65)] {
        let t = turn(id, TurnStatus::Queued, 1);
        let mut stale = deltas(id, first..=last);
        stale.turns.push(t.clone());
        match a.commit(id, stale).await {
            Err(StoreError::SeqConflict {
                expected, actual, ..
            }) => {
                assert_eq!((expected, actual), (first, 70));
            }
            other => panic!("a stale append must be refused, got {other:?}"),
        }
        assert_eq!(a.get_turn(id, t.id).await.expect("turn"), None);
    }
    // Once refused, a reads the end again and goes on where b left off.
    a.commit(id, deltas(id, 71..=130)).await.expect("a goes on");
    // Now b is the stale one.
    match b.commit(id, deltas(id, 71..=71)).await {
        Err(StoreError::SeqConflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (71, 130));
        }
        other => panic!("a stale append must be refused, got {other:?}"),
    }
    b.commit(id, deltas(id, 131..=131))
        .await
        .expect("b goes on");
    let events = a.read_events(id, 0, 1000).await.expect("read");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=131).collect::<Vec<_>>()
    );
    for event in &events[1..] {
        assert_eq!(
            event.body,
            EventBody::MessageDelta {
                text: format!("delta {}", event.seq)
            }
        );
    }
}
