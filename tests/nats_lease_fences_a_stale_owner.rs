//! The lease of the NATS store, at the store's level, with two stores on one real
//! `nats-server -js` standing for two nodes: one node holds a session's lease and the other is
//! told who; commits renew it; when the holder stops renewing, the lease expires no earlier
//! than its TTL after the last renewal and no later than a second after, the other node takes
//! it, and the stale holder's commits are refused whole (fencing) while the new holder's land.
//! A released lease is taken at once. The embedded stores grant every lease.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;

use nats_server::NatsServer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::store::{Batch, CreateOutcome, LeaseGrant, StoreError};
use troupe_actors::{
    Event, EventBody, MemoryStore, NatsOptions, NatsStore, NewSession, SessionId, Store, Timestamp,
};

/// The lease TTL of the test: whole seconds, as NATS counts them.
const TTL: Duration = Duration::from_secs(2);

fn open(options: &NatsOptions) -> Arc<dyn Store> {
    Arc::new(NatsStore::open(options).expect("open the NATS store"))
}

async fn create(store: &Arc<dyn Store>) -> SessionId {
    let spec = NewSession {
        owner: "alice".into(),
        provider: "echo".into(),
        ..NewSession::default()
    };
    let (record, first) = spec.into_record();
    let id = record.id;
    let created = store.create(record, first, None).await.expect("create");
    assert_eq!(created, CreateOutcome::Created);
    id
}

fn deltas(session: SessionId, seqs: std::ops::RangeInclusive<u64>) -> Batch {
    Batch {
        events: seqs
            .map(|seq| {
                Arc::new(Event {
                    seq,
                    session_id: session,
                    turn_id: None,
                    ts: Timestamp::now(),
                    body: EventBody::MessageDelta {
                        text: format!("delta {seq}"),
                    },
                    encoded: Default::default(),
                })
            })
            .collect(),
        ..Batch::default()
    }
}

async fn acquire(store: &Arc<dyn Store>, session: SessionId, node: &str) -> LeaseGrant {
    store
        .acquire_lease(session, node, TTL)
        .await
        .expect("acquire")
}

#[tokio::test]
async fn a_lease_is_held_renewed_expires_and_fences_the_stale_holder() {
    let Some(server) = NatsServer::start("nats_lease_fences_a_stale_owner") else {
        return;
    };
    let options = NatsOptions {
        url: server.url(),
        ..NatsOptions::default()
    };
    let (a, b) = (open(&options), open(&options));
    assert!(a.leases_expire());
    let session = create(&a).await;

    // A takes it; B is told A has it; A taking it again keeps it.
    assert_eq!(acquire(&a, session, "node-a").await, LeaseGrant::Granted);
    assert_eq!(
        acquire(&b, session, "node-b").await,
        LeaseGrant::HeldBy("node-a".into())
    );
    assert_eq!(
        b.lease_holder(session).await.expect("holder"),
        Some("node-a".into())
    );
    assert_eq!(acquire(&a, session, "node-a").await, LeaseGrant::Granted);
    assert_eq!((a.leases_held(), b.leases_held()), (1, 0));

    // A's commits land and renew the lease: past the TTL since the acquisition, it holds.
    a.commit(session, deltas(session, 2..=3))
        .await
        .expect("A commits");
    tokio::time::sleep(TTL * 3 / 5).await;
    a.commit(session, Batch::default()).await.expect("A renews");
    let renewed = Instant::now();
    tokio::time::sleep(TTL * 3 / 5).await;
    // Counted from before it is sent: the server's TTL starts no earlier.
    let last_renewal = Instant::now();
    a.commit(session, deltas(session, 4..=4))
        .await
        .expect("A commits again");
    assert!(renewed.elapsed() < TTL);
    assert_eq!(
        acquire(&b, session, "node-b").await,
        LeaseGrant::HeldBy("node-a".into()),
        "renewed by A's commits"
    );

    // A goes quiet. B gets the lease no earlier than the TTL after A's last renewal and no
    // later than a second after.
    let taken = loop {
        match acquire(&b, session, "node-b").await {
            LeaseGrant::Granted => break last_renewal.elapsed(),
            LeaseGrant::HeldBy(node) => assert_eq!(node, "node-a"),
        }
        assert!(
            last_renewal.elapsed() < TTL + Duration::from_secs(3),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("lease taken over {taken:?} after the holder's last renewal (TTL {TTL:?})");
    assert!(taken >= TTL, "expired before its TTL: {taken:?}");
    assert!(
        taken <= TTL + Duration::from_secs(1),
        "expired late: {taken:?}"
    );
    assert_eq!(
        a.lease_holder(session).await.expect("holder"),
        Some("node-b".into())
    );

    // A's next commit is refused whole; B's lands; A's after that is refused too.
    let stale = a.commit(session, deltas(session, 5..=6)).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { session: s }) if s == session),
        "{stale:?}"
    );
    assert_eq!(a.last_seq(session).await.expect("last seq"), 4);
    b.commit(session, deltas(session, 5..=5))
        .await
        .expect("B commits");
    let stale = a.commit(session, deltas(session, 6..=6)).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    assert_eq!(b.last_seq(session).await.expect("last seq"), 5);
    assert_eq!((a.leases_held(), b.leases_held()), (0, 1));

    // B lets go: A takes it at once, and its commit follows B's.
    b.release_lease(session).await.expect("release");
    assert_eq!(b.lease_holder(session).await.expect("holder"), None);
    assert_eq!(acquire(&a, session, "node-a").await, LeaseGrant::Granted);
    a.commit(session, deltas(session, 6..=6))
        .await
        .expect("A again");
    let refused = b.commit(session, deltas(session, 7..=7)).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(a.last_seq(session).await.expect("last seq"), 6);
    a.release_all_leases().await.expect("release all");
    assert_eq!(a.lease_holder(session).await.expect("holder"), None);
    assert_eq!(a.leases_held(), 0);
}

#[tokio::test]
async fn an_embedded_store_grants_every_lease() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    assert!(!store.leases_expire());
    let session = create(&store).await;
    assert_eq!(acquire(&store, session, "a").await, LeaseGrant::Granted);
    assert_eq!(acquire(&store, session, "b").await, LeaseGrant::Granted);
    assert_eq!(store.lease_holder(session).await.expect("holder"), None);
}
