//! A [`Store`](super::Store) on NATS JetStream, shared by several Troupe nodes.
//!
//! Everything lives in one stream with at most one message per subject (the subject is the
//! key, its message the value, the message's stream sequence the revision): a commit of one
//! session is one JetStream *atomic batch* (all of its messages land or none do), and atomic
//! batches cannot span streams. The layout and why is in [`layout`] and in
//! `docs/OPERATIONS.md` ("Several nodes").
//!
//! The client runs on a tokio runtime of its own, on its own thread (actix arbiters are
//! single-threaded): reads are spawned there and awaited from anywhere; writes go to one writer
//! task ([`writer`]) that publishes them in submission order, pipelined, and confirms each
//! once JetStream has acknowledged it (stored on the server: durable).

mod cluster_link;
mod layout;
mod lease;
mod reads;
mod writer;

use super::{LeaseGrant, StoreError, StoreRead, StoreStats, Write, WriteDone, SCHEMA_VERSION};
use crate::event::Event;
use crate::ids::{ScopedKey, SessionId, TurnId};
use crate::process_groups::ProcessGroupRecord;
use crate::record::{SessionRecord, TurnRecord};
use crate::usage::OwnerDayUsage;
use async_nats::jetstream;
use layout::{engine_err, Subjects};
use lease::{LeaseBook, LeaseJob};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a blocking call (the readiness probe, opening) waits for NATS.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the NATS store is and how it is laid out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsOptions {
    /// The server(s), `nats://host:port` (comma-separated for several).
    pub url: String,
    /// A token to authenticate with; `None` for none.
    pub token: Option<String>,
    /// A `.creds` file (JWT and NKey seed) to authenticate with; `None` for none.
    pub credentials: Option<PathBuf>,
    /// The JetStream stream that holds everything; every node of one cluster names the same.
    pub stream: String,
    /// The prefix of every subject of the stream.
    pub subject_prefix: String,
    /// Stream replicas (1 on one server; 3 on a three-server cluster).
    pub replicas: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: "nats://127.0.0.1:4222".into(),
            token: None,
            credentials: None,
            stream: "TROUPE".into(),
            subject_prefix: "troupe".into(),
            replicas: 1,
        }
    }
}

/// What the reads and the writer share: the connection, the stream and the subjects.
struct Shared {
    /// The core connection: batch messages before their commit go out on it.
    client: async_nats::Client,
    /// JetStream on that connection: acknowledged publishes.
    js: jetstream::Context,
    /// The stream handle: direct gets, consumers, purges.
    stream: jetstream::stream::Stream,
    /// The subjects under the configured prefix.
    subjects: Subjects,
    /// The leases this node holds: the fences its commits carry.
    leases: LeaseBook,
}

/// What the writer is handed, in order: a write, or a lease operation.
// Writes are nearly every job and went through the channel unboxed before leases did: boxing
// them would cost an allocation per write to save room on the rare lease job.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A submitted write and who waits for it.
    Write(Write, WriteDone),
    /// Taking or giving up a lease.
    Lease(LeaseJob),
}

/// The store on NATS JetStream. Reads and writes run on the store's own runtime thread.
pub struct NatsStore {
    /// Shared with every spawned read and the writer.
    shared: Arc<Shared>,
    /// Where writes are submitted; `None` once the store is being dropped.
    tx: Option<mpsc::UnboundedSender<Job>>,
    /// The runtime the client lives on.
    handle: tokio::runtime::Handle,
    /// The runtime's thread: runs the writer until every submitted write is answered; joined
    /// on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NatsStore {
    /// Connects, creates the stream if it is missing (or checks it), checks the schema version
    /// and starts the writer. Blocks the calling thread until then.
    pub fn open(options: &NatsOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("troupe-nats")
            .build()
            .map_err(engine_err)?;
        let handle = runtime.handle().clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let opening = options.clone();
        let thread = std::thread::Builder::new()
            .name("troupe-nats".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let shared = match connect(&opening).await {
                        Ok(shared) => Arc::new(shared),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(shared.clone()));
                    writer::run(shared, rx).await;
                });
            })
            .map_err(engine_err)?;
        let shared = ready_rx
            .recv()
            .map_err(|_| StoreError::Engine("the NATS store's thread stopped".into()))??;
        Ok(NatsStore {
            shared,
            tx: Some(tx),
            handle,
            thread: Some(thread),
        })
    }

    /// Hands a lease job to the writer now (in order with the writes submitted before) and
    /// waits for its answer.
    fn lease_job<T: Send + 'static>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> LeaseJob,
    ) -> StoreRead<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Lease(job(answer))).is_ok());
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Engine("the NATS store's writer stopped".into()));
            }
            answered
                .await
                .map_err(|_| StoreError::Engine("the NATS store's writer stopped".into()))?
        })
    }

    /// Runs `read` on the store's runtime; the answer can be awaited anywhere.
    fn read<T, F>(&self, read: impl FnOnce(Arc<Shared>) -> F) -> StoreRead<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let running = self.handle.spawn(read(self.shared.clone()));
        Box::pin(async move {
            running
                .await
                .map_err(|e| StoreError::Engine(format!("a NATS read stopped: {e}")))?
        })
    }

    /// Runs `work` on the store's runtime and blocks this thread (never the store's own)
    /// until it is done or [`BLOCKING_TIMEOUT`] passed.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let answer = tokio::time::timeout(BLOCKING_TIMEOUT, work)
                .await
                .unwrap_or_else(|_| Err(StoreError::Engine("NATS did not answer in time".into())));
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| StoreError::Engine("the NATS store's thread stopped".into()))?
    }
}

