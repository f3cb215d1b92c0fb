//! The databases a server serves, opened on first use.
//!
//! Names are validated (`folio_core::validate::database`) before they touch
//! a file name or a schema name: no path traversal through a database name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use folio_core::{EngineRef, validate};
use folio_postgres::{PgEngine, PgOptions};
use folio_sqlite::{SqliteEngine, SqliteOptions};
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

/// The open databases.
pub struct Databases {
    backend: Backend,
    open: RwLock<HashMap<String, EngineRef>>,
}

impl Databases {
    /// No database open yet.
    pub fn new(backend: Backend) -> Self {
        Databases {
            backend,
            open: RwLock::new(HashMap::new()),
        }
    }

    /// The engine of database `name`: 404 when it does not exist.
    pub async fn get(&self, name: &str) -> ApiResult<EngineRef> {
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

    /// Serves `engine` as database `name` from now on, in place of the
    /// one the backend opens: for an application that runs the server over
    /// an engine it made (a wrapper that observes or changes calls, say).
    /// Listing databases still asks the backend.
    pub async fn attach(&self, name: &str, engine: EngineRef) -> ApiResult<()> {
        validate::database(name)?;
        self.open.write().await.insert(name.to_owned(), engine);
        Ok(())
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

    async fn exists(&self, name: &str) -> ApiResult<bool> {
        match &self.backend {
            Backend::Embedded { dir, .. } => Ok(dir.join(format!("{name}.sqlite")).exists()),
            Backend::Postgres { .. } => {
                Ok(self.list().await?.iter().any(|existing| existing == name))
            }
        }
    }

    async fn open_engine(&self, name: &str) -> ApiResult<EngineRef> {
        let mut open = self.open.write().await;
        if let Some(engine) = open.get(name) {
            return Ok(engine.clone());
        }
        let engine: EngineRef = match &self.backend {
            Backend::Embedded { dir, options } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_failure("creating the data directory", e))?;
                Arc::new(SqliteEngine::open(
                    dir.join(format!("{name}.sqlite")),
                    options.clone(),
                )?)
            }
            Backend::Postgres { url, options } => {
                Arc::new(PgEngine::connect(url, name, options.clone()).await?)
            }
        };
        open.insert(name.to_owned(), engine.clone());
        Ok(engine)
    }
}

fn io_failure(doing: &str, error: std::io::Error) -> ApiError {
    tracing::error!(%error, "{doing} failed");
    ApiError::Internal(folio_core::EngineErrorKind::Io)
}
