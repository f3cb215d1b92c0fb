//! Folio's embedded engine: one SQLite file per database, nothing to install.
//!
//! * **Writes** go to one writer thread that merges the batches of
//!   concurrent callers into one SQLite transaction, a savepoint per batch:
//!   a batch that conflicts rolls back alone, and the whole group pays one
//!   sync (see the `writer` module).
//! * **Reads** use their own connections (WAL: readers never wait for the
//!   writer and see the last committed state).
//! * **Documents** are stored as SQLite JSONB; queries are compiled to SQL
//!   over it with every value bound as a parameter (see the `query` module).
//!
//! ```
//! use folio_core::{Batch, Command, Engine, Expectation};
//! use folio_sqlite::{SqliteEngine, SqliteOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> folio_core::Result<()> {
//! let engine = SqliteEngine::in_memory(SqliteOptions::default())?;
//! let batch = Batch::from(vec![Command::put("people", "p1", r#"{"name":"Ada"}"#, Expectation::Missing)]);
//! let results = engine.commit(batch).await?.expect("no conflict on a new database");
//! assert_eq!(results.len(), 1);
//! # Ok(())
//! # }
//! ```

mod cache;
mod checkpoint;
mod error;
#[cfg(feature = "fault-injection")]
mod faults;
mod jsonb;
mod location;
#[cfg(feature = "mimalloc")]
mod memory;
mod query;
mod read;
mod schema;
mod sync;
mod vfs;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use std::time::Duration;

use folio_core::{
    Batch, Change, ChangeHorizon, ChangeKind, ChangesPage, CommitResult, DatabaseId, Engine, Entry,
    FieldPath, Metadata, Query, QueryResult, Result, time_from_millis, validate,
};
use rusqlite::{OptionalExtension, params};
use tokio::sync::oneshot;

use crate::cache::DocumentCache;
use crate::checkpoint::{Checkpointer, CommitCounter};
use crate::error::{closed, storage};
use crate::location::Location;
use crate::read::{ReaderPool, change_vector, entry_from_row};
use crate::sync::{Acknowledger, Failed};
use crate::writer::{Prepared, Request, Writer};

#[cfg(feature = "fault-injection")]
pub use crate::faults::IoFaults;
#[cfg(feature = "mimalloc")]
pub use crate::memory::allocate_with_mimalloc;
#[cfg(feature = "fault-injection")]
pub use crate::read::BeforeCount;

/// When a commit counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A commit returns only after its data is synced to the disk
    /// (SQLite `synchronous = FULL`): nothing acknowledged is lost, even on
    /// power failure. The default.
    #[default]
    Full,
    /// A commit returns once its data is in the operating system's cache
    /// (SQLite `synchronous = NORMAL` in WAL mode): it survives the process
    /// crashing, but the last commits may be lost if the machine loses power
    /// or the operating system crashes. Faster.
    Relaxed,
}

/// Tuning of a [`SqliteEngine`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// When a commit counts as done.
    pub durability: Durability,
    /// The most batches the writer merges into one transaction.
    pub max_batches_per_group: usize,
    /// The most idle read connections kept open.
    pub max_idle_readers: usize,
    /// How many bytes of recently read documents to keep in memory, so that
    /// loads by id skip SQLite (0 turns the cache off).
    pub cache_bytes: usize,
    /// The most bytes the database may hold (`None`: as much as the disk
    /// has). A commit that needs more fails as on a full disk
    /// (`EngineErrorKind::Io`) and writes nothing; deleting documents
    /// makes room again. SQLite's `max_page_count`, rounded down to pages.
    pub max_size_bytes: Option<u64>,
    /// I/O failures to inject into the database's log and file, for tests
    /// of what a failing disk does (feature `fault-injection`; see
    /// [`IoFaults`]).
    #[cfg(feature = "fault-injection")]
    pub io_faults: Option<Arc<IoFaults>>,
    /// Run before each count of a query's matches (feature
    /// `fault-injection`; see [`BeforeCount`]).
    #[cfg(feature = "fault-injection")]
    pub before_count: Option<BeforeCount>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            max_batches_per_group: 512,
            max_idle_readers: 16,
            cache_bytes: 64 << 20,
            max_size_bytes: None,
            #[cfg(feature = "fault-injection")]
            io_faults: None,
            #[cfg(feature = "fault-injection")]
            before_count: None,
        }
    }
}

/// The embedded engine: one SQLite database (a file, or private memory).
///
/// Cheap to share behind an `Arc`; dropping the last handle stops the writer
/// after the batches already queued and closes the file.
pub struct SqliteEngine {
    shared: Arc<Shared>,
}

