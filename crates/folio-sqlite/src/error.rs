//! The one place where SQLite's native errors become Folio's error kinds.

use folio_core::{EngineError, EngineErrorKind, Error};
use rusqlite::ErrorCode;

/// Maps a SQLite error onto an [`Error::Engine`] of the matching kind,
/// keeping the native error as the source. `doing` says what failed.
pub(crate) fn storage(doing: &str, error: rusqlite::Error) -> Error {
    let kind = match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => EngineErrorKind::Busy,
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed,
        ) => EngineErrorKind::Io,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => EngineErrorKind::Corrupt,
        _ => EngineErrorKind::Other,
    };
    let hint = match kind {
        EngineErrorKind::Busy => {
            " (the database file is locked by another process; is a second Folio using it?)"
        }
        EngineErrorKind::Io => {
            " (check that the disk has space and the data directory is writable)"
        }
        EngineErrorKind::Corrupt => " (the file is damaged or is not a Folio database)",
        _ => "",
    };
    Error::Engine(EngineError::new(kind, format!("{doing} failed{hint}")).with_source(error))
}

/// The error of an operation after the engine shut down.
pub(crate) fn closed() -> Error {
    Error::Engine(EngineError::new(
        EngineErrorKind::Closed,
        "the embedded engine's writer has stopped",
    ))
}
