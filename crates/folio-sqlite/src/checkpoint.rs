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
//! writer also checkpoints, after the commit that takes the log past its
//! bound (`writer.rs`). Following the writer closely leaves it only the
//! last few milliseconds of commits to copy then. Only one checkpoint runs
//! at a time, and SQLite does not wait for the other: it answers busy and
//! copies nothing. So the two take turns through [`Checkpoints::apart`]:
//! without it, a writer whose checkpoints kept meeting this thread's rounds
//! (slow ones, at a low priority on a busy machine) never restarted its
//! log, which grew without bound.
//!
//! The rounds are frequent because the writer's own checkpoints are then
//! short (run every half second, this thread left the writer a sixth of
//! its time in them). They do not sync the database file: those flushes
//! delayed the log syncs that acknowledge commits. SQLite syncs it once, at
//! the end of the writer's checkpoint.
//!
//! The thread runs at a lower priority than the rest of the process
//! ([`CHECKPOINTER_NICENESS`]): its copying can wait for a free processor,
//! the commits it would delay cannot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use folio_core::Result;
use rusqlite::Connection;

use crate::error::storage;
use crate::health::Health;

/// How often the checkpointer runs while the writer commits.
const BUSY_INTERVAL: Duration = Duration::from_millis(10);

/// How often the checkpointer looks for commits once the writer is idle.
const IDLE_INTERVAL: Duration = Duration::from_millis(250);

/// What the writer and the checkpointer share: the count of the writer's
/// commits (the checkpointer compares it with what it saw), and the turn
/// their checkpoints take.
#[derive(Default)]
pub(crate) struct Checkpoints {
    commits: AtomicU64,
    turn: Mutex<()>,
}

impl Checkpoints {
    /// Called by the writer after each successful COMMIT.
    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// Waits until no other checkpoint of this engine runs, and keeps
    /// others from starting until the guard is dropped.
    pub(crate) fn apart(&self) -> MutexGuard<'_, ()> {
        self.turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running checkpointer; dropping it stops the thread and waits for it.
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(
        connection: Connection,
        commits: Arc<Checkpoints>,
        health: Arc<Health>,
    ) -> Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("folio-sqlite-checkpoint".into())
            .spawn(move || run(&connection, &commits, &health, &signal))
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

fn run(
    connection: &Connection,
    commits: &Checkpoints,
    health: &Health,
    stop: &(Mutex<bool>, Condvar),
) {
    lower_priority();
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
        // next round tries again, unless it found a damaged page. The stop
        // flag stays locked meanwhile, so dropping the engine waits for the
        // round to end.
        let checkpointed = {
            let _apart = commits.apart();
            connection
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|e| storage("copying the log into the database file", e))
        };
        if let Err(error) = checkpointed {
            health.note(&error);
        }
    }
}

/// The checkpointer's niceness: it yields the processor to the writer, the
/// syncers and the request handlers, and copies pages in the time they
/// leave (under a saturating load there is some: every client waiting for
/// a sync). Work that is late here is not lost: the writer finishes the
/// copy itself once the log is large. Against the default niceness, saves
/// per second rose on every workload of `folio bench` and the latency tail
/// shortened.
const CHECKPOINTER_NICENESS: i32 = 10;

/// Lowers this thread's scheduling priority to [`CHECKPOINTER_NICENESS`]
/// (Linux, where a thread has a niceness of its own; any process may lower
/// its own threads). A refusal leaves the thread as it was.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: neither call takes a pointer; `setpriority` on this thread's
    // id changes this thread only. Its result is not needed: refused (a
    // seccomp filter, say), the checkpointer runs at the writer's priority.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::id_t::try_from(thread).unwrap_or_default(),
            CHECKPOINTER_NICENESS,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::path::Path;

    use super::*;

    /// The niceness in a thread's `/proc/…/stat`: the 19th field, the 17th
    /// after the parenthesised name.
    fn niceness(task: &Path) -> Option<i32> {
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(16)?
            .parse()
            .ok()
    }

    /// The niceness of this process's thread named `name` (as `/proc`
    /// shows it: cut to 15 bytes), if it runs.
    fn niceness_of(name: &str) -> Option<i32> {
        std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim_end() == name).then(|| niceness(&task)).flatten()
        })
    }

    #[test]
    fn the_checkpointer_runs_at_a_lower_priority_and_only_it() {
        let commits = Arc::new(Checkpoints::default());
        let checkpointer = Checkpointer::start(
            Connection::open_in_memory().unwrap(),
            commits,
            Arc::default(),
        )
        .unwrap();
        // The thread lowers its own priority as it starts.
        let started = std::time::Instant::now();
        let mut seen = niceness_of("folio-sqlite-ch");
        while seen != Some(CHECKPOINTER_NICENESS) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
            seen = niceness_of("folio-sqlite-ch");
        }
        assert!(seen.is_some_and(|niceness| niceness > 0), "{seen:?}");
        assert_eq!(seen, Some(CHECKPOINTER_NICENESS));
        assert_eq!(niceness(Path::new("/proc/thread-self")), Some(0));
        drop(checkpointer);
        assert_eq!(niceness_of("folio-sqlite-ch"), None, "the thread ended");
    }
}
