//! The one place where PostgreSQL's errors (SQLSTATEs) become Folio's
//! error kinds. Nothing above this module looks at a SQLSTATE.

use folio_core::{EngineError, EngineErrorKind, Error};
use tokio_postgres::error::SqlState;

/// What a failed statement means for the batch running it.
pub(crate) enum Failure {
    /// PostgreSQL aborted the transaction to keep it serializable (40001)
    /// or to break a deadlock (40P01): the whole batch may run again.
    Retry(tokio_postgres::Error),
    /// Anything else.
    Fatal(Error),
}

/// Classifies an error of a statement inside a commit.
pub(crate) fn classify(doing: &str, error: tokio_postgres::Error) -> Failure {
    match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            Failure::Retry(error)
        }
        _ => Failure::Fatal(storage(doing, error)),
    }
}

/// Maps a PostgreSQL error onto an [`Error::Engine`] of the matching kind,
/// keeping the native error as the source. `doing` says what failed.
pub(crate) fn storage(doing: &str, error: tokio_postgres::Error) -> Error {
    // A server that takes no writes answered: a standby (the primary moved,
    // or the URL names a standby), or a primary set read-only. Like a lost
    // connection it passes once the engine reaches a primary; the hint says
    // which it is.
    if error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        return Error::Engine(
            EngineError::new(
                EngineErrorKind::Network,
                format!(
                    "{doing} failed: a read-only PostgreSQL server answered (a standby, as \
                     during a failover, or a server set read-only); give every node of the \
                     cluster in the URL with target_session_attrs=read-write"
                ),
            )
            .with_source(error),
        );
    }
    // Connecting with `target_session_attrs=read-write`, every node that
    // answered was a standby (or read-only): no primary, for now.
    if answered_only_by_standbys(&error) {
        return Error::Engine(
            EngineError::new(
                EngineErrorKind::Network,
                format!(
                    "{doing} failed: no node of the URL answered as a primary (each that \
                     answered is a standby or read-only): a failover may be under way, the \
                     old primary's lease running out first; a write with a batch id is sent \
                     again until a primary answers"
                ),
            )
            .with_source(error),
        );
    }
    let kind = match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            EngineErrorKind::SerializationFailure
        }
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            EngineErrorKind::Network
        }
        Some(code) if *code == SqlState::QUERY_CANCELED => EngineErrorKind::Timeout,
        Some(code) if *code == SqlState::DISK_FULL => EngineErrorKind::Full,
        Some(code) if *code == SqlState::IO_ERROR => EngineErrorKind::Io,
        Some(code) if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
            EngineErrorKind::Corrupt
        }
        Some(_) => EngineErrorKind::Other,
        None if error.is_closed() => EngineErrorKind::Network,
        None => EngineErrorKind::Network,
    };
    let hint = match kind {
        EngineErrorKind::Network => {
            " (is the PostgreSQL server reachable and accepting connections?)"
        }
        EngineErrorKind::SerializationFailure => {
            " (the batch kept conflicting with concurrent transactions)"
        }
        EngineErrorKind::Full => " (the PostgreSQL server is out of disk space)",
        _ => "",
    };
    Error::Engine(EngineError::new(kind, format!("{doing} failed{hint}")).with_source(error))
}

/// Whether connecting failed because the node would not take writes
/// (`target_session_attrs=read-write` met a standby): tokio-postgres says
/// so only in its source's words.
fn answered_only_by_standbys(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied
                && io.to_string().contains("does not allow writes")
        })
}

/// The error of a pool that could not give a connection.
pub(crate) fn pool(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(error) => storage("connecting to PostgreSQL", error),
        other => Error::Engine(EngineError::new(
            EngineErrorKind::Network,
            format!("getting a PostgreSQL connection from the pool failed: {other}"),
        )),
    }
}
