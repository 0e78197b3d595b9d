//! What every actor of a runtime shares: the store, providers, settings, owner feed, run
//! limiter, metrics, and the worker arbiters session actors run on.

use crate::metrics::RuntimeMetrics;
use crate::owner_feed::OwnerFeed;
use crate::provider::ProviderSet;
use crate::registry::KeysInFlight;
use crate::settings::Settings;
use crate::store::Store;
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What every actor of a runtime shares.
pub struct RuntimeShared {
    /// The durable store: the only source of truth.
    pub store: Arc<dyn Store>,
    /// The configured providers.
    pub providers: ProviderSet,
    /// Tunables.
    pub settings: Arc<Settings>,
    /// Lifecycle events of every session, for owner feeds.
    pub feed: OwnerFeed,
    /// Slots of `max_concurrent_runs`.
    pub limiter: Arc<Semaphore>,
    /// Counters for operators.
    pub metrics: Arc<RuntimeMetrics>,
    /// Scoped keys whose creation is in flight.
    pub creating: KeysInFlight,
    /// The arbiters session actors run on.
    pub workers: Workers,
}

/// The worker arbiters (threads) session actors are spread over, round robin.
pub struct Workers {
    /// One arbiter per worker thread; empty means "the arbiter that started the runtime".
    arbiters: Vec<ArbiterHandle>,
    /// The arbiters themselves, stopped and joined at shutdown.
    owned: std::sync::Mutex<Vec<Arbiter>>,
    /// The next arbiter to use.
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    /// Starts `count` arbiters in the current actix system (none for 0).
    pub(crate) fn start(count: usize) -> Self {
        let owned: Vec<Arbiter> = (0..count).map(|_| Arbiter::new()).collect();
        Workers {
            arbiters: owned.iter().map(|a| a.handle()).collect(),
            owned: std::sync::Mutex::new(owned),
            next: Default::default(),
        }
    }

    /// Stops the worker arbiters and waits for their threads, so every session actor (and
    /// what it holds, like the store) is gone when this returns.
    pub(crate) async fn stop(&self) {
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|e| e.into_inner()));
        if owned.is_empty() {
            return;
        }
        let joined = actix_rt::task::spawn_blocking(move || {
            for arbiter in owned {
                arbiter.stop();
                let _ = arbiter.join();
            }
        });
        let _ = joined.await;
    }

    /// The arbiter the next session actor runs on; `None` for the current one.
    pub fn next(&self) -> Option<&ArbiterHandle> {
        if self.arbiters.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.arbiters.get(i % self.arbiters.len())
    }

    /// How many worker arbiters there are.
    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    /// Whether sessions run on the starting arbiter.
    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }
}
