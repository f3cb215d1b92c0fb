//! The read side: every read of the engine (loads through the document
//! cache, queries, scans, collections, the changes feed), a pool of
//! read-only connections, and rows to entries.
//!
//! Readers never wait for the writer: in WAL mode each read sees the last
//! committed state, and answers once what it read is durable
//! ([`Shared::durable`]). Point reads run on the calling task's thread (they
//! take microseconds); scans and queries run on tokio's blocking pool.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use folio_core::{
    Change, ChangeKind, ChangeVector, ChangesPage, CollectionConfig, CollectionCount, DatabaseId,
    Entry, Metadata, Query, QueryResult, Result, Revision, RevisionsPage, time_from_millis,
    validate,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{closed, storage};
use crate::health::Health;
use crate::location::Location;
use crate::{Shared, SqliteEngine};

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

impl SqliteEngine {
    /// Runs `read` on the blocking pool with a read connection: for reads
    /// that may scan many rows. What it read is returned once it is
    /// durable: the newest write its snapshot could hold is read after it
    /// (a later snapshot holds at least as much), and waited for.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection, &DatabaseId) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        let (value, newest) = tokio::task::spawn_blocking(move || {
            shared.readers.with(|connection| {
                let value = read(connection, &shared.database_id)?;
                let newest: i64 = connection
                    .prepare_cached("SELECT coalesce(max(etag), 0) FROM changes")
                    .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                    .map_err(|e| storage("reading the newest write", e))?;
                Ok((value, u64::try_from(newest).unwrap_or(0)))
            })
        })
        .await
        .map_err(|_| closed())??;
        self.shared.durable(newest).await?;
        Ok(value)
    }

    pub(crate) async fn load(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Entry>>> {
        validate::keys(collection, ids)?;
        let shared = &self.shared;
        let mut found = Vec::with_capacity(ids.len());
        let mut misses = Vec::new();
        for (position, id) in ids.iter().enumerate() {
            match shared.cache.get(collection, id) {
                Ok(entry) => found.push(Some(entry)),
                Err(ticket) => {
                    found.push(None);
                    misses.push((position, ticket));
                }
            }
        }
        let mut newest = newest_etag(found.iter().flatten().map(|entry| &entry.metadata));
        if misses.is_empty() {
            shared.durable(newest).await?;
            return Ok(found);
        }
        let deleted = shared.readers.with(|connection| {
            let mut statement = connection
                .prepare_cached(GET_DOCUMENT)
                .map_err(|e| storage("preparing a read", e))?;
            let mut missing = Vec::new();
            for (position, ticket) in misses {
                let entry = statement
                    .query_row(params![collection, ids[position]], |row| {
                        entry_from_row(row, collection, &shared.database_id)
                    })
                    .optional()
                    .map_err(|e| storage("reading a document", e))?;
                match &entry {
                    Some(entry) => {
                        newest = newest.max(entry.metadata.etag);
                        shared.cache.insert(ticket, entry);
                    }
                    None => missing.push(ids[position].as_str()),
                }
                found[position] = entry;
            }
            shared.newest_delete(connection, collection, &missing)
        })?;
        shared.durable(newest.max(deleted)).await?;
        Ok(found)
    }

    pub(crate) async fn load_metadata(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Metadata>>> {
        validate::keys(collection, ids)?;
        let shared = &self.shared;
        let database = &shared.database_id;
        let (found, deleted) = shared.readers.with(|connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT etag, revision, last_modified FROM documents WHERE collection = ?1 AND id = ?2",
                )
                .map_err(|e| storage("preparing a read", e))?;
            let found = ids
                .iter()
                .map(|id| {
                    statement
                        .query_row(params![collection, id], |row| {
                            let etag: i64 = row.get(0)?;
                            let revision: i64 = row.get(1)?;
                            Ok(Metadata {
                                id: id.clone(),
                                collection: collection.to_owned(),
                                change_vector: change_vector(etag, database),
                                revision: u64::try_from(revision).unwrap_or(0),
                                etag: u64::try_from(etag).unwrap_or(0),
                                last_modified: time_from_millis(row.get(2)?),
                            })
                        })
                        .optional()
                        .map_err(|e| storage("reading a document's metadata", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let missing: Vec<&str> = ids
                .iter()
                .zip(&found)
                .filter(|(_, metadata)| metadata.is_none())
                .map(|(id, _)| id.as_str())
                .collect();
            let deleted = shared.newest_delete(connection, collection, &missing)?;
            Ok((found, deleted))
        })?;
        shared
            .durable(newest_etag(found.iter().flatten()).max(deleted))
            .await?;
        Ok(found)
    }

    pub(crate) async fn run_query(&self, query: &Query) -> Result<Vec<Entry>> {
        let sql = crate::query::select(query)?;
        let collection = query.collection.clone();
        self.read_blocking(move |connection, database| {
            entries(connection, &sql, &collection, database)
        })
        .await
    }

    pub(crate) async fn run_count(&self, query: &Query) -> Result<u64> {
        let sql = crate::query::count(query)?;
        let shared = self.shared.clone();
        self.read_blocking(move |connection, _| count(&shared.readers, connection, &sql))
            .await
    }

    pub(crate) async fn count_collections(&self) -> Result<Vec<CollectionCount>> {
        self.read_blocking(|connection, _| collections(connection))
            .await
    }

    /// The page and the total read in one read transaction on one
    /// connection: one snapshot, so the total counts exactly the matches
    /// the page was taken from.
    pub(crate) async fn run_query_page(&self, query: &Query) -> Result<QueryResult> {
        let select = crate::query::select(query)?;
        let count = crate::query::count(query)?;
        let collection = query.collection.clone();
        let shared = self.shared.clone();
        self.read_blocking(move |connection, database| {
            // A deferred transaction takes its snapshot at the first read
            // and keeps it until it ends.
            let snapshot = connection
                .unchecked_transaction()
                .map_err(|e| storage("beginning a read", e))?;
            let entries = entries(&snapshot, &select, &collection, database)?;
            let total = crate::read::count(&shared.readers, &snapshot, &count)?;
            snapshot.commit().map_err(|e| storage("ending a read", e))?;
            Ok(QueryResult { entries, total })
        })
        .await
    }

    pub(crate) async fn scan_collection(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        validate::collection(collection)?;
        if let Some(after) = after {
            validate::id(after)?;
        }
        let sql = crate::query::Sql {
            text: format!(
                "SELECT {} FROM documents WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                crate::query::ENTRY_COLUMNS
            ),
            params: vec![
                collection.to_owned().into(),
                after.unwrap_or("").to_owned().into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        };
        let collection = collection.to_owned();
        self.read_blocking(move |connection, database| {
            entries(connection, &sql, &collection, database)
        })
        .await
    }

    pub(crate) async fn changes_page(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage> {
        if let Some(page) = ChangesPage::check_request(since, collection, limit)? {
            return Ok(page);
        }
        // Only what is durable: the rows above the horizon may belong to a
        // group still being synced.
        let horizon = self.shared.horizon.current();
        if since >= horizon {
            return Ok(ChangesPage::new(Vec::new(), since, horizon, limit));
        }
        let collection = collection.map(str::to_owned);
        let changes = self
            .read_blocking(move |connection, database| {
                read_changes(
                    connection,
                    database,
                    since,
                    horizon,
                    collection.as_deref(),
                    limit,
                )
            })
            .await?;
        Ok(ChangesPage::new(changes, since, horizon, limit))
    }
}

impl Shared {
    /// Returns once every write up to `etag` is durable. Readers show only
    /// durable versions: a version someone read is never erased by a power
    /// loss (the writer's COMMIT makes a group visible to readers before the
    /// syncers' `fdatasync` returns, so a read may have to wait for it). An
    /// error when the sync failed: that version may or may not be on disk.
    async fn durable(&self, etag: u64) -> Result<()> {
        if etag <= self.horizon.current() {
            return Ok(());
        }
        Box::pin(self.wait_durable(etag)).await
    }

    /// The slow path of [`Shared::durable`], boxed: a read rarely takes it,
    /// and every read would otherwise carry its state.
    async fn wait_durable(&self, etag: u64) -> Result<()> {
        while etag > self.horizon.current() {
            if self.health.sync_failed() {
                return Err(folio_core::Error::Engine(folio_core::EngineError::new(
                    folio_core::EngineErrorKind::Io,
                    "syncing the write-ahead log to disk failed, so the newest writes this read \
                     would show may or may not be on disk; reopen the database (check the disk)",
                )));
            }
            tokio::select! {
                () = self.horizon.wait_until(etag) => {}
                () = self.health.wait_for_sync_failure() => {}
            }
        }
        Ok(())
    }

    /// The etag of the newest delete of one of `ids` in `collection` (0 when
    /// none), so that a load that finds nothing waits for the delete's sync
    /// like any other read of a version.
    fn newest_delete(
        &self,
        connection: &rusqlite::Connection,
        collection: &str,
        ids: &[&str],
    ) -> Result<u64> {
        if ids.is_empty() || !self.tombstones.load(Ordering::Acquire) {
            return Ok(0);
        }
        let mut statement = connection
            .prepare_cached("SELECT etag FROM tombstones WHERE collection = ?1 AND id = ?2")
            .map_err(|e| storage("preparing a read", e))?;
        let mut newest = 0;
        for id in ids {
            let etag: Option<i64> = statement
                .query_row(params![collection, id], |row| row.get(0))
                .optional()
                .map_err(|e| storage("reading a delete", e))?;
            newest = newest.max(etag.and_then(|etag| u64::try_from(etag).ok()).unwrap_or(0));
        }
        Ok(newest)
    }
}

/// The etag of the newest of these versions (0 when there are none).
fn newest_etag<'a>(versions: impl IntoIterator<Item = &'a Metadata>) -> u64 {
    versions
        .into_iter()
        .map(|metadata| metadata.etag)
        .max()
        .unwrap_or(0)
}

/// The changes with `since < etag <= horizon`, of `collection` when given.
fn read_changes(
    connection: &rusqlite::Connection,
    database: &DatabaseId,
    since: u64,
    horizon: u64,
    collection: Option<&str>,
    limit: usize,
) -> Result<Vec<Change>> {
    let etag = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let mut statement = connection
        .prepare_cached(
            "SELECT etag, kind, collection, id, revision FROM changes \
             WHERE etag > ?1 AND etag <= ?2 AND (?3 IS NULL OR collection = ?3) \
             ORDER BY etag LIMIT ?4",
        )
        .map_err(|e| storage("preparing the changes feed", e))?;
    let rows = statement
        .query_map(
            params![
                etag(since),
                etag(horizon),
                collection,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                let etag: i64 = row.get(0)?;
                let kind: i64 = row.get(1)?;
                let revision: i64 = row.get(4)?;
                Ok(Change {
                    etag: u64::try_from(etag).unwrap_or(0),
                    kind: if kind == 1 {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Put
                    },
                    collection: row.get(2)?,
                    id: row.get(3)?,
                    change_vector: change_vector(etag, database),
                    revision: u64::try_from(revision).unwrap_or(0),
                })
            },
        )
        .map_err(|e| storage("reading the changes feed", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| storage("reading the changes feed", e))
}

/// Reads one document (columns as `query::ENTRY_COLUMNS`).
const GET_DOCUMENT: &str = "SELECT id, etag, revision, last_modified, json(data) FROM documents \
                            WHERE collection = ?1 AND id = ?2";

impl SqliteEngine {
    /// `collection`'s configuration, as committed.
    pub(crate) async fn read_configuration(&self, collection: &str) -> Result<CollectionConfig> {
        validate::collection(collection)?;
        let collection = collection.to_owned();
        self.read_blocking(move |connection, _| {
            let json: Option<String> = connection
                .prepare_cached("SELECT config FROM folio_collections WHERE collection = ?1")
                .and_then(|mut statement| {
                    statement
                        .query_row([&collection], |row| row.get(0))
                        .optional()
                })
                .map_err(|e| storage("reading a collection's configuration", e))?;
            json.map_or(Ok(CollectionConfig::default()), |json| {
                CollectionConfig::from_stored(&collection, &json)
            })
        })
        .await
    }

    /// A page of the kept versions of `collection/id`, newest first, and
    /// how many are kept (one snapshot).
    pub(crate) async fn read_revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<RevisionsPage> {
        validate::collection(collection)?;
        validate::id(id)?;
        folio_core::validate_page(take)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        self.read_blocking(move |connection, database| {
            let snapshot = connection
                .unchecked_transaction()
                .map_err(|e| storage("beginning a read", e))?;
            let items = snapshot
                .prepare_cached(
                    "SELECT etag, revision, last_modified, deleted FROM revisions \
                     WHERE collection = ?1 AND id = ?2 ORDER BY etag DESC LIMIT ?3 OFFSET ?4",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map(params![collection, id, take, start], |row| {
                            let etag: i64 = row.get(0)?;
                            Ok(Revision {
                                change_vector: change_vector(etag, database),
                                revision: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                                etag: u64::try_from(etag).unwrap_or(0),
                                last_modified: time_from_millis(row.get(2)?),
                                deleted: row.get(3)?,
                            })
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| storage("reading revisions", e))?;
            let total: i64 = snapshot
                .prepare_cached("SELECT count(*) FROM revisions WHERE collection = ?1 AND id = ?2")
                .and_then(|mut statement| {
                    statement.query_row(params![collection, id], |row| row.get(0))
                })
                .map_err(|e| storage("counting revisions", e))?;
            snapshot.commit().map_err(|e| storage("ending a read", e))?;
            Ok(RevisionsPage {
                items,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
        .await
    }

    /// The kept version `change_vector` of `collection/id` with its document
    /// (`None`: not kept, a deletion, or a change vector of another
    /// database).
    pub(crate) async fn read_revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<Entry>> {
        validate::collection(collection)?;
        validate::id(id)?;
        let Some(etag) = change_vector
            .etag_in(&self.shared.database_id)
            .and_then(|etag| i64::try_from(etag).ok())
        else {
            return Ok(None);
        };
        let collection = collection.to_owned();
        let id = id.to_owned();
        self.read_blocking(move |connection, database| {
            connection
                .prepare_cached(
                    "SELECT id, etag, revision, last_modified, json(data) FROM revisions \
                     WHERE collection = ?1 AND id = ?2 AND etag = ?3 AND NOT deleted",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![collection, id, etag], |row| {
                            entry_from_row(row, &collection, database)
                        })
                        .optional()
                })
                .map_err(|e| storage("reading a revision", e))
        })
        .await
    }
}
