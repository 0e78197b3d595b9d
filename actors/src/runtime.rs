//! The embedder's door: build a runtime from a store, providers and settings inside your own
//! actix `System`, then get or create sessions and drive them through typed handles.

use crate::error::RuntimeError;
use crate::handle::SessionHandle;
use crate::ids::{ScopedKey, SessionId};
use crate::metrics::RuntimeMetrics;
use crate::owner_feed::OwnerFeed;
use crate::provider::{EchoProvider, Provider, ProviderSet};
use crate::record::{SessionRecord, SessionState, SessionView};
use crate::registry::{
    Activate, BeginShutdown, IsShuttingDown, KeysInFlight, LiveIds, LiveSessions, NewSession, Ping,
    SessionRegistry,
};
use crate::session::{ActorSnapshot, Drain, Interrupt, Session, Snapshot, UpdateSession};
use crate::settings::Settings;
use crate::store::{MemoryStore, Store};
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub use crate::shared::{RuntimeShared, Workers};

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    store: Option<Arc<dyn Store>>,
    providers: ProviderSet,
    settings: Settings,
}

impl RuntimeBuilder {
    /// Uses `store` (default: a fresh [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Uses a shared store.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a provider under `name`.
    pub fn provider(mut self, name: impl Into<String>, provider: impl Provider) -> Self {
        self.providers.insert(name, Arc::new(provider));
        self
    }

    /// Adds a shared provider under `name`.
    pub fn shared_provider(mut self, name: impl Into<String>, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(name, provider);
        self
    }

    /// Uses these settings.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Starts the registry in the current actix system and begins startup recovery in the
    /// background: sessions with open turns are reactivated one by one, so the runtime answers
    /// before every session is reloaded. With no provider configured, `echo` is added.
    pub fn start(mut self) -> Runtime {
        if self.providers.iter().next().is_none() {
            self.providers.insert("echo", Arc::new(EchoProvider::new()));
        }
        let workers = self.settings.workers;
        let shared = Arc::new(RuntimeShared {
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            providers: self.providers,
            limiter: Arc::new(Semaphore::new(self.settings.max_concurrent_runs.max(1))),
            settings: Arc::new(self.settings),
            feed: OwnerFeed::new(4096),
            metrics: Arc::new(RuntimeMetrics::default()),
            creating: KeysInFlight::default(),
            workers: Workers::start(workers),
        });
        let registry = SessionRegistry::new(shared.clone()).start();
        crate::retention::start(&shared, &registry);
        let runtime = Runtime { shared, registry };
        crate::cluster::serve::start(&runtime, runtime.node_id());
        let recovering = runtime.clone();
        actix::spawn(async move { recovering.recover().await });
        runtime
    }
}

/// Filters for [`Runtime::list_sessions`].
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this state.
    pub state: Option<SessionState>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
    /// Only sessions created after this one (ids are time-ordered): the page cursor.
    pub after: Option<SessionId>,
}

/// Figures of the registry, for operators.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RegistryFigures {
    /// Live session actors.
    pub live: usize,
    /// Sessions in the store that have no live actor.
    pub passivated: u64,
    /// Activations since start.
    pub activations: u64,
    /// Agent process groups a previous server left alive, killed at this start.
    pub reaped_process_groups: u64,
    /// This node's id among the nodes sharing a store.
    pub node_id: String,
    /// Session leases this node holds (0 on an embedded store, which needs none).
    pub leases_held: usize,
    /// Sessions with open turns this node took over because no node held their lease.
    pub takeovers: u64,
    /// Session operations sent to the node that runs their session.
    pub forwarded_requests: u64,
    /// Session operations other nodes forwarded here.
    pub forwards_served: u64,
    /// Follows of sessions another node runs, read from the store's stream.
    pub remote_follows: u64,
}

/// A running runtime: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    registry: Addr<SessionRegistry>,
}

