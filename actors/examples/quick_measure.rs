//! Quick measurements (not a benchmark): events per second through one session with the memory
//! and the sled store, and memory per idle live session actor (resident set from
//! `/proc/self/status`, and live heap bytes counted by a wrapping allocator).
//!
//! `cargo run --release -p troupe-actors --example quick_measure`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_actors::{
    BusyMode, EventBody, MemoryStore, NewSession, Runtime, SendTurn, Settings, SledStore, Store,
};

/// Counts the bytes the process holds on the heap.
struct CountingAlloc;

/// Live heap bytes.
static HEAP: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Opens a fresh store.
type OpenStore = fn() -> Arc<dyn Store>;

/// Words in the one long reply whose deltas are counted.
const REPLY_WORDS: usize = 200_000;

/// Turns, and words per turn, of the many-turns run.
const TURNS: usize = 200;
/// Words per turn of the many-turns run.
const TURN_WORDS: usize = 1_000;

/// Idle live session actors whose memory is measured.
const IDLE_SESSIONS: usize = 10_000;

/// The resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn new_session(rt: &Runtime) -> troupe_actors::SessionHandle {
    rt.get_or_create(NewSession {
        owner: "bench".into(),
        provider: "echo".into(),
        ..NewSession::default()
    })
    .await
    .expect("create session")
    .0
}

/// Streams one echo turn of `REPLY_WORDS` one-word deltas and counts the events a subscriber
/// reads from acceptance to `turn.completed`.
async fn events_per_second(store: Arc<dyn Store>) -> (u64, Duration) {
    let rt = Runtime::builder().shared_store(store).start();
    let handle = new_session(&rt).await;
    let text = vec!["word"; REPLY_WORDS].join(" ");
    let mut sub = handle.subscribe(1).await.expect("subscribe");
    let started = Instant::now();
    handle
        .send(SendTurn {
            content: "go".into(),
            mode: BusyMode::Enqueue,
            options: serde_json::json!({"script": {"chunk_words": 1, "reply": text}}),
            ..SendTurn::default()
        })
        .await
        .expect("send");
    let mut events = 0;
    while let Some(event) = sub.next().await {
        events += 1;
        if matches!(event.body, EventBody::TurnCompleted { .. }) {
            break;
        }
    }
    let took = started.elapsed();
    rt.shutdown(Duration::from_secs(1)).await;
    (events, took)
}

/// Runs `TURNS` echo turns of `TURN_WORDS` one-word deltas (the text is the prompt) and counts
/// the events a subscriber reads until the last `turn.completed`.
async fn events_per_second_many_turns(store: Arc<dyn Store>) -> (u64, Duration) {
    let rt = Runtime::builder()
        .shared_store(store)
        .settings(Settings {
            max_queue: TURNS,
            ..Settings::default()
        })
        .start();
    let handle = new_session(&rt).await;
    let text = vec!["word"; TURN_WORDS].join(" ");
    let mut sub = handle.subscribe(1).await.expect("subscribe");
    // The reader runs beside the sender, as a client would.
    let reader = tokio::task::spawn_local(async move {
        let (mut events, mut completed) = (0u64, 0);
        while let Some(event) = sub.next().await {
            events += 1;
            if matches!(event.body, EventBody::TurnCompleted { .. }) {
                completed += 1;
                if completed == TURNS {
                    break;
                }
            }
        }
        assert_eq!(
            completed,
            TURNS,
            "the reader kept up: {:?}",
            sub.close_reason()
        );
        events
    });
    let started = Instant::now();
    for _ in 0..TURNS {
        handle
            .send(SendTurn {
                content: text.clone(),
                mode: BusyMode::Enqueue,
                options: serde_json::json!({"script": {"chunk_words": 1}}),
                ..SendTurn::default()
            })
            .await
            .expect("send");
    }
    let events = reader.await.expect("reader");
    let took = started.elapsed();
    rt.shutdown(Duration::from_secs(1)).await;
    (events, took)
}

/// Hands freed heap back to the system, so the resident set grows with new allocations only.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it takes no pointers.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Activates two batches of `IDLE_SESSIONS` sessions that already exist in the store and
/// reports, per live actor, the growth of the heap and of the resident set. The second batch's
/// resident growth is the fairer one: the first fills holes the session creation left.
async fn memory_per_idle_actor() -> Vec<(usize, i64, i64)> {
    let rt = Runtime::builder().store(MemoryStore::new()).start();
    let mut handles = Vec::with_capacity(2 * IDLE_SESSIONS);
    for _ in 0..2 * IDLE_SESSIONS {
        handles.push(new_session(&rt).await);
    }
    let mut rows = Vec::new();
    for batch in handles.chunks(IDLE_SESSIONS) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trim_heap();
        let (rss, heap) = (rss_kib(), HEAP.load(Ordering::Relaxed));
        for handle in batch {
            handle.info().await.expect("activate");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss_growth = (rss_kib() as i64 - rss as i64) * 1024;
        let heap_growth = HEAP.load(Ordering::Relaxed) as i64 - heap as i64;
        rows.push((batch.len(), rss_growth, heap_growth));
    }
    let live = rt.figures().await.expect("figures").live;
    assert_eq!(
        live,
        2 * IDLE_SESSIONS,
        "every activated actor is still live"
    );
    rows
}

fn main() {
    let stores: [(&str, OpenStore); 2] = [
        ("memory", || Arc::new(MemoryStore::new())),
        ("sled", || {
            let dir = tempfile::tempdir().expect("temp dir").keep();
            Arc::new(SledStore::open(dir).expect("open sled"))
        }),
    ];
    for (name, store) in stores {
        let (events, took) = actix::System::new().block_on(events_per_second_many_turns(store()));
        println!(
            "{name:>6} store, {TURNS} turns x {TURN_WORDS} words: {events} events in {took:.2?} = {:.0} events/s",
            events as f64 / took.as_secs_f64()
        );
        let (events, took) = actix::System::new().block_on(events_per_second(store()));
        println!(
            "{name:>6} store, one turn of {REPLY_WORDS} words: {events} events in {took:.2?} = {:.0} events/s",
            events as f64 / took.as_secs_f64()
        );
    }
    let rows = actix::System::new().block_on(memory_per_idle_actor());
    for (batch, (n, rss, heap)) in ["first", "second"].iter().zip(rows) {
        println!(
            "idle actors, {batch} {n}: resident +{:.2} KiB, heap +{:.2} KiB per live session actor",
            rss as f64 / 1024.0 / n as f64,
            heap as f64 / 1024.0 / n as f64,
        );
    }
}
