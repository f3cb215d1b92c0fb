//! Folio: a document database for optimistic concurrency.
//!
//! Documents are JSON objects stored under `(collection, id)`; every write
//! stamps them with a new version (the change vector). A [`Session`] loads,
//! queries, stores and deletes, then [`Session::save_changes`] sends
//! everything as one atomic batch — refused, with every conflict named, when
//! someone else changed a document since the session read it.
//!
//! ```
//! use folio::{ChangeVector, Document, DocumentStore, Error};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Document)]
//! #[folio(collection = "people", optimistic_concurrency)]
//! struct Person {
//!     #[folio(id)]
//!     id: String,
//!     name: String,
//!     #[folio(change_vector)]
//!     #[serde(skip)]
//!     change_vector: Option<ChangeVector>,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> folio::Result<()> {
//! let store = DocumentStore::in_memory().await?;
//!
//! let mut setup = store.open_session();
//! setup.store(Person { id: "people/1".into(), name: "Ada".into(), change_vector: None })?;
//! setup.save_changes().await?;
//!
//! // Two people open the same document.
//! let mut first = store.open_session();
//! let mut second = store.open_session();
//! let mut by_first = first.load::<Person>("people/1").await?.unwrap();
//! let mut by_second = second.load::<Person>("people/1").await?.unwrap();
//!
//! by_first.name = "Ada Lovelace".into();
//! first.store(by_first)?;
//! first.save_changes().await?;
//!
//! // The second save is refused: its copy is stale.
//! by_second.name = "Ada King".into();
//! second.store(by_second)?;
//! match second.save_changes().await {
//!     Err(Error::Concurrency(conflict)) => {
//!         assert_eq!(conflict.to_string(), "Optimistic concurrency check failed for Person #people/1");
//!     }
//!     other => panic!("expected a conflict, got {other:?}"),
//! }
//!
//! // The first save is kept.
//! let stored = store.open_session().load::<Person>("people/1").await?.unwrap();
//! assert_eq!(stored.name, "Ada Lovelace");
//! # Ok(())
//! # }
//! ```
//!
//! Start with [`DocumentStore`]; the rules of which write is checked against
//! what are in [`concurrency`].
//!
//! # Engines and features
//!
//! The same sessions run on every engine; a feature adds each:
//!
//! | feature | engine | opened with |
//! | --- | --- | --- |
//! | `sqlite` (default) | embedded: one SQLite file per database in a directory, nothing to install | [`DocumentStore::open`]`(DIR)`, `connect("sqlite:DIR")`, `in_memory()` |
//! | `postgres` | PostgreSQL: many processes in front of one database, a schema per Folio database | `connect("postgres://…")` (with `builder().database(name)`) |
//! | `remote` | a client of a `folio serve` over HTTP | `connect("http://HOST:PORT/db/NAME")` (with `builder().api_key(…)`) |
//!
//! ```toml
//! [dependencies]
//! folio = { path = "../folio/crates/folio", features = ["postgres", "remote"] }
//! ```
//!
//! [`Location`] is the grammar of those URLs; [`DocumentStore::admin`]
//! creates and lists the databases beside a store's own, on each engine.

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "remote")))]
compile_error!(
    "folio needs at least one engine: enable the `sqlite`, the `postgres` or the `remote` feature"
);

mod admin;
mod changes;
mod document;
mod location;
mod options;
mod query;
mod session;
mod store;
pub mod testing;

#[doc = include_str!("../docs/concurrency.md")]
pub mod concurrency {}

pub use admin::Admin;
pub use changes::ChangeFeed;
pub use document::{ConflictExt, Document};
pub use folio_core::{
    Batch, BatchId, Change, ChangeKind, ChangeVector, ChangesPage, CollectionConfig,
    CollectionCount, Command, CommandKind, CommandResult, Committed, ConcurrencyError, Conflict,
    Engine, EngineError, EngineErrorKind, EngineRef, Entry, Error, Expectation, FieldPath, InDoubt,
    MAX_KEEP, MAX_REVISIONS_PAGE, Metadata, Op, Position, Query, Reads, Revision, RevisionsConfig,
    RevisionsPage, StoredDocument,
};
pub use folio_derive::Document;
#[cfg(feature = "postgres")]
pub use folio_postgres::{PgEngine, PgOptions};
#[cfg(feature = "remote")]
pub use folio_remote::{RemoteEngine, RemoteOptions};
#[cfg(feature = "sqlite")]
pub use folio_sqlite::{Durability, SqliteEngine, SqliteOptions};
pub use location::Location;
pub use options::{ConcurrencyChecks, OnConflict, SessionOptions, Tracking};
pub use query::DocumentQuery;
pub use session::{Advanced, QuerySession, Session, Storable};
pub use store::{DEFAULT_DATABASE, DocumentConfig, DocumentStore, DocumentStoreBuilder};

/// `Result` with Folio's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[doc(hidden)]
pub mod __private {
    //! Re-exports for the code that `#[derive(Document)]` generates.
    pub use folio_core::ChangeVector;
}

/// The user guide's Rust snippets (`docs/guide/`), run as doctests so that
/// the guide stays true to the API (those that need a server or PostgreSQL
/// are compiled only).
#[cfg(all(doctest, feature = "sqlite", feature = "postgres", feature = "remote"))]
pub mod guide {
    #[doc = include_str!("../../../docs/guide/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../../../docs/guide/concurrency.md")]
    pub struct Concurrency;
    #[doc = include_str!("../../../docs/guide/web-edit.md")]
    pub struct WebEdit;
    #[doc = include_str!("../../../docs/guide/conflicts.md")]
    pub struct Conflicts;
    #[doc = include_str!("../../../docs/guide/production.md")]
    pub struct Production;
}
