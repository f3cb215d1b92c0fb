//! Where a database lives, and how connections to it are opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use folio_core::Result;
use rusqlite::{Connection, OpenFlags};

use crate::Durability;
use crate::error::storage;

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
    pub(crate) fn open_writer(&self, durability: Durability) -> Result<Connection> {
        let (uri, flags) = self.uri();
        let connection = Connection::open_with_flags(
            uri,
            flags | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .map_err(|e| storage("opening the database", e))?;
        configure(&connection, WRITER_CACHE_KIB)?;
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
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        connection
            .pragma_update(None, "synchronous", synchronous)
            .map_err(|e| storage("setting durability", e))?;
        Ok(connection)
    }

    /// Opens a read-only connection.
    pub(crate) fn open_reader(&self) -> Result<Connection> {
        let (uri, flags) = self.uri();
        let connection = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| storage("opening a read connection", e))?;
        configure(&connection, READER_CACHE_KIB)?;
        Ok(connection)
    }
}

/// How much of the database file a connection maps into memory: reads of
/// mapped pages are memory copies instead of `read` system calls.
const MMAP_BYTES: i64 = 1 << 30;

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
