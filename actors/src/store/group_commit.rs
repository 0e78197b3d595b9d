//! Group commit: one writer thread per store applies submitted writes in order, flushes once
//! per group, and confirms every write of the group when the group is on disk.
//!
//! Whatever is submitted while a flush runs waits in the channel and forms the next group, so
//! under load one fsync serves many writes from many sessions, and with a single writer nothing
//! waits longer than one flush it did not need. No fsync ever runs on an actor thread.

use super::{Durability, StoreError, Write, WriteDone, Written};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The most writes applied before a flush: bounds how long the first write of a busy group
/// waits for its confirmation.
const MAX_GROUP: usize = 4096;

/// What the writer needs of a storage engine: apply one write (atomically, without forcing it
/// to disk) and force everything applied so far to disk.
pub trait Engine: Send + Sync + 'static {
    /// Applies a write; it need not be durable yet.
    fn apply(&self, write: Write) -> Result<Written, StoreError>;
    /// Applies a group of writes in order, each with its own answer (an engine may share work
    /// between them, as long as each answer is what the write alone would have got).
    fn apply_group(&self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        writes.into_iter().map(|w| self.apply(w)).collect()
    }
    /// Makes every applied write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Counts of the writer's work, for benchmarks and operators.
#[derive(Debug, Default)]
pub struct GroupFigures {
    /// Writes confirmed (or failed).
    pub writes: AtomicU64,
    /// Flushes (groups) done.
    pub groups: AtomicU64,
}

/// The writer thread of one store and the door to it.
pub struct GroupCommitter {
    /// Where writes are submitted; `None` once the committer is being dropped.
    tx: Option<mpsc::Sender<(Write, WriteDone)>>,
    /// The writer, joined on drop so the engine is closed when the store is.
    thread: Option<JoinHandle<()>>,
    /// Writes and groups so far.
    pub figures: Arc<GroupFigures>,
}

impl GroupCommitter {
    /// Starts the writer thread over `engine`.
    pub fn start<E: Engine>(engine: Arc<E>, durability: Durability) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(Write, WriteDone)>();
        let figures = Arc::new(GroupFigures::default());
        let counted = figures.clone();
        let thread = std::thread::Builder::new()
            .name("troupe-store-writer".into())
            .spawn(move || run_writer(engine.as_ref(), &rx, durability, &counted))?;
        Ok(GroupCommitter {
            tx: Some(tx),
            thread: Some(thread),
            figures,
        })
    }

    /// Hands a write to the writer; `done` is called once it is durable or has failed.
    pub fn submit(&self, write: Write, done: WriteDone) {
        let Some(tx) = &self.tx else {
            done(Err(stopped()));
            return;
        };
        if let Err(mpsc::SendError((_, done))) = tx.send((write, done)) {
            done(Err(stopped()));
        }
    }
}

impl Drop for GroupCommitter {
    /// Lets the writer finish what was submitted, then waits for it.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Engine("the store's writer stopped".into())
}

/// The writer's loop: take what is waiting (at least one write), apply it in order, flush
/// once, confirm in order.
fn run_writer<E: Engine>(
    engine: &E,
    rx: &mpsc::Receiver<(Write, WriteDone)>,
    durability: Durability,
    figures: &GroupFigures,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (writes, dones): (Vec<Write>, Vec<WriteDone>) = group.into_iter().unzip();
        let n = writes.len();
        // A panicking engine must still answer every waiter: a write nobody confirms would
        // leave its session waiting forever.
        let answers = catch_unwind(AssertUnwindSafe(|| engine.apply_group(writes)))
            .ok()
            .filter(|answers| answers.len() == n)
            .unwrap_or_else(|| {
                (0..n)
                    .map(|_| Err(StoreError::Engine("the storage engine panicked".into())))
                    .collect()
            });
        let mut results: Vec<_> = dones.into_iter().zip(answers).collect();
        if durability == Durability::Flushed && results.iter().any(|(_, r)| r.is_ok()) {
            let flushed = catch_unwind(AssertUnwindSafe(|| engine.flush()))
                .unwrap_or_else(|_| Err(StoreError::Engine("the storage engine panicked".into())));
            if let Err(e) = flushed {
                for (_, result) in results.iter_mut() {
                    if result.is_ok() {
                        *result = Err(e.clone());
                    }
                }
            }
        }
        figures.groups.fetch_add(1, Ordering::Relaxed);
        figures
            .writes
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        for (done, result) in results {
            done(result);
        }
    }
}
