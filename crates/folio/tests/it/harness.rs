//! The engines the conformance suite runs against.
//!
//! A scenario is an `async fn(Harness)`; `conformance!(a, b, …)` makes one
//! `#[tokio::test]` per scenario and engine, in modules named after the
//! engines, so `cargo test disk::` runs one engine and `cargo test
//! two_sessions` one scenario everywhere. Every test gets its own database:
//! a temporary directory, a private in-memory engine, or its own Folio
//! database (PostgreSQL schema) on the throwaway PostgreSQL cluster
//! (`folio_postgres::testing::TestCluster::shared`, or the server named by
//! `FOLIO_TEST_POSTGRES`), or its own Folio server (in process, on a
//! loopback port) reached through `folio_remote::RemoteEngine`.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use folio::{
    ChangeVector, Document, DocumentStore, DocumentStoreBuilder, EngineRef, SqliteEngine,
    SqliteOptions,
};
use folio_postgres::testing::TestCluster;
use folio_postgres::{PgEngine, PgOptions};
use folio_remote::{RemoteEngine, RemoteOptions};
use serde::{Deserialize, Serialize};

/// Which engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The embedded engine in memory.
    Memory,
    /// The embedded engine on disk, in a temporary directory.
    Disk,
    /// The PostgreSQL engine, on the shared test cluster, in a database
    /// (schema) of the test's own.
    Postgres,
    /// The remote engine (HTTP), against a Folio server of the test's own
    /// serving an embedded database in a temporary directory.
    Remote,
}

