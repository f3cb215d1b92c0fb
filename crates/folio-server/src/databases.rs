//! The databases a server serves, opened on first use.
//!
//! Names are validated (`folio_core::validate::database`) before they touch
//! a file name or a schema name: no path traversal through a database name.
//!
//! An open database costs threads, file descriptors and memory (an
//! embedded one: four threads, about ten descriptors, its caches; a
//! PostgreSQL one: a pool of connections), so at most
//! [`DatabaseLimits::max_open`] are open at once. Opening one more first
//! closes the least recently used idle one, and waits until it is closed
//! (its threads joined, its file unlocked). A database is idle when
//! nothing but this registry holds its engine: every request in flight and
//! every open changes feed holds a clone of the engine it uses, so an
//! engine in use is never closed under it. A database being closed counts
//! as open until it is, and is reopened only after. When every open
//! database is in use, opening another is refused (`503`, try again).
//!
//! How many databases may exist at all is bounded too
//! ([`DatabaseLimits::max_databases`]); creations are serialized so that
//! the count holds.
//!
//! A restore ([`crate::backup`]) makes a new database from a backup file,
//! one at a time, into a name that is absent, or empty and not in use.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use folio_core::{
    EngineRef, Identity, SnapshotContents, SnapshotCounts, SnapshotHeader, SnapshotReader,
    copy_snapshot, validate,
};
use folio_postgres::{PgEngine, PgLoader, PgOptions};
use folio_sqlite::{
    DataDirectory, DatabaseState, SqliteEngine, SqliteOptions, SqliteSnapshot, database_state,
    place_database, prepare_backup,
};
use tokio::sync::{RwLock, watch};

use crate::error::{ApiError, ApiResult};

/// Where the server keeps its databases.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded engine: one `NAME.sqlite` file per database in `dir`.
    Embedded {
        /// The data directory.
        dir: PathBuf,
        /// The engine's options.
        options: SqliteOptions,
    },
    /// The PostgreSQL engine: one schema per database on the server at `url`.
    Postgres {
        /// The server's URL.
        url: String,
        /// The engine's options.
        options: PgOptions,
    },
}

/// How many databases a server keeps open, and how many may exist.
#[derive(Clone, Copy, Debug)]
pub struct DatabaseLimits {
    /// The most databases open at once (default 64): opening another
    /// closes the least recently used idle one first.
    pub max_open: usize,
    /// The most databases that may exist (default 10,000): creating one
    /// more is refused with `403`.
    pub max_databases: usize,
}

impl Default for DatabaseLimits {
    fn default() -> Self {
        DatabaseLimits {
            max_open: 64,
            max_databases: 10_000,
        }
    }
}

/// An open database's engine, by its type: backups and exports need more
/// than the [`folio_core::Engine`] trait.
#[derive(Clone)]
pub enum OpenEngine {
    /// The embedded engine.
    Embedded(Arc<SqliteEngine>),
    /// The PostgreSQL engine.
    Postgres(Arc<PgEngine>),
    /// An engine the application made ([`Databases::attach`]): served
    /// through the trait only.
    Attached(EngineRef),
}

impl std::fmt::Debug for OpenEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenEngine::Embedded(engine) => f.debug_tuple("Embedded").field(engine).finish(),
            OpenEngine::Postgres(engine) => f.debug_tuple("Postgres").field(engine).finish(),
            OpenEngine::Attached(_) => f.write_str("Attached"),
        }
    }
}

impl OpenEngine {
    /// The engine, for everything the trait does.
    pub fn engine(&self) -> EngineRef {
        match self {
            OpenEngine::Embedded(engine) => engine.clone(),
            OpenEngine::Postgres(engine) => engine.clone(),
            OpenEngine::Attached(engine) => engine.clone(),
        }
    }

    /// Whether anyone but the registry holds the engine (a request in
    /// flight, an open event stream).
    fn in_use(&self) -> bool {
        match self {
            OpenEngine::Embedded(engine) => Arc::strong_count(engine) > 1,
            OpenEngine::Postgres(engine) => Arc::strong_count(engine) > 1,
            OpenEngine::Attached(engine) => Arc::strong_count(engine) > 1,
        }
    }
}

/// An open database.
struct Open {
    engine: OpenEngine,
    /// When it was last handed out (a tick of `Databases::clock`).
    used: AtomicU64,
}

/// Databases being closed, each with a receiver told when its close is done.
type Closing = Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>;

