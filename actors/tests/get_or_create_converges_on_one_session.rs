//! However many callers race on one scoped key, one session comes to be, every caller gets its
//! id and exactly one of them is told it created it; distinct keys each get their own session.
mod common;

use common::*;
use futures::future::join_all;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use troupe_actors::{EventBody, NewSession};

const CALLERS: usize = 1000;

fn keyed(key: String) -> NewSession {
    NewSession {
        owner: "local".into(),
        project: Some("/work/p".into()),
        key: Some(key),
        provider: "echo".into(),
        ..NewSession::default()
    }
}

#[actix_rt::test]
async fn one_key_many_callers_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path());
    let rt = runtime(store.clone(), fast_settings());
    let calls = (0..CALLERS).map(|_| {
        let rt = rt.clone();
        async move { rt.get_or_create(keyed("chat-42".into())).await }
    });
    let results: Vec<_> = join_all(calls).await;
    let ids: HashSet<_> = results
        .iter()
        .map(|r| r.as_ref().expect("get_or_create").0.id())
        .collect();
    assert_eq!(ids.len(), 1, "every caller gets the same session");
    let created = results.iter().filter(|r| r.as_ref().unwrap().1).count();
    assert_eq!(created, 1, "exactly one caller created it");

    let id = *ids.iter().next().unwrap();
    let sessions = store.list_sessions("local").await.unwrap();
    assert_eq!(sessions.len(), 1, "one session record in the store");
    assert_eq!(sessions[0].id, id);
    assert_eq!(store.stats().await.unwrap().sessions, 1);
    assert_eq!(rt.metrics().sessions_created.load(Ordering::Relaxed), 1);
    let created_events = stored_events(&store, id)
        .await
        .iter()
        .filter(|e| matches!(e.body, EventBody::SessionCreated { .. }))
        .count();
    assert_eq!(created_events, 1, "one session.created in its log");

    // Later callers take the fast path and still agree.
    let (again, created) = rt.get_or_create(keyed("chat-42".into())).await.unwrap();
    assert_eq!((again.id(), created), (id, false));
}

#[actix_rt::test]
async fn distinct_keys_each_get_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path());
    let rt = runtime(store.clone(), fast_settings());
    let calls = (0..CALLERS).map(|i| {
        let rt = rt.clone();
        async move { rt.get_or_create(keyed(format!("chat-{i}"))).await }
    });
    let results: Vec<_> = join_all(calls).await;
    let ids: HashSet<_> = results
        .iter()
        .map(|r| {
            let (handle, created) = r.as_ref().expect("get_or_create");
            assert!(created, "a fresh key creates");
            handle.id()
        })
        .collect();
    assert_eq!(ids.len(), CALLERS);
    assert_eq!(store.list_sessions("local").await.unwrap().len(), CALLERS);
    assert_eq!(store.stats().await.unwrap().sessions, CALLERS as u64);
    for i in [0, CALLERS / 2, CALLERS - 1] {
        let (handle, created) = rt.get_or_create(keyed(format!("chat-{i}"))).await.unwrap();
        assert!(!created);
        assert!(ids.contains(&handle.id()));
    }
}
