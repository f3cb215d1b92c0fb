//! Where a database lives, and how connections to it are opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use folio_core::Result;
use rusqlite::{Connection, OpenFlags};

use crate::error::storage;

/// The page size of new databases (existing ones keep theirs). Every page
/// a commit changes is written whole to the log, and again by the
/// checkpoint: a random update of a small document rewrites one leaf page,
/// so smaller pages mean fewer bytes per update. 2 KiB pages hold a
/// document of up to 2,013 bytes without an overflow page; a larger one
/// spills over, and costs about the bytes it would in one 4 KiB page.
/// Against 4 KiB pages, `folio bench update` and `batch10` ran faster with
/// less of the writer's CPU per save; 1 KiB pages gained nothing more and
/// had a longer tail of latencies.
const PAGE_SIZE: i64 = 2048;

/// The log size, in pages, at which the writer finishes a checkpoint itself
/// (125 MiB of 2 KiB pages). The checkpointer thread has copied nearly all
/// of it by then, but each of the writer's checkpoints has a cost of its own
/// (it syncs the database file, and the log starts over): with smaller
/// bounds, `batch10`, whose groups fill the log fastest, spent much of the
/// writer's time in them, and its latency tail grew; `update` is the same
/// either way. On a disk with little room the bound is lower (`space.rs`).
pub(crate) const WRITER_CHECKPOINT_PAGES: i64 = 64_000;

/// The writer's page cache: it reads every document it checks.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Each reader's page cache (mapped pages need none; this serves the WAL).
const READER_CACHE_KIB: i64 = 8 * 1024;

/// How long a connection waits for a lock before reporting the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A database file, or a private in-memory database shared by the engine's
/// connections.
#[derive(Debug)]
pub(crate) enum Location {
    File(PathBuf),
    /// A `memdb` VFS name (`/folio-…`): shared by every connection of this
    /// process that opens it, gone when the last one closes.
    Memory(String),
}

impl Location {
    /// Opens a connection with `flags` added to the location's own.
    fn connect(&self, flags: OpenFlags) -> rusqlite::Result<Connection> {
        let (uri, own) = self.uri();
        match self {
            // The log is written through `vfs.rs`: one write per commit.
            Location::File(_) if crate::vfs::register() => {
                Connection::open_with_flags_and_vfs(uri, own | flags, crate::vfs::NAME)
            }
            _ => Connection::open_with_flags(uri, own | flags),
        }
    }

    fn uri(&self) -> (String, OpenFlags) {
        match self {
            Location::File(path) => (
                path.to_string_lossy().into_owned(),
                OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
            Location::Memory(name) => (
                format!("file:{name}?vfs=memdb"),
                OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        }
    }

    /// The path of the database file, if it has one.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Location::File(path) => Some(path),
            Location::Memory(_) => None,
        }
    }

    /// Opens the writer's connection, creating the database if needed.
    pub(crate) fn open_writer(&self) -> Result<Connection> {
        let connection = self
            .connect(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .map_err(|e| storage("opening the database", e))?;
        configure(&connection, WRITER_CACHE_KIB)?;
        // Only take effect when the database is created (the reserved bytes
        // also at the next VACUUM, which converting a database runs).
        connection
            .pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(|e| storage("setting the page size", e))?;
        if let Location::File(_) = self {
            crate::vfs::reserve_checksum_bytes(&connection)
                .map_err(|e| storage("reserving room for page checksums", e))?;
        }
        if let Location::File(_) = self {
            let mode: String = connection
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(|e| storage("switching to write-ahead logging", e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(storage(
                    "switching to write-ahead logging",
                    rusqlite::Error::InvalidQuery,
                ));
            }
        }
        // COMMIT writes the log without waiting for the disk; with
        // `Durability::Full` the syncer (`sync.rs`) syncs the log before
        // anyone is answered. Checkpoints sync the log and the database.
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| storage("setting durability", e))?;
        // The savepoint of each batch journals the pages it changes: keep
        // that journal in memory, not in a temporary file.
        connection
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| storage("configuring temporary storage", e))?;
        Ok(connection)
    }

    /// Opens the checkpointer's connection to an existing database file.
    pub(crate) fn open_checkpointer(&self) -> Result<Connection> {
        let connection = self
            .connect(OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| storage("opening the checkpoint connection", e))?;
        configure(&connection, READER_CACHE_KIB)?;
        Ok(connection)
    }

    /// Opens a read-only connection.
    pub(crate) fn open_reader(&self) -> Result<Connection> {
        let connection = self
            .connect(OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| storage("opening a read connection", e))?;
        configure(&connection, READER_CACHE_KIB)?;
        Ok(connection)
    }
}

/// How much of the database file a connection maps into memory: none.
/// Mapped reads would save a `read` system call per page, but SQLite
/// unmaps and maps the file again whenever another connection committed,
/// and under a write load that cost more than it saved (`update` was 38 %
/// faster without it).
const MMAP_BYTES: i64 = 0;

fn configure(connection: &Connection, cache_kib: i64) -> Result<()> {
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| storage("configuring the connection", e))?;
    connection
        .pragma_update(None, "mmap_size", MMAP_BYTES)
        .and_then(|()| connection.pragma_update(None, "cache_size", -cache_kib))
        .map_err(|e| storage("configuring the connection", e))?;
    connection.set_prepared_statement_cache_capacity(128);
    Ok(())
}
