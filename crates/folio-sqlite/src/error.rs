//! The one place where SQLite's native errors become Folio's error kinds.

use folio_core::{EngineError, EngineErrorKind, Error};
use rusqlite::ErrorCode;

/// Maps a SQLite error onto an [`Error::Engine`] of the matching kind,
/// keeping the native error as the source. `doing` says what failed.
pub(crate) fn storage(doing: &str, error: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(native, _) = &error
        && native.extended_code == rusqlite::ffi::SQLITE_IOERR_DATA
    {
        return Error::Engine(
            EngineError::new(
                EngineErrorKind::Corrupt,
                format!(
                    "{doing} failed: a page of the database failed its checksum, so the file is \
                     damaged (writes are refused; restore the database from a backup)"
                ),
            )
            .with_source(error),
        );
    }
    let kind = match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => EngineErrorKind::Busy,
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed,
        ) => EngineErrorKind::Io,
        Some(ErrorCode::DiskFull) => EngineErrorKind::Full,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => EngineErrorKind::Corrupt,
        _ => EngineErrorKind::Other,
    };
    let hint = match kind {
        EngineErrorKind::Busy => {
            " (the database file is locked by another process; is a second Folio using it?)"
        }
        EngineErrorKind::Io => " (check the disk, and that the data directory is writable)",
        EngineErrorKind::Full => {
            " (the disk is full, or the database reached its size limit: free some space)"
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

/// A copy of a native error's text, for when one failure is reported to
/// several callers (SQLite's errors cannot be cloned).
#[derive(Debug)]
pub(crate) struct NativeCause(String);

impl NativeCause {
    /// The native causes under `error`, innermost last, if it has any.
    pub(crate) fn of(error: &Error) -> Option<Self> {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        (!causes.is_empty()).then(|| NativeCause(causes.join(": ")))
    }
}

impl std::fmt::Display for NativeCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NativeCause {}
