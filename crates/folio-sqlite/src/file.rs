//! The database file itself, before the engine opens it: created whole or
//! not at all, refused when it cannot be a Folio database, and converted to
//! page checksums (`vfs.rs`) when an older Folio wrote it.
//!
//! * **Creation** happens in a temporary file beside the database, which is
//!   given its layout, synced, and renamed into place (the directory
//!   synced too). So a database file that exists is complete: an empty file
//!   is damage (a truncation, a copy gone wrong), refused with an error
//!   instead of becoming a new, empty database under the old name.
//! * **Conversion**: a file whose pages reserve no room for checksums (an
//!   older layout) is copied into a new file that does (`VACUUM INTO`, after
//!   its log is checkpointed), and the copy replaces it the same way. The
//!   file is checksummed from then on.
//!
//! Both run under the database's lock (`lib.rs`), before any connection of
//! the engine opens.

use std::io::Read;
use std::path::{Path, PathBuf};

use folio_core::{EngineError, EngineErrorKind, Error, Result};

use crate::error::storage;
use crate::location::Location;
use crate::vfs::RESERVED_BYTES;

/// The first bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What the first page of a database file says of it.
enum Header {
    /// No file.
    Missing,
    /// A file of no bytes, and no log with anything in it.
    Empty,
    /// A file whose content is (or starts) in its log: not yet checkpointed.
    InLog,
    /// A SQLite database whose pages reserve this many bytes.
    Reserving(u8),
    /// Not a SQLite database at all.
    Foreign,
}

/// Makes the database file at `path` ready for the engine: creates it when
/// missing, converts it when its pages carry no checksums, refuses it when
/// it is empty or not a database. Afterwards its pages carry checksums.
pub(crate) fn prepare(path: &Path) -> Result<()> {
    match header(path)? {
        Header::Missing => create(path),
        Header::Empty => Err(damaged(format!(
            "the database file {} is empty: it is not a Folio database (a database file is \
             never empty: was it truncated or copied while written?). Restore it from a backup, \
             or remove it to start an empty database",
            path.display()
        ))),
        Header::Foreign => Err(damaged(format!(
            "{} is not a database file (it does not start as one): restore it from a backup",
            path.display()
        ))),
        Header::Reserving(reserved) if reserved == RESERVED_BYTES => Ok(()),
        Header::Reserving(_) | Header::InLog => convert(path),
    }
}

fn header(path: &Path) -> Result<Header> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Header::Missing),
        Err(error) => return Err(io("reading the database file", path, error)),
    };
    let mut first = Vec::with_capacity(100);
    (&mut file)
        .take(100)
        .read_to_end(&mut first)
        .map_err(|error| io("reading the database file", path, error))?;
    if first.is_empty() {
        let log_size =
            std::fs::metadata(sibling(path, "-wal")).map_or(0, |metadata| metadata.len());
        return Ok(if log_size == 0 {
            Header::Empty
        } else {
            Header::InLog
        });
    }
    if first.len() < 100 || &first[..16] != MAGIC {
        return Ok(Header::Foreign);
    }
    Ok(Header::Reserving(first[20]))
}

/// Creates the database at `path` in a temporary file, and moves it into
/// place once it is complete and synced.
fn create(path: &Path) -> Result<()> {
    let temporary = temporary_beside(path, "creating");
    let created = (|| {
        let mut connection = Location::File(temporary.clone()).open_writer()?;
        crate::schema::open(&mut connection)?;
        connection
            .close()
            .map_err(|(_, error)| storage("closing the new database", error))
    })();
    finish(created, &temporary, path)
}

