//! The sled store keeps events in blocks (several events under one key). These pin that the
//! block layout keeps the store's contract: appends with an expected seq (through the fast
//! path for plain deltas and through the transaction for batches with other writes), range reads that
//! start inside a block, `last_seq`, and the upgrade of a schema-1 store.

use std::sync::Arc;
use troupe_actors::store::{Batch, EmbeddedStore, StoreError};
use troupe_actors::{Event, EventBody, SessionId, SledStore, Timestamp};

fn events(session: SessionId, first: u64, n: u64, text_len: usize) -> Vec<Arc<Event>> {
    (first..first + n)
        .map(|seq| {
            Arc::new(Event {
                encoded: Default::default(),
                seq,
                session_id: session,
                turn_id: None,
                ts: Timestamp::now(),
                body: EventBody::MessageDelta {
                    text: format!("{seq:>width$}", width = text_len),
                },
            })
        })
        .collect()
}

/// Appends through the store's writer; `transaction` adds another write to the batch, which
/// takes the transactional path instead of the fast one for plain events.
fn append(
    store: &SledStore,
    session: SessionId,
    events: Vec<Arc<Event>>,
    transaction: bool,
) -> Result<(), StoreError> {
    let store: &dyn troupe_actors::Store = store;
    futures::executor::block_on(store.commit(
        session,
        Batch {
            events,
            active: transaction.then_some(true),
            ..Batch::default()
        },
    ))
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[test]
fn reads_any_range_across_blocks_from_both_append_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let session = SessionId::new();
    // Big events make several blocks per append; small ones share a block.
    append(&store, session, events(session, 1, 300, 50), false).expect("fast path");
    append(&store, session, events(session, 301, 200, 3), true).expect("transaction");
    append(&store, session, events(session, 501, 1, 3), false).expect("one more");
    assert_eq!(store.last_seq(session).expect("last seq"), 501);
    for after in [0, 1, 17, 150, 299, 300, 301, 499, 500] {
        for limit in [1, 7, 1000] {
            let got = store.read_events(session, after, limit).expect("read");
            let want: Vec<u64> = (after + 1..=501).take(limit).collect();
            assert_eq!(seqs(&got), want, "after {after}, limit {limit}");
        }
    }
    assert!(store
        .read_events(session, 501, 10)
        .expect("read")
        .is_empty());
    let other = SessionId::new();
    assert_eq!(store.last_seq(other).expect("last seq"), 0);
    assert!(store.read_events(other, 0, 10).expect("read").is_empty());
}

#[test]
fn an_append_off_the_end_of_the_log_is_a_conflict_on_both_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let session = SessionId::new();
    append(&store, session, events(session, 1, 40, 50), false).expect("append");
    for transaction in [false, true] {
        // A seq already taken: at a block's start, and inside a block.
        for first in [1, 5, 40] {
            let err = append(&store, session, events(session, first, 3, 3), transaction)
                .expect_err("taken seq");
            assert!(
                matches!(err, StoreError::SeqConflict { actual: 40, .. }),
                "{err:?}"
            );
        }
        // A gap.
        let err = append(&store, session, events(session, 42, 1, 3), transaction).expect_err("gap");
        assert!(matches!(
            err,
            StoreError::SeqConflict {
                expected: 42,
                actual: 40,
                ..
            }
        ));
    }
    assert_eq!(
        seqs(&store.read_events(session, 0, 100).expect("read")),
        (1..=40).collect::<Vec<_>>()
    );
}

#[test]
fn a_schema_1_store_is_upgraded_with_its_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let session = SessionId::new();
    {
        // Schema 1: one JSON event per key in the `troupe` tree.
        let db = sled::open(dir.path()).expect("sled");
        let tree = db.open_tree("troupe").expect("tree");
        tree.insert(b"mschema", &1u32.to_be_bytes())
            .expect("schema");
        for event in events(session, 1, 25, 3) {
            let mut key = vec![b'e'];
            key.extend_from_slice(session.as_bytes());
            key.extend_from_slice(&event.seq.to_be_bytes());
            tree.insert(key, serde_json::to_vec(&*event).expect("json"))
                .expect("insert");
        }
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("open upgrades");
    assert_eq!(store.last_seq(session).expect("last seq"), 25);
    assert_eq!(
        seqs(&store.read_events(session, 10, 100).expect("read")),
        (11..=25).collect::<Vec<_>>()
    );
    append(&store, session, events(session, 26, 3, 3), false).expect("appends continue");
    drop(store);
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.last_seq(session).expect("last seq"), 28);
}
