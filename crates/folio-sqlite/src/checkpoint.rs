//! The checkpointer: copies committed pages from the write-ahead log into
//! the database file on its own thread, so the writer's commits pay for
//! little of it.
//!
//! While the writer commits, it runs a PASSIVE checkpoint every
//! [`BUSY_INTERVAL`]: it copies what no reader still needs and never blocks
//! the writer or readers. When nothing was committed since its last round it
//! waits [`IDLE_INTERVAL`] before looking again.
//!
//! A checkpoint beside a busy writer never finishes, though, and SQLite
//! restarts the log from its beginning only after one that did: so the
//! writer also checkpoints, between groups, once the log is large
//! (`location.rs`). Following the writer closely leaves it only the last
//! few milliseconds of commits to copy then. (Measured under 32 clients of
//! updates: the writer spent 17 % of its time in its own checkpoints when
//! this thread ran every half second; every 10 ms, its CPU per save fell by
//! about 9 %. Syncing the database file after each round as well moved the
//! rest off the writer, but its disk flushes delayed the log syncs that
//! acknowledge commits, and throughput fell: SQLite syncs the database file
//! once, at the end of the writer's checkpoint.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use folio_core::Result;
use rusqlite::Connection;

/// How often the checkpointer runs while the writer commits.
const BUSY_INTERVAL: Duration = Duration::from_millis(10);

/// How often the checkpointer looks for commits once the writer is idle.
const IDLE_INTERVAL: Duration = Duration::from_millis(250);

/// Counts the writer's commits; the checkpointer compares it with what it saw.
#[derive(Default)]
pub(crate) struct CommitCounter(AtomicU64);

impl CommitCounter {
    /// Called by the writer after each successful COMMIT.
    pub(crate) fn committed(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The running checkpointer; dropping it stops the thread and waits for it.
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(connection: Connection, commits: Arc<CommitCounter>) -> Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("folio-sqlite-checkpoint".into())
            .spawn(move || run(&connection, &commits, &signal))
            .map_err(|e| {
                folio_core::Error::Engine(
                    folio_core::EngineError::new(
                        folio_core::EngineErrorKind::Other,
                        "starting the checkpoint thread failed",
                    )
                    .with_source(e),
                )
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(connection: &Connection, commits: &CommitCounter, stop: &(Mutex<bool>, Condvar)) {
    let mut seen = commits.current();
    let (stopped, wake) = stop;
    let mut stopped = stopped
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut interval = IDLE_INTERVAL;
    while !*stopped {
        stopped = wake
            .wait_timeout(stopped, interval)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
        let now = commits.current();
        if now == seen {
            interval = IDLE_INTERVAL;
            continue;
        }
        seen = now;
        interval = BUSY_INTERVAL;
        // A failed checkpoint loses nothing (the log keeps the pages); the
        // next round tries again. The stop flag stays locked meanwhile, so
        // dropping the engine waits for the round to end.
        let _ = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
