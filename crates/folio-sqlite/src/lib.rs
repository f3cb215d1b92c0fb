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

mod backup;
mod cache;
mod checkpoint;
mod directory;
mod error;
#[cfg(feature = "fault-injection")]
mod faults;
mod file;
mod health;
mod jsonb;
mod location;
#[cfg(feature = "mimalloc")]
mod memory;
mod query;
mod read;
mod schema;
mod space;
mod sync;
pub mod testing;
mod vfs;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use std::time::Duration;

use folio_core::{
    Batch, ChangeHorizon, ChangeVector, ChangesPage, CollectionConfig, CollectionCount,
    CommitResult, Committed, DatabaseId, Engine, EngineRef, Entry, Error, FieldPath, Metadata,
    Query, QueryResult, Reads, Result, RevisionsPage, validate,
};

use tokio::sync::oneshot;

use crate::cache::DocumentCache;
use crate::checkpoint::{Checkpointer, Checkpoints};
use crate::error::{closed, storage};
use crate::health::Health;
use crate::location::Location;
use crate::read::ReaderPool;
use crate::space::Space;
use crate::sync::Acknowledger;
use crate::writer::{Links, Prepared, Request, Writer};

pub use crate::backup::{
    BackupSummary, BackupWriter, DatabaseState, SqliteSnapshot, backup_summary, database_state,
    place_database, prepare_backup, restore_backup, verify_backup,
};
pub use crate::cache::CacheBudget;
pub use crate::directory::DataDirectory;
#[cfg(feature = "fault-injection")]
pub use crate::faults::{IoFaults, PowerLoss};
#[cfg(feature = "mimalloc")]
pub use crate::memory::allocate_with_mimalloc;
#[cfg(feature = "fault-injection")]
pub use crate::read::BeforeCount;

