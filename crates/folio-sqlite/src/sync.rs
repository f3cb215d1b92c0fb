//! The syncers: make a group's commit durable and only then answer its
//! callers, on their own threads, while the writer already runs the next
//! group.
//!
//! The writer connection commits with `synchronous = NORMAL`: COMMIT writes
//! the group's pages to the write-ahead log but does not wait for the disk.
//! A syncer then calls `fdatasync` on the log, which covers every group
//! committed before the call, and answers all of them. So one sync serves
//! every group that committed while the previous one ran, and the writer
//! never waits for the disk.
//!
//! Two syncer threads share the queue of committed groups. When a group
//! commits while one sync is under way, the other thread starts a sync at
//! once instead of the group waiting for the first to finish (it waited 85
//! us on average, a tenth of a save's latency in `folio bench update`; this
//! disk completes two overlapping syncs faster than two in a row). A sync
//! answers every group committed before it started, so whichever finishes
//! first answers the groups it covers, in commit order.
//!
//! Nothing is acknowledged before it is on disk, and nothing is shown to a
//! reader before it is on disk either: SQLite's readers see a group as soon
//! as it commits, so the engine's reads wait until the horizon (published
//! here, after the sync) covers the newest version they would show
//! (`Shared::durable` in `lib.rs`). A version someone read is never erased
//! by a power loss, and its change vector never comes back naming another.
//!
//! The changes feed's horizon moves with the answers: a group's last etag is
//! published once the group is durable, never before.
//!
//! If a sync fails, the data of the groups waiting for it may not be on
//! disk: they and every group still waiting are answered with an error
//! (reads that would show them too), and the engine refuses every later
//! write (the failure is reported, never
//! retried: a failed `fsync` can leave the kernel believing the pages are
//! clean). Each syncer syncs through a file descriptor of its own, so that
//! a write-back error is reported to every sync that covered the page, not
//! only to the first one that asks.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use folio_core::{ChangeHorizon, CommitResult, EngineError, EngineErrorKind, Error, Result};
use tokio::sync::oneshot;

use crate::health::Health;

/// A caller waiting for its batch's verdict.
pub(crate) type Reply = (oneshot::Sender<CommitResult>, CommitResult);

/// The error of a write committed to the log whose sync failed: it is in
/// doubt, whole or not at all, until the database is reopened.
pub(crate) fn sync_failure() -> Error {
    Error::InDoubt(folio_core::InDoubt::new(
        None,
        "syncing the write-ahead log to disk failed, so it may or may not be on disk; the \
         embedded database takes no more writes until it is reopened (check the disk), and \
         reopened it tells",
    ))
}

/// The error of a write refused, with nothing written, because an earlier
/// sync failed.
pub(crate) fn refused_after_sync_failure() -> Error {
    Error::Engine(EngineError::new(
        EngineErrorKind::Io,
        "an earlier sync of the write-ahead log to disk failed, so the embedded database takes \
         no more writes until it is reopened (check the disk); nothing of this batch was written",
    ))
}

/// How many syncs may be under way at once.
const SYNCERS: usize = 2;

/// What the writer is done with once a group committed (its batches, the
/// cache entries it replaced): freed by whoever answers the group, after
/// answering, so that the writer does not spend its time on it.
pub(crate) type Spent = Box<dyn Send>;

/// Groups committed and not yet durable, shared by the syncer threads.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a group arrives or the engine closes.
    arrived: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Committed groups, oldest first: sequence number, replies, last etag,
    /// and what the writer is done with (freed here, after answering).
    waiting: VecDeque<(u64, Vec<Reply>, u64, Spent)>,
    /// The sequence number of the last group queued.
    last: u64,
    /// The last group a sync already under way (or done) covers.
    covered: u64,
    closed: bool,
}

/// Answers callers, after a sync when their writes must be durable, and
/// publishes the changes feed's horizon at the same moment.
pub(crate) enum Acknowledger {
    /// Answer at once (in-memory databases, `Durability::Relaxed`).
    Immediate(Arc<ChangeHorizon>),
    /// Answer after syncing the log, on the syncer threads.
    Synced {
        queue: Arc<Queue>,
        threads: Vec<JoinHandle<()>>,
    },
}