impl Drop for NatsStore {
    /// Lets the writer answer what was submitted, then stops the runtime thread.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects and makes the stream ready.
async fn connect(options: &NatsOptions) -> Result<Shared, StoreError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name("troupe")
        .connection_timeout(BLOCKING_TIMEOUT)
        // A node keeps trying while NATS is away; its writes fail (and its sessions stop)
        // meanwhile, and readiness says 503.
        .max_reconnects(None);
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    if let Some(path) = &options.credentials {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| StoreError::Engine(format!("NATS credentials {}: {e}", path.display())))?;
    }
    let client = connect
        .connect(options.url.as_str())
        .await
        .map_err(|e| StoreError::Engine(format!("connecting to NATS at {}: {e}", options.url)))?;
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new(&options.subject_prefix);
    let config = jetstream::stream::Config {
        name: options.stream.clone(),
        subjects: vec![subjects.all()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: options.replicas.max(1),
        // One message per subject: a subject is a key, its message the value.
        max_messages_per_subject: 1,
        // Reads by subject from any replica, without a consumer.
        allow_direct: true,
        // A commit of one session lands all or nothing.
        allow_atomic_publish: true,
        // "No open turns" is a marker that expires: the active index holds active sessions.
        allow_message_ttl: true,
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| StoreError::Engine(format!("JetStream stream {}: {e}", options.stream)))?;
    let found = &stream.cached_info().config;
    if found.max_messages_per_subject != 1
        || !found.allow_direct
        || !found.allow_atomic_publish
        || !found.allow_message_ttl
    {
        return Err(StoreError::Engine(format!(
            "JetStream stream {} exists with another configuration (needs max_msgs_per_subject \
             = 1, allow_direct, allow_atomic, allow_msg_ttl): name another stream",
            options.stream
        )));
    }
    let shared = Shared {
        client,
        js,
        stream,
        subjects,
        leases: LeaseBook::default(),
    };
    shared.check_schema().await?;
    Ok(shared)
}

impl Shared {
    /// Refuses a stream written by a newer schema; records this one's on a new stream.
    async fn check_schema(&self) -> Result<(), StoreError> {
        if self
            .last(&self.subjects.unblocked_events())
            .await?
            .is_some()
        {
            return Err(StoreError::Engine(format!(
                "the stream holds events one message each (the layout before blocks of {}): \
                 this build cannot read it; name another stream",
                layout::EVENTS_PER_BLOCK
            )));
        }
        let subject = self.subjects.schema();
        if let Some(found) = self.last(&subject).await? {
            let found: u32 = layout::decode(&found.payload)?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew { found });
            }
            if found == SCHEMA_VERSION {
                return Ok(());
            }
        }
        self.publish_one(subject, layout::encode(&SCHEMA_VERSION))
            .await
            .map(|_| ())
    }

    /// Publishes one message and waits for JetStream's acknowledgement.
    async fn publish_one(&self, subject: String, payload: Vec<u8>) -> Result<u64, StoreError> {
        let ack = self
            .js
            .publish(subject, payload.into())
            .await
            .map_err(engine_err)?
            .await
            .map_err(engine_err)?;
        Ok(ack.sequence)
    }

    /// Readiness: the connection is up and a probe is stored.
    async fn check_writable(&self) -> Result<(), StoreError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StoreError::Engine("not connected to NATS".into()));
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.publish_one(self.subjects.probe(), layout::encode(&now))
            .await
            .map(|_| ())
    }
}

