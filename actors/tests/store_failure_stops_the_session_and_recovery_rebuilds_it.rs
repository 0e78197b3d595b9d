//! A store write that fails stops the session (fail-stop): no subscriber is shown the event
//! that failed or anything after it, the sender of the failed turn gets `store_unavailable`,
//! and once the store works again the session is rebuilt from what the store holds (a turn cut
//! off mid-stream ends `interrupted` and runs again).
mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::store::{EmbeddedStore, StoreStats, Write, WriteDone};
use troupe_actors::{
    BusyMode, CloseReason, Event, EventBody, MemoryStore, Outcome, RuntimeError, ScopedKey,
    SessionId, Store, TurnId,
};

/// A memory store whose writes fail (unapplied) while `failing` is set.
#[derive(Default)]
struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl EmbeddedStore for FailingStore {
    fn submit(&self, write: Write, done: WriteDone) {
        if self.failing.load(Ordering::SeqCst) {
            done(Err(troupe_actors::store::StoreError::Engine(
                "disk full (test double)".into(),
            )));
        } else {
            EmbeddedStore::submit(&self.inner, write, done);
        }
    }
    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        EmbeddedStore::lookup_key(&self.inner, key)
    }
    fn get_session(
        &self,
        id: SessionId,
    ) -> Result<Option<troupe_actors::record::SessionRecord>, StoreError> {
        EmbeddedStore::get_session(&self.inner, id)
    }
    fn list_sessions(
        &self,
        owner: &str,
    ) -> Result<Vec<troupe_actors::record::SessionRecord>, StoreError> {
        EmbeddedStore::list_sessions(&self.inner, owner)
    }
    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<troupe_actors::record::SessionRecord>, StoreError> {
        EmbeddedStore::sessions_after(&self.inner, after, limit)
    }
    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        EmbeddedStore::active_sessions(&self.inner)
    }
    fn process_groups(
        &self,
    ) -> Result<Vec<troupe_actors::process_groups::ProcessGroupRecord>, StoreError> {
        EmbeddedStore::process_groups(&self.inner)
    }
    fn read_events(
        &self,
        s: SessionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        EmbeddedStore::read_events(&self.inner, s, after, limit)
    }
    fn last_seq(&self, s: SessionId) -> Result<u64, StoreError> {
        EmbeddedStore::last_seq(&self.inner, s)
    }
    fn open_turns(
        &self,
        s: SessionId,
    ) -> Result<Vec<troupe_actors::record::TurnRecord>, StoreError> {
        EmbeddedStore::open_turns(&self.inner, s)
    }
    fn all_turns(
        &self,
        s: SessionId,
    ) -> Result<Vec<troupe_actors::record::TurnRecord>, StoreError> {
        EmbeddedStore::all_turns(&self.inner, s)
    }
    fn get_turn(
        &self,
        s: SessionId,
        t: TurnId,
    ) -> Result<Option<troupe_actors::record::TurnRecord>, StoreError> {
        EmbeddedStore::get_turn(&self.inner, s, t)
    }
    fn turn_for_client_id(&self, s: SessionId, c: &str) -> Result<Option<TurnId>, StoreError> {
        EmbeddedStore::turn_for_client_id(&self.inner, s, c)
    }
    fn session_for_provider_id(&self, p: &str, id: &str) -> Result<Option<SessionId>, StoreError> {
        EmbeddedStore::session_for_provider_id(&self.inner, p, id)
    }
    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> Result<Vec<troupe_actors::usage::OwnerDayUsage>, StoreError> {
        EmbeddedStore::usage_days(&self.inner, owner, from, to)
    }
    fn flush(&self) -> Result<(), StoreError> {
        EmbeddedStore::flush(&self.inner)
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        EmbeddedStore::check_writable(&self.inner)
    }
    fn stats(&self) -> Result<StoreStats, StoreError> {
        EmbeddedStore::stats(&self.inner)
    }
}

use troupe_actors::store::StoreError;

#[actix_rt::test]
async fn a_failed_acceptance_is_refused_unseen_and_the_session_comes_back() {
    let store = Arc::new(FailingStore::default());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session(&rt).await;
    let mut sub = live_events(&handle).await;
    handle.send_text("first", BusyMode::Enqueue).await.unwrap();
    until_completed(&mut sub, 1).await;
    let before = EmbeddedStore::last_seq(&store.inner, handle.id()).unwrap();

    store.failing.store(true, Ordering::SeqCst);
    let refused = handle.send_text("lost", BusyMode::Enqueue).await;
    assert!(
        matches!(refused, Err(RuntimeError::Store(_))),
        "the sender learns its turn was not taken: {refused:?}"
    );
    // The subscriber saw nothing of it; its subscription ended with the stopped actor.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(event) = sub.next().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the subscription ends");
    assert!(
        rest.iter().all(|e| e.seq <= before),
        "shown from the failed write: {:?}",
        kinds(&rest)
    );
    assert_ne!(sub.close_reason(), Some(CloseReason::Deleted));

    store.failing.store(false, Ordering::SeqCst);
    let view = handle.info().await.expect("reactivated from the store");
    assert_eq!(
        view.last_seq, before,
        "nothing of the failed write is in the log"
    );
    let mut sub = handle.subscribe(before).await.unwrap();
    handle.send_text("after", BusyMode::Enqueue).await.unwrap();
    let events = until_completed(&mut sub, 1).await;
    assert_gapless(&events, before + 1);
    assert_eq!(delta_text(&events), "after");
    assert!(
        !stored_events(&(store.clone() as Arc<dyn Store>), handle.id())
            .await
            .iter()
            .any(|e| matches!(&e.body, EventBody::Message { text, .. } if text == "lost"))
    );
}

#[actix_rt::test]
async fn a_failure_mid_stream_stops_the_session_and_the_turn_runs_again() {
    let store = Arc::new(FailingStore::default());
    let rt = runtime(store.clone(), fast_settings());
    let handle = session(&rt).await;
    let mut sub = live_events(&handle).await;
    let receipt = handle
        .send(slow_turn("w", 40, 10, BusyMode::Enqueue))
        .await
        .unwrap();
    // Some deltas go through, then the disk fails under the running turn.
    let shown = collect_until(&mut sub, |e| {
        matches!(e.body, EventBody::MessageDelta { .. }) && e.seq >= 6
    })
    .await;
    store.failing.store(true, Ordering::SeqCst);
    let mut after = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = sub.next().await {
            after.push(event);
        }
    })
    .await;
    assert!(ended.is_ok(), "the session stopped");
    let stored = stored_events(&(store.clone() as Arc<dyn Store>), handle.id()).await;
    for event in shown.iter().chain(&after) {
        assert_eq!(
            stored.get(event.seq as usize - 1).map(|e| &**e),
            Some(&**event),
            "everything shown is stored as shown"
        );
    }

    store.failing.store(false, Ordering::SeqCst);
    let last = stored.len() as u64;
    let mut sub = handle.subscribe(last).await.expect("reactivated");
    let events = until_completed(&mut sub, 2).await;
    assert_gapless(&events, last + 1);
    let outcomes: Vec<_> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::TurnCompleted { outcome, .. } => Some((e.turn_id, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes[0], (Some(receipt.turn_id), Outcome::Interrupted));
    assert_eq!(outcomes[1].1, Outcome::Success, "the re-queued copy ran");
    assert_eq!(
        delta_text(&events),
        (0..40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
