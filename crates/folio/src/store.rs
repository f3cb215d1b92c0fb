use std::any::TypeId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use folio_core::{EngineRef, Error, FieldPath, Result, validate};

use crate::admin::{Admin, Databases};
use crate::{Document, Location, QuerySession, Session, SessionOptions};

/// The database a store opens when none is named.
pub const DEFAULT_DATABASE: &str = "default";

/// A shared handle to one database: opens sessions.
///
/// Cheap to clone (`Clone + Send + Sync`); open one per application and
/// clone it into tasks. Sessions are short-lived and owned by one task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let store = folio::DocumentStore::in_memory().await?;
/// let session = store.open_session();
/// # drop(session);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DocumentStore {
    inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) engine: EngineRef,
    pub(crate) config: StoreConfig,
    /// Where the database is, for [`DocumentStore::admin`].
    databases: Databases,
    /// Where a session that saved nothing yet reads: after the store's
    /// last save (any node before the first).
    last_save: std::sync::Mutex<folio_core::Reads>,
    /// The collections whose revisions this store has set as their types
    /// declare (`Document::REVISIONS`).
    configured: std::sync::Mutex<std::collections::HashSet<&'static str>>,
}

impl StoreInner {
    /// Makes `collection` keep `keep` versions per document, once per
    /// store: its configuration is read and written only when it says
    /// otherwise.
    pub(crate) async fn ensure_revisions(&self, collection: &'static str, keep: u32) -> Result<()> {
        let done =
            |configured: &std::collections::HashSet<&'static str>| configured.contains(collection);
        if done(&self.configured.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let mut config = self.engine.configuration(collection).await?;
        if config.revisions.keep != keep {
            config.revisions.keep = keep;
            self.engine.configure(collection, &config).await?;
        }
        self.configured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection);
        Ok(())
    }
    /// Where a session that saved nothing yet reads.
    pub(crate) fn reads(&self) -> folio_core::Reads {
        self.last_save
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A session saved: sessions that saved nothing yet read after it.
    pub(crate) fn saved(&self, reads: folio_core::Reads) {
        *self.last_save.lock().unwrap_or_else(|p| p.into_inner()) = reads;
    }
}

/// Store-wide settings that sessions consult.
#[derive(Default)]
pub(crate) struct StoreConfig {
    /// The store-wide default for concurrency checks.
    pub(crate) optimistic_concurrency: bool,
    /// Per-type settings from `builder().document::<T>(…)`.
    pub(crate) documents: HashMap<TypeId, DocumentConfig>,
}

impl StoreConfig {
    /// The concurrency setting of type `T`: the store's configuration of the
    /// type, else the type's own attribute (`None`: neither says).
    pub(crate) fn type_setting<T: Document>(&self) -> Option<bool> {
        self.documents
            .get(&TypeId::of::<T>())
            .and_then(|config| config.optimistic_concurrency)
            .or(T::OPTIMISTIC_CONCURRENCY)
    }

    /// The versions per document `T` declares for its collection, when
    /// the store did not set them when it opened (then `None`).
    pub(crate) fn declared_revisions<T: Document>(&self) -> Option<u32> {
        let configured = self
            .documents
            .get(&TypeId::of::<T>())
            .is_some_and(|config| config.revisions.is_some());
        T::REVISIONS.filter(|_| !configured)
    }
}

impl DocumentStore {
    /// Opens the embedded engine with its database files under the
    /// directory `path` (created if absent).
    #[cfg(feature = "sqlite")]
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().path(path).open().await
    }

    /// Opens a private embedded database in memory (tests, examples).
    #[cfg(feature = "sqlite")]
    pub async fn in_memory() -> Result<Self> {
        Self::builder().url("memory:").open().await
    }

