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
    /// How long each sync of the log by a syncer takes at least, in
    /// microseconds ([`IoFaults::slow_syncs`]).
    sync_delay_micros: AtomicU64,
    /// Whether to record the files for simulated power losses.
    simulate_power_loss: bool,
    /// The files as a disk that can lose power holds them.
    disk: Mutex<Option<Disk>>,
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

    /// Faults that also record every write and sync of the database's files
    /// (before it is opened), so that [`IoFaults::power_loss`] can tell what
    /// a power loss at any moment would leave on the disk.
    pub fn simulating_power_loss() -> Self {
        IoFaults {
            simulate_power_loss: true,
            ..IoFaults::default()
        }
    }

    /// What the disk would hold if the power went out now: every write
    /// synced before this call, and each write not yet synced kept,
    /// dropped, torn to some of its sectors, in an order shuffled by `seed`.
    /// The engine goes on; the files it writes are not these.
    ///
    /// # Panics
    ///
    /// Unless made with [`IoFaults::simulating_power_loss`] and registered
    /// with a database (`SqliteOptions::io_faults`).
    pub fn power_loss(&self, seed: u64) -> PowerLoss {
        self.power_loss_at(seed, || ()).0
    }

    /// [`IoFaults::power_loss`], with `at` run at the instant of the loss:
    /// no write or sync of the files is recorded while it runs, so what it
    /// notes (a tick of the caller's clock) divides what happened before
    /// the loss from what happened after. Every write on the image was
    /// made before `at` ran, and every sync completed before it covers
    /// what the image keeps. Taken before or after the image instead, a
    /// commit sent a moment after the caller's instant could reach the
    /// image, or one acknowledged a moment before it miss it.
    ///
    /// # Panics
    ///
    /// As [`IoFaults::power_loss`].
    pub fn power_loss_at<T>(&self, seed: u64, at: impl FnOnce() -> T) -> (PowerLoss, T) {
        let disk = self.disk();
        let disk = disk
            .as_ref()
            .expect("power losses are simulated for a database opened with these faults");
        let instant = at();
        let mut random = Random::new(seed);
        let image = PowerLoss {
            database: disk.database.after_power_loss(&mut random),
            log: disk.log.after_power_loss(&mut random),
        };
        (image, instant)
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Option<Disk>> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts recording the files of the database at `path` as they are now.
    fn start_disk(&self, path: &Path) {
        if self.simulate_power_loss {
            let mut log = path.as_os_str().to_owned();
            log.push("-wal");
            *self.disk() = Some(Disk {
                database: FileImage::of(path),
                log: FileImage::of(Path::new(&log)),
            });
        }
    }

    /// Runs `record` on the simulated disk, if there is one.
    fn on_disk<T>(&self, record: impl FnOnce(&mut Disk) -> T) -> Option<T> {
        self.disk().as_mut().map(record)
    }

    /// A write of `bytes` at `offset` to the log completed.
    pub(crate) fn record_log_write(&self, bytes: &[u8], offset: i64) {
        self.on_disk(|disk| disk.log.record(Pending::write(bytes, offset)));
    }

    /// The log was truncated to `size`.
    pub(crate) fn record_log_truncate(&self, size: i64) {
        self.on_disk(|disk| {
            disk.log
                .record(Pending::Truncate(u64::try_from(size).unwrap_or(0)))
        });
    }

    /// A sync of the log begins: what it will make durable.
    pub(crate) fn log_sync_begins(&self) -> Option<SyncMark> {
        self.on_disk(|disk| disk.log.sync_begins())
    }

    /// A sync of the log that began at `mark` completed.
    pub(crate) fn log_synced(&self, mark: Option<SyncMark>) {
        if let Some(mark) = mark {
            self.on_disk(|disk| disk.log.synced(mark));
        }
    }

    /// A write of `bytes` at `offset` to the database file completed.
    pub(crate) fn record_database_write(&self, bytes: &[u8], offset: i64) {
        self.on_disk(|disk| disk.database.record(Pending::write(bytes, offset)));
    }

    /// The database file was truncated to `size`.
    pub(crate) fn record_database_truncate(&self, size: i64) {
        self.on_disk(|disk| {
            disk.database
                .record(Pending::Truncate(u64::try_from(size).unwrap_or(0)))
        });
    }

    /// A sync of the database file begins: what it will make durable.
    pub(crate) fn database_sync_begins(&self) -> Option<SyncMark> {
        self.on_disk(|disk| disk.database.sync_begins())
    }

    /// A sync of the database file that began at `mark` completed.
    pub(crate) fn database_synced(&self, mark: Option<SyncMark>) {
        if let Some(mark) = mark {
            self.on_disk(|disk| disk.database.synced(mark));
        }
    }

    /// Makes every sync of the log by the syncers take at least `delay`, as
    /// a slow disk's would: groups stay committed and not yet durable for
    /// that long.
    pub fn slow_syncs(&self, delay: std::time::Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.sync_delay_micros.store(micros, Ordering::Release);
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
    faults.start_disk(&database);
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

/// A syncer's sync of the log at `wal`, with the faults of its database:
/// it waits while syncs are held (`IoFaults::hold_syncs`), fails when armed
/// to, and what it covers becomes durable on the simulated disk.
pub(crate) fn sync_log(
    wal: &Path,
    sync: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Some(faults) = for_log(wal.as_os_str().as_bytes()) else {
        return sync();
    };
    faults.pass_hold();
    let delay = faults.sync_delay_micros.load(Ordering::Acquire);
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_micros(delay));
    }
    if faults.take_log_sync() {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    let began = faults.log_sync_begins();
    sync()?;
    faults.log_synced(began);
    Ok(())
}

// ---- simulated power loss --------------------------------------------------

/// What a simulated disk holds of one file: what is durable for sure (as of
/// its last completed sync), and the writes and truncations since, which a
/// power loss may keep, drop, tear or reorder.
#[derive(Clone, Debug, Default)]
struct FileImage {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// Pending operations dropped by syncs that completed (`pending` holds
    /// the ones after them): syncs are numbered by this.
    settled: u64,
}

/// One operation on a file not yet synced.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

impl Pending {
    fn write(bytes: &[u8], offset: i64) -> Self {
        Pending::Write {
            offset: u64::try_from(offset).unwrap_or(0),
            bytes: bytes.to_vec(),
        }
    }

    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Pending::Write { offset, bytes } => {
                let start = usize::try_from(*offset).unwrap_or(usize::MAX);
                let end = start.saturating_add(bytes.len());
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[start..end].copy_from_slice(bytes);
            }
            Pending::Truncate(size) => {
                image.truncate(usize::try_from(*size).unwrap_or(usize::MAX));
            }
        }
    }
}

