//! Many callers reaching a passivated session at once reactivate it exactly once: they all talk
//! to one live actor.
mod common;

use common::*;
use futures::future::join_all;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use troupe_actors::{MemoryStore, Settings};

const CALLERS: usize = 200;

#[actix_rt::test]
async fn concurrent_activations_start_one_actor() {
    let settings = Settings {
        idle_passivate: Duration::from_millis(300),
        ..fast_settings()
    };
    let rt = runtime(Arc::new(MemoryStore::new()), settings);
    let id = session(&rt).await.id();
    let metrics = rt.metrics().clone();

    for round in 0..3 {
        eventually(Duration::from_secs(5), "the session passivates", || async {
            rt.figures().await.unwrap().live == 0
        })
        .await;
        let figures = rt.figures().await.unwrap();
        assert_eq!(
            figures.passivated, 1,
            "round {round}: counted as passivated"
        );
        let before = metrics.activations.load(Ordering::Relaxed);

        // Separate handles, so no caller reuses another's cached address.
        let calls = (0..CALLERS).map(|_| {
            let handle = rt.handle(id);
            async move { handle.info().await }
        });
        let views = join_all(calls).await;
        assert!(views.iter().all(|v| v.as_ref().unwrap().id == id));

        assert_eq!(
            metrics.activations.load(Ordering::Relaxed),
            before + 1,
            "round {round}: one activation for {CALLERS} concurrent callers"
        );
        let figures = rt.figures().await.unwrap();
        assert_eq!((figures.live, figures.passivated), (1, 0));
        assert_eq!(metrics.live_sessions.load(Ordering::Relaxed), 1);
        assert_eq!(rt.actors().await.len(), 1);
    }
}