    /// Connects by URL: `sqlite:DIR` (embedded), `memory:` (embedded, in
    /// memory), `postgres://…` (PostgreSQL engine),
    /// `http(s)://host:port/db/NAME` (a Folio server); [`Location`] has
    /// every form.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().url(url).open().await
    }

    /// A builder for every option.
    pub fn builder() -> DocumentStoreBuilder {
        DocumentStoreBuilder::default()
    }

    /// A store over an engine made elsewhere (a custom engine, or a wrapper
    /// made with [`crate::testing::wrap`]), with default settings.
    pub fn from_engine(engine: EngineRef) -> Self {
        DocumentStore {
            inner: Arc::new(StoreInner {
                engine,
                config: StoreConfig::default(),
                databases: Databases::Unknown,
                last_save: std::sync::Mutex::new(folio_core::Reads::Any),
                configured: Default::default(),
            }),
        }
    }

    /// The databases beside this store's own, where it is: creating one,
    /// listing them ([`Admin`]).
    pub fn admin(&self) -> Admin<'_> {
        Admin::new(&self.inner.databases)
    }

    /// A read-write session with default options.
    pub fn open_session(&self) -> Session {
        Session::new(self.inner.clone(), SessionOptions::default())
    }

    /// A read-write session with `options`.
    pub fn open_session_with(&self, options: SessionOptions) -> Session {
        Session::new(self.inner.clone(), options)
    }

    /// A read-only session: loads and queries, no writes.
    pub fn query_session(&self) -> QuerySession {
        QuerySession::new(Session::new(self.inner.clone(), SessionOptions::default()))
    }

    /// The changes feed after etag `since` (0: from the beginning): every
    /// put and delete committed since, in etag order, each once, then new
    /// ones as they commit. See [`crate::ChangeFeed`].
    pub fn changes(&self, since: u64) -> crate::ChangeFeed {
        crate::ChangeFeed::new(self, since)
    }

    /// The engine behind this store.
    pub fn engine(&self) -> &EngineRef {
        &self.inner.engine
    }

    /// Runs the read-modify-write `work` in a fresh session, then saves; on
    /// a concurrency conflict, runs it again in a new session, up to
    /// `max_attempts` times in all. Returns `work`'s value from the attempt
    /// that saved, or the last error. Errors other than conflicts are
    /// returned at once.
    ///
    /// ```
    /// # use folio::{Document, DocumentStore};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Document)]
    /// struct Counter { id: String, value: u64 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> folio::Result<()> {
    /// let store = DocumentStore::in_memory().await?;
    /// let value = store
    ///     .retry_on_conflict(5, async |session| {
    ///         let mut counter = session
    ///             .load::<Counter>("c1")
    ///             .await?
    ///             .unwrap_or(Counter { id: "c1".into(), value: 0 });
    ///         counter.value += 1;
    ///         let value = counter.value;
    ///         session.store(counter)?;
    ///         Ok(value)
    ///     })
    ///     .await?;
    /// assert_eq!(value, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry_on_conflict<R>(
        &self,
        max_attempts: usize,
        mut work: impl AsyncFnMut(&mut Session) -> Result<R>,
    ) -> Result<R> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Checks on: a retried read-modify-write is only safe when the
            // save is refused if the read went stale.
            let mut session = self.open_session_with(SessionOptions {
                concurrency_checks: crate::ConcurrencyChecks::Writes,
                ..SessionOptions::default()
            });
            let outcome = match work(&mut session).await {
                Ok(value) => session.save_changes().await.map(|()| value),
                Err(error) => Err(error),
            };
            match outcome {
                Err(Error::Concurrency(conflict)) if attempt < max_attempts => {
                    drop(conflict);
                    // Let the writer that won run on before trying again.
                    tokio::task::yield_now().await;
                }
                outcome => return outcome,
            }
        }
    }
}

impl std::fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStore")
            .field(
                "optimistic_concurrency",
                &self.inner.config.optimistic_concurrency,
            )
            .finish_non_exhaustive()
    }
}

/// The settings of one document type in a store.
#[derive(Clone, Debug, Default)]
pub struct DocumentConfig {
    optimistic_concurrency: Option<bool>,
    indexes: Vec<String>,
    revisions: Option<u32>,
}

impl DocumentConfig {
    /// Opts the type in to (or out of) concurrency checks, overriding its
    /// `#[folio(optimistic_concurrency)]` attribute.
    pub fn optimistic_concurrency(mut self, enabled: bool) -> Self {
        self.optimistic_concurrency = Some(enabled);
        self
    }

    /// Creates an index on the dotted field `path` when the store opens.
    pub fn index(mut self, path: &str) -> Self {
        self.indexes.push(path.to_owned());
        self
    }

