//! I/O failures injected below the engine (feature `fault-injection`), so
//! that tests can show what a failing disk does to it: a write to the
//! write-ahead log that fails (cleanly, or after half its bytes landed, as
//! a torn write), a sync of the log that fails, and the same for the
//! database file, which only checkpoints write.
//!
//! The failures are real to SQLite and to the syncers: the file layer
//! (`vfs.rs`) answers SQLite's write with `SQLITE_IOERR_WRITE` and its sync
//! with `SQLITE_IOERR_FSYNC`, and the syncer's `fdatasync` returns `EIO`,
//! exactly where the operating system's error would surface. Nothing else
//! changes, so the engine under test is the engine that ships; without the
//! feature none of this is compiled.
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

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

/// Failures to inject into one embedded database's files; shared with the
/// test that arms them. See the module documentation.
#[derive(Debug, Default)]
pub struct IoFaults {
    log: Armed,
    log_syncs: Armed,
    database: Armed,
    database_syncs: Armed,
    /// Syncs of the log wait while this is held ([`IoFaults::hold_syncs`]).
    syncs_held: Mutex<Held>,
    syncs_released: Condvar,
}

/// Whether syncs of the log wait, and how many wait now.
#[derive(Debug, Default)]
struct Held {
    held: bool,
    waiting: u32,
}

/// How many of the next operations of one kind fail, and how many did.
#[derive(Debug, Default)]
struct Armed {
    left: AtomicU32,
    /// Whether a failing write first writes half of its bytes.
    torn: AtomicBool,
    injected: AtomicU64,
}

impl Armed {
    fn arm(&self, count: u32, torn: bool) {
        self.torn.store(torn, Ordering::Release);
        self.left.store(count, Ordering::Release);
    }

    /// Whether this operation fails, and if so whether it is torn.
    fn take(&self) -> Option<bool> {
        take(&self.left).then(|| {
            self.injected.fetch_add(1, Ordering::AcqRel);
            self.torn.load(Ordering::Acquire)
        })
    }

    fn injected(&self) -> u64 {
        self.injected.load(Ordering::Acquire)
    }
}

impl IoFaults {
    /// Makes the next `count` writes to the write-ahead log fail with an
    /// I/O error. With `torn`, each of them first writes the first half of
    /// its bytes, as a write cut short by the disk would.
    pub fn fail_log_writes(&self, count: u32, torn: bool) {
        self.log.arm(count, torn);
    }

    /// Makes the next `count` syncs (`fdatasync`) of the log by the
    /// syncers fail with `EIO`.
    pub fn fail_syncs(&self, count: u32) {
        self.log_syncs.arm(count, false);
    }

    /// Makes the next `count` writes to the database file (checkpoints
    /// copying pages from the log) fail with an I/O error, torn as in
    /// [`IoFaults::fail_log_writes`]. `0` disarms.
    pub fn fail_database_writes(&self, count: u32, torn: bool) {
        self.database.arm(count, torn);
    }

    /// Makes the next `count` syncs of the database file (the end of a
    /// checkpoint) fail with an I/O error. `0` disarms.
    pub fn fail_database_syncs(&self, count: u32) {
        self.database_syncs.arm(count, false);
    }

    /// Makes the syncers' next syncs of the log wait until
    /// [`IoFaults::release_syncs`]: groups stay committed and not yet
    /// durable for as long as a test needs (a slow disk, held still).
    pub fn hold_syncs(&self) {
        self.held().held = true;
    }

    /// Lets the syncs held by [`IoFaults::hold_syncs`] go on (each fails if
    /// [`IoFaults::fail_syncs`] armed it).
    pub fn release_syncs(&self) {
        self.held().held = false;
        self.syncs_released.notify_all();
    }

    /// Blocks until a sync of the log is waiting at the hold: a group has
    /// committed and is not durable.
    pub fn wait_for_held_sync(&self) {
        let mut held = self.held();
        while held.waiting == 0 {
            held = self
                .syncs_released
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.syncs_held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while syncs are held (a syncer, before its sync).
    fn pass_hold(&self) {
        let mut held = self.held();
        if !held.held {
            return;
        }
        held.waiting += 1;
        self.syncs_released.notify_all();
        while held.held {
            held = self
                .syncs_released
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        held.waiting -= 1;
    }

    /// How many log writes have failed so far because of this.
    pub fn injected_log_writes(&self) -> u64 {
        self.log.injected()
    }

    /// How many syncs of the log have failed so far because of this.
    pub fn injected_syncs(&self) -> u64 {
        self.log_syncs.injected()
    }

    /// How many writes to the database file have failed so far.
    pub fn injected_database_writes(&self) -> u64 {
        self.database.injected()
    }

    /// How many syncs of the database file have failed so far.
    pub fn injected_database_syncs(&self) -> u64 {
        self.database_syncs.injected()
    }

    /// Whether this write to the log fails, and if so whether it is torn.
    pub(crate) fn take_log_write(&self) -> Option<bool> {
        self.log.take()
    }

    /// Whether this write to the database file fails, and if so whether it
    /// is torn.
    pub(crate) fn take_database_write(&self) -> Option<bool> {
        self.database.take()
    }

    /// Whether this sync of the log by a syncer fails.
    fn take_log_sync(&self) -> bool {
        self.log_syncs.take().is_some()
    }

    /// Whether this sync of the database file fails.
    pub(crate) fn take_database_sync(&self) -> bool {
        self.database_syncs.take().is_some()
    }
}

/// Takes one from `count` unless it is zero; whether it did.
fn take(count: &AtomicU32) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// The faults of each database opened with some, by the path of its file
/// (SQLite opens the files by name, and every connection opens its own).
static REGISTERED: Mutex<Vec<(PathBuf, Weak<IoFaults>)>> = Mutex::new(Vec::new());

/// Injects `faults` into the database file at `database` and its log from
/// now on.
pub(crate) fn register(database: PathBuf, faults: &Arc<IoFaults>) {
    let mut registered = REGISTERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    registered.retain(|(path, held)| held.strong_count() > 0 && *path != database);
    registered.push((database, Arc::downgrade(faults)));
}

/// The faults injected into the database file at `database`, if any.
fn for_database(database: &Path) -> Option<Arc<IoFaults>> {
    REGISTERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(path, _)| path == database)
        .and_then(|(_, faults)| faults.upgrade())
}

/// The faults for a database file SQLite opens under `name`.
pub(crate) fn for_database_named(name: &CStr) -> Option<Arc<IoFaults>> {
    for_database(Path::new(OsStr::from_bytes(name.to_bytes())))
}

/// The faults for the log named `wal` (the database's name and `-wal`).
fn for_log(wal: &[u8]) -> Option<Arc<IoFaults>> {
    let database = wal.strip_suffix(b"-wal")?;
    for_database(Path::new(OsStr::from_bytes(database)))
}

/// The faults for a log SQLite opens under `name`.
pub(crate) fn for_log_named(name: &CStr) -> Option<Arc<IoFaults>> {
    for_log(name.to_bytes())
}

/// Whether the next sync of the log at `wal` by a syncer fails, once it
/// may go on (`IoFaults::hold_syncs`).
pub(crate) fn log_sync_fails(wal: &Path) -> bool {
    for_log(wal.as_os_str().as_bytes()).is_some_and(|faults| {
        faults.pass_hold();
        faults.take_log_sync()
    })
}
