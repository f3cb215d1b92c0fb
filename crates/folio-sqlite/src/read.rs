//! The read side: a pool of read-only connections, and rows to entries.
//!
//! Readers never wait for the writer: in WAL mode each read sees the last
//! committed state. Point reads run on the calling task's thread (they take
//! microseconds); scans and queries run on tokio's blocking pool.

use std::sync::{Arc, Mutex};

use folio_core::{
    ChangeVector, CollectionCount, DatabaseId, Entry, Metadata, Result, time_from_millis,
};
use rusqlite::{Connection, Row};

use crate::error::storage;
use crate::health::Health;
use crate::location::Location;

/// Idle read connections, opened on demand, kept up to a bound.
pub(crate) struct ReaderPool {
    location: Arc<Location>,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Told of any damaged page a read finds.
    health: Arc<Health>,
    #[cfg(feature = "fault-injection")]
    before_count: Option<BeforeCount>,
}

/// A test's hook, run on the reading thread before each statement that
/// counts a query's matches (feature `fault-injection`;
/// `SqliteOptions::before_count`): inside `query_page`'s read transaction,
/// after the page was read. A test commits a write there to show that the
/// total is counted in the page's snapshot.
#[cfg(feature = "fault-injection")]
#[derive(Clone)]
pub struct BeforeCount(pub Arc<dyn Fn() + Send + Sync>);

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for BeforeCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeCount")
    }
}

impl ReaderPool {
    pub(crate) fn new(
        location: Arc<Location>,
        options: &crate::SqliteOptions,
        health: Arc<Health>,
    ) -> Self {
        ReaderPool {
            location,
            idle: Mutex::new(Vec::new()),
            max_idle: options.max_idle_readers,
            health,
            #[cfg(feature = "fault-injection")]
            before_count: options.before_count.clone(),
        }
    }

    /// Runs `read` on an idle connection (or a new one), then returns the
    /// connection to the pool.
    pub(crate) fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.health.noted(self.location.open_reader())?,
        };
        let result = self.health.noted(read(&connection));
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
        result
    }
}

/// The change vector of the write that took `etag`.
pub(crate) fn change_vector(etag: i64, database: &DatabaseId) -> ChangeVector {
    ChangeVector::new(u64::try_from(etag).unwrap_or(0), database)
}

/// An entry from a row of `query::ENTRY_COLUMNS`, in `collection`.
pub(crate) fn entry_from_row(
    row: &Row<'_>,
    collection: &str,
    database: &DatabaseId,
) -> rusqlite::Result<Entry> {
    let etag: i64 = row.get(1)?;
    let revision: i64 = row.get(2)?;
    Ok(Entry {
        metadata: Metadata {
            id: row.get(0)?,
            collection: collection.to_owned(),
            change_vector: change_vector(etag, database),
            revision: u64::try_from(revision).unwrap_or(0),
            etag: u64::try_from(etag).unwrap_or(0),
            last_modified: time_from_millis(row.get(3)?),
        },
        document: row.get(4)?,
    })
}

/// Runs a compiled count of a query's matches.
pub(crate) fn count(
    readers: &ReaderPool,
    connection: &Connection,
    sql: &crate::query::Sql,
) -> Result<u64> {
    #[cfg(feature = "fault-injection")]
    if let Some(BeforeCount(hook)) = &readers.before_count {
        hook();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = readers;
    connection
        .prepare_cached(&sql.text)
        .and_then(|mut statement| {
            statement.query_row(rusqlite::params_from_iter(sql.params.iter()), |row| {
                row.get::<_, i64>(0)
            })
        })
        .map(|count| u64::try_from(count).unwrap_or(0))
        .map_err(|e| storage("counting query results", e))
}

/// Every collection that holds documents, in order of name, with how many
/// (one statement: one snapshot).
pub(crate) fn collections(connection: &Connection) -> Result<Vec<CollectionCount>> {
    let mut statement = connection
        .prepare_cached(
            "SELECT collection, count(*) FROM documents GROUP BY collection ORDER BY collection",
        )
        .map_err(|e| storage("listing collections", e))?;
    let rows = statement
        .query_map([], |row| {
            Ok(CollectionCount {
                name: row.get(0)?,
                documents: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            })
        })
        .map_err(|e| storage("listing collections", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| storage("listing collections", e))
}

/// Runs a compiled entry query.
pub(crate) fn entries(
    connection: &Connection,
    sql: &crate::query::Sql,
    collection: &str,
    database: &DatabaseId,
) -> Result<Vec<Entry>> {
    let mut statement = connection
        .prepare_cached(&sql.text)
        .map_err(|e| storage("preparing a query", e))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(sql.params.iter()), |row| {
            entry_from_row(row, collection, database)
        })
        .map_err(|e| storage("running a query", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| storage("reading query results", e))
}