impl Acknowledger {
    /// Syncers for the log at `wal_path`, which exists.
    ///
    /// Each syncer's descriptor of the log is opened here, before any write:
    /// a commit never needs a new descriptor, so running out of them (too
    /// many connections or databases) fails the opening of a database, not
    /// a sync, and only a sync that really failed stops the engine. The log
    /// is synced once here too: what a crashed process left in it (in the
    /// operating system's cache) is durable before readers are shown it.
    pub(crate) fn synced(
        wal_path: PathBuf,
        health: Arc<Health>,
        horizon: Arc<ChangeHorizon>,
    ) -> Result<Self> {
        let mut logs = Vec::with_capacity(SYNCERS);
        for _ in 0..SYNCERS {
            let log = File::open(&wal_path).map_err(|error| {
                // Out of descriptors is a passing shortage: try again later.
                let (kind, why) = match error.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => (
                        EngineErrorKind::Busy,
                        "out of file descriptors: try again later",
                    ),
                    _ => (EngineErrorKind::Io, "check the disk"),
                };
                Error::Engine(
                    EngineError::new(
                        kind,
                        format!(
                            "opening the write-ahead log {} failed ({why})",
                            wal_path.display()
                        ),
                    )
                    .with_source(error),
                )
            })?;
            logs.push(log);
        }
        if let Some(log) = logs.first() {
            #[cfg(feature = "fault-injection")]
            let synced = crate::faults::sync_log(&wal_path, || log.sync_data());
            #[cfg(not(feature = "fault-injection"))]
            let synced = log.sync_data();
            synced.map_err(|error| {
                Error::Engine(
                    EngineError::new(EngineErrorKind::Io, "syncing the write-ahead log failed")
                        .with_source(error),
                )
            })?;
        }
        Self::start(wal_path, logs, health, horizon)
    }

    /// Syncer threads, one per descriptor in `logs`.
    fn start(
        wal_path: PathBuf,
        logs: Vec<File>,
        health: Arc<Health>,
        horizon: Arc<ChangeHorizon>,
    ) -> Result<Self> {
        let queue = Arc::new(Queue::default());
        let mut threads = Vec::with_capacity(SYNCERS);
        for log in logs {
            let syncer = Syncer {
                wal_path: wal_path.clone(),
                log,
                queue: queue.clone(),
                health: health.clone(),
                horizon: horizon.clone(),
            };
            let thread = std::thread::Builder::new()
                .name("folio-sqlite-sync".into())
                .spawn(move || syncer.run());
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    close(&queue, threads);
                    return Err(Error::Engine(
                        EngineError::new(EngineErrorKind::Other, "starting a sync thread failed")
                            .with_source(error),
                    ));
                }
            }
        }
        Ok(Acknowledger::Synced { queue, threads })
    }

    /// Answers `replies` once their group, whose last etag is `last_etag`,
    /// is durable; then drops `spent`.
    pub(crate) fn acknowledge(&self, replies: Vec<Reply>, last_etag: u64, spent: Spent) {
        match self {
            Acknowledger::Immediate(horizon) => {
                horizon.publish(last_etag);
                answer(replies);
                drop(spent);
            }
            Acknowledger::Synced { queue, .. } => {
                let mut state = lock(&queue.state);
                state.last += 1;
                let sequence = state.last;
                state
                    .waiting
                    .push_back((sequence, replies, last_etag, spent));
                drop(state);
                queue.arrived.notify_one();
            }
        }
    }
}

impl Drop for Acknowledger {
    fn drop(&mut self) {
        if let Acknowledger::Synced { queue, threads } = self {
            // The syncers answer everyone queued, then end.
            close(queue, std::mem::take(threads));
        }
    }
}

fn close(queue: &Queue, threads: Vec<JoinHandle<()>>) {
    lock(&queue.state).closed = true;
    queue.arrived.notify_all();
    for thread in threads {
        let _ = thread.join();
    }
}

/// The queue's state; a syncer that panicked left it consistent (every
/// change is one statement), so a poisoned lock is taken over.
fn lock(state: &Mutex<QueueState>) -> MutexGuard<'_, QueueState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One syncer thread.
struct Syncer {
    /// The log's path, naming it for fault injection in tests.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    wal_path: PathBuf,
    /// The log, through this syncer's own file descriptor.
    log: File,
    queue: Arc<Queue>,
    health: Arc<Health>,
    horizon: Arc<ChangeHorizon>,
}

