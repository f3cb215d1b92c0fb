//! The checkpointer: copies committed pages from the write-ahead log into
//! the database file on its own thread, so the writer's commits pay for
//! little of it.
//!
//! It wakes every [`INTERVAL`], and when the writer committed since its last
//! run, runs a PASSIVE checkpoint: it copies what no reader still needs and
//! never blocks the writer or readers. A checkpoint beside a busy writer
//! never finishes, though, and SQLite restarts the log from its beginning
//! only after one that did: so the writer also checkpoints, between groups,
//! once the log is large (`location.rs`), and finds little left to copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use folio_core::Result;
use rusqlite::Connection;

/// How often the checkpointer looks for new commits.
const INTERVAL: Duration = Duration::from_millis(500);

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
    while !*stopped {
        stopped = wake
            .wait_timeout(stopped, INTERVAL)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
        let now = commits.current();
        if now != seen {
            seen = now;
            // A failed checkpoint loses nothing (the log keeps the pages);
            // the next round tries again.
            let _ = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
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