/// A Folio server in the test's process (`folio_server::router` on
/// `127.0.0.1:0`), stopped when the harness is dropped.
pub struct RemoteServer {
    /// The test's database on it: `http://127.0.0.1:PORT/db/default`.
    pub url: String,
    /// The server's data directory.
    data: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl RemoteServer {
    async fn start() -> Self {
        use folio_server::{AppState, Backend, Databases, Limits};

        let data = tempfile::tempdir().expect("a temporary directory");
        let databases = Databases::new(Backend::Embedded {
            dir: data.path().to_path_buf(),
            options: SqliteOptions::default(),
        });
        databases
            .create(folio::DEFAULT_DATABASE)
            .await
            .expect("the server creates the test's database");
        let router = folio_server::router(AppState::new(
            databases,
            None,
            Limits::default(),
            Vec::<String>::new(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("the bound address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the test server serves");
        });
        RemoteServer {
            url: format!("http://{address}/db/{}", folio::DEFAULT_DATABASE),
            data,
            task,
        }
    }

    /// A new client (its own connections) of the test's database.
    pub async fn connect(&self) -> EngineRef {
        let engine = RemoteEngine::connect(&self.url, RemoteOptions::default())
            .await
            .unwrap_or_else(|error| panic!("RemoteEngine connects to {}: {error:?}", self.url));
        Arc::new(engine)
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a PostgreSQL test's database is.
#[derive(Clone, Debug)]
pub struct PostgresDatabase {
    /// The server (`postgres://…`).
    pub url: String,
    /// The Folio database name (`PgEngine::connect`'s `database`).
    pub database: String,
    /// The PostgreSQL schema holding it, unquoted (`folio_{database}`).
    pub schema: String,
}

impl PostgresDatabase {
    /// The schema as an SQL identifier: `"folio_…"`.
    pub fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.schema.replace('"', "\"\""))
    }
}

/// One test's database.
pub struct Harness {
    pub kind: EngineKind,
    dir: tempfile::TempDir,
    /// The engine every store of the test shares (in memory: a second
    /// in-memory engine would be a different database; PostgreSQL: one pool
    /// per test, as an application would have). `None` on disk, where each
    /// store opens the directory.
    engine: Option<EngineRef>,
    postgres: Option<PostgresDatabase>,
    remote: Option<RemoteServer>,
    /// The engines by their type, for what only they do (backups).
    memory_engine: Option<Arc<SqliteEngine>>,
    postgres_engine: Option<Arc<PgEngine>>,
}

impl Harness {
    pub async fn new(kind: EngineKind) -> Self {
        let remote = match kind {
            EngineKind::Remote => Some(RemoteServer::start().await),
            _ => None,
        };
        let mut memory_engine = None;
        let mut postgres_engine = None;
        let (engine, postgres) = match kind {
            EngineKind::Memory => {
                let engine = Arc::new(
                    SqliteEngine::in_memory(SqliteOptions::default())
                        .expect("an in-memory engine opens"),
                );
                memory_engine = Some(engine.clone());
                (Some(engine as EngineRef), None)
            }
            EngineKind::Disk => (None, None),
            EngineKind::Postgres => {
                let url = TestCluster::shared().url().to_owned();
                let database = unique_database_name();
                let engine = PgEngine::connect(&url, &database, PgOptions::default())
                    .await
                    .unwrap_or_else(|error| {
                        panic!("PgEngine connects to {url}, database {database}: {error:?}")
                    });
                let postgres = PostgresDatabase {
                    url,
                    schema: bare_schema(&engine),
                    database,
                };
                let engine = Arc::new(engine);
                postgres_engine = Some(engine.clone());
                (Some(engine as EngineRef), Some(postgres))
            }
            EngineKind::Remote => (
                Some(remote.as_ref().expect("started above").connect().await),
                None,
            ),
        };
        Harness {
            kind,
            dir: tempfile::tempdir().expect("a temporary directory"),
            engine,
            postgres,
            remote,
            memory_engine,
            postgres_engine,
        }
    }

    /// Backs the test's database up to the new file `file`, the way its
    /// engine does: `SqliteEngine::backup_to` (in memory, on disk), a
    /// PostgreSQL snapshot written as an embedded file, or the server's
    /// `GET …/backup` (remote, through `folio backup`'s client).
    pub async fn backup(&self, file: &std::path::Path) {
        match self.kind {
            EngineKind::Memory => {
                let engine = self.memory_engine.as_ref().expect("set for memory");
                engine.backup_to(file).await.expect("the backup is made");
            }
            EngineKind::Disk => {
                // The engine the stores share (or the file, opened now).
                let engine = SqliteEngine::open(
                    self.database_file().expect("on disk"),
                    SqliteOptions::default(),
                )
                .expect("the database opens");
                engine.backup_to(file).await.expect("the backup is made");
            }
            EngineKind::Postgres => {
                use folio_core::SnapshotReader as _;
                let engine = self.postgres_engine.as_ref().expect("set for PostgreSQL");
                let mut reader = engine
                    .snapshot(folio_core::SnapshotContents::Everything)
                    .await
                    .expect("the snapshot is read");
                let writer = folio_sqlite::BackupWriter::create(file, reader.header())
                    .await
                    .expect("the backup file is made");
                folio_core::copy_snapshot(&mut reader, Box::new(writer))
                    .await
                    .expect("the backup is written");
            }
            EngineKind::Remote => {
                folio_cli::transfer::backup(&self.server_place(folio::DEFAULT_DATABASE), file)
                    .await
                    .expect("the server makes the backup");
            }
        }
    }

    /// A new database of the test's kind restored from the backup `file`,
    /// and an engine on it: a file beside the test's (in memory, on disk),
    /// a new schema (PostgreSQL), a new database on the test's server
    /// (remote, `POST …/restore`).
    pub async fn restore(
        &self,
        file: &std::path::Path,
        identity: folio_core::Identity,
    ) -> EngineRef {
        match self.kind {
            EngineKind::Memory | EngineKind::Disk => {
                let target = self
                    .dir
                    .path()
                    .join(format!("{}.sqlite", unique_database_name()));
                folio_sqlite::restore_backup(file, &target, identity).expect("the backup restores");
                Arc::new(
                    SqliteEngine::open(&target, SqliteOptions::default())
                        .expect("the restored database opens"),
                )
            }
            EngineKind::Postgres => self.copy_to_postgres(file, identity).await.0,
            EngineKind::Remote => {
                let database = unique_database_name();
                folio_cli::transfer::restore(file, &self.server_place(&database), identity)
                    .await
                    .expect("the server restores the backup");
                let url = self.remote.as_ref().expect("remote").url.replace(
                    &format!("/db/{}", folio::DEFAULT_DATABASE),
                    &format!("/db/{database}"),
                );
                Arc::new(
                    RemoteEngine::connect(&url, RemoteOptions::default())
                        .await
                        .expect("a client of the restored database"),
                )
            }
        }
    }

    /// A new database on the shared PostgreSQL cluster loaded from the
    /// backup `file` (what `folio copy … postgres://…` does): an engine on
    /// it, and its name.
    pub async fn copy_to_postgres(
        &self,
        file: &std::path::Path,
        identity: folio_core::Identity,
    ) -> (EngineRef, String) {
        let url = TestCluster::shared().url().to_owned();
        let database = unique_database_name();
        folio_cli::transfer::restore(
            file,
            &folio_cli::transfer::Place::Postgres {
                url: url.clone(),
                database: database.clone(),
            },
            identity,
        )
        .await
        .expect("the backup loads into PostgreSQL");
        let engine = PgEngine::connect(&url, &database, PgOptions::default())
            .await
            .expect("the loaded database opens");
        (Arc::new(engine), database)
    }

    /// The live documents of the test's database (of `collection`, or
    /// all), read in one snapshot: the engine's own, or the server's
    /// `GET …/export` (remote). By collection, then id.
    pub async fn export(&self, collection: Option<&str>) -> Vec<folio::Entry> {
        use folio_core::SnapshotReader;
        let contents = folio_core::SnapshotContents::Documents {
            collection: collection.map(str::to_owned),
        };
        let mut reader: Box<dyn SnapshotReader> = match self.kind {
            EngineKind::Memory => Box::new(
                self.memory_engine
                    .as_ref()
                    .expect("memory")
                    .snapshot(contents)
                    .await
                    .expect("a snapshot"),
            ),
            EngineKind::Disk => Box::new(
                SqliteEngine::open(
                    self.database_file().expect("disk"),
                    SqliteOptions::default(),
                )
                .expect("the database opens")
                .snapshot(contents)
                .await
                .expect("a snapshot"),
            ),
            EngineKind::Postgres => Box::new(
                self.postgres_engine
                    .as_ref()
                    .expect("postgres")
                    .snapshot(contents)
                    .await
                    .expect("a snapshot"),
            ),
            EngineKind::Remote => {
                let mut lines = Vec::new();
                folio_cli::transfer::export(
                    &self.server_place(folio::DEFAULT_DATABASE),
                    collection,
                    &mut lines,
                )
                .await
                .expect("the server exports");
                return String::from_utf8(lines)
                    .expect("UTF-8")
                    .lines()
                    .map(entry_from_line)
                    .collect();
            }
        };
        let mut entries = Vec::new();
        while let Some(part) = reader.next_part().await.expect("the snapshot reads") {
            match part {
                folio_core::SnapshotPart::Documents(part) => entries.extend(part),
                other => panic!("an export reads documents only, got {other:?}"),
            }
        }
        entries
    }

    /// The test's server as a place of `folio backup`/`restore` (remote only).
    fn server_place(&self, database: &str) -> folio_cli::transfer::Place {
        let remote = self.remote.as_ref().expect("a remote harness");
        let base = remote
            .url
            .strip_suffix(&format!("/db/{}", folio::DEFAULT_DATABASE))
            .expect("the test database's URL");
        folio_cli::transfer::Place::Server(
            folio_cli::client::Client::new(base, database, None)
                .and_then(folio_cli::client::Client::for_transfers)
                .expect("a client of the test server"),
        )
    }

    /// A builder pointed at this test's database; add settings, then open.
    pub fn builder(&self) -> DocumentStoreBuilder {
        match &self.engine {
            Some(engine) => DocumentStore::builder().engine(engine.clone()),
            None => DocumentStore::builder().path(self.dir.path()),
        }
    }

    /// A store opened the way an application opens one, by where its
    /// database is (a URL or a directory), so that it knows what its
    /// administration acts on; in memory, a private database of its own.
    pub async fn located_store(&self) -> DocumentStore {
        self.located_builder(None)
            .open()
            .await
            .expect("the store opens")
    }

    /// A builder by where the test's database is, or (`Some(name)`) the
    /// database `name` beside it: in the same directory, on the same
    /// PostgreSQL server, on the same Folio server.
    pub fn located_builder(&self, database: Option<&str>) -> DocumentStoreBuilder {
        match self.kind {
            EngineKind::Memory => DocumentStore::builder()
                .url("memory:")
                .database(database.unwrap_or(folio::DEFAULT_DATABASE)),
            EngineKind::Disk => DocumentStore::builder()
                .path(self.dir.path())
                .database(database.unwrap_or(folio::DEFAULT_DATABASE)),
            EngineKind::Postgres => {
                let postgres = self.postgres.as_ref().expect("set for PostgreSQL");
                DocumentStore::builder()
                    .url(postgres.url.clone())
                    .database(database.unwrap_or(&postgres.database))
            }
            EngineKind::Remote => {
                let own = &self.remote.as_ref().expect("started").url;
                let url = match database {
                    Some(name) => own.replace(
                        &format!("/db/{}", folio::DEFAULT_DATABASE),
                        &format!("/db/{name}"),
                    ),
                    None => own.clone(),
                };
                DocumentStore::builder().url(url)
            }
        }
    }

    /// A store with default settings.
    pub async fn store(&self) -> DocumentStore {
        self.builder().open().await.expect("the store opens")
    }

    /// A builder as after restarting the application: on PostgreSQL a new
    /// engine (its own pool, nothing cached) on the same database; on disk
    /// the same as [`Harness::builder`] (the directory is opened again once
    /// every store of it is dropped); remote, a new client of the server.
    pub async fn reopened(&self) -> DocumentStoreBuilder {
        match self.kind {
            EngineKind::Postgres | EngineKind::Remote => {
                DocumentStore::builder().engine(self.fresh_engine().await)
            }
            EngineKind::Memory | EngineKind::Disk => self.builder(),
        }
    }

    /// A second, independent engine on this test's PostgreSQL database: its
    /// own connection pool, as another application server would have (remote:
    /// another client of the test's server).
    ///
    /// # Panics
    ///
    /// On the embedded engine (a database file belongs to one engine).
    pub async fn fresh_engine(&self) -> EngineRef {
        if let Some(remote) = &self.remote {
            return remote.connect().await;
        }
        let postgres = self
            .postgres
            .as_ref()
            .expect("a second engine on the same database needs PostgreSQL");
        let engine = PgEngine::connect(&postgres.url, &postgres.database, PgOptions::default())
            .await
            .expect("a second PgEngine connects");
        assert_eq!(bare_schema(&engine), postgres.schema);
        Arc::new(engine)
    }

    /// The embedded database file, for tests that open it directly (disk only).
    pub fn database_file(&self) -> Option<std::path::PathBuf> {
        (self.kind == EngineKind::Disk).then(|| {
            self.dir
                .path()
                .join(format!("{}.sqlite", folio::DEFAULT_DATABASE))
        })
    }

    /// The PostgreSQL server and schema, for tests that use SQL directly
    /// (PostgreSQL only).
    pub fn postgres(&self) -> Option<&PostgresDatabase> {
        self.postgres.as_ref()
    }

    /// Whether closing and opening the database again keeps its contents.
    pub fn persists(&self) -> bool {
        matches!(
            self.kind,
            EngineKind::Disk | EngineKind::Postgres | EngineKind::Remote
        )
    }
}

/// An entry from a line of an export (JSON Lines of the protocol's entries).
pub fn entry_from_line(line: &str) -> folio::Entry {
    #[derive(Deserialize)]
    struct Line {
        #[serde(flatten)]
        metadata: folio::Metadata,
        document: Box<serde_json::value::RawValue>,
    }
    let line: Line = serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("an export line ({error}): {line}"));
    folio::Entry {
        metadata: line.metadata,
        document: line.document.get().to_owned(),
    }
}

/// The engine's schema name without quotes.
fn bare_schema(engine: &PgEngine) -> String {
    let schema = engine.schema();
    schema
        .strip_prefix('"')
        .and_then(|schema| schema.strip_suffix('"'))
        .map_or_else(|| schema.to_owned(), |schema| schema.replace("\"\"", "\""))
}

/// An embedded engine on a new file `name` in a temporary directory: the
/// directory (removed when dropped), the file's path and the engine.
pub fn embedded_engine(
    name: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<folio::SqliteEngine>,
) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join(name);
    let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default())
        .expect("the embedded engine opens");
    (dir, file, Arc::new(engine))
}

