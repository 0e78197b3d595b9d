//! A CLI agent gets no work before its process group is durably recorded: the record of the
//! group (its id, leader and leader start time) is written through the attempt's ledger and
//! the prompt goes to the agent's stdin only once the store confirmed it. A record the store
//! refuses stops the attempt: the session is told, the agent never sees its prompt and its
//! group is killed. When the attempt ends, the record is cleared.

mod providers_support;

use providers_support::*;
use std::sync::{Arc, Mutex};
use troupe::providers::{proc_table, ClaudeCli, CliProvider};
use troupe_actors::event::Event;
use troupe_actors::ids::ScopedKey;
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use troupe_actors::record::{SessionRecord, TurnRecord};
use troupe_actors::store::{EmbeddedStore, StoreError, StoreStats, Write, WriteDone};
use troupe_actors::{MemoryStore, ProcessLedger, Provider, ProviderEvent, SessionId, TurnId};

/// What the test store does with a process group's record.
#[derive(Clone, Copy, PartialEq)]
enum OnRecord {
    /// Holds it, unconfirmed, until the test releases it.
    Hold,
    /// Refuses it, as a full disk would.
    Fail,
}

/// A memory store whose process group records are held back or refused; everything else is
/// the memory store's.
struct RecordGate {
    inner: MemoryStore,
    on_record: OnRecord,
    /// Held records with their confirmations.
    held: Mutex<Vec<(Write, WriteDone)>>,
}

impl RecordGate {
    fn new(on_record: OnRecord) -> Arc<RecordGate> {
        Arc::new(RecordGate {
            inner: MemoryStore::new(),
            on_record,
            held: Mutex::new(Vec::new()),
        })
    }

