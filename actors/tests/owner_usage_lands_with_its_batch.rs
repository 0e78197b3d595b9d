//! Owners' daily usage totals, in both stores: increments from several sessions of one owner
//! add up (also within one group commit), land only with the batch that carries them (a batch
//! refused for its expected seq adds nothing), and are read back per owner, per day range, or
//! for every owner.

use std::sync::Arc;
use troupe_actors::store::{Batch, StoreError};
use troupe_actors::usage::UsageIncrement;
use troupe_actors::{Event, EventBody, MemoryStore, SessionId, SledStore, Store, Timestamp, Usage};

fn event(session: SessionId, seq: u64) -> Arc<Event> {
    Arc::new(Event {
        encoded: Default::default(),
        seq,
        session_id: session,
        turn_id: None,
        ts: Timestamp::now(),
        body: EventBody::Status(serde_json::json!({"usage": {}})),
    })
}

fn spend(owner: &str, day: &str, cost: f64, tokens: u64) -> UsageIncrement {
    UsageIncrement {
        owner: owner.into(),
        day: day.into(),
        usage: Usage::new(tokens, tokens, 0, cost),
    }
}

/// Submits every batch at once (so the sled writer may group them), then waits for all.
fn commit_all(store: &dyn Store, batches: Vec<(SessionId, Batch)>) -> Vec<Result<(), StoreError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let n = batches.len();
    for (i, (session, batch)) in batches.into_iter().enumerate() {
        let tx = tx.clone();
        store.submit(
            troupe_actors::store::Write::Commit { session, batch },
            Box::new(move |result| {
                let _ = tx.send((i, result.map(|_| ())));
            }),
        );
    }
    let mut results: Vec<_> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        let (i, result) = rx.recv().expect("confirmation");
        results[i] = Some(result);
    }
    results.into_iter().map(Option::unwrap).collect()
}

/// `usage_days`, awaited.
fn days(
    store: &dyn Store,
    owner: Option<&str>,
    from: &str,
    to: &str,
) -> Vec<troupe_actors::usage::OwnerDayUsage> {
    futures::executor::block_on(store.usage_days(owner, from, to)).expect("read")
}

fn check(store: &dyn Store) {
    let (a, b) = (SessionId::new(), SessionId::new());
    let batch = |session, seq, usage| Batch {
        events: vec![event(session, seq)],
        usage: vec![usage],
        ..Batch::default()
    };
    let results = commit_all(
        store,
        vec![
            (a, batch(a, 1, spend("alice", "2026-11-30", 0.25, 10))),
            (b, batch(b, 1, spend("alice", "2026-11-30", 0.5, 20))),
            (a, batch(a, 2, spend("alice", "2026-12-01", 1.0, 1))),
            (b, batch(b, 2, spend("bob", "2026-12-01", 2.0, 2))),
            // Refused (seq 2 of `a` is taken): its usage must not count.
            (a, batch(a, 2, spend("alice", "2026-12-01", 100.0, 100))),
        ],
    );
    assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
    assert!(matches!(results[4], Err(StoreError::SeqConflict { .. })));

    let alice = days(store, Some("alice"), "2026-11-01", "2026-12-31");
    let figures: Vec<(&str, f64, u64)> = alice
        .iter()
        .map(|d| (d.day.as_str(), d.usage.cost_usd, d.usage.total_tokens))
        .collect();
    assert_eq!(figures, [("2026-11-30", 0.75, 60), ("2026-12-01", 1.0, 2)]);
    let one_day = days(store, Some("alice"), "2026-12-01", "2026-12-01");
    assert_eq!(one_day.len(), 1);
    let everyone = days(store, None, "2026-12-01", "2026-12-01");
    let owners: Vec<&str> = everyone.iter().map(|d| d.owner.as_str()).collect();
    assert_eq!(owners, ["alice", "bob"]);
    assert!(days(store, Some("carol"), "2026-01-01", "2026-12-31").is_empty());
}

#[test]
fn memory_store_adds_owner_usage_atomically() {
    check(&MemoryStore::new());
}

#[test]
fn sled_store_adds_owner_usage_atomically_and_keeps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        check(&store);
    }
    let reopened = SledStore::open(dir.path()).expect("reopen");
    let alice = days(&reopened, Some("alice"), "2026-11-30", "2026-11-30");
    assert_eq!(alice[0].usage.cost_usd, 0.75);
}