/// The ids of every note `engine` holds (at most 10,000), sorted.
pub async fn note_ids(engine: &dyn folio::Engine) -> Vec<String> {
    let mut ids: Vec<String> = engine
        .scan(Note::COLLECTION, None, 10_000)
        .await
        .expect("the notes are listed")
        .into_iter()
        .map(|entry| entry.metadata.id)
        .collect();
    ids.sort();
    ids
}

/// A connection of its own to the database `file`, as another program
/// opens it, waiting up to 10 s for the engine's locks. It never copies the
/// log into the database file (no checkpoint, not even when it closes):
/// SQLite alone would write pages without the checksums Folio keeps in them
/// (only Folio may write a Folio database's file).
pub fn outside_connection(file: &std::path::Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(file).expect("the file opens");
    connection
        .busy_timeout(std::time::Duration::from_secs(10))
        .expect("a busy timeout");
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .expect("no checkpoint on close");
    connection
        .pragma_update(None, "wal_autocheckpoint", 0)
        .expect("no checkpoints");
    connection
}

/// A Folio database name no other test of any run uses: `t{n}_{pid}_{run}`
/// (a counter, the process id, and a stamp of the run, for servers named by
/// `FOLIO_TEST_POSTGRES` that outlive a run).
pub fn unique_database_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        // Base 36, the low 8 digits: valid in a database name.
        let mut stamp = String::new();
        let mut rest = nanos;
        for _ in 0..8 {
            let digit = u32::try_from(rest % 36).expect("below 36");
            stamp.push(char::from_digit(digit, 36).expect("a base-36 digit"));
            rest /= 36;
        }
        stamp
    });
    format!(
        "t{}_{}_{run}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// A client of the test's PostgreSQL server, for SQL run directly.
pub async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a direct connection to the test server");
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("direct PostgreSQL connection: {error}");
        }
    });
    client
}