struct Shared {
    // Dropped first: stopping the writer before the readers close.
    writer: Writer,
    _checkpointer: Option<Checkpointer>,
    readers: ReaderPool,
    cache: Arc<DocumentCache>,
    database_id: DatabaseId,
    /// The changes feed's horizon: the last etag durably committed.
    horizon: Arc<ChangeHorizon>,
    location: Arc<Location>,
    /// The exclusive lock on the database (a file's `.lock` beside it),
    /// released when the engine closes.
    _lock: Option<std::fs::File>,
}

/// The engines open in this process, by database file: opening a file twice
/// shares one engine (one writer, one cache), since the file is locked to
/// one engine.
static OPEN_FILES: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

impl SqliteEngine {
    /// Opens (creating if absent) the database file at `path`. The parent
    /// directory must exist.
    ///
    /// The file belongs to one engine at a time: a second process opening it
    /// gets an error, and opening it again in this process returns the
    /// engine already open (with the options it was opened with).
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = absolute(path.as_ref())?;
        let mut open = OPEN_FILES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|(_, shared)| shared.strong_count() > 0);
        if let Some(shared) = open
            .iter()
            .find(|(open, _)| *open == path)
            .and_then(|(_, shared)| shared.upgrade())
        {
            return Ok(SqliteEngine { shared });
        }
        let lock = lock_database(&path)?;
        let engine = Self::start(Location::File(path.clone()), options, Some(lock))?;
        open.push((path, Arc::downgrade(&engine.shared)));
        Ok(engine)
    }

    /// A new private database in memory, gone when the engine is dropped.
    pub fn in_memory(options: SqliteOptions) -> Result<Self> {
        let name = format!("/folio-{}", DatabaseId::generate());
        Self::start(Location::Memory(name), options, None)
    }

    fn start(
        location: Location,
        options: SqliteOptions,
        lock: Option<std::fs::File>,
    ) -> Result<Self> {
        let location = Arc::new(location);
        #[cfg(feature = "fault-injection")]
        if let (Some(path), Some(faults)) = (location.path(), &options.io_faults) {
            faults::register(path.to_owned(), faults);
        }
        let mut connection = location.open_writer()?;
        let opened = schema::open(&mut connection)?;
        if let Some(bytes) = options.max_size_bytes {
            limit_size(&connection, bytes)?;
        }
        let cache = Arc::new(DocumentCache::new(options.cache_bytes));
        let commits = Arc::new(CommitCounter::default());
        let checkpointer = match location.path() {
            Some(_) => Some(Checkpointer::start(
                location.open_checkpointer()?,
                commits.clone(),
            )?),
            None => None,
        };
        let failed = Arc::new(Failed::default());
        let horizon = Arc::new(ChangeHorizon::new(opened.last_etag));
        let acknowledger = match (location.path(), options.durability) {
            (Some(path), Durability::Full) => {
                Acknowledger::synced(wal_path(path), failed.clone(), horizon.clone())?
            }
            _ => Acknowledger::Immediate(horizon.clone()),
        };
        let writer = Writer::start(
            connection,
            opened.database_id.clone(),
            options.max_batches_per_group,
            cache.clone(),
            commits,
            acknowledger,
            failed,
        )?;
        Ok(SqliteEngine {
            shared: Arc::new(Shared {
                writer,
                _checkpointer: checkpointer,
                readers: ReaderPool::new(location.clone(), &options),
                cache,
                database_id: opened.database_id,
                horizon,
                location,
                _lock: lock,
            }),
        })
    }

    /// The random id of this database, the tail of its change vectors.
    pub fn database_id(&self) -> &DatabaseId {
        &self.shared.database_id
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.shared.location.path()
    }

    /// Runs `read` on the blocking pool with a read connection: for reads
    /// that may scan many rows.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection, &DatabaseId) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            shared
                .readers
                .with(|connection| read(connection, &shared.database_id))
        })
        .await
        .map_err(|_| closed())?
    }
}

/// The write-ahead log of the database file at `path`, named as SQLite names it.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Caps the database at `bytes` (whole pages; SQLite keeps at least the
/// pages already in use).
fn limit_size(connection: &rusqlite::Connection, bytes: u64) -> Result<()> {
    let page_size: i64 = connection
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(|e| storage("reading the page size", e))?;
    let page_size = u64::try_from(page_size).unwrap_or(1).max(1);
    let pages = i64::try_from(bytes / page_size).unwrap_or(i64::MAX);
    connection
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .map_err(|e| storage("limiting the database size", e))
}

/// `path` made absolute (its directory canonical), so that one file has one name.
fn absolute(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        folio_core::Error::InvalidInput(format!("{} names no database file", path.display()))
    })?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let directory = directory.canonicalize().map_err(|error| {
        folio_core::Error::Engine(
            folio_core::EngineError::new(
                folio_core::EngineErrorKind::Io,
                format!(
                    "the database directory {} is not accessible",
                    directory.display()
                ),
            )
            .with_source(error),
        )
    })?;
    Ok(directory.join(file_name))
}

