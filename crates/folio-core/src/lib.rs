//! The shared core of Folio: the vocabulary every engine and front end speaks.
//!
//! * the model: [`ChangeVector`], [`Metadata`], [`Entry`], [`Expectation`],
//!   [`Batch`] and its [`Command`]s, [`CommandResult`];
//! * the errors: [`Error`], [`ConcurrencyError`], [`Conflict`], [`EngineError`];
//! * the one storage interface: [`Engine`], whose [`Engine::commit`] is the
//!   only write path of the whole system;
//! * the changes feed: [`Change`], [`ChangesPage`], [`ChangeHorizon`];
//! * the query AST: [`Query`], [`Filter`], [`Op`], [`FieldPath`];
//! * validation of everything that crosses a boundary: [`validate`];
//! * read-your-writes across replicas: [`Position`], [`Reads`];
//! * collection configurations and document histories:
//!   [`CollectionConfig`], [`Revision`];
//! * identifiers: [`generate_id`], [`DatabaseId`];
//! * whole-database snapshots for backups, restores, copies and exports:
//!   [`SnapshotReader`], [`SnapshotWriter`], [`copy_snapshot`].
//!
//! Applications depend on the `folio` crate, which re-exports what they need;
//! engine authors depend on this one.

mod batch;
mod change_vector;
mod changes;
mod engine;
mod error;
mod id;
mod merge;
mod metadata;
mod position;
mod query;
mod revisions;
mod snapshot;
pub mod validate;

pub use batch::{
    Batch, BatchId, Command, CommandKind, CommandResult, Committed, Expectation, record_results,
    recorded_results,
};
pub use change_vector::{ChangeVector, DatabaseId};
pub use changes::{Change, ChangeHorizon, ChangeKind, ChangesPage};
pub use engine::{CollectionCount, CommitResult, Engine, EngineRef, QueryResult};
pub use error::{ConcurrencyError, Conflict, EngineError, EngineErrorKind, Error, InDoubt};
pub use id::generate_id;
pub use merge::merge;
pub use metadata::{
    Entry, Metadata, StoredDocument, millis_since_epoch, rfc3339, time_from_millis,
};
pub use position::{MAX_POSITION, Position, Reads};
pub use query::{FieldPath, Filter, Op, Order, Query};
pub use revisions::{
    CollectionConfig, MAX_KEEP, MAX_REVISIONS_PAGE, Revision, RevisionsConfig, RevisionsPage,
    validate_page,
};
pub use snapshot::{
    Identity, Index, KeptVersion, RESTORED_ETAG_GAP, SnapshotContents, SnapshotCounts,
    SnapshotHeader, SnapshotPart, SnapshotReader, SnapshotWriter, Tombstone, copy_snapshot,
};

/// `Result` with Folio's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