/// Instantiates scenarios (`async fn(Harness)` in the calling module) for
/// every engine.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Memory).await).await;
                }
            )*
        }
        mod disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Disk).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Postgres).await).await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::harness::Harness::new(crate::harness::EngineKind::Remote).await).await;
                }
            )*
        }
    };
}

// ---- the document types of the suite ----------------------------------------

/// Opted in to concurrency checks, with change-vector and revision fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(collection = "people", optimistic_concurrency)]
pub struct Person {
    #[folio(id)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub age: u32,
    #[folio(change_vector)]
    #[serde(skip)]
    pub change_vector: Option<ChangeVector>,
    #[folio(revision)]
    #[serde(skip)]
    pub revision: u64,
}

impl Person {
    pub fn new(id: &str, name: &str) -> Self {
        Person {
            id: id.into(),
            name: name.into(),
            age: 0,
            change_vector: None,
            revision: 0,
        }
    }
}

/// No opt-in and no change-vector field: last write wins unless a session
/// turns checks on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
pub struct Note {
    pub id: String,
    pub text: String,
}

impl Note {
    pub fn new(id: &str, text: &str) -> Self {
        Note {
            id: id.into(),
            text: text.into(),
        }
    }

    /// A put of the note `id` as a raw command, for tests that drive an
    /// engine directly.
    pub fn put(id: &str, text: &str, expect: folio::Expectation) -> folio::Command {
        let json = serde_json::to_string(&Note::new(id, text)).expect("a note serializes");
        folio::Command::put(Note::COLLECTION, id, json, expect)
    }
}

/// Opted in, no change-vector field (versions come from the session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(optimistic_concurrency)]
pub struct Account {
    pub id: String,
    pub balance: i64,
}

/// A counter for read-modify-write tests; no opt-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
pub struct Counter {
    pub id: String,
    pub value: u64,
}

/// Asserts that `result` is a concurrency error and returns its conflicts.
pub fn conflicts<T: std::fmt::Debug>(result: folio::Result<T>) -> Vec<folio::Conflict> {
    match result {
        Err(folio::Error::Concurrency(error)) => error.into_conflicts(),
        other => panic!("expected a concurrency error, got {other:?}"),
    }
}

/// Stores `docs` in a fresh session with checks disabled (blind writes:
/// last write wins) and saves.
pub async fn seed<T: Document>(store: &DocumentStore, docs: Vec<T>) {
    let mut session = store.open_session_with(folio::SessionOptions {
        concurrency_checks: folio::ConcurrencyChecks::Disabled,
        ..folio::SessionOptions::default()
    });
    for doc in docs {
        session.store(doc).expect("a valid document");
    }
    session.save_changes().await.expect("seeding saves");
}