/// The open databases.
pub struct Databases {
    backend: Backend,
    limits: DatabaseLimits,
    open: RwLock<HashMap<String, Open>>,
    closing: Closing,
    /// Ticks of use, for the least recently used order.
    clock: AtomicU64,
    /// Held while a database is created, so that two creations cannot both
    /// find room under `max_databases`.
    creating: tokio::sync::Mutex<()>,
    /// Idle databases closed to make room.
    closed: AtomicU64,
    /// Databases whose last opening failed, with what failed (for
    /// `/healthz`: every request to them fails too).
    unopenable: Mutex<HashMap<String, folio_core::EngineErrorKind>>,
    /// Taken by a restore for its whole run: one at a time.
    restoring: tokio::sync::Mutex<()>,
}

impl Databases {
    /// No database open yet; the default limits.
    pub fn new(backend: Backend) -> Self {
        Self::with_limits(backend, DatabaseLimits::default())
    }

    /// No database open yet; at most `limits` (each at least 1).
    pub fn with_limits(backend: Backend, limits: DatabaseLimits) -> Self {
        Databases {
            backend,
            limits: DatabaseLimits {
                max_open: limits.max_open.max(1),
                max_databases: limits.max_databases.max(1),
            },
            open: RwLock::new(HashMap::new()),
            closing: Arc::default(),
            clock: AtomicU64::new(0),
            creating: tokio::sync::Mutex::new(()),
            closed: AtomicU64::new(0),
            unopenable: Mutex::default(),
            restoring: tokio::sync::Mutex::new(()),
        }
    }

    /// Where the databases are kept.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The limits in force.
    pub fn limits(&self) -> DatabaseLimits {
        self.limits
    }

    /// The engine of database `name`: 404 when it does not exist.
    pub async fn get(&self, name: &str) -> ApiResult<EngineRef> {
        self.handle(name).await.map(|open| open.engine())
    }

    /// The engine of database `name` by its type: 404 when it does not
    /// exist.
    pub async fn handle(&self, name: &str) -> ApiResult<OpenEngine> {
        validate::database(name)?;
        if let Some(open) = self.open.read().await.get(name) {
            return Ok(self.hand_out(open));
        }
        if !self.exists(name).await? {
            return Err(ApiError::NotFound(format!(
                "no database {name:?}: create it with PUT /db/{name}"
            )));
        }
        self.open_engine(name).await
    }

    /// Creates database `name` if absent; whether it was created. Refused
    /// with `403` when as many databases as allowed exist.
    pub async fn create(&self, name: &str) -> ApiResult<bool> {
        validate::database(name)?;
        let _creating = self.creating.lock().await;
        let existed = self.exists(name).await?;
        self.check_room(name, existed).await?;
        self.open_engine(name).await?;
        Ok(!existed)
    }

    /// How many databases are open now (those being closed included).
    pub async fn open_count(&self) -> usize {
        let open = self.open.read().await.len();
        open + lock(&self.closing).len()
    }