    /// The records held so far.
    fn held(&self) -> Vec<ProcessGroupRecord> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(w, _)| match w {
                Write::ProcessGroup(ProcessGroupChange::Started(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Lets the held records land.
    fn release(&self) {
        for (write, done) in self.held.lock().unwrap().drain(..) {
            EmbeddedStore::submit(&self.inner, write, done);
        }
    }
}

impl EmbeddedStore for RecordGate {
    fn submit(&self, write: Write, done: WriteDone) {
        match (&write, self.on_record) {
            (Write::ProcessGroup(ProcessGroupChange::Started(_)), OnRecord::Hold) => {
                self.held.lock().unwrap().push((write, done));
            }
            (Write::ProcessGroup(ProcessGroupChange::Started(_)), OnRecord::Fail) => {
                done(Err(StoreError::Engine("disk full (test double)".into())));
            }
            _ => EmbeddedStore::submit(&self.inner, write, done),
        }
    }
    fn lookup_key(&self, key: &ScopedKey) -> Result<Option<SessionId>, StoreError> {
        EmbeddedStore::lookup_key(&self.inner, key)
    }
    fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        EmbeddedStore::get_session(&self.inner, id)
    }
    fn list_sessions(&self, owner: &str) -> Result<Vec<SessionRecord>, StoreError> {
        EmbeddedStore::list_sessions(&self.inner, owner)
    }
    fn sessions_after(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        EmbeddedStore::sessions_after(&self.inner, after, limit)
    }
    fn active_sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        EmbeddedStore::active_sessions(&self.inner)
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
    fn open_turns(&self, s: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        EmbeddedStore::open_turns(&self.inner, s)
    }
    fn all_turns(&self, s: SessionId) -> Result<Vec<TurnRecord>, StoreError> {
        EmbeddedStore::all_turns(&self.inner, s)
    }
    fn get_turn(&self, s: SessionId, t: TurnId) -> Result<Option<TurnRecord>, StoreError> {
        EmbeddedStore::get_turn(&self.inner, s, t)
    }
    fn turn_for_client_id(&self, s: SessionId, id: &str) -> Result<Option<TurnId>, StoreError> {
        EmbeddedStore::turn_for_client_id(&self.inner, s, id)
    }
    fn session_for_provider_id(&self, p: &str, id: &str) -> Result<Option<SessionId>, StoreError> {
        EmbeddedStore::session_for_provider_id(&self.inner, p, id)
    }
    fn process_groups(&self) -> Result<Vec<ProcessGroupRecord>, StoreError> {
        EmbeddedStore::process_groups(&self.inner)
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

/// A fake `claude` provider that reads its whole stdin before it does anything.
fn provider(fake: &Fake) -> CliProvider {
    let mut settings = fake.settings("claude");
    settings.steer = false;
    CliProvider::new(ClaudeCli, settings)
}

#[actix_rt::test]
async fn the_prompt_waits_until_the_group_is_durably_recorded() {
    let fake = Fake::new();
    let store = RecordGate::new(OnRecord::Hold);
    let mut req = request("hello there");
    req.processes = ProcessLedger::new(store.clone(), req.session_id, req.turn_id, 1, |e| {
        panic!("no store error expected: {e}")
    });
    let (session, turn) = (req.session_id, req.turn_id);
    let run = provider(&fake).start(req);
    let pid = run.pid.expect("pid") as i32;

    let held = loop {
        let held = store.held();
        if !held.is_empty() {
            break held;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let record = &held[0];
    assert_eq!((record.pgid, record.leader_pid), (pid, pid));
    assert_eq!(
        record.leader_start,
        proc_table::stat(pid).expect("the agent runs").start
    );
    assert_eq!((record.session_id, record.turn_id), (session, turn));
    assert_eq!(record.boot_id, proc_table::boot_id().expect("boot id"));
    // The agent reads until its stdin closes, and stdin holds nothing before the record lands.
    assert!(
        fake.records().is_empty(),
        "the agent got work before its record"
    );
    assert!(EmbeddedStore::process_groups(&*store)
        .expect("read")
        .is_empty());

    store.release();
    let events = collect(run).await;
    done(&events);
    assert_eq!(fake.records()[0]["stdin"], "hello there");
    assert!(
        EmbeddedStore::process_groups(&*store)
            .expect("read")
            .is_empty(),
        "the record is cleared once the group is gone"
    );
}

#[actix_rt::test]
async fn a_group_the_store_cannot_record_never_gets_its_prompt_and_is_killed() {
    let fake = Fake::new();
    let store = RecordGate::new(OnRecord::Fail);
    let told: Arc<Mutex<Option<StoreError>>> = Arc::default();
    let mut req = request("spawn a helper");
    let tell = told.clone();
    req.processes = ProcessLedger::new(store.clone(), req.session_id, req.turn_id, 1, move |e| {
        *tell.lock().unwrap() = Some(e);
    });
    let run = provider(&fake).start(req);
    let pid = run.pid.expect("pid") as i32;
    let events = collect(run).await;
    assert!(
        !events.iter().any(|e| matches!(e, ProviderEvent::Done(_))),
        "{events:?}"
    );
    assert!(told.lock().unwrap().is_some(), "the session was told");
    assert!(wait_gone(pid).await, "the unrecorded agent was killed");
    assert!(fake.records().is_empty(), "the agent never got its prompt");
}

#[actix_rt::test]
async fn a_session_whose_agent_cannot_be_recorded_stops_fail_stop() {
    let fake = Fake::new();
    let store = RecordGate::new(OnRecord::Fail);
    let rt = troupe_actors::Runtime::builder()
        .shared_store(store.clone())
        .provider("claude", provider(&fake))
        .settings(troupe_actors::Settings {
            workers: 0,
            ..troupe_actors::Settings::default()
        })
        .start();
    let (session, _) = rt
        .get_or_create(troupe_actors::NewSession {
            owner: "local".into(),
            provider: "claude".into(),
            ..troupe_actors::NewSession::default()
        })
        .await
        .expect("session");
    session
        .send_text("hello", troupe_actors::BusyMode::Enqueue)
        .await
        .expect("accepted");
    let failures = &rt.metrics().store_failures;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while troupe_actors::metrics::RuntimeMetrics::get(failures) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session did not stop on the store error"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The store still says the turn runs: the next activation recovers it.
    let open = EmbeddedStore::open_turns(&*store, session.id()).expect("open turns");
    assert_eq!(open.len(), 1);
    assert!(fake.records().is_empty(), "the agent never got its prompt");
}
