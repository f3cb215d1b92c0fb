//! Room on the disk: what the writer does when it runs out, so that a full
//! disk costs writes and nothing else, and freeing a little space is enough
//! for them to resume.
//!
//! A database file's engine keeps a **reserve**: a file beside the database
//! (`NAME.sqlite-reserve`, [`SqliteOptions::reserve_bytes`]) holding real
//! disk blocks, made when the engine opens and removed when it closes.
//! When a write fails for want of room (`SQLITE_FULL`), the engine is
//! **full**:
//!
//! * it gives the reserve back, and copies its log into the database file
//!   and empties it (a TRUNCATE checkpoint, `writer.rs`): the copy may grow
//!   the file, and the reserve is the room for that; emptying the log
//!   returns its blocks to the disk, but for [`LOG_ROOM`] it keeps for the
//!   deletes to come. Without this, freed space was taken by the
//!   checkpoints copying the log, and the log could never start over, so
//!   no write fitted again, not even a delete, not even after a restart;
//! * it refuses batches that put something, as full (`EngineErrorKind::Full`),
//!   before trying them: a batch that only deletes or checks is taken
//!   (deleting is how a user makes room);
//! * once the disk has the reserve and [`RESUME_MARGIN`] free again, it
//!   takes its reserve back and takes writes.
//!
//! The log is **bounded by the room left**, too: the writer finishes a
//! checkpoint itself (and the log starts over) at a size of at most a
//! quarter of the free space ([`Space::log_pages`]), so a log never grows
//! into the last of the disk.
//!
//! [`SqliteOptions::reserve_bytes`]: crate::SqliteOptions::reserve_bytes

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use folio_core::{EngineError, EngineErrorKind, Error};

use crate::health::Health;

/// Free space beyond the reserve the disk needs before a full engine takes
/// writes again: room for the log to hold some groups.
pub(crate) const RESUME_MARGIN: u64 = 4 << 20;

/// Room kept for the log once it is emptied on a full disk: blocks given to
/// the log file beyond its end (it keeps its size), so that deletes, which
/// are taken while the disk is full, write into blocks the log already has.
pub(crate) const LOG_ROOM: u64 = 1 << 20;

/// How often an engine that is not full looks at the free space while
/// there is plenty of it.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Below this much free space the writer looks at it before every group:
/// a writer fills a gigabyte in seconds, and a log bound set from what was
/// free a second ago would let the log hold more than the reserve can
/// absorb when the database file must take it in on a full disk.
const CLOSE_WATCH: u64 = 1 << 30;

/// The writer's view of the room on its disk.
pub(crate) struct Space {
    /// The reserve file, for a database file (`None` in memory).
    reserve: Option<PathBuf>,
    reserve_bytes: u64,
    /// Whether the reserve file holds its blocks now.
    reserved: bool,
    /// Shared with readers and `Engine::health`.
    full: bool,
    last_check: Option<Instant>,
    /// The free bytes the last check found.
    last_free: u64,
}

impl Space {
    /// The space of the database at `database` (`None`: in memory, where
    /// there is no disk to run out of), keeping `reserve_bytes` in reserve;
    /// full from the start when there is no room for the reserve.
    pub(crate) fn open(database: Option<&Path>, reserve_bytes: u64, health: &Health) -> Self {
        let mut space = Space {
            reserve: database.map(|path| sibling(path, "-reserve")),
            reserve_bytes,
            reserved: false,
            full: false,
            last_check: None,
            last_free: 0,
        };
        if space.reserve.is_some() && reserve_bytes > 0 && !space.take_reserve() {
            space.full = true;
            health.set_full(true);
        }
        space
    }

    /// Whether writes that put something are refused now. When full, looks
    /// at the free space each time, and resumes once there is room.
    pub(crate) fn full(&mut self, health: &Health) -> bool {
        if self.full && self.room_to_resume() && (self.reserve_bytes == 0 || self.take_reserve()) {
            self.full = false;
            health.set_full(false);
        }
        self.full
    }

    /// A write failed for want of room: the engine is full, and gives its
    /// reserve back (the caller then empties the log).
    pub(crate) fn ran_out(&mut self, health: &Health) {
        self.full = true;
        health.set_full(true);
        self.release_reserve();
    }

    /// Once a second, or before every group while less than
    /// [`CLOSE_WATCH`] is free, the log size in pages at which the writer
    /// should checkpoint, given the free space: a quarter of it, between
    /// `minimum` and `maximum` pages of `page_size`.
    pub(crate) fn log_pages(&mut self, page_size: u64, minimum: i64, maximum: i64) -> Option<i64> {
        let now = Instant::now();
        if self.reserve.is_none()
            || (self.last_free >= CLOSE_WATCH
                && self
                    .last_check
                    .is_some_and(|last| now.duration_since(last) < CHECK_INTERVAL))
        {
            return None;
        }
        self.last_check = Some(now);
        let free = self.free_bytes()?;
        self.last_free = free;
        let pages = i64::try_from(free / 4 / page_size.max(1)).unwrap_or(i64::MAX);
        Some(pages.clamp(minimum, maximum))
    }

    /// The error a batch that puts something gets while the disk is full.
    pub(crate) fn refusal(&self) -> Error {
        Error::Engine(EngineError::new(
            EngineErrorKind::Full,
            format!(
                "the disk is full: the database takes no writes but deletes until {} MiB are free \
                 on its disk; nothing of this batch was written (free some space, or delete)",
                (self.reserve_bytes + RESUME_MARGIN).div_ceil(1 << 20)
            ),
        ))
    }

    /// Whether the disk has the reserve and the margin free.
    fn room_to_resume(&self) -> bool {
        let needed = if self.reserved { 0 } else { self.reserve_bytes } + RESUME_MARGIN;
        self.reserve.is_none() || self.free_bytes().is_some_and(|free| free >= needed)
    }

    /// The bytes free for this process on the database's disk.
    fn free_bytes(&self) -> Option<u64> {
        let directory = self.reserve.as_deref()?.parent()?;
        let stats = rustix::fs::statvfs(directory).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// Makes the reserve file hold its blocks; whether it does.
    fn take_reserve(&mut self) -> bool {
        let Some(path) = &self.reserve else {
            return true;
        };
        if self.reserved {
            return true;
        }
        let taken = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .and_then(|file| {
                rustix::fs::fallocate(
                    &file,
                    rustix::fs::FallocateFlags::empty(),
                    0,
                    self.reserve_bytes,
                )
                .map_err(std::io::Error::from)?;
                file.sync_all()
            });
        self.reserved = taken.is_ok();
        if !self.reserved {
            self.release_reserve();
        }
        self.reserved
    }

    /// Gives the reserve's blocks back to the disk.
    fn release_reserve(&mut self) {
        if let Some(path) = &self.reserve {
            let _ = std::fs::remove_file(path);
        }
        self.reserved = false;
    }

    /// Gives the log, just emptied, [`LOG_ROOM`] of blocks beyond its end
    /// (if the disk has them): deletes then fit in it.
    pub(crate) fn keep_log_room(&self) {
        let Some(reserve) = &self.reserve else {
            return;
        };
        let Some(database) = reserve
            .to_str()
            .and_then(|path| path.strip_suffix("-reserve"))
        else {
            return;
        };
        let log = sibling(Path::new(database), "-wal");
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(log) {
            let _ =
                rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, LOG_ROOM);
        }
    }

    /// Removes the reserve when the engine closes.
    pub(crate) fn close(&mut self) {
        self.release_reserve();
    }
}

/// `path` with `suffix` appended to its name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