    /// How many idle databases were closed to make room, so far.
    pub fn closed_count(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// The memory budget of the embedded engines' document caches, if any.
    pub fn cache_budget(&self) -> Option<&folio_sqlite::CacheBudget> {
        match &self.backend {
            Backend::Embedded { options, .. } => options.cache_budget.as_ref(),
            Backend::Postgres { .. } => None,
        }
    }

    /// The databases' gauges and counters in Prometheus text.
    pub async fn render_metrics(&self, out: &mut String) {
        out.push_str(
            "# HELP folio_databases_open Databases open now (engines running, those being closed included).\n\
             # TYPE folio_databases_open gauge\n",
        );
        let _ = writeln!(out, "folio_databases_open {}", self.open_count().await);
        out.push_str(
            "# HELP folio_databases_closed_total Idle databases closed to stay within the limit of open databases.\n\
             # TYPE folio_databases_closed_total counter\n",
        );
        let _ = writeln!(out, "folio_databases_closed_total {}", self.closed_count());
        if let Some(budget) = self.cache_budget() {
            out.push_str(
                "# HELP folio_document_cache_bytes Bytes held by the document caches of all open databases.\n\
                 # TYPE folio_document_cache_bytes gauge\n",
            );
            let _ = writeln!(out, "folio_document_cache_bytes {}", budget.used_bytes());
        }
    }

    /// Serves `engine` as database `name` from now on, in place of the
    /// one the backend opens: for an application that runs the server over
    /// an engine it made (a wrapper that observes or changes calls, say).
    /// Listing databases still asks the backend; backups and exports of it
    /// are refused (they need the engine's own type).
    pub async fn attach(&self, name: &str, engine: EngineRef) -> ApiResult<()> {
        validate::database(name)?;
        self.open.write().await.insert(
            name.to_owned(),
            Open {
                engine: OpenEngine::Attached(engine),
                used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            },
        );
        Ok(())
    }

    /// The names of every database, sorted.
    pub async fn list(&self) -> ApiResult<Vec<String>> {
        match &self.backend {
            Backend::Embedded { dir, .. } => Ok(DataDirectory::new(dir).list()?),
            Backend::Postgres { url, .. } => Ok(folio_postgres::list_databases(url).await?),
        }
    }

    /// Whether database `name` exists.
    pub async fn exists(&self, name: &str) -> ApiResult<bool> {
        match &self.backend {
            Backend::Embedded { dir, .. } => Ok(DataDirectory::new(dir).exists(name)),
            Backend::Postgres { .. } => {
                Ok(self.list().await?.iter().any(|existing| existing == name))
            }
        }
    }

    /// The engine of `open`, marked as used now.
    fn hand_out(&self, open: &Open) -> OpenEngine {
        open.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        open.engine.clone()
    }

    async fn open_engine(&self, name: &str) -> ApiResult<OpenEngine> {
        loop {
            let mut open = self.open.write().await;
            if let Some(engine) = open.get(name) {
                return Ok(self.hand_out(engine));
            }
            let wait = {
                let closing = lock(&self.closing);
                if let Some(done) = closing.get(name) {
                    // Its file is still locked by the engine being closed.
                    Some(done.clone())
                } else if open.len() + closing.len() < self.limits.max_open {
                    None
                } else if let Some(idle) = least_recently_used_idle(&open) {
                    drop(closing);
                    let Some(evicted) = open.remove(&idle) else {
                        continue;
                    };
                    Some(self.close(idle, evicted.engine))
                } else if let Some(done) = closing.values().next() {
                    Some(done.clone())
                } else {
                    return Err(ApiError::TooManyOpenDatabases(self.limits.max_open));
                }
            };
            if let Some(mut done) = wait {
                drop(open);
                // An error means the closing thread is gone: closed either way.
                let _ = done.wait_for(|closed| *closed).await;
                continue;
            }
            let started = self.start_engine(name).await;
            let mut unopenable = self
                .unopenable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let engine = match started {
                Ok(engine) => {
                    unopenable.remove(name);
                    engine
                }
                Err(error) => {
                    if let ApiError::Internal(kind) = &error {
                        unopenable.insert(name.to_owned(), *kind);
                    }
                    return Err(error);
                }
            };
            drop(unopenable);
            open.insert(
                name.to_owned(),
                Open {
                    engine: engine.clone(),
                    used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
                },
            );
            return Ok(engine);
        }
    }

    async fn start_engine(&self, name: &str) -> ApiResult<OpenEngine> {
        Ok(match &self.backend {
            Backend::Embedded { dir, options } => OpenEngine::Embedded(Arc::new(
                DataDirectory::new(dir).open(name, options.clone())?,
            )),
            Backend::Postgres { url, options } => OpenEngine::Postgres(Arc::new(
                PgEngine::connect(url, name, options.clone()).await?,
            )),
        })
    }

    /// Closes `engine` (the last handle on it) on a blocking thread:
    /// closing joins the engine's threads and may copy its log into the
    /// database file. The receiver is told when it is done.
    fn close(&self, name: String, engine: OpenEngine) -> watch::Receiver<bool> {
        let (done, receiver) = watch::channel(false);
        lock(&self.closing).insert(name.clone(), receiver.clone());
        self.closed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(database = %name, "closing an idle database to make room");
        let closing = self.closing.clone();
        tokio::task::spawn_blocking(move || {
            drop(engine);
            lock(&closing).remove(&name);
            done.send_replace(true);
        });
        receiver
    }

    /// A directory for a restore's or a backup's temporary file: the data
    /// directory of the embedded engine (a restored file is moved from
    /// there into place, on the same file system), the system's temporary
    /// directory for PostgreSQL.
    pub(crate) fn scratch_directory(&self) -> ApiResult<PathBuf> {
        match &self.backend {
            Backend::Embedded { dir, .. } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_failure("creating the data directory", &e))?;
                Ok(dir.clone())
            }
            Backend::Postgres { .. } => Ok(std::env::temp_dir()),
        }
    }

    /// Whether a restore into `name` may begin: `409` when it exists and
    /// holds data, `403` when it does not exist and as many databases
    /// exist as allowed. Asked before the upload is read, so that a
    /// refused restore costs no upload; [`Databases::restore`] asks again
    /// where it counts.
    pub(crate) async fn check_restorable(&self, name: &str) -> ApiResult<()> {
        validate::database(name)?;
        let exists = match &self.backend {
            Backend::Embedded { dir, .. } => {
                let path = DataDirectory::new(dir).database_file(name);
                match blocking(move || database_state(&path)).await? {
                    DatabaseState::HoldsData => return Err(holds_data(name)),
                    DatabaseState::Absent => false,
                    DatabaseState::Empty => true,
                }
            }
            Backend::Postgres { .. } => {
                if self.exists(name).await? {
                    return Err(holds_data(name));
                }
                false
            }
        };
        self.check_room(name, exists).await
    }

    /// `403` when `name` would be one database more than allowed.
    async fn check_room(&self, name: &str, exists: bool) -> ApiResult<()> {
        if !exists && self.list().await?.len() >= self.limits.max_databases {
            tracing::warn!(database = %name, "refused: as many databases as allowed exist");
            return Err(ApiError::TooManyDatabases(self.limits.max_databases));
        }
        Ok(())
    }

    /// Makes the new database `name` from the backup file `upload` (a
    /// temporary file the caller owns and removes afterwards): see
    /// [`crate::backup`]. 409 when `name` exists and holds data, 403 when
    /// it would be one database more than allowed.
    pub(crate) async fn restore(
        &self,
        name: &str,
        upload: &std::path::Path,
        identity: Identity,
    ) -> ApiResult<Restored> {
        validate::database(name)?;
        let _one_at_a_time = self.restoring.lock().await;
        let refused = || holds_data(name);
        match &self.backend {
            Backend::Embedded { dir, .. } => {
                // Refused before the upload is read through (by the
                // caller), and again under the lock before the file moves in.
                let database = DataDirectory::new(dir).database_file(name);
                let path = database.clone();
                if blocking(move || database_state(&path)).await? == DatabaseState::HoldsData {
                    return Err(refused());
                }
                // Checked outside any lock: the whole file is read.
                let file = upload.to_owned();
                let summary = blocking(move || prepare_backup(&file, identity)).await?;
                let _creating = self.creating.lock().await;
                let path = database.clone();
                let exists =
                    blocking(move || database_state(&path)).await? != DatabaseState::Absent;
                self.check_room(name, exists).await?;
                let mut open = self.open.write().await;
                if let Some(engine) = open.get(name) {
                    if engine.engine.in_use() {
                        return Err(ApiError::DatabaseExists(format!(
                            "the database {name:?} exists and is in use (requests in flight, or a \
                             changes feed being read): a restore makes a new database; restore \
                             into another name"
                        )));
                    }
                    // Closed before its file is looked at and replaced.
                    let closing = open.remove(name);
                    blocking(move || {
                        drop(closing);
                        Ok(())
                    })
                    .await?;
                }
                let path = database.clone();
                if blocking(move || database_state(&path)).await? == DatabaseState::HoldsData {
                    return Err(refused());
                }
                let file = upload.to_owned();
                blocking(move || place_database(&file, &database)).await?;
                drop(open);
                Ok(Restored {
                    header: summary.header,
                    counts: summary.counts,
                })
            }
            Backend::Postgres { url, .. } => {
                if self.exists(name).await? {
                    return Err(refused());
                }
                // An older layout is brought up to date and a newer one
                // refused, as for the embedded engine; then every check.
                let file = upload.to_owned();
                blocking(move || prepare_backup(&file, Identity::Keep)).await?;
                // An engine left from a schema dropped behind the server's
                // back knows a database id that is no more.
                self.open.write().await.remove(name);
                let mut reader =
                    SqliteSnapshot::open_file(upload, SnapshotContents::Everything).await?;
                let mut header = reader.header().clone();
                header.database_id = identity.database_id(&header.database_id);
                let creating = self.creating.lock().await;
                self.check_room(name, false).await?;
                let loader = match PgLoader::create(url, name, &header).await {
                    Ok(loader) => loader,
                    // Created by another process since the check above.
                    Err(_) if self.exists(name).await? => return Err(refused()),
                    Err(error) => return Err(error.into()),
                };
                drop(creating);
                let counts = copy_snapshot(&mut reader, Box::new(loader)).await?;
                Ok(Restored { header, counts })
            }
        }
    }
}