impl super::Store for NatsStore {
    fn submit(&self, write: Write, done: WriteDone) {
        let Some(tx) = &self.tx else {
            done(Err(StoreError::Engine("the NATS store is closing".into())));
            return;
        };
        if let Err(mpsc::error::SendError(Job::Write(_, done))) = tx.send(Job::Write(write, done)) {
            done(Err(StoreError::Engine(
                "the NATS store's writer stopped".into(),
            )));
        }
    }

    fn lookup_key(&self, key: &ScopedKey) -> StoreRead<Option<SessionId>> {
        let key = key.clone();
        self.read(move |s| async move { s.lookup_key(&key).await })
    }

    fn get_session(&self, id: SessionId) -> StoreRead<Option<SessionRecord>> {
        self.read(move |s| async move { s.get_session(id).await })
    }

    fn list_sessions(&self, owner: &str) -> StoreRead<Vec<SessionRecord>> {
        let owner = owner.to_string();
        self.read(move |s| async move { s.list_sessions(&owner).await })
    }

    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> StoreRead<Vec<SessionRecord>> {
        self.read(move |s| async move { s.sessions_after(after, limit).await })
    }

    fn active_sessions(&self) -> StoreRead<Vec<SessionId>> {
        self.read(|s| async move { s.active_sessions().await })
    }

    fn read_events(
        &self,
        session: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> StoreRead<Vec<Event>> {
        self.read(move |s| async move { s.read_events(session, after_seq, limit).await })
    }

    fn last_seq(&self, session: SessionId) -> StoreRead<u64> {
        self.read(move |s| async move { s.last_seq(session).await })
    }

    fn open_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>> {
        self.read(move |s| async move {
            let turns = s.all_turns(session).await?;
            Ok(turns
                .into_iter()
                .filter(|t| t.status != crate::record::TurnStatus::Completed)
                .collect())
        })
    }

    fn all_turns(&self, session: SessionId) -> StoreRead<Vec<TurnRecord>> {
        self.read(move |s| async move { s.all_turns(session).await })
    }

    fn get_turn(&self, session: SessionId, turn: TurnId) -> StoreRead<Option<TurnRecord>> {
        self.read(move |s| async move { s.get_turn(session, turn).await })
    }

    fn turn_for_client_id(
        &self,
        session: SessionId,
        client_message_id: &str,
    ) -> StoreRead<Option<TurnId>> {
        let client_id = client_message_id.to_string();
        self.read(move |s| async move { s.turn_for_client_id(session, &client_id).await })
    }

    fn session_for_provider_id(
        &self,
        provider: &str,
        provider_session_id: &str,
    ) -> StoreRead<Option<SessionId>> {
        let (provider, id) = (provider.to_string(), provider_session_id.to_string());
        self.read(move |s| async move { s.session_for_provider_id(&provider, &id).await })
    }

    fn usage_days(
        &self,
        owner: Option<&str>,
        from: &str,
        to: &str,
    ) -> StoreRead<Vec<OwnerDayUsage>> {
        let (owner, from, to) = (owner.map(String::from), from.to_string(), to.to_string());
        self.read(move |s| async move { s.usage_days(owner.as_deref(), &from, &to).await })
    }

    fn process_groups(&self) -> StoreRead<Vec<ProcessGroupRecord>> {
        self.read(|s| async move { s.process_groups().await })
    }

    fn stats(&self) -> StoreRead<StoreStats> {
        self.read(|s| async move { s.stats().await })
    }

    /// Nothing to do: a write is confirmed only once JetStream acknowledged it, stored.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        self.block(async move { shared.check_writable().await })
    }

    fn leases_expire(&self) -> bool {
        true
    }

    fn acquire_lease(
        &self,
        session: SessionId,
        node: &str,
        ttl: Duration,
    ) -> StoreRead<LeaseGrant> {
        let node = node.to_string();
        self.lease_job(move |answer| LeaseJob::Acquire {
            session,
            node,
            ttl,
            answer,
        })
    }

    fn release_lease(&self, session: SessionId) -> StoreRead<()> {
        self.lease_job(move |answer| LeaseJob::Release {
            session: Some(session),
            answer,
        })
    }

    fn release_all_leases(&self) -> StoreRead<()> {
        self.lease_job(|answer| LeaseJob::Release {
            session: None,
            answer,
        })
    }

    fn lease_holder(&self, session: SessionId) -> StoreRead<Option<String>> {
        self.read(move |s| async move { lease::holder(&s, session).await })
    }

    fn leases_held(&self) -> usize {
        self.shared.leases.count()
    }

    fn cluster(&self) -> Option<&dyn crate::cluster::ClusterLink> {
        Some(self)
    }
}
