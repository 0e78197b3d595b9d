//! Session creation and the registry actor.
//!
//! Creation ([`create`]) runs in the caller's task, not in an actor: the store's compare-and-set
//! on the key decides who wins, concurrent creates of distinct keys share the writer's flushes,
//! and concurrent creates of one key wait for the first ([`KeysInFlight`]). The registry actor
//! keeps at most one live actor per session id, activating passivated sessions from the store
//! on demand, spread over the runtime's worker arbiters.

use crate::error::RuntimeError;
use crate::event::{Event, EventBody};
use crate::ids::{validate_session_key, ScopedKey, SessionId};
use crate::metrics::RuntimeMetrics;
use crate::record::{SessionRecord, SessionView};
use crate::session::{Session, SessionArgs};
use crate::shared::RuntimeShared;
use crate::store::{CreateOutcome, LeaseGrant};
use crate::time::Timestamp;
use actix::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

pub use crate::lifecycle::{SessionPanicked, SessionStopped};
use crate::retention::{BeginExpire, EndExpire};

/// What a new session is made of.
#[derive(Clone, Debug, Default)]
pub struct NewSession {
    /// Owner (from authentication).
    pub owner: String,
    /// Project (working directory or label).
    pub project: Option<String>,
    /// Client-chosen key within the scope; `None` always creates.
    pub key: Option<String>,
    /// Configured provider name.
    pub provider: String,
    /// Human title.
    pub title: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Never listed (internal, or an OpenAI request without a key).
    pub hidden: bool,
}

impl NewSession {
    /// The scoped key, when a key was given.
    pub fn scoped_key(&self) -> Option<ScopedKey> {
        self.key.as_ref().map(|key| ScopedKey {
            owner: self.owner.clone(),
            project: self.project.clone(),
            key: key.clone(),
        })
    }

    /// The record of a new session made from this spec, with a fresh id, and its first event
    /// (`session.created`, seq 1).
    pub fn into_record(self) -> (SessionRecord, Arc<Event>) {
        let now = Timestamp::now();
        let record = SessionRecord {
            id: SessionId::new(),
            owner: self.owner,
            project: self.project,
            provider: self.provider,
            key: self.key,
            title: self.title,
            model: self.model,
            provider_session_id: None,
            created_at: now,
            updated_at: now,
            hidden: self.hidden,
            paused: false,
            failed: false,
            archived: false,
            consecutive_failures: 0,
            running_since: None,
            handover: None,
            usage: Default::default(),
            budget: None,
            budget_held: false,
        };
        let created = Arc::new(Event {
            encoded: Default::default(),
            seq: 1,
            session_id: record.id,
            turn_id: None,
            ts: now,
            body: EventBody::SessionCreated {
                session: SessionView::new(&record, false, 1, 0),
                origin: None,
            },
        });
        (record, created)
    }

    /// Checks the key and the provider.
    pub fn validate(&self, shared: &RuntimeShared) -> Result<(), RuntimeError> {
        if let Some(key) = &self.key {
            validate_session_key(key).map_err(RuntimeError::InvalidSessionKey)?;
        }
        if shared.providers.get(&self.provider).is_none() {
            return Err(RuntimeError::UnknownProvider(self.provider.clone()));
        }
        Ok(())
    }
}

/// Whoever waits for the outcome of one key's creation.
type Waiters = Vec<oneshot::Sender<Result<SessionId, RuntimeError>>>;

/// Scoped keys whose creation is in flight, with whoever waits for its outcome.
///
/// A key the store already has is durable unless its creation is still in flight: the leader
/// registers the key here before submitting the create and takes it out once the create is
/// durable, so a reader that found the key in the store and then does not find it here knows
/// it is durable ([`KeysInFlight::wait`]).
#[derive(Default)]
pub struct KeysInFlight {
    /// Key → waiters for the session it will name.
    keys: Mutex<HashMap<ScopedKey, Waiters>>,
}

impl KeysInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ScopedKey, Waiters>> {
        // The map holds plain senders; a panic elsewhere leaves it usable.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver for the session `key` will name, when its creation is in flight.
    pub fn wait(
        &self,
        key: &ScopedKey,
    ) -> Option<oneshot::Receiver<Result<SessionId, RuntimeError>>> {
        let mut keys = self.lock();
        let waiters = keys.get_mut(key)?;
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Some(rx)
    }