/// Copies the database at `path`, whose pages carry no checksums, into a
/// new file whose pages do, and puts the copy in its place.
fn convert(path: &Path) -> Result<()> {
    let temporary = temporary_beside(path, "converting");
    let converted = (|| {
        // Opening recovers the log; the checkpoint empties it into the file.
        let connection = Location::File(path.to_owned()).open_writer()?;
        connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(|e| storage("checkpointing the database", e))
            .and_then(|busy| {
                if busy == 0 {
                    Ok(())
                } else {
                    Err(Error::Engine(EngineError::new(
                        EngineErrorKind::Busy,
                        "the database's log could not be emptied before converting it",
                    )))
                }
            })?;
        // `open_writer` asked for the reserved bytes; VACUUM INTO makes them.
        connection
            .execute("VACUUM INTO ?1", [temporary.to_string_lossy()])
            .map_err(|e| storage("copying the database into checksummed pages", e))?;
        connection
            .close()
            .map_err(|(_, error)| storage("closing the database", error))?;
        // The old log and index must not meet the new file.
        for suffix in ["-wal", "-shm"] {
            match std::fs::remove_file(sibling(path, suffix)) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io("removing the old log", path, error)),
            }
        }
        Ok(())
    })();
    finish(converted, &temporary, path)
}

/// Syncs the complete `temporary` file, renames it to `path` and syncs the
/// directory; on an earlier failure, removes `temporary` and returns it.
fn finish(done: Result<()>, temporary: &Path, path: &Path) -> Result<()> {
    let moved = done.and_then(|()| {
        let sync = |file: &Path| {
            std::fs::File::open(file)
                .and_then(|file| file.sync_all())
                .map_err(|error| io("syncing the database file", file, error))
        };
        sync(temporary)?;
        std::fs::rename(temporary, path)
            .map_err(|error| io("moving the database file into place", path, error))?;
        sync(path.parent().unwrap_or(Path::new(".")))
    });
    if moved.is_err() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(sibling(temporary, suffix));
        }
    }
    moved
}

/// A name beside `path` for a file being made (`.NAME.DOING-RANDOM`).
fn temporary_beside(path: &Path, doing: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "database".into(), |name| name.to_string_lossy());
    path.with_file_name(format!(
        ".{name}.{doing}-{}",
        folio_core::DatabaseId::generate()
    ))
}

/// `path` with `suffix` appended to its name (`-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(doing: &str, path: &Path, error: std::io::Error) -> Error {
    let kind = if error.raw_os_error() == Some(libc::ENOSPC) {
        EngineErrorKind::Full
    } else {
        EngineErrorKind::Io
    };
    Error::Engine(
        EngineError::new(kind, format!("{doing} ({}) failed", path.display())).with_source(error),
    )
}

fn damaged(message: String) -> Error {
    Error::Engine(EngineError::new(EngineErrorKind::Corrupt, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    use folio_core::Engine;

    #[tokio::test]
    async fn a_database_of_an_older_layout_is_converted_to_page_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // Layout 3, with its last write still in the log (not
            // checkpointed when the connection closes).
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection
                .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .unwrap();
            crate::schema::layout_3(&connection);
            connection
                .set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .unwrap();
            connection
                .execute_batch(
                    "INSERT INTO documents (collection, id, etag, revision, last_modified, data) \
                     VALUES ('notes', 'kept', 7, 2, 0, jsonb('{\"text\":\"from layout 3\"}')); \
                     INSERT INTO changes (etag, kind, collection, id, revision) \
                     VALUES (7, 0, 'notes', 'kept', 2);",
                )
                .unwrap();
        }
        assert!(std::fs::metadata(sibling(&path, "-wal")).unwrap().len() > 0);
        assert!(matches!(header(&path).unwrap(), Header::Reserving(0)));

        prepare(&path).unwrap();
        assert!(matches!(
            header(&path).unwrap(),
            Header::Reserving(RESERVED_BYTES)
        ));
        let bytes = std::fs::read(&path).unwrap();
        let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        assert!(
            bytes.chunks(page).all(crate::vfs::page_is_intact),
            "every page checksummed"
        );
        assert!(!sibling(&path, "-wal").exists(), "the old log is gone");

        let engine = crate::SqliteEngine::open(&path, crate::SqliteOptions::default()).unwrap();
        let kept = engine.get("notes", &["kept".to_owned()]).await.unwrap();
        let kept = kept[0]
            .as_ref()
            .expect("the document survives the conversion");
        assert_eq!(kept.document, r#"{"text":"from layout 3"}"#);
        assert_eq!((kept.metadata.etag, kept.metadata.revision), (7, 2));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.contains("converting"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
