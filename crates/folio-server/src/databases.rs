//! The databases a server serves, opened on first use.
//!
//! Names are validated (`folio_core::validate::database`) before they touch
//! a file name or a schema name: no path traversal through a database name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use folio_core::{
    EngineRef, Identity, SnapshotContents, SnapshotCounts, SnapshotHeader, SnapshotReader,
    copy_snapshot, validate,
};
use folio_postgres::{PgEngine, PgLoader, PgOptions};
use folio_sqlite::{
    DatabaseState, SqliteEngine, SqliteOptions, SqliteSnapshot, database_state, place_database,
    prepare_backup,
};
use tokio::sync::RwLock;

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

/// An open database's engine, by its type: backups and exports need more
/// than the [`folio_core::Engine`] trait.
#[derive(Clone, Debug)]
pub enum OpenEngine {
    /// The embedded engine.
    Embedded(Arc<SqliteEngine>),
    /// The PostgreSQL engine.
    Postgres(Arc<PgEngine>),
}

impl OpenEngine {
    /// The engine, for everything the trait does.
    pub fn engine(&self) -> EngineRef {
        match self {
            OpenEngine::Embedded(engine) => engine.clone(),
            OpenEngine::Postgres(engine) => engine.clone(),
        }
    }

    /// Whether anyone but the registry holds the engine (a request in
    /// flight, an open event stream).
    fn in_use(&self) -> bool {
        match self {
            OpenEngine::Embedded(engine) => Arc::strong_count(engine) > 1,
            OpenEngine::Postgres(engine) => Arc::strong_count(engine) > 1,
        }
    }
}

/// The open databases.
pub struct Databases {
    backend: Backend,
    open: RwLock<HashMap<String, OpenEngine>>,
    /// Taken by a restore for its whole run: one at a time.
    restoring: tokio::sync::Mutex<()>,
}

impl Databases {
    /// No database open yet.
    pub fn new(backend: Backend) -> Self {
        Databases {
            backend,
            open: RwLock::new(HashMap::new()),
            restoring: tokio::sync::Mutex::new(()),
        }
    }

    /// Where the databases are kept.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The engine of database `name`: 404 when it does not exist.
    pub async fn get(&self, name: &str) -> ApiResult<EngineRef> {
        self.handle(name).await.map(|open| open.engine())
    }

    /// The engine of database `name` by its type: 404 when it does not
    /// exist.
    pub async fn handle(&self, name: &str) -> ApiResult<OpenEngine> {
        validate::database(name)?;
        if let Some(engine) = self.open.read().await.get(name) {
            return Ok(engine.clone());
        }
        if !self.exists(name).await? {
            return Err(ApiError::NotFound(format!(
                "no database {name:?}: create it with PUT /db/{name}"
            )));
        }
        self.open_engine(name).await
    }

    /// Creates database `name` if absent; whether it was created.
    pub async fn create(&self, name: &str) -> ApiResult<bool> {
        validate::database(name)?;
        let existed = self.exists(name).await?;
        self.open_engine(name).await?;
        Ok(!existed)
    }

    /// The names of every database, sorted.
    pub async fn list(&self) -> ApiResult<Vec<String>> {
        match &self.backend {
            Backend::Embedded { dir, .. } => {
                let mut names = Vec::new();
                let entries = match std::fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(error) => return Err(io_failure("listing the data directory", error)),
                };
                for entry in entries.flatten() {
                    let file_name = entry.file_name();
                    let Some(name) = file_name
                        .to_str()
                        .and_then(|name| name.strip_suffix(".sqlite"))
                    else {
                        continue;
                    };
                    if validate::database(name).is_ok() {
                        names.push(name.to_owned());
                    }
                }
                names.sort();
                Ok(names)
            }
            Backend::Postgres { url, .. } => Ok(folio_postgres::list_databases(url).await?),
        }
    }

    /// Whether database `name` exists.
    pub async fn exists(&self, name: &str) -> ApiResult<bool> {
        match &self.backend {
            Backend::Embedded { dir, .. } => Ok(dir.join(format!("{name}.sqlite")).exists()),
            Backend::Postgres { .. } => {
                Ok(self.list().await?.iter().any(|existing| existing == name))
            }
        }
    }

    async fn open_engine(&self, name: &str) -> ApiResult<OpenEngine> {
        let mut open = self.open.write().await;
        if let Some(engine) = open.get(name) {
            return Ok(engine.clone());
        }
        let engine = match &self.backend {
            Backend::Embedded { dir, options } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_failure("creating the data directory", e))?;
                OpenEngine::Embedded(Arc::new(SqliteEngine::open(
                    dir.join(format!("{name}.sqlite")),
                    options.clone(),
                )?))
            }
            Backend::Postgres { url, options } => OpenEngine::Postgres(Arc::new(
                PgEngine::connect(url, name, options.clone()).await?,
            )),
        };
        open.insert(name.to_owned(), engine.clone());
        Ok(engine)
    }

    /// A directory for a restore's or a backup's temporary file: the data
    /// directory of the embedded engine (a restored file is moved from
    /// there into place, on the same file system), the system's temporary
    /// directory for PostgreSQL.
    pub(crate) fn scratch_directory(&self) -> ApiResult<PathBuf> {
        match &self.backend {
            Backend::Embedded { dir, .. } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_failure("creating the data directory", e))?;
                Ok(dir.clone())
            }
            Backend::Postgres { .. } => Ok(std::env::temp_dir()),
        }
    }

    /// Makes the new database `name` from the backup file `upload` (a
    /// temporary file the caller owns and removes afterwards): see
    /// [`crate::backup`]. 409 when `name` exists and holds data.
    pub(crate) async fn restore(
        &self,
        name: &str,
        upload: &std::path::Path,
        identity: Identity,
    ) -> ApiResult<Restored> {
        validate::database(name)?;
        let _one_at_a_time = self.restoring.lock().await;
        let refused = || {
            ApiError::DatabaseExists(format!(
                "the database {name:?} exists and holds data: a restore makes a new database; \
                 restore into another name"
            ))
        };
        match &self.backend {
            Backend::Embedded { dir, .. } => {
                // Refused before the upload is read through, and again
                // under the lock before the file moves in.
                let database = dir.join(format!("{name}.sqlite"));
                let path = database.clone();
                if blocking(move || database_state(&path)).await? == DatabaseState::HoldsData {
                    return Err(refused());
                }
                // Checked outside any lock: the whole file is read.
                let file = upload.to_owned();
                let summary = blocking(move || prepare_backup(&file, identity)).await?;
                let mut open = self.open.write().await;
                if let Some(engine) = open.get(name) {
                    if engine.in_use() {
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
                let loader = match PgLoader::create(url, name, &header).await {
                    Ok(loader) => loader,
                    // Created by another process since the check above.
                    Err(_) if self.exists(name).await? => return Err(refused()),
                    Err(error) => return Err(error.into()),
                };
                let counts = copy_snapshot(&mut reader, Box::new(loader)).await?;
                Ok(Restored { header, counts })
            }
        }
    }
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

fn io_failure(doing: &str, error: std::io::Error) -> ApiError {
    tracing::error!(%error, "{doing} failed");
    ApiError::Internal(folio_core::EngineErrorKind::Io)
}