    /// Becomes the leader of `key`'s creation (`None`), or a waiter for it.
    fn lead_or_wait(
        &self,
        key: &ScopedKey,
    ) -> Option<oneshot::Receiver<Result<SessionId, RuntimeError>>> {
        let mut keys = self.lock();
        if let Some(waiters) = keys.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Some(rx);
        }
        keys.insert(key.clone(), Vec::new());
        None
    }

    /// The leader's create is durable (or failed): tell the waiters and forget the key.
    fn finish(&self, key: &ScopedKey, outcome: &Result<SessionId, RuntimeError>) {
        for waiter in self.lock().remove(key).unwrap_or_default() {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// Waits for the outcome of a creation in flight.
pub(crate) async fn joined(
    rx: oneshot::Receiver<Result<SessionId, RuntimeError>>,
) -> Result<SessionId, RuntimeError> {
    rx.await
        .map_err(|_| RuntimeError::Internal("the creating call went away".into()))?
}

/// Creates a session, or finds the one its key names; with the new session's view when created
/// (built from the record: no actor is started for it). Exactly one concurrent caller per key
/// gets a view, and nobody is answered before the session is durable.
pub(crate) async fn create(
    shared: &Arc<RuntimeShared>,
    spec: NewSession,
) -> Result<(SessionId, Option<SessionView>), RuntimeError> {
    spec.validate(shared)?;
    let key = spec.scoped_key();
    if let Some(key) = &key {
        if let Some(rx) = shared.creating.lead_or_wait(key) {
            return Ok((joined(rx).await?, None));
        }
    }
    let (record, created) = spec.into_record();
    let outcome = shared
        .store
        .create(record.clone(), created.clone(), key.clone())
        .await
        .map_err(RuntimeError::from);
    let named = match &outcome {
        Ok(CreateOutcome::Created) => Ok(record.id),
        Ok(CreateOutcome::Existing(winner)) => Ok(*winner),
        Err(e) => Err(e.clone()),
    };
    if let Some(key) = &key {
        shared.creating.finish(key, &named);
    }
    if outcome? != CreateOutcome::Created {
        return Ok((named?, None));
    }
    RuntimeMetrics::bump(&shared.metrics.sessions_created);
    log::debug!(
        "session {}: created for owner `{}` on `{}`",
        record.id,
        record.owner,
        record.provider
    );
    if !record.hidden {
        shared.feed.publish(&record.owner, created);
    }
    Ok((record.id, Some(SessionView::new(&record, false, 1, 0))))
}

/// The live actor of a session, activated from the store when needed.
#[derive(Message)]
#[rtype(result = "Result<Addr<Session>, RuntimeError>")]
pub struct Activate(pub SessionId);

/// The addresses of the live session actors.
#[derive(Message)]
#[rtype(result = "Vec<Addr<Session>>")]
pub struct LiveSessions;

/// Graceful shutdown began: no session is activated from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginShutdown;

/// The ids of the live (or loading) sessions.
#[derive(Message)]
#[rtype(result = "HashSet<SessionId>")]
pub struct LiveIds;

/// Whether graceful shutdown began.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsShuttingDown;

/// Whether the registry answers, for the readiness check.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Ping;

struct LiveEntry {
    addr: Addr<Session>,
    generation: u64,
}

/// The registry actor (one per runtime).
pub struct SessionRegistry {
    /// Store, providers, settings, feed, metrics.
    shared: Arc<RuntimeShared>,
    /// Live session actors by id; at most one per id.
    live: HashMap<SessionId, LiveEntry>,
    /// Source of activation generations.
    next_generation: u64,
    /// Recent panics per session, pruned to the panic window.
    panics: HashMap<SessionId, VecDeque<Instant>>,
    /// Set by graceful shutdown: a stopped session stays stopped, so nothing reactivates one
    /// (a reconnecting client, a panic restart) while the runtime drains.
    shutting_down: bool,
    /// Sessions being removed by retention: not activated until their delete is over, so
    /// nothing writes to a session while it is removed.
    expiring: HashSet<SessionId>,
    /// Sessions being loaded from the store, with who waits for each.
    loading: HashMap<SessionId, Vec<oneshot::Sender<Activated>>>,
}

impl SessionRegistry {
    /// A registry over the runtime's shared parts.
    pub fn new(shared: Arc<RuntimeShared>) -> Self {
        SessionRegistry {
            shared,
            live: HashMap::new(),
            next_generation: 0,
            panics: HashMap::new(),
            shutting_down: false,
            expiring: HashSet::new(),
            loading: HashMap::new(),
        }
    }

    /// The live actor of session `id`, on the returned channel: at once when it is live, else
    /// once it is loaded from the store. Concurrent activations of one id share one load and
    /// get the same address.
    fn activate(&mut self, id: SessionId, ctx: &mut Context<Self>) -> oneshot::Receiver<Activated> {
        let (tx, rx) = oneshot::channel();
        if let Some(entry) = self.live.get(&id) {
            if entry.addr.connected() {
                let _ = tx.send(Ok(entry.addr.clone()));
                return rx;
            }
        }
        if self.shutting_down {
            let _ = tx.send(Err(shutting_down()));
            return rx;
        }
        if self.expiring.contains(&id) {
            let _ = tx.send(Err(RuntimeError::SessionNotFound));
            return rx;
        }
        if let Some(waiting) = self.loading.get_mut(&id) {
            waiting.push(tx);
            return rx;
        }
        self.loading.insert(id, vec![tx]);
        self.next_generation += 1;
        let generation = self.next_generation;
        let window = self.shared.settings.panic_window;
        let recent_panics = self.panics.get_mut(&id).map_or(0, |times| {
            times.retain(|t| t.elapsed() < window);
            times.len() as u32
        });
        let shared = self.shared.clone();
        let registry = ctx.address();
        let load = async move {
            let store = shared.store.clone();
            // A session that does not exist takes no lease (embedded stores need none).
            if store.leases_expire() && store.get_session(id).await?.is_none() {
                return Err(RuntimeError::SessionNotFound);
            }
            let lease_sent = Instant::now();
            let settings = &shared.settings;
            match store
                .acquire_lease(id, &settings.node_id, settings.lease_ttl)
                .await?
            {
                LeaseGrant::Granted => {}
                LeaseGrant::HeldBy(node) => return Err(RuntimeError::OwnedElsewhere { node }),
            }
            // Read under the lease: the previous owner writes nothing more.
            let loaded = async {
                let record = store
                    .get_session(id)
                    .await?
                    .ok_or(RuntimeError::SessionNotFound)?;
                let session = Session::load(SessionArgs {
                    record,
                    shared: shared.clone(),
                    registry: registry.clone().recipient(),
                    generation,
                    panic_notice: registry.recipient(),
                    recent_panics,
                    lease_sent,
                })
                .await?;
                Ok(session)
            }
            .await;
            if loaded.is_err() {
                if let Err(e) = store.release_lease(id).await {
                    log::error!("session {id}: releasing the lease of a failed load: {e}");
                }
            }
            loaded
        };
        ctx.spawn(
            load.into_actor(self)
                .map(move |loaded, registry, _| registry.loaded(id, generation, loaded)),
        );
        rx
    }

    /// A session's load from the store ended: start its actor on a worker and answer everyone
    /// who waited for it.
    fn loaded(&mut self, id: SessionId, generation: u64, loaded: Result<Session, RuntimeError>) {
        let waiting = self.loading.remove(&id).unwrap_or_default();
        let result = match loaded {
            Ok(_) if self.shutting_down => Err(shutting_down()),
            Ok(session) => {
                let addr = match self.shared.workers.next() {
                    Some(arbiter) => Session::start_in_arbiter(arbiter, move |_| session),
                    None => session.start(),
                };
                log::debug!("session {id}: activated (generation {generation})");
                self.live.insert(
                    id,
                    LiveEntry {
                        addr: addr.clone(),
                        generation,
                    },
                );
                Ok(addr)
            }
            Err(e) => Err(e),
        };
        for tx in waiting {
            let _ = tx.send(result.clone());
        }
    }
}

/// What an activation answers.
type Activated = Result<Addr<Session>, RuntimeError>;

fn shutting_down() -> RuntimeError {
    RuntimeError::Internal("the runtime is shutting down".into())
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Activate> for SessionRegistry {
    type Result = ResponseFuture<Activated>;

    /// At most one live actor per id: concurrent activations get the same address.
    fn handle(&mut self, msg: Activate, ctx: &mut Context<Self>) -> Self::Result {
        let activated = self.activate(msg.0, ctx);
        Box::pin(async move {
            activated
                .await
                .map_err(|_| RuntimeError::Internal("the registry stopped".into()))?
        })
    }
}

impl Handler<SessionStopped> for SessionRegistry {
    type Result = ();

    /// Forgets the actor and gives up its lease, so another node can take the session at
    /// once. The release is handed to the store now, before any later activation's
    /// acquisition, so the two land in that order; an activation already under way keeps
    /// the lease instead.
    fn handle(&mut self, msg: SessionStopped, _ctx: &mut Context<Self>) {
        if self
            .live
            .get(&msg.id)
            .is_some_and(|e| e.generation == msg.generation)
        {
            self.live.remove(&msg.id);
            if self.loading.contains_key(&msg.id) {
                // Activated again already: the new activation keeps the lease.
                return;
            }
            let id = msg.id;
            let released = self.shared.store.release_lease(id);
            actix::spawn(async move {
                if let Err(e) = released.await {
                    log::error!("session {id}: releasing its lease: {e}");
                }
            });
        }
    }
}

impl Handler<SessionPanicked> for SessionRegistry {
    type Result = ();

    /// Restarts the session from the store at once: its running turn ends `interrupted` and is
    /// re-queued, its queue resumes; past `max_panics` in the window it comes back `failed`.
    fn handle(&mut self, msg: SessionPanicked, ctx: &mut Context<Self>) {
        if self
            .live
            .get(&msg.id)
            .is_none_or(|e| e.generation != msg.generation)
        {
            return;
        }
        self.live.remove(&msg.id);
        RuntimeMetrics::bump(&self.shared.metrics.panics);
        self.panics
            .entry(msg.id)
            .or_default()
            .push_back(Instant::now());
        // The dead actor's gauges were never taken back by its `stopped`.
        log::error!(
            "session {}: actor panicked; restarting from the store",
            msg.id
        );
        let id = msg.id;
        let restarted = self.activate(id, ctx);
        actix::spawn(async move {
            if let Ok(Err(e)) = restarted.await {
                log::error!("session {id}: restart after panic failed: {e}");
            }
        });
    }
}

impl Handler<LiveSessions> for SessionRegistry {
    type Result = MessageResult<LiveSessions>;

    fn handle(&mut self, _msg: LiveSessions, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.live
                .values()
                .filter(|e| e.addr.connected())
                .map(|e| e.addr.clone())
                .collect(),
        )
    }
}

impl Handler<BeginShutdown> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, _msg: BeginShutdown, _ctx: &mut Context<Self>) {
        self.shutting_down = true;
    }
}