/// Takes the exclusive lock of the database at `path` (the file `PATH.lock`).
fn lock_database(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let io_error = |doing: String, error: std::io::Error| {
        folio_core::Error::Engine(
            folio_core::EngineError::new(folio_core::EngineErrorKind::Io, doing).with_source(error),
        )
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| {
            io_error(
                format!("creating the lock file {}", Path::new(&lock_path).display()),
                error,
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(folio_core::Error::Engine(folio_core::EngineError::new(
                folio_core::EngineErrorKind::Busy,
                format!(
                    "the database {} is open in another process; one process at a time may use an embedded database",
                    path.display()
                ),
            )))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(
            format!("locking the database {}", path.display()),
            error,
        )),
    }
}

/// Reads one document (columns as `query::ENTRY_COLUMNS`).
const GET_DOCUMENT: &str = "SELECT id, etag, revision, last_modified, json(data) FROM documents \
                            WHERE collection = ?1 AND id = ?2";

#[async_trait]
impl Engine for SqliteEngine {
    async fn commit(&self, batch: Batch) -> CommitResult {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let (reply, answer) = oneshot::channel();
        let batch = Prepared::new(batch)?;
        self.shared.writer.send(Request::Commit { batch, reply })?;
        answer.await.map_err(|_| closed())?
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
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
        if misses.is_empty() {
            return Ok(found);
        }
        shared.readers.with(|connection| {
            let mut statement = connection
                .prepare_cached(GET_DOCUMENT)
                .map_err(|e| storage("preparing a read", e))?;
            for (position, ticket) in misses {
                let entry = statement
                    .query_row(params![collection, ids[position]], |row| {
                        entry_from_row(row, collection, &shared.database_id)
                    })
                    .optional()
                    .map_err(|e| storage("reading a document", e))?;
                if let Some(entry) = &entry {
                    shared.cache.insert(ticket, entry);
                }
                found[position] = entry;
            }
            Ok(())
        })?;
        Ok(found)
    }

    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        validate::keys(collection, ids)?;
        let database = &self.shared.database_id;
        self.shared.readers.with(|connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT etag, revision, last_modified FROM documents WHERE collection = ?1 AND id = ?2",
                )
                .map_err(|e| storage("preparing a read", e))?;
            ids.iter()
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
                .collect()
        })
    }

    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        let sql = query::select(query)?;
        let collection = query.collection.clone();
        self.read_blocking(move |connection, database| {
            read::entries(connection, &sql, &collection, database)
        })
        .await
    }

    async fn count(&self, query: &Query) -> Result<u64> {
        let sql = query::count(query)?;
        let shared = self.shared.clone();
        self.read_blocking(move |connection, _| read::count(&shared.readers, connection, &sql))
            .await
    }

    /// The page and the total read in one read transaction on one
    /// connection: one snapshot, so the total counts exactly the matches
    /// the page was taken from.
    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        let select = query::select(query)?;
        let count = query::count(query)?;
        let collection = query.collection.clone();
        let shared = self.shared.clone();
        self.read_blocking(move |connection, database| {
            // A deferred transaction takes its snapshot at the first read
            // and keeps it until it ends.
            let snapshot = connection
                .unchecked_transaction()
                .map_err(|e| storage("beginning a read", e))?;
            let entries = read::entries(&snapshot, &select, &collection, database)?;
            let total = read::count(&shared.readers, &snapshot, &count)?;
            snapshot.commit().map_err(|e| storage("ending a read", e))?;
            Ok(QueryResult { entries, total })
        })
        .await
    }

    async fn scan(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        validate::collection(collection)?;
        if let Some(after) = after {
            validate::id(after)?;
        }
        let sql = query::Sql {
            text: format!(
                "SELECT {} FROM documents WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                query::ENTRY_COLUMNS
            ),
            params: vec![
                collection.to_owned().into(),
                after.unwrap_or("").to_owned().into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        };
        let collection = collection.to_owned();
        self.read_blocking(move |connection, database| {
            read::entries(connection, &sql, &collection, database)
        })
        .await
    }

    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()> {
        validate::collection(collection)?;
        // Collection and path are validated to [A-Za-z0-9_.-]: safe inside a
        // quoted identifier. The indexed expression is the one queries use.
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS \"folio_index:{collection}:{path}\" ON documents (collection, {})",
            query::extract(path)
        );
        let (reply, answer) = oneshot::channel();
        self.shared.writer.send(Request::Execute { sql, reply })?;
        answer.await.map_err(|_| closed())?
    }

    async fn changes(
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

    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64> {
        Ok(self.shared.horizon.wait_beyond(since, timeout).await)
    }
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

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("database_id", &self.shared.database_id)
            .field("location", &self.shared.location)
            .finish()
    }
}