impl Syncer {
    fn run(self) {
        loop {
            // Wait for a group no sync covers yet.
            let mut state = lock(&self.queue.state);
            while state.last == state.covered {
                if state.closed {
                    return;
                }
                state = self
                    .queue
                    .arrived
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            let target = state.last;
            state.covered = target;
            drop(state);

            let synced = if self.health.sync_failed() {
                Err(std::io::Error::other("an earlier sync failed"))
            } else {
                self.sync()
            };

            let mut state = lock(&self.queue.state);
            let mut done = Vec::new();
            let mut spent = Vec::new();
            let mut last_etag = 0;
            while state
                .waiting
                .front()
                .is_some_and(|(sequence, ..)| *sequence <= target)
            {
                if let Some((_, replies, etag, garbage)) = state.waiting.pop_front() {
                    done.extend(replies);
                    spent.push(garbage);
                    last_etag = last_etag.max(etag);
                }
            }
            if synced.is_err() || self.health.sync_failed() {
                // Whatever waits may lie on the pages that failed.
                self.health.fail_sync();
                for (_, replies, _, garbage) in state.waiting.drain(..) {
                    done.extend(replies);
                    spent.push(garbage);
                }
                drop(state);
                fail(done);
            } else {
                // Published under the lock, so the horizon moves in order.
                self.horizon.publish(last_etag);
                drop(state);
                answer(done);
            }
            drop(spent);
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        #[cfg(feature = "fault-injection")]
        return crate::faults::sync_log(&self.wal_path, || self.log.sync_data());
        #[cfg(not(feature = "fault-injection"))]
        self.log.sync_data()
    }
}

/// Sends every verdict.
pub(crate) fn answer(replies: Vec<Reply>) {
    for (reply, verdict) in replies {
        // A caller that went away no longer needs its answer.
        let _ = reply.send(verdict);
    }
}

fn fail(replies: Vec<Reply>) {
    for (reply, _) in replies {
        let _ = reply.send(Err(sync_failure()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `groups` groups of three replies from four threads at once;
    /// returns the receivers with the last etag of their group.
    fn acknowledge_many(
        acknowledger: &Acknowledger,
        groups: u64,
    ) -> Vec<(oneshot::Receiver<CommitResult>, u64)> {
        let receivers = Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let etag = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        if etag > groups {
                            break;
                        }
                        let mut replies = Vec::new();
                        for _ in 0..3 {
                            let (sender, receiver) = oneshot::channel();
                            replies.push((sender, Ok(Ok(folio_core::Committed::default()))));
                            receivers.lock().unwrap().push((receiver, etag));
                        }
                        acknowledger.acknowledge(replies, etag, Box::new(()));
                    }
                });
            }
        });
        receivers.into_inner().unwrap()
    }

    #[test]
    fn every_group_is_answered_after_a_sync_and_the_horizon_reaches_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"log").unwrap();
        let health = Arc::new(Health::default());
        let horizon = Arc::new(ChangeHorizon::new(0));
        let acknowledger =
            Acknowledger::synced(wal.clone(), health.clone(), horizon.clone()).unwrap();
        let receivers = acknowledge_many(&acknowledger, 500);
        // Closing waits for every queued group to be synced and answered.
        drop(acknowledger);
        assert_eq!(receivers.len(), 1500);
        for (mut receiver, etag) in receivers {
            let verdict = receiver
                .try_recv()
                .expect("answered before the close returned");
            assert!(matches!(verdict, Ok(Ok(_))), "group {etag}: {verdict:?}");
        }
        assert_eq!(horizon.current(), 500);
        assert!(!health.sync_failed());
    }

    #[test]
    fn a_log_that_cannot_be_opened_fails_the_engines_start_not_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let health = Arc::new(Health::default());
        let horizon = Arc::new(ChangeHorizon::new(0));
        let error = Acknowledger::synced(
            dir.path().join("missing-wal"),
            health.clone(),
            horizon.clone(),
        )
        .err()
        .expect("a missing log cannot be synced");
        assert!(
            error.to_string().contains("opening the write-ahead log"),
            "{error}"
        );
        assert!(
            !health.sync_failed(),
            "nothing was written, nothing is in doubt"
        );
    }

    #[test]
    fn a_failed_sync_fails_every_waiting_group_and_all_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"log").unwrap();
        let health = Arc::new(Health::default());
        let horizon = Arc::new(ChangeHorizon::new(0));
        // Syncers whose descriptors name a special file, which cannot be
        // synced (EINVAL): every sync fails, as on a failing disk.
        let logs = (0..SYNCERS)
            .map(|_| File::open("/dev/null").unwrap())
            .collect();
        let acknowledger = Acknowledger::start(wal, logs, health.clone(), horizon.clone()).unwrap();
        let receivers = acknowledge_many(&acknowledger, 50);
        drop(acknowledger);
        for (mut receiver, etag) in receivers {
            let verdict = receiver.try_recv().expect("answered");
            // In doubt when the failed sync covered it; refused after.
            assert!(
                matches!(verdict, Err(Error::InDoubt(_) | Error::Engine(_))),
                "group {etag} is not durable: {verdict:?}"
            );
        }
        assert!(health.sync_failed());
        assert_eq!(horizon.current(), 0, "nothing durable is published");
    }
}
