//! I/O failures injected below the writer (feature `fault-injection`), so
//! that tests can show what a failing disk does to the engine: a write to
//! the write-ahead log that fails (cleanly, or after half its bytes landed,
//! as a torn write), and a sync of the log that fails.
//!
//! The failures are real to SQLite and to the syncers: the log's file layer
//! (`vfs.rs`) answers SQLite's write with `SQLITE_IOERR_WRITE`, and the
//! syncer's `fdatasync` returns `EIO`, exactly where the operating system's
//! error would surface. Nothing else changes, so the engine under test is
//! the engine that ships; without the feature none of this is compiled.
//!
//! ```
//! use std::sync::Arc;
//! use folio_sqlite::{IoFaults, SqliteEngine, SqliteOptions};
//!
//! # fn main() -> folio_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let faults = Arc::new(IoFaults::default());
//! let engine = SqliteEngine::open(
//!     dir.path().join("faulty.sqlite"),
//!     SqliteOptions { io_faults: Some(faults.clone()), ..SqliteOptions::default() },
//! )?;
//! faults.fail_log_writes(1, false); // the next commit's write fails
//! # drop(engine);
//! # Ok(())
//! # }
//! ```

use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Failures to inject into one embedded database's log; shared with the
/// test that arms them. See the module documentation.
#[derive(Debug, Default)]
pub struct IoFaults {
    /// How many of the next writes to the log fail.
    log_writes: AtomicU32,
    /// Whether a failing write first writes half of its bytes.
    torn: AtomicBool,
    /// How many of the next syncs of the log fail.
    syncs: AtomicU32,
    injected_log_writes: AtomicU64,
    injected_syncs: AtomicU64,
}

impl IoFaults {
    /// Makes the next `count` writes to the write-ahead log fail with an
    /// I/O error. With `torn`, each of them first writes the first half of
    /// its bytes, as a write cut short by the disk would.
    pub fn fail_log_writes(&self, count: u32, torn: bool) {
        self.torn.store(torn, Ordering::Release);
        self.log_writes.store(count, Ordering::Release);
    }

    /// Makes the next `count` syncs (`fdatasync`) of the log fail with `EIO`.
    pub fn fail_syncs(&self, count: u32) {
        self.syncs.store(count, Ordering::Release);
    }

    /// How many log writes have failed so far because of this.
    pub fn injected_log_writes(&self) -> u64 {
        self.injected_log_writes.load(Ordering::Acquire)
    }

    /// How many syncs have failed so far because of this.
    pub fn injected_syncs(&self) -> u64 {
        self.injected_syncs.load(Ordering::Acquire)
    }

    /// Whether this write to the log fails, and if so whether it is torn.
    pub(crate) fn take_log_write(&self) -> Option<bool> {
        take(&self.log_writes).then(|| {
            self.injected_log_writes.fetch_add(1, Ordering::AcqRel);
            self.torn.load(Ordering::Acquire)
        })
    }

    /// Whether this sync of the log fails.
    fn take_sync(&self) -> bool {
        let fails = take(&self.syncs);
        if fails {
            self.injected_syncs.fetch_add(1, Ordering::AcqRel);
        }
        fails
    }
}

/// Takes one from `count` unless it is zero; whether it did.
fn take(count: &AtomicU32) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// The faults of each database opened with some, by the path of its log
/// (SQLite opens the log by name, and every connection opens its own).
static REGISTERED: Mutex<Vec<(PathBuf, Weak<IoFaults>)>> = Mutex::new(Vec::new());

/// Injects `faults` into the log at `wal` from now on.
pub(crate) fn register(wal: PathBuf, faults: &Arc<IoFaults>) {
    let mut registered = REGISTERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    registered.retain(|(path, held)| held.strong_count() > 0 && *path != wal);
    registered.push((wal, Arc::downgrade(faults)));
}

/// The faults injected into the log at `wal`, if any.
fn for_log(wal: &Path) -> Option<Arc<IoFaults>> {
    REGISTERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(path, _)| path == wal)
        .and_then(|(_, faults)| faults.upgrade())
}

/// The faults for a log SQLite opens under `name`.
pub(crate) fn for_log_named(name: &CStr) -> Option<Arc<IoFaults>> {
    for_log(Path::new(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

/// Whether the next sync of the log at `wal` fails.
pub(crate) fn sync_fails(wal: &Path) -> bool {
    for_log(wal).is_some_and(|faults| faults.take_sync())
}