/// The answer to a restore into a database that holds data.
fn holds_data(name: &str) -> ApiError {
    ApiError::DatabaseExists(format!(
        "the database {name:?} exists and holds data: a restore makes a new database; \
         restore into another name"
    ))
}

/// The open database used least recently among those nobody else holds.
fn least_recently_used_idle(open: &HashMap<String, Open>) -> Option<String> {
    open.iter()
        .filter(|(_, open)| !open.engine.in_use())
        .min_by_key(|(_, open)| open.used.load(Ordering::Relaxed))
        .map(|(name, _)| name.clone())
}

/// The map of databases being closed (a panic while it was held left it
/// consistent: each change is one call).
fn lock(
    closing: &Mutex<HashMap<String, watch::Receiver<bool>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
    closing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One thing that keeps the server from serving, as `GET /healthz` reports
/// it: which database (none: the server itself) and what, in words that
/// name no file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthProblem {
    /// The database, when the problem is one database's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// What is wrong and what it stops.
    pub problem: String,
}

impl Databases {
    /// What keeps the server from serving now: a data directory it cannot
    /// write, open databases that take no writes (a failed sync, damage, a
    /// full disk), databases that could not be opened. Empty when all is well.
    pub async fn problems(&self) -> Vec<HealthProblem> {
        let mut problems = Vec::new();
        if let Backend::Embedded { dir, .. } = &self.backend
            && let Err(error) = probe_writable(dir)
        {
            tracing::error!(%error, directory = %dir.display(), "the data directory is not writable");
            problems.push(HealthProblem {
                database: None,
                problem: "the data directory cannot be written: no database can take writes, \
                          and new ones cannot be opened"
                    .into(),
            });
        }
        let unopenable: Vec<(String, folio_core::EngineErrorKind)> = {
            let unopenable = self
                .unopenable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut failed: Vec<_> = unopenable.iter().map(|(n, k)| (n.clone(), *k)).collect();
            failed.sort_by(|a, b| a.0.cmp(&b.0));
            failed
        };
        for (name, kind) in unopenable {
            problems.push(HealthProblem {
                database: Some(name),
                problem: format!("it cannot be opened: {}", health_words(kind)),
            });
        }
        let open = self.open.read().await;
        let mut names: Vec<&String> = open.keys().collect();
        names.sort();
        for name in names {
            if let Err(folio_core::Error::Engine(error)) = open[name].engine.engine().health() {
                tracing::error!(database = %name, error = ?error, "a database cannot serve");
                problems.push(HealthProblem {
                    database: Some(name.clone()),
                    problem: health_words(error.kind()).into(),
                });
            }
        }
        problems
    }
}