/// When a commit counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A commit returns only after its data is synced to the disk (the
    /// syncer threads `fdatasync` the log before the commit is
    /// acknowledged, and readers see it only then): nothing acknowledged is
    /// lost, even on power failure. The default.
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
    /// How many bytes of disk a database file's engine keeps in reserve
    /// (`NAME.sqlite-reserve`, while it is open): when the disk fills up,
    /// it gives them back to copy its log into the file and empty it, and
    /// takes writes again (deletes meanwhile) once the disk has them and
    /// 4 MiB more free. 0 keeps no reserve.
    pub reserve_bytes: u64,
    /// A budget this engine's document cache shares with the caches of
    /// other engines opened with a clone of it: together they hold at most
    /// its bytes (this one also at most `cache_bytes`). `None`: the cache
    /// is bounded by `cache_bytes` alone.
    pub cache_budget: Option<CacheBudget>,
    /// The most bytes the database may hold (`None`: as much as the disk
    /// has). A commit that needs more fails as on a full disk
    /// (`EngineErrorKind::Io`) and writes nothing; deleting documents
    /// makes room again. SQLite's `max_page_count`, rounded down to pages.
    pub max_size_bytes: Option<u64>,
    /// How long the id of a committed batch is kept ([`folio_core::Batch::id`]):
    /// a batch sent again with its id within this time gets its recorded
    /// results and writes nothing. A day by default.
    pub batch_retention: std::time::Duration,
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
            reserve_bytes: 4 << 20,
            cache_budget: None,
            max_size_bytes: None,
            batch_retention: std::time::Duration::from_secs(24 * 60 * 60),
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
    // Dropped first: a checkpoint of its own beside the writer's last one
    // (which empties the log when the engine closes) would make that one
    // give up (SQLite lets one checkpoint run at a time, and does not wait).
    _checkpointer: Option<Checkpointer>,
    // Dropped next: stopping the writer before the readers close.
    writer: Writer,
    readers: ReaderPool,
    cache: Arc<DocumentCache>,
    database_id: DatabaseId,
    /// The changes feed's horizon: the last etag durably committed.
    /// Readers show nothing beyond it (`Shared::durable`).
    horizon: Arc<ChangeHorizon>,
    /// Set when a sync failed: what was committed after the last good
    /// sync may or may not be on disk.
    health: Arc<Health>,
    /// Whether the tombstones table may hold rows (set by the writer before
    /// it writes one): until then, a load that finds nothing need not look
    /// for a delete still being synced.
    tombstones: Arc<AtomicBool>,
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
        file::prepare(&path)?;
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
        let cache = DocumentCache::shared(options.cache_bytes, options.cache_budget.as_ref());
        let commits = Arc::new(Checkpoints::default());
        let health = Arc::new(Health::default());
        let checkpointer = match location.path() {
            Some(_) => Some(Checkpointer::start(
                location.open_checkpointer()?,
                commits.clone(),
                health.clone(),
            )?),
            None => None,
        };
        let horizon = Arc::new(ChangeHorizon::new(opened.last_etag));
        let acknowledger = match (location.path(), options.durability) {
            (Some(path), Durability::Full) => {
                Acknowledger::synced(wal_path(path), health.clone(), horizon.clone())?
            }
            _ => Acknowledger::Immediate(horizon.clone()),
        };
        // The writer learns whether there are tombstones, and tells readers.
        let tombstones = Arc::new(AtomicBool::new(true));
        let writer = Writer::start(
            connection,
            opened.database_id.clone(),
            options.max_batches_per_group,
            options.batch_retention,
            acknowledger,
            Links {
                cache: cache.clone(),
                commits,
                health: health.clone(),
                tombstones: tombstones.clone(),
                space: Space::open(location.path(), options.reserve_bytes, &health),
            },
        )?;
        Ok(SqliteEngine {
            shared: Arc::new(Shared {
                _checkpointer: checkpointer,
                writer,
                readers: ReaderPool::new(location.clone(), &options, health.clone()),
                cache,
                database_id: opened.database_id,
                horizon,
                health,
                tombstones,
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
}

/// The write-ahead log of the database file at `path`, named as SQLite names it.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
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
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
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

/// How long opening a database waits for its lock before reporting it busy.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);
/// How often it tries for the lock meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Takes the exclusive lock of the database at `path` (the file `PATH.lock`).
pub(crate) fn lock_database(path: &Path) -> Result<std::fs::File> {
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
    // A lock held for a moment only is waited for: a process that forks
    // holds a copy of every descriptor until its child runs a program, so
    // a database closed and opened again at once may find its own lock
    // still held by a child of this process.
    let mut waited = Duration::ZERO;
    let locked = loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if waited < LOCK_PATIENCE => {
                std::thread::sleep(LOCK_RETRY);
                waited += LOCK_RETRY;
            }
            other => break other,
        }
    };
    match locked {
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

#[async_trait]
impl Engine for SqliteEngine {
    async fn commit(&self, batch: Batch) -> CommitResult {
        batch.validate()?;
        if batch.is_empty() && batch.id.is_none() {
            return Ok(Ok(Committed::default()));
        }
        let (reply, answer) = oneshot::channel();
        let id = batch.id.clone();
        let batch = Prepared::new(batch)?;
        self.shared.writer.send(Request::Commit { batch, reply })?;
        let mut verdict = answer.await.map_err(|_| closed())?;
        // A failed sync leaves the batch in doubt until the database is
        // reopened: it cannot be sent again before. Name it.
        if let Err(Error::InDoubt(in_doubt)) = &mut verdict {
            in_doubt.batch_id = id;
        }
        // One file, one writer: every read sees every acknowledged write,
        // so the position only names how far the database had come. The
        // horizon is published before a batch is answered: it is at or
        // beyond this batch's etags. (Read here, on the caller's task, not
        // in the writer.)
        if let Ok(Ok(committed)) = &mut verdict {
            committed.position = Some(folio_core::Position::etag(self.shared.horizon.current()));
        }
        verdict
    }

    /// One file: every read sees every committed write, wherever it is
    /// asked to be served from, after whatever position.
    fn reads(self: Arc<Self>, _: Reads) -> Result<EngineRef> {
        Ok(self)
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        self.load(collection, ids).await
    }

    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        self.load_metadata(collection, ids).await
    }

    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        self.run_query(query).await
    }

    async fn count(&self, query: &Query) -> Result<u64> {
        self.run_count(query).await
    }

    async fn collections(&self) -> Result<Vec<CollectionCount>> {
        self.count_collections().await
    }

    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        self.run_query_page(query).await
    }

    async fn scan(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.scan_collection(collection, after, limit).await
    }

    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()> {
        validate::collection(collection)?;
        let sql = query::index_sql(collection, path);
        let (reply, answer) = oneshot::channel();
        self.shared.writer.send(Request::Execute { sql, reply })?;
        answer.await.map_err(|_| closed())?
    }

    async fn configure(&self, collection: &str, config: &CollectionConfig) -> Result<()> {
        validate::collection(collection)?;
        config.validate()?;
        let (reply, answer) = oneshot::channel();
        self.shared.writer.send(Request::Configure {
            collection: collection.to_owned(),
            config: config.clone(),
            reply,
        })?;
        let verdict = answer.await.map_err(|_| closed())??;
        verdict.map(drop).map_err(Error::from)
    }

    async fn configuration(&self, collection: &str) -> Result<CollectionConfig> {
        self.read_configuration(collection).await
    }

    async fn revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<RevisionsPage> {
        self.read_revisions(collection, id, start, take).await
    }

    async fn revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<Entry>> {
        self.read_revision(collection, id, change_vector).await
    }

    async fn changes(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage> {
        self.changes_page(since, collection, limit).await
    }

    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64> {
        Ok(self.shared.horizon.wait_beyond(since, timeout).await)
    }

    fn health(&self) -> Result<()> {
        self.shared.health.report()
    }
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("database_id", &self.shared.database_id)
            .field("location", &self.shared.location)
            .finish()
    }
}
