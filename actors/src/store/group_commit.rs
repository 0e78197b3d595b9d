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
        let needs_flush: Vec<bool> = writes.iter().map(|w| !w.rides_next_flush()).collect();
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
        let flush = results
            .iter()
            .zip(&needs_flush)
            .any(|((_, r), needs)| r.is_ok() && *needs);
        if durability == Durability::Flushed && flush {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ScopedKey;
    use crate::registry::NewSession;
    use crate::store::Batch;

    /// An engine that applies nothing and counts its flushes.
    #[derive(Default)]
    struct Counting {
        flushes: AtomicU64,
    }

    impl Engine for Counting {
        fn apply(&self, _write: Write) -> Result<Written, StoreError> {
            Ok(Written::Done)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn create(hidden: bool, key: Option<&str>) -> Write {
        let (record, first) = NewSession {
            owner: "local".into(),
            provider: "echo".into(),
            key: key.map(String::from),
            hidden,
            ..NewSession::default()
        }
        .into_record();
        let key = key.map(|k| ScopedKey {
            owner: "local".into(),
            project: None,
            key: k.into(),
        });
        Write::Create {
            record,
            first,
            key,
            rest: Box::default(),
        }
    }

    /// Submits `write` and waits for its confirmation.
    fn confirm(writer: &GroupCommitter, write: Write) -> Result<Written, StoreError> {
        let (tx, rx) = mpsc::channel();
        writer.submit(
            write,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().expect("confirmed")
    }

    #[test]
    fn a_one_off_create_rides_the_next_flush_and_everything_else_is_flushed_first() {
        let engine = Arc::new(Counting::default());
        let writer = GroupCommitter::start(engine.clone(), Durability::Flushed).expect("writer");
        let flushes = || engine.flushes.load(Ordering::SeqCst);

        confirm(&writer, create(true, None)).expect("one-off create");
        assert_eq!(
            flushes(),
            0,
            "a hidden keyless create is confirmed once applied"
        );
        let session = crate::ids::SessionId::new();
        confirm(
            &writer,
            Write::Commit {
                session,
                batch: Batch::default(),
            },
        )
        .expect("commit");
        assert_eq!(flushes(), 1, "the next write's flush makes it durable");

        for write in [
            create(false, None),
            create(true, Some("k")),
            create(false, Some("j")),
        ] {
            let before = flushes();
            confirm(&writer, write).expect("create");
            assert_eq!(
                flushes(),
                before + 1,
                "any other create is flushed before it is confirmed"
            );
        }
    }
}