impl FileImage {
    /// The image of a file as it is on disk now, taken as durable.
    fn of(path: &Path) -> Self {
        FileImage {
            durable: std::fs::read(path).unwrap_or_default(),
            ..FileImage::default()
        }
    }

    fn record(&mut self, operation: Pending) {
        self.pending.push(operation);
    }

    /// Where a sync that begins now ends: everything recorded so far.
    fn sync_begins(&self) -> SyncMark {
        SyncMark(self.settled + self.pending.len() as u64)
    }

    /// A sync that began at `mark` completed: what was recorded before it
    /// began is durable.
    fn synced(&mut self, SyncMark(mark): SyncMark) {
        let done = usize::try_from(mark.saturating_sub(self.settled))
            .unwrap_or(usize::MAX)
            .min(self.pending.len());
        for operation in self.pending.drain(..done) {
            operation.apply(&mut self.durable);
        }
        self.settled += done as u64;
    }

    /// What the disk may hold after a power loss now: the durable image,
    /// and each pending operation kept, dropped, or (a write) torn to some
    /// of its 512-byte sectors, applied in an order shuffled by `random`.
    fn after_power_loss(&self, random: &mut Random) -> Vec<u8> {
        let mut image = self.durable.clone();
        let mut survivors: Vec<Pending> = Vec::new();
        for operation in &self.pending {
            match (random.below(4), operation) {
                // Dropped.
                (0, _) => {}
                // Torn: some of its sectors landed.
                (1, Pending::Write { offset, bytes }) => {
                    for (index, sector) in bytes.chunks(512).enumerate() {
                        if random.below(2) == 0 {
                            survivors.push(Pending::Write {
                                offset: offset + 512 * index as u64,
                                bytes: sector.to_vec(),
                            });
                        }
                    }
                }
                _ => survivors.push(operation.clone()),
            }
        }
        // Reordered: the disk may have written them in any order.
        for index in (1..survivors.len()).rev() {
            let other = random.below(index as u64 + 1) as usize;
            survivors.swap(index, other);
        }
        for operation in &survivors {
            operation.apply(&mut image);
        }
        image
    }
}

/// How far a sync reaches in a file's recorded operations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncMark(u64);

/// The simulated disk of one database: its file and its log.
#[derive(Debug)]
struct Disk {
    database: FileImage,
    log: FileImage,
}

/// The files of a database after a simulated power loss
/// ([`IoFaults::power_loss`]).
#[derive(Clone, Debug)]
pub struct PowerLoss {
    /// The database file.
    pub database: Vec<u8>,
    /// Its write-ahead log.
    pub log: Vec<u8>,
}

impl PowerLoss {
    /// Writes the files as the database `path` (and `path-wal`), to be
    /// opened as after the power came back.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.database)?;
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        std::fs::write(log, &self.log)
    }
}

/// A small seeded generator (xorshift64*), so a failing power loss can be
/// replayed from its seed.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}