    /// Makes the type's collection keep the last `keep` versions of each
    /// document (0: none), set when the store opens, overriding the type's
    /// `#[folio(revisions = N)]`. At most [`folio_core::MAX_KEEP`].
    pub fn revisions(mut self, keep: u32) -> Self {
        self.revisions = Some(keep);
        self
    }
}

/// Builds a [`DocumentStore`]; see [`DocumentStore::builder`].
///
/// ```
/// # use folio::{Document, DocumentStore};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Document)]
/// struct Person { id: String, name: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let store = DocumentStore::builder()
///     .url("memory:")
///     .optimistic_concurrency(false)
///     .document::<Person>(|d| d.optimistic_concurrency(true).index("name"))
///     .open()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct DocumentStoreBuilder {
    url: Option<String>,
    location: Option<Location>,
    path: Option<PathBuf>,
    engine: Option<EngineRef>,
    database: Option<String>,
    api_key: Option<String>,
    embedded: EmbeddedOptions,
    config: StoreConfig,
    documents: Vec<(&'static str, Vec<String>)>,
    /// The collections whose revisions the store sets when it opens.
    revisions: Vec<(&'static str, u32)>,
}

impl DocumentStoreBuilder {
    /// Where the database is: see [`DocumentStore::connect`] for the forms.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Where the database is, parsed: see [`Location`].
    pub fn location(mut self, location: &Location) -> Self {
        self.location = Some(location.clone());
        self
    }

    /// The embedded engine, with database files under the directory `path`.
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Uses an engine made elsewhere instead of a URL.
    pub fn engine(mut self, engine: EngineRef) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The database to open (default [`DEFAULT_DATABASE`]).
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// The API key sent to a Folio server (remote engine).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The store-wide default for concurrency checks (default: off).
    pub fn optimistic_concurrency(mut self, enabled: bool) -> Self {
        self.config.optimistic_concurrency = enabled;
        self
    }

    /// When the embedded engine's commits count as done (default: synced).
    #[cfg(feature = "sqlite")]
    pub fn durability(mut self, durability: folio_sqlite::Durability) -> Self {
        self.embedded.durability = durability;
        self
    }

    /// Configures document type `T`.
    pub fn document<T: Document>(
        mut self,
        configure: impl FnOnce(DocumentConfig) -> DocumentConfig,
    ) -> Self {
        let config = configure(
            self.config
                .documents
                .remove(&TypeId::of::<T>())
                .unwrap_or_default(),
        );
        self.documents.push((T::COLLECTION, config.indexes.clone()));
        if let Some(keep) = config.revisions {
            self.revisions
                .retain(|(collection, _)| *collection != T::COLLECTION);
            self.revisions.push((T::COLLECTION, keep));
        }
        self.config.documents.insert(TypeId::of::<T>(), config);
        self
    }

    /// Opens the store: connects to (or creates) the database and creates
    /// the configured indexes.
    pub async fn open(self) -> Result<DocumentStore> {
        let database = self.database.as_deref().unwrap_or(DEFAULT_DATABASE);
        validate::database(database)?;
        let mut indexes = Vec::new();
        for (collection, paths) in &self.documents {
            validate::collection(collection)?;
            for path in paths {
                indexes.push((*collection, FieldPath::parse(path)?));
            }
        }
        let location = match (self.path, self.url, self.location) {
            (None, None, None) => None,
            (Some(path), None, None) => Some(Location::Embedded(path)),
            (None, Some(url), None) => Some(Location::parse(&url)?),
            (None, None, Some(location)) => Some(location),
            _ => return Err(only_one()),
        };
        let (engine, databases) = match (self.engine, location) {
            (Some(engine), None) => (engine, Databases::Unknown),
            (None, Some(location)) => {
                connect(&location, database, self.api_key.as_deref(), &self.embedded).await?
            }
            (None, None) => {
                return Err(Error::InvalidInput(
                    "say where the database is: builder().url(…), .location(…), .path(…) or \
                     .engine(…)"
                        .into(),
                ));
            }
            (Some(_), Some(_)) => return Err(only_one()),
        };
        for (collection, path) in &indexes {
            engine.ensure_index(collection, path).await?;
        }
        let store = DocumentStore {
            inner: Arc::new(StoreInner {
                engine,
                config: self.config,
                databases,
                last_save: std::sync::Mutex::new(folio_core::Reads::Any),
                configured: Default::default(),
            }),
        };
        for (collection, keep) in self.revisions {
            store.inner.ensure_revisions(collection, keep).await?;
        }
        Ok(store)
    }
}

fn only_one() -> Error {
    Error::InvalidInput(
        "give only one of builder().url(…), .location(…), .path(…) and .engine(…)".into(),
    )
}

impl std::fmt::Debug for DocumentStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStoreBuilder")
            .field("url", &self.url.as_deref().map(crate::location::redacted))
            .field("location", &self.location.as_ref().map(ToString::to_string))
            .field("path", &self.path)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "sqlite")]