impl Runtime {
    /// A builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The shared parts (store, providers, settings, feed, metrics).
    pub fn shared(&self) -> &Arc<RuntimeShared> {
        &self.shared
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The providers.
    pub fn providers(&self) -> &ProviderSet {
        &self.shared.providers
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// This node's id among the nodes sharing a store ([`Settings::node_id`]).
    pub fn node_id(&self) -> &str {
        &self.shared.settings.node_id
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<RuntimeMetrics> {
        &self.shared.metrics
    }

    /// The lifecycle feed of every owner's sessions.
    pub fn feed(&self) -> &OwnerFeed {
        &self.shared.feed
    }

    /// Gets the session `spec.key` names in its scope, or creates it; `true` when created.
    /// An existing key is found in the store without a round trip through the registry.
    pub async fn get_or_create(
        &self,
        spec: NewSession,
    ) -> Result<(SessionHandle, bool), RuntimeError> {
        let (handle, created) = self.find_or_create(spec).await?;
        Ok((handle, created.is_some()))
    }

    /// [`Runtime::get_or_create`] with the session object: a new session's is built from its
    /// record (its actor starts only when it is used), an existing one's comes from its actor.
    pub async fn get_or_create_view(
        &self,
        spec: NewSession,
    ) -> Result<(SessionHandle, SessionView, bool), RuntimeError> {
        match self.find_or_create(spec).await? {
            (handle, Some(view)) => Ok((handle, view, true)),
            (handle, None) => {
                let view = handle.info().await?;
                Ok((handle, view, false))
            }
        }
    }

    /// The session of `spec`, with the new session's view when this call created it.
    async fn find_or_create(
        &self,
        spec: NewSession,
    ) -> Result<(SessionHandle, Option<SessionView>), RuntimeError> {
        spec.validate(&self.shared)?;
        if let Some(key) = spec.scoped_key() {
            if let Some(id) = self.shared.store.lookup_key(&key).await? {
                // Found in the store: durable, unless its creation is still in flight.
                let id = match self.shared.creating.wait(&key) {
                    Some(rx) => crate::registry::joined(rx).await?,
                    None => id,
                };
                return Ok((self.handle(id), None));
            }
            if let Some(id) = self.backfill_project(&key).await? {
                return Ok((self.handle(id), None));
            }
        }
        let (id, created) = crate::registry::create(&self.shared, spec).await?;
        Ok((self.handle(id), created))
    }

    /// A request with a project for a key whose session was made without one: the session
    /// gets the project, and the key with the project names it from now on.
    async fn backfill_project(&self, key: &ScopedKey) -> Result<Option<SessionId>, RuntimeError> {
        let Some(project) = key.project.clone() else {
            return Ok(None);
        };
        let Some(id) = self.shared.store.lookup_key(&key.without_project()).await? else {
            return Ok(None);
        };
        let view = self
            .handle(id)
            .update(UpdateSession {
                project: Some(project.clone()),
                ..UpdateSession::default()
            })
            .await?;
        if view.project.as_deref() != Some(project.as_str()) {
            return Ok(None);
        }
        Ok(Some(self.shared.store.claim_key(key.clone(), id).await?))
    }

    /// A handle on session `id`, whoever owns it; the session is activated on first use.
    pub fn handle(&self, id: SessionId) -> SessionHandle {
        SessionHandle::new(id, self.clone())
    }

    /// A handle on session `id` if it exists and belongs to `owner`; else `session_not_found`.
    pub async fn session_of(
        &self,
        owner: &str,
        id: SessionId,
    ) -> Result<SessionHandle, RuntimeError> {
        match self.shared.store.get_session(id).await? {
            Some(record) if record.owner == owner => Ok(self.handle(id)),
            _ => Err(RuntimeError::SessionNotFound),
        }
    }

    /// The live actor of session `id`.
    pub(crate) async fn activate(&self, id: SessionId) -> Result<Addr<Session>, RuntimeError> {
        self.registry
            .send(Activate(id))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
    }

    /// The owner's sessions (hidden ones never), oldest first, filtered and paged.
    pub async fn list_sessions(
        &self,
        owner: &str,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionView>, RuntimeError> {
        let limit = filter.limit.unwrap_or(100);
        let mut out = Vec::new();
        let mut records = self.shared.store.list_sessions(owner).await?;
        records.sort_by_key(|r| r.id);
        for record in records {
            if record.hidden
                || filter.after.is_some_and(|after| record.id <= after)
                || filter
                    .project
                    .as_ref()
                    .is_some_and(|p| record.project.as_ref() != Some(p))
                || filter
                    .provider
                    .as_ref()
                    .is_some_and(|p| &record.provider != p)
            {
                continue;
            }
            let view = self.view_of(&record).await?;
            if filter.state.is_some_and(|s| s != view.state) {
                continue;
            }
            out.push(view);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The session object of a record, as the store has it (no actor).
    async fn view_of(&self, record: &SessionRecord) -> Result<SessionView, RuntimeError> {
        let store = &self.shared.store;
        let queue_len = store.open_turns(record.id).await?.len();
        let running = record.running_since.is_some();
        Ok(SessionView::new(
            record,
            running,
            store.last_seq(record.id).await?,
            queue_len.saturating_sub(usize::from(running)),
        ))
    }

    /// The session object of `id` as the store has it: for a session another node runs.
    pub(crate) async fn stored_view(&self, id: SessionId) -> Result<SessionView, RuntimeError> {
        match self.shared.store.get_session(id).await? {
            Some(record) => self.view_of(&record).await,
            None => Err(RuntimeError::SessionNotFound),
        }
    }

    /// A row per live session actor.
    pub async fn actors(&self) -> Vec<ActorSnapshot> {
        let Ok(addrs) = self.registry.send(LiveSessions).await else {
            return Vec::new();
        };
        let mut rows = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Ok(row) = addr.send(Snapshot).await {
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.session_id);
        rows
    }

    /// Registry figures.
    pub async fn figures(&self) -> Result<RegistryFigures, RuntimeError> {
        let live = self
            .registry
            .send(Ping)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let stats = self.shared.store.stats().await?;
        Ok(RegistryFigures {
            live,
            passivated: stats.sessions.saturating_sub(live as u64),
            activations: RuntimeMetrics::get(&self.shared.metrics.activations),
            reaped_process_groups: RuntimeMetrics::get(&self.shared.metrics.process_groups_reaped),
            node_id: self.node_id().to_string(),
            leases_held: self.shared.store.leases_held(),
            takeovers: RuntimeMetrics::get(&self.shared.metrics.takeovers),
            forwarded_requests: self.shared.metrics.forwarded_total(),
            forwards_served: RuntimeMetrics::get(&self.shared.metrics.forwards_served),
            remote_follows: RuntimeMetrics::get(&self.shared.metrics.remote_follows),
        })
    }

    /// The readiness check: a store write and a registry round trip, each within `timeout`.
    pub async fn check_ready(&self, timeout: Duration) -> Result<(), (&'static str, String)> {
        let store = self.shared.store.clone();
        let write = actix_rt::task::spawn_blocking(move || store.check_writable());
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(("store", e.to_string())),
            Ok(Err(e)) => return Err(("store", e.to_string())),
            Err(_) => return Err(("store", "store write timed out".into())),
        }
        match tokio::time::timeout(timeout, self.registry.send(Ping)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(("registry", e.to_string())),
            Err(_) => Err(("registry", "registry did not answer in time".into())),
        }
    }

    /// Graceful shutdown: no new turns start; running attempts get up to `grace` to finish,
    /// then end `interrupted` (re-queued for the next start); the store is flushed.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.registry.send(BeginShutdown).await;
        let addrs = self.registry.send(LiveSessions).await.unwrap_or_default();
        let deadline = Instant::now() + grace;
        loop {
            let mut running = 0;
            for addr in &addrs {
                if addr.send(Drain).await.unwrap_or(false) {
                    running += 1;
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for addr in &addrs {
            let _ = addr.send(Interrupt).await;
        }
        self.shared.workers.stop().await;
        if let Err(e) = self.shared.store.flush() {
            log::error!("store flush at shutdown failed: {e}");
        }
        // After every write of the drained sessions: other nodes take them over at once.
        if let Err(e) = self.shared.store.release_all_leases().await {
            log::error!("releasing the leases at shutdown failed: {e}");
        }
        log::info!("runtime stopped: {} session actor(s) drained", addrs.len());
    }

    /// Startup recovery: reactivates every session that has open turns. On a store shared
    /// by several nodes the same pass then runs every [`Settings::lease_check_interval`]:
    /// sessions with open turns that no node holds the lease of (their owner died) are
    /// taken over here, with the same recovery as a restart.
    async fn recover(&self) {
        let started = Instant::now();
        match self.take_over().await {
            Ok(0) => {}
            Ok(count) => log::info!(
                "startup recovery: {count} session(s) with open turns reactivated in {:?}",
                started.elapsed()
            ),
            Err(e) => log::error!("startup recovery could not list sessions: {e}"),
        }
        if !self.shared.store.leases_expire() {
            return;
        }
        let mut every = tokio::time::interval(self.shared.settings.lease_check_interval());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.registry.send(IsShuttingDown).await.unwrap_or(true) {
                return;
            }
            match self.take_over().await {
                Ok(0) => {}
                Ok(count) => log::info!("took over {count} session(s) whose owner went away"),
                Err(e) => log::warn!("looking for sessions to take over: {e}"),
            }
        }
    }

    /// Activates the sessions with open turns (the store's active index, not a scan of every
    /// session) that no node holds the lease of; how many it activated. Sessions live here
    /// are skipped without a read.
    async fn take_over(&self) -> Result<usize, RuntimeError> {
        let store = &self.shared.store;
        let live = self
            .registry
            .send(LiveIds)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let mut count = 0;
        for id in store.active_sessions().await? {
            if live.contains(&id) || store.lease_holder(id).await?.is_some() {
                continue;
            }
            match self.activate(id).await {
                Ok(_) => {
                    count += 1;
                    RuntimeMetrics::bump(&self.shared.metrics.takeovers);
                }
                // Another node was quicker.
                Err(RuntimeError::OwnedElsewhere { .. }) => {}
                Err(e) => log::error!("session {id}: recovery failed: {e}"),
            }
        }
        Ok(count)
    }
}
