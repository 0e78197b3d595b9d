//! Real `troupe serve --store nats://…` nodes on one real `nats-server -js`, with a 2 s lease
//! TTL. Round after round, the node that runs a session is killed with `kill -9` mid-turn, at a
//! moment drawn from a seed (printed; `TROUPE_TEST_SEED` replays it), while another node runs
//! alongside. That node takes the session over within the lease TTL + 1 s (from the kill to
//! the first event it writes): the running turn ends `interrupted` exactly once and runs again,
//! the queued turns run, and a client that resumes with `after_seq` on the surviving node gets
//! every later event once, while every event it had been shown is still there unchanged.

#[path = "support/external.rs"]
mod external;
#[path = "support/nats_server.rs"]
mod nats_server;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/server_process.rs"]
mod server_process;

use chrono::{DateTime, Utc};
use nats_server::NatsServer;
use nodes::{start_node, Api, TurnsInFlight, LEASE_TTL};
use serde_json::json;
use std::time::Duration;

/// How many kills, each at its own moment of the turn.
const KILL_POINTS: usize = 4;

/// Words of the long turn: 60 chunks, 20 ms apart.
const LONG_TURN_WORDS: usize = 120;

/// The time from the kill to the first event the new owner wrote (events carry their
/// writer's clock: every node is on this machine).
fn failover(events: &[serde_json::Value], killed_at: DateTime<Utc>) -> Duration {
    events
        .iter()
        .filter_map(|e| e["ts"].as_str())
        .filter_map(|ts| DateTime::parse_from_rfc3339(ts).ok())
        .map(|ts| ts.with_timezone(&Utc))
        .filter(|ts| *ts > killed_at)
        .min()
        .map(|first| (first - killed_at).to_std().unwrap_or_default())
        .expect("the new owner wrote events")
}

#[test]
fn a_killed_owner_is_taken_over_within_the_lease_ttl_and_a_second() {
    let Some(nats) = NatsServer::start("nats_takeover_after_kill_9") else {
        return;
    };
    let seed = std::env::var("TROUPE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (TROUPE_TEST_SEED={seed} replays these kill points)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (survivor, _survivor_data) = start_node(&nats);
    let other = Api::of(&survivor);
    other.wait_ready(200);
    let mut failovers = Vec::new();
    for round in 0..KILL_POINTS {
        let (owner, _owner_data) = start_node(&nats);
        let api = Api::of(&owner);
        api.wait_ready(200);
        let (status, body) = api.post(
            "/api/v1/sessions",
            json!({"provider": "echo", "key": format!("round-{round}")}),
        );
        assert_eq!(status, 201, "{body}");
        let session = body["session"]["id"].as_str().expect("id").to_string();
        let deltas = rng.usize(1..LONG_TURN_WORDS / 2 - 5);
        let mut turns = TurnsInFlight::start(&owner, &api, &session, LONG_TURN_WORDS, deltas);
        owner.kill9();
        let killed_at = Utc::now();
        turns.drain_after_kill();

        // The survivor takes it over once the dead owner's lease expired, then resumes the
        // client after what it was shown.
        other.wait_owned(&session, LEASE_TTL + Duration::from_secs(5));
        other.wait_all_completed(&session, &turns.accepted);
        let resumed = other.events_after(&session, turns.last_seen());
        let events = other.check_recovered(&session, &turns.accepted, &turns.seen);
        let expected: Vec<u64> = (turns.last_seen() + 1..=events.len() as u64).collect();
        let got: Vec<u64> = resumed
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(
            got, expected,
            "the resumed client gets every later event once"
        );
        assert_eq!(
            &resumed[..],
            &events[turns.last_seen() as usize..],
            "as stored"
        );
        let took = failover(&events, killed_at);
        println!(
            "round {round}: killed after {deltas} deltas (seq {}), new owner's first event \
             {took:?} after the kill",
            turns.last_seen()
        );
        failovers.push(took);
    }
    failovers.sort();
    let p50 = failovers[failovers.len() / 2];
    let max = failovers[failovers.len() - 1];
    println!(
        "failover over {KILL_POINTS} kill points, lease TTL {LEASE_TTL:?}: p50 {p50:?}, max \
         {max:?}"
    );
    assert!(
        max <= LEASE_TTL + Duration::from_secs(1),
        "failover took {max:?}, more than the lease TTL + 1 s"
    );
}