type EmbeddedOptions = folio_sqlite::SqliteOptions;
#[cfg(not(feature = "sqlite"))]
type EmbeddedOptions = ();

/// Opens `database` at `location`, and what its administration acts on.
async fn connect(
    location: &Location,
    database: &str,
    api_key: Option<&str>,
    embedded: &EmbeddedOptions,
) -> Result<(EngineRef, Databases)> {
    Ok(match location {
        Location::Memory => (
            open_embedded(None, database, embedded)?,
            Databases::Memory {
                database: database.to_owned(),
            },
        ),
        Location::Embedded(path) => (
            open_embedded(Some(path), database, embedded)?,
            embedded_databases(path, embedded),
        ),
        Location::Postgres(url) => connect_postgres(url, database).await?,
        // The URL names the database (`/db/NAME`); the builder's `database`
        // is for the engines whose URL names a server only.
        Location::Server(url) => connect_server(url, api_key).await?,
    })
}

#[cfg(feature = "sqlite")]
fn embedded_databases(path: &Path, options: &EmbeddedOptions) -> Databases {
    Databases::Embedded {
        directory: folio_sqlite::DataDirectory::new(path),
        options: options.clone(),
    }
}

#[cfg(not(feature = "sqlite"))]
fn embedded_databases(_: &Path, _: &EmbeddedOptions) -> Databases {
    Databases::Unknown
}

/// Connects the remote engine to the server database at `url`.
#[cfg(feature = "remote")]
async fn connect_server(url: &str, api_key: Option<&str>) -> Result<(EngineRef, Databases)> {
    let options = folio_remote::RemoteOptions {
        api_key: api_key.map(str::to_owned),
        ..folio_remote::RemoteOptions::default()
    };
    let engine = Arc::new(folio_remote::RemoteEngine::connect(url, options).await?);
    Ok((engine.clone() as EngineRef, Databases::Remote(engine)))
}

#[cfg(not(feature = "remote"))]
async fn connect_server(_: &str, _: Option<&str>) -> Result<(EngineRef, Databases)> {
    Err(Error::InvalidInput(
        "this build of folio has no remote engine: enable the `remote` feature".into(),
    ))
}

/// Connects the PostgreSQL engine to the Folio database `database` (a
/// schema) on the server at `url`.
#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, database: &str) -> Result<(EngineRef, Databases)> {
    let engine =
        folio_postgres::PgEngine::connect(url, database, folio_postgres::PgOptions::default())
            .await?;
    let databases = Databases::Postgres {
        url: url.to_owned(),
    };
    Ok((Arc::new(engine) as EngineRef, databases))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_: &str, _: &str) -> Result<(EngineRef, Databases)> {
    Err(Error::InvalidInput(
        "this build of folio has no PostgreSQL engine: enable the `postgres` feature".into(),
    ))
}

/// Opens the embedded database `database` in the directory `directory`
/// (`None`: in memory).
#[cfg(feature = "sqlite")]
fn open_embedded(
    directory: Option<&Path>,
    database: &str,
    options: &EmbeddedOptions,
) -> Result<EngineRef> {
    use folio_sqlite::{DataDirectory, SqliteEngine};

    let engine = match directory {
        None => SqliteEngine::in_memory(options.clone())?,
        Some(directory) => DataDirectory::new(directory).open(database, options.clone())?,
    };
    Ok(Arc::new(engine) as EngineRef)
}

#[cfg(not(feature = "sqlite"))]
fn open_embedded(_: Option<&Path>, _: &str, _: &EmbeddedOptions) -> Result<EngineRef> {
    Err(Error::InvalidInput(
        "this build of folio has no embedded engine (the `sqlite` feature)".into(),
    ))
}