/// What a database that cannot serve is told by `/healthz`, by kind.
fn health_words(kind: folio_core::EngineErrorKind) -> &'static str {
    use folio_core::EngineErrorKind;
    match kind {
        EngineErrorKind::Corrupt => "damaged: it takes no writes; restore it from a backup",
        EngineErrorKind::Full => "the disk is full: it takes no writes until there is room",
        EngineErrorKind::Unsupported => "written by a newer Folio: it cannot be read",
        EngineErrorKind::Io => {
            "a write to disk failed: it takes no writes until the server is restarted (check the disk)"
        }
        _ => "it cannot serve now",
    }
}

/// Creates and removes a file in `dir`: whether the directory can be
/// written (its permissions, a read-only mount, a full disk).
fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".folio-health-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// What a restore made.
#[derive(Debug)]
pub(crate) struct Restored {
    /// The new database's identity.
    pub(crate) header: SnapshotHeader,
    /// What it holds.
    pub(crate) counts: SnapshotCounts,
}

/// Runs `work` (file I/O, SQLite) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> folio_core::Result<T> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(outcome) => Ok(outcome?),
        Err(error) => {
            tracing::error!(%error, "a blocking task failed");
            Err(ApiError::Internal(folio_core::EngineErrorKind::Other))
        }
    }
}

/// A failed file operation of the server's own: logged, answered with its
/// kind (a full disk is `507`, as it is for an engine's write).
pub(crate) fn io_failure(doing: &str, error: &std::io::Error) -> ApiError {
    tracing::error!(%error, "{doing} failed");
    if error.raw_os_error() == Some(libc::ENOSPC) {
        ApiError::InsufficientStorage
    } else {
        ApiError::Internal(folio_core::EngineErrorKind::Io)
    }
}