impl Handler<BeginExpire> for SessionRegistry {
    type Result = MessageResult<BeginExpire>;

    /// Holds the sessions that have no live actor and are not being loaded; none while
    /// shutting down.
    fn handle(&mut self, msg: BeginExpire, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return MessageResult(Vec::new());
        }
        let held: Vec<SessionId> = msg
            .0
            .into_iter()
            .filter(|id| {
                !self.loading.contains_key(id)
                    && self.live.get(id).is_none_or(|e| !e.addr.connected())
            })
            .collect();
        self.expiring.extend(held.iter().copied());
        MessageResult(held)
    }
}

impl Handler<EndExpire> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: EndExpire, _ctx: &mut Context<Self>) {
        for id in msg.0 {
            self.expiring.remove(&id);
        }
    }
}

impl Handler<LiveIds> for SessionRegistry {
    type Result = MessageResult<LiveIds>;

    fn handle(&mut self, _msg: LiveIds, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.live
                .iter()
                .filter(|(_, e)| e.addr.connected())
                .map(|(id, _)| *id)
                .chain(self.loading.keys().copied())
                .collect(),
        )
    }
}

impl Handler<IsShuttingDown> for SessionRegistry {
    type Result = bool;

    fn handle(&mut self, _msg: IsShuttingDown, _ctx: &mut Context<Self>) -> bool {
        self.shutting_down
    }
}

impl Handler<Ping> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Context<Self>) -> usize {
        self.live.len()
    }
}
