//! Folio's PostgreSQL engine: the same sessions as the embedded engine, with
//! any number of Folio processes in front of one PostgreSQL database.
//!
//! * Each Folio database is a PostgreSQL schema (`folio_{name}`), created on
//!   first use, with a versioned migration table (see the `schema` module).
//! * **The check is in the statement that writes**: `UPDATE … WHERE etag =
//!   $expected RETURNING …`, `INSERT … ON CONFLICT DO NOTHING RETURNING …`. A
//!   statement that returns no row is a conflict; the engine then reads the
//!   actual version, collects every conflict of the batch and rolls back. So
//!   the contract holds across processes without any lock of Folio's own.
//! * The statements of a batch are **pipelined**: sent together, without
//!   waiting for each reply.
//! * Batches with read guards (`check`, or a delete that expects the
//!   document missing) run SERIALIZABLE, so a guard holds against concurrent
//!   writers, including a concurrent insert; the others run READ COMMITTED,
//!   where PostgreSQL re-checks the `WHERE` of a conditional update against
//!   the newest row version. A batch that PostgreSQL aborts to stay
//!   serializable (40001, 40P01) is run again inside the engine.
//! * **Group commit**: batches of one write (most `save_changes`) that
//!   arrive while earlier ones run are sent together as one READ COMMITTED
//!   transaction, each still checked by its own statement, so PostgreSQL
//!   pays one transaction, one round trip and one WAL flush for the group
//!   (the `group` module; [`PgOptions::commit_groups`]).
//! * Queries become `jsonb` operators with every value bound (the `query`
//!   module).
//!
//! ```no_run
//! use folio_core::{Batch, Command, Engine, Expectation};
//! use folio_postgres::{PgEngine, PgOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> folio_core::Result<()> {
//! let engine = PgEngine::connect("postgres://folio@localhost/folio", "shop", PgOptions::default()).await?;
//! let batch = Batch::from(vec![Command::put("people", "p1", r#"{"name":"Ada"}"#, Expectation::Missing)]);
//! engine.commit(batch).await?.expect("p1 was new");
//! # Ok(())
//! # }
//! ```

mod backup;
mod error;
mod feed;
mod group;
mod query;
mod schema;
pub mod testing;

pub use crate::backup::{PgLoader, PgSnapshot, open_snapshot};

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use folio_core::{
    Batch, Change, ChangeKind, ChangeVector, ChangesPage, CollectionCount, Command, CommandKind,
    CommandResult, CommitResult, ConcurrencyError, Conflict, DatabaseId, Engine, Entry, Error,
    Expectation, FieldPath, Metadata, Query, QueryResult, Result, millis_since_epoch,
    time_from_millis, validate,
};
use futures_util::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use crate::error::{Failure, classify, pool as pool_error, storage};
use crate::query::{ENTRY_COLUMNS, Param, Sql};

/// The longest Folio database name the PostgreSQL engine accepts.
pub const MAX_DATABASE_NAME: usize = 63 - "folio_".len();

/// Tuning of a [`PgEngine`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The most connections the engine's pool opens.
    pub max_connections: usize,
    /// How often a batch is retried when PostgreSQL aborts it to keep
    /// serializability (SQLSTATE 40001 or 40P01).
    pub serialization_retries: u32,
    /// How many groups of one-document batches commit at once, each as one
    /// transaction on a connection of its own (the crate documentation says
    /// how batches are grouped). 0 turns grouping off: every batch is a
    /// transaction of its own.
    pub commit_groups: usize,
    /// Run before each count of a query's matches (feature
    /// `fault-injection`; see [`BeforeCount`]).
    #[cfg(feature = "fault-injection")]
    pub before_count: Option<BeforeCount>,
}

/// A test's hook, run before each statement that counts a query's matches
/// (feature `fault-injection`; [`PgOptions::before_count`]): inside
/// `query_page`'s transaction, after the page was read. A test commits a
/// write there to show that the total is counted in the page's snapshot.
/// It blocks its thread (`tokio::task::block_in_place`: a multi-threaded
/// runtime is needed).
#[cfg(feature = "fault-injection")]
#[derive(Clone)]
pub struct BeforeCount(pub Arc<dyn Fn() + Send + Sync>);

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for BeforeCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeCount")
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            serialization_retries: 20,
            commit_groups: 2,
            #[cfg(feature = "fault-injection")]
            before_count: None,
        }
    }
}

/// The PostgreSQL engine: one Folio database is one PostgreSQL schema.
///
/// Cheap to share behind an `Arc`; it holds a connection pool.
pub struct PgEngine {
    inner: Arc<Inner>,
    /// Where one-document batches queue for a group (the `group` module).
    groups: group::Queue,
}

/// The engine's state, shared with the tasks that run groups of commits.
struct Inner {
    pool: Pool,
    schema: String,
    database_id: DatabaseId,
    statements: Statements,
    options: PgOptions,
    feed: Arc<feed::Feed>,
}

/// The SQL of the engine's statements, with the schema filled in.
struct Statements {
    get: String,
    /// `get` of one id: a plain equality, no array to encode.
    get_one: String,
    metadata: String,
    current_etag: String,
    put_version: String,
    put_missing: String,
    put_any: String,
    delete_version: String,
    delete_any: String,
    scan: String,
    changes: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        let remove_tombstone = format!(
            "t AS (DELETE FROM {s}.tombstones WHERE collection = $1 AND id = $2 AND EXISTS (SELECT 1 FROM w))"
        );
        // Every statement that takes an etag records its change in the same
        // statement (see the `feed` module for why that matters).
        let record_put = format!(
            "c AS (INSERT INTO {s}.changes (etag, kind, collection, id, revision) \
             SELECT etag, 0, $1, $2, revision FROM w)"
        );
        let put = |write: String| {
            format!(
                "WITH w AS ({write} RETURNING etag, revision), {record_put} SELECT etag, revision FROM w"
            )
        };
        let put_new = |write: String| {
            format!(
                "WITH w AS ({write} RETURNING etag, revision), {remove_tombstone}, {record_put} \
                 SELECT etag, revision FROM w"
            )
        };
        let delete_into_tombstone = |condition: &str| {
            format!(
                "WITH d AS (DELETE FROM {s}.documents WHERE collection = $1 AND id = $2{condition} RETURNING revision), \
                 t AS (INSERT INTO {s}.tombstones (collection, id, etag) SELECT $1, $2, nextval('{s}.etags') FROM d \
                 ON CONFLICT (collection, id) DO UPDATE SET etag = excluded.etag RETURNING etag), \
                 c AS (INSERT INTO {s}.changes (etag, kind, collection, id, revision) \
                 SELECT t.etag, 1, $1, $2, d.revision FROM t, d) \
                 SELECT etag FROM t"
            )
        };
        Statements {
            get: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.documents WHERE collection = $1 AND id = ANY($2)"
            ),
            get_one: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.documents WHERE collection = $1 AND id = $2"
            ),
            metadata: format!(
                "SELECT id, etag, revision, last_modified FROM {s}.documents WHERE collection = $1 AND id = ANY($2)"
            ),
            current_etag: format!(
                "SELECT etag FROM {s}.documents WHERE collection = $1 AND id = $2"
            ),
            put_version: put(format!(
                "UPDATE {s}.documents SET data = $3::text::jsonb, etag = nextval('{s}.etags'), \
                 revision = revision + 1, last_modified = $4 \
                 WHERE collection = $1 AND id = $2 AND etag = $5"
            )),
            put_missing: put_new(format!(
                "INSERT INTO {s}.documents (collection, id, data, etag, revision, last_modified) \
                 VALUES ($1, $2, $3::text::jsonb, nextval('{s}.etags'), 1, $4) \
                 ON CONFLICT (collection, id) DO NOTHING"
            )),
            put_any: put_new(format!(
                "INSERT INTO {s}.documents (collection, id, data, etag, revision, last_modified) \
                 VALUES ($1, $2, $3::text::jsonb, nextval('{s}.etags'), 1, $4) \
                 ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, etag = excluded.etag, \
                 revision = {s}.documents.revision + 1, last_modified = excluded.last_modified"
            )),
            delete_version: delete_into_tombstone(" AND etag = $3"),
            delete_any: delete_into_tombstone(""),
            scan: format!(
                "SELECT {ENTRY_COLUMNS} FROM {s}.documents WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            changes: format!(
                "SELECT etag, kind, collection, id, revision FROM {s}.changes \
                 WHERE etag > $1 AND etag <= $2 AND ($3::text IS NULL OR collection = $3) \
                 ORDER BY etag LIMIT $4"
            ),
        }
    }
}

/// The statements of a batch or group, ready to go out pipelined.
struct Prepared {
    /// Each command's write statement (`None`: it needs none).
    statements: Vec<Option<Statement>>,
    /// `current_etag`, for the actual versions of conflicts.
    current: Statement,
    /// The command indexes in the order they run.
    order: Vec<usize>,
}

/// What one command of a batch came to.
enum Outcome {
    Done(CommandResult),
    Conflict,
}

impl PgEngine {
    /// Connects to the PostgreSQL server at `url` (`postgres://user@host:port/dbname`)
    /// and opens the Folio database `database` (the schema `folio_{database}`),
    /// creating it on first use.
    pub async fn connect(url: &str, database: &str, options: PgOptions) -> Result<Self> {
        check_database_name(database)?;
        let config = parse_url(url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| Error::InvalidInput(format!("PostgreSQL pool settings: {error}")))?;
        let schema = schema::schema_name(database);
        let database_id = {
            let client = pool.get().await.map_err(pool_error)?;
            schema::migrate(&client, &schema).await?
        };
        let inner = Arc::new(Inner {
            statements: Statements::new(&schema),
            feed: feed::Feed::start(&schema, config, pool.clone()),
            pool,
            schema,
            database_id,
            options,
        });
        Ok(PgEngine {
            groups: group::Queue::start(inner.clone()),
            inner,
        })
    }

    /// The random id of this database, the tail of its change vectors.
    pub fn database_id(&self) -> &DatabaseId {
        &self.inner.database_id
    }

    /// The PostgreSQL schema holding this database (quoted).
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }
}

impl Inner {
    fn change_vector(&self, etag: i64) -> ChangeVector {
        ChangeVector::new(u64::try_from(etag).unwrap_or(0), &self.database_id)
    }

    /// The etag inside a change vector this database issued.
    fn etag_of(&self, change_vector: &ChangeVector) -> Option<i64> {
        change_vector
            .etag_in(&self.database_id)
            .and_then(|etag| i64::try_from(etag).ok())
    }

    /// Commits `batch` as a transaction of its own, retrying it when
    /// PostgreSQL aborts it to stay serializable.
    async fn commit_alone(&self, batch: &Batch) -> CommitResult {
        let serializable = needs_serializable(batch);
        let client = self.pool.get().await.map_err(pool_error)?;
        // If this future is dropped while a transaction block is open, the
        // connection must not go back to the pool: the guard detaches it
        // (closing it makes the server roll back).
        let mut guard = ConnectionGuard(Some(client));
        let mut attempt = 0;
        loop {
            let client = guard.0.as_ref().expect("held until the end");
            match self.try_commit(client, batch, serializable).await {
                Ok(verdict) => {
                    guard.release();
                    if let Ok(results) = &verdict
                        && results.iter().any(took_etag)
                    {
                        self.feed.committed();
                    }
                    return Ok(verdict);
                }
                Err(Failure::Retry(error)) => {
                    attempt += 1;
                    if attempt > self.options.serialization_retries {
                        guard.release();
                        return Err(storage("committing", error));
                    }
                    // Deterministic: the same batch runs again, against the
                    // newer state. Give the winner a moment first.
                    tokio::task::yield_now().await;
                }
                Err(Failure::Fatal(error)) => {
                    guard.release();
                    return Err(error);
                }
            }
        }
    }

    /// One attempt at a batch.
    ///
    /// A batch of one command is one statement, atomic on its own: it runs
    /// without a transaction block (one round trip). A larger batch sends
    /// `BEGIN` and every statement in one pipelined flight, then `COMMIT`, or
    /// `ROLLBACK` after reading the actual versions of the conflicts.
    async fn try_commit(
        &self,
        client: &deadpool_postgres::Object,
        batch: &Batch,
        serializable: bool,
    ) -> std::result::Result<std::result::Result<Vec<CommandResult>, ConcurrencyError>, Failure>
    {
        let now = millis_since_epoch(SystemTime::now());
        let prepared = self.prepare_all(client, &batch.commands).await?;
        let run_all = async {
            let ran = self
                .run_in_key_order(client, &batch.commands, &prepared, now)
                .await;
            // The first failure in execution order is the cause; the
            // statements after it only report the aborted transaction.
            let mut outcomes: Vec<Option<Outcome>> = (0..ran.len()).map(|_| None).collect();
            for (index, outcome) in ran {
                outcomes[index] = Some(outcome?);
            }
            Ok::<_, Failure>(
                outcomes
                    .into_iter()
                    .map(|outcome| outcome.expect("every command ran"))
                    .collect::<Vec<_>>(),
            )
        };
        if let [command] = batch.commands.as_slice() {
            return match run_all.await?.pop().expect("one command") {
                Outcome::Done(result) => Ok(Ok(vec![result])),
                Outcome::Conflict => {
                    let actual = self
                        .current_etag(client, &prepared.current, command)
                        .await?;
                    Ok(Err(ConcurrencyError::new(vec![
                        self.conflict(command, actual),
                    ])))
                }
            };
        }
        let begin = if serializable {
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
        } else {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        };
        let (began, outcomes) =
            futures_util::future::join(client.batch_execute(begin), run_all).await;
        let verdict = self
            .judge(client, batch, &prepared.current, began, outcomes)
            .await;
        let end = match &verdict {
            Ok(Ok(_)) => "COMMIT",
            _ => "ROLLBACK",
        };
        let ended = client.batch_execute(end).await;
        match (verdict, ended) {
            (Ok(Ok(results)), Ok(())) => Ok(Ok(results)),
            (Ok(Ok(_)), Err(error)) => Err(classify("committing", error)),
            (verdict, _) => verdict,
        }
    }

    /// Prepares the statements of `commands` (cached per connection) before
    /// any of them is sent, so that they can go out pipelined, and settles
    /// the order they run in.
    async fn prepare_all<C: Borrow<Command>>(
        &self,
        client: &deadpool_postgres::Object,
        commands: &[C],
    ) -> std::result::Result<Prepared, Failure> {
        let mut statements = Vec::with_capacity(commands.len());
        for command in commands {
            statements.push(self.prepare(client, command.borrow()).await?);
        }
        let current = client
            .prepare_cached(&self.statements.current_etag)
            .await
            .map_err(|e| classify("preparing a statement", e))?;
        // Statements run in (collection, id) order, so two batches (or
        // groups) touching the same documents lock them in the same order and
        // never deadlock. The sort is stable: commands on one document keep
        // their order, and commands on different documents do not depend on
        // each other.
        let mut order: Vec<usize> = (0..commands.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (commands[a].borrow(), commands[b].borrow());
            (&a.collection, &a.id).cmp(&(&b.collection, &b.id))
        });
        Ok(Prepared {
            statements,
            current,
            order,
        })
    }

    /// Runs `commands`, pipelined, in the order `prepare_all` settled:
    /// each command's index with its outcome, in execution order. Each
    /// statement is sent when this future is first polled.
    async fn run_in_key_order<C: Borrow<Command>>(
        &self,
        client: &deadpool_postgres::Object,
        commands: &[C],
        prepared: &Prepared,
        now: i64,
    ) -> Vec<(usize, std::result::Result<Outcome, Failure>)> {
        let outcomes = join_all(prepared.order.iter().map(|&index| {
            self.run(
                client,
                commands[index].borrow(),
                prepared.statements[index].as_ref(),
                &prepared.current,
                now,
            )
        }))
        .await;
        prepared.order.iter().copied().zip(outcomes).collect()
    }

    /// The verdict on a pipelined batch: its results, its conflicts (with
    /// the versions stored now), or the failure that aborted it.
    async fn judge(
        &self,
        client: &deadpool_postgres::Object,
        batch: &Batch,
        current: &Statement,
        began: std::result::Result<(), tokio_postgres::Error>,
        outcomes: std::result::Result<Vec<Outcome>, Failure>,
    ) -> std::result::Result<std::result::Result<Vec<CommandResult>, ConcurrencyError>, Failure>
    {
        began.map_err(|e| classify("starting a transaction", e))?;
        let outcomes = outcomes?;
        let mut results = Vec::with_capacity(outcomes.len());
        let mut conflicted = Vec::new();
        for (command, outcome) in batch.commands.iter().zip(outcomes) {
            match outcome {
                Outcome::Done(result) => results.push(result),
                Outcome::Conflict => conflicted.push(command),
            }
        }
        if conflicted.is_empty() {
            return Ok(Ok(results));
        }
        let actual = join_all(
            conflicted
                .iter()
                .map(|command| self.current_etag(client, current, command)),
        )
        .await;
        let mut conflicts = Vec::with_capacity(conflicted.len());
        for (command, actual) in conflicted.into_iter().zip(actual) {
            conflicts.push(self.conflict(command, actual?));
        }
        Ok(Err(ConcurrencyError::new(conflicts)))
    }

    fn conflict(&self, command: &Command, actual: Option<i64>) -> Conflict {
        Conflict::new(
            command.collection.clone(),
            command.id.clone(),
            command.expect.clone(),
            actual.map(|etag| self.change_vector(etag)),
        )
        .with_type_name(command.type_name.clone())
    }

    /// The statement a command runs (`None`: it needs none, or only the
    /// version read).
    async fn prepare(
        &self,
        client: &deadpool_postgres::Object,
        command: &Command,
    ) -> std::result::Result<Option<Statement>, Failure> {
        let statements = &self.statements;
        let sql = match (&command.kind, &command.expect) {
            (CommandKind::Put { .. }, Expectation::Version { .. }) => &statements.put_version,
            (CommandKind::Put { .. }, Expectation::Missing) => &statements.put_missing,
            (CommandKind::Put { .. }, Expectation::Any) => &statements.put_any,
            (CommandKind::Delete, Expectation::Version { .. }) => &statements.delete_version,
            (CommandKind::Delete, Expectation::Any) => &statements.delete_any,
            (CommandKind::Delete, Expectation::Missing) | (CommandKind::Check, _) => {
                return Ok(None);
            }
        };
        client
            .prepare_cached(sql)
            .await
            .map(Some)
            .map_err(|e| classify("preparing a statement", e))
    }

    /// Runs one command: its check and its write in one statement.
    async fn run(
        &self,
        client: &deadpool_postgres::Object,
        command: &Command,
        statement: Option<&Statement>,
        current: &Statement,
        now: i64,
    ) -> std::result::Result<Outcome, Failure> {
        let (collection, id) = (&command.collection, &command.id);
        let write = |params| write(client, statement, params);
        match (&command.kind, &command.expect) {
            (CommandKind::Put { document }, expect) => {
                let row = match expect {
                    Expectation::Version { change_vector } => {
                        let Some(expected) = self.etag_of(change_vector) else {
                            return Ok(Outcome::Conflict);
                        };
                        write(&[collection, id, document, &now, &expected]).await?
                    }
                    Expectation::Missing | Expectation::Any => {
                        write(&[collection, id, document, &now]).await?
                    }
                };
                Ok(match row {
                    Some(row) => {
                        let etag: i64 = row.get(0);
                        let revision: i64 = row.get(1);
                        Outcome::Done(CommandResult::Put(Metadata {
                            id: id.clone(),
                            collection: collection.clone(),
                            change_vector: self.change_vector(etag),
                            revision: u64::try_from(revision).unwrap_or(0),
                            etag: u64::try_from(etag).unwrap_or(0),
                            last_modified: time_from_millis(now),
                        }))
                    }
                    None => Outcome::Conflict,
                })
            }
            (CommandKind::Delete, Expectation::Missing) => {
                Ok(match self.current_etag(client, current, command).await? {
                    Some(_) => Outcome::Conflict,
                    None => Outcome::Done(deleted(command, None)),
                })
            }
            (CommandKind::Delete, Expectation::Version { change_vector }) => {
                let Some(expected) = self.etag_of(change_vector) else {
                    return Ok(Outcome::Conflict);
                };
                Ok(match write(&[collection, id, &expected]).await? {
                    Some(row) => Outcome::Done(deleted(command, Some(row.get(0)))),
                    None => Outcome::Conflict,
                })
            }
            (CommandKind::Delete, Expectation::Any) => {
                let row = write(&[collection, id]).await?;
                Ok(Outcome::Done(deleted(command, row.map(|row| row.get(0)))))
            }
            (CommandKind::Check, expect) => {
                let stored = self.current_etag(client, current, command).await?;
                let met = match expect {
                    Expectation::Any => true,
                    Expectation::Missing => stored.is_none(),
                    Expectation::Version { change_vector } => {
                        stored.is_some() && self.etag_of(change_vector) == stored
                    }
                };
                Ok(if met {
                    Outcome::Done(CommandResult::Checked {
                        collection: collection.clone(),
                        id: id.clone(),
                    })
                } else {
                    Outcome::Conflict
                })
            }
        }
    }

    async fn current_etag(
        &self,
        client: &deadpool_postgres::Object,
        current: &Statement,
        command: &Command,
    ) -> std::result::Result<Option<i64>, Failure> {
        Ok(client
            .query_opt(current, &[&command.collection, &command.id])
            .await
            .map_err(|e| classify("reading a document's version", e))?
            .map(|row| row.get(0)))
    }

    fn entry(&self, row: &Row, collection: &str) -> Entry {
        let etag: i64 = row.get(1);
        let revision: i64 = row.get(2);
        Entry {
            metadata: Metadata {
                id: row.get(0),
                collection: collection.to_owned(),
                change_vector: self.change_vector(etag),
                revision: u64::try_from(revision).unwrap_or(0),
                etag: u64::try_from(etag).unwrap_or(0),
                last_modified: time_from_millis(row.get(3)),
            },
            document: row.get(4),
        }
    }

    async fn rows(&self, sql: &Sql) -> Result<Vec<Row>> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&sql.text)
            .await
            .map_err(|e| storage("preparing a query", e))?;
        client
            .query(&statement, &params(sql))
            .await
            .map_err(|e| storage("running a query", e))
    }

    /// Runs the test's hook before a count (feature `fault-injection`).
    fn before_count(&self) {
        #[cfg(feature = "fault-injection")]
        if let Some(BeforeCount(hook)) = &self.options.before_count {
            tokio::task::block_in_place(|| hook());
        }
    }

    /// The rows of `select` and the count of `count`, read in one
    /// READ ONLY, REPEATABLE READ transaction: one snapshot. `BEGIN`, both
    /// statements and `COMMIT` go out in one flight (a failed statement
    /// aborts the transaction, and `COMMIT` then rolls it back).
    async fn page(&self, select: &Sql, count: &Sql) -> Result<(Vec<Row>, i64)> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let select_statement = client
            .prepare_cached(&select.text)
            .await
            .map_err(|e| storage("preparing a query", e))?;
        let count_statement = client
            .prepare_cached(&count.text)
            .await
            .map_err(|e| storage("preparing a query", e))?;
        // If this future is dropped inside the transaction, or it does not
        // end, the connection must not go back to the pool.
        let mut guard = ConnectionGuard(Some(client));
        let client = guard.0.as_ref().expect("held until the end");
        let (select_params, count_params) = (params(select), params(count));
        let begin = client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        let rows = client.query(&select_statement, &select_params);
        let counted = async {
            client
                .query_one(&count_statement, &count_params)
                .await
                .map(|row| row.get::<_, i64>(0))
        };
        let end = client.batch_execute("COMMIT");
        #[cfg(feature = "fault-injection")]
        let (began, rows, total, ended) = if self.options.before_count.is_some() {
            // The hook runs between the two statements, so they go out in
            // two flights.
            let (began, rows) = futures_util::future::join(begin, rows).await;
            self.before_count();
            let (total, ended) = futures_util::future::join(counted, end).await;
            (began, rows, total, ended)
        } else {
            futures_util::future::join4(begin, rows, counted, end).await
        };
        #[cfg(not(feature = "fault-injection"))]
        let (began, rows, total, ended) =
            futures_util::future::join4(begin, rows, counted, end).await;
        if ended.is_ok() {
            guard.release();
        }
        began.map_err(|e| storage("beginning a read", e))?;
        let rows = rows.map_err(|e| storage("running a query", e))?;
        let total = total.map_err(|e| storage("counting query results", e))?;
        ended.map_err(|e| storage("ending a read", e))?;
        Ok((rows, total))
    }
}

/// The parameters of `sql` as tokio-postgres takes them.
fn params(sql: &Sql) -> Vec<&(dyn ToSql + Sync)> {
    sql.params
        .iter()
        .map(|param| match param {
            Param::Text(text) => text as &(dyn ToSql + Sync),
            Param::Integer(integer) => integer as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Runs a command's write statement.
async fn write(
    client: &deadpool_postgres::Object,
    statement: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<Option<Row>, Failure> {
    let statement = statement.expect("every write has a statement");
    client
        .query_opt(statement, params)
        .await
        .map_err(|e| classify("writing a document", e))
}

/// Checks a Folio database name for this engine: valid, and short enough
/// for its schema name.
fn check_database_name(database: &str) -> Result<()> {
    validate::database(database)?;
    if database.len() > MAX_DATABASE_NAME {
        // PostgreSQL cuts identifiers at 63 bytes: two long names could
        // silently share one schema.
        return Err(Error::InvalidInput(format!(
            "database names on PostgreSQL have at most {MAX_DATABASE_NAME} characters (the schema is \
             \"folio_{{name}}\" and PostgreSQL names have at most 63 bytes)"
        )));
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    url.parse()
        .map_err(|error| Error::InvalidInput(format!("malformed PostgreSQL URL: {error}")))
}

/// The Folio databases on the PostgreSQL server at `url` (schemas named
/// `folio_*` with a layout), sorted.
pub async fn list_databases(url: &str) -> Result<Vec<String>> {
    let (client, driver) = connect_one(url).await?;
    let names = databases(&client).await;
    drop(client);
    let _ = driver.await;
    names
}

/// Creates the Folio database `name` (its schema, in the current layout)
/// on the PostgreSQL server at `url` unless it exists; whether it was
/// created.
pub async fn create_database(url: &str, name: &str) -> Result<bool> {
    check_database_name(name)?;
    let (client, driver) = connect_one(url).await?;
    let created = async {
        let existed = databases(&client).await?.iter().any(|known| known == name);
        schema::migrate(&client, &schema::schema_name(name)).await?;
        Ok(!existed)
    }
    .await;
    drop(client);
    let _ = driver.await;
    created
}

/// One connection (not a pool) to the server at `url`, and the task that
/// drives it (it ends once the client is dropped).
async fn connect_one(url: &str) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (client, connection) = parse_url(url)?
        .connect(NoTls)
        .await
        .map_err(|e| storage("connecting to PostgreSQL", e))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

/// The Folio databases `client`'s server holds, sorted.
async fn databases(client: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT substr(n.nspname, 7) FROM pg_namespace n \
             JOIN pg_tables t ON t.schemaname = n.nspname AND t.tablename = 'folio_migrations' \
             WHERE n.nspname LIKE 'folio\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| storage("listing databases", e))?;
    let mut names: Vec<String> = rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|name| validate::database(name).is_ok())
        .collect();
    // In byte order, whatever the server's collation.
    names.sort();
    Ok(names)
}

/// Holds a pooled connection while a batch runs; see `Engine::commit`.
struct ConnectionGuard(Option<deadpool_postgres::Object>);

impl ConnectionGuard {
    /// The batch ended (committed or rolled back): the connection may go
    /// back to the pool.
    fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Dropped mid-batch: never reuse a connection that may be
            // inside a transaction block.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

fn deleted(command: &Command, etag: Option<i64>) -> CommandResult {
    CommandResult::Deleted {
        collection: command.collection.clone(),
        id: command.id.clone(),
        etag: etag.map(|etag| u64::try_from(etag).unwrap_or(0)),
    }
}

/// Whether `batch` has read guards (`check`, or a delete that expects the
/// document missing): those need SERIALIZABLE to hold against concurrent
/// writers.
fn needs_serializable(batch: &Batch) -> bool {
    batch.commands.iter().any(|command| {
        matches!(command.kind, CommandKind::Check)
            || matches!(
                (&command.kind, &command.expect),
                (CommandKind::Delete, Expectation::Missing)
            )
    })
}

/// Whether a command's result took an etag (a change of the feed).
fn took_etag(result: &CommandResult) -> bool {
    match result {
        CommandResult::Put(_) => true,
        CommandResult::Deleted { etag, .. } => etag.is_some(),
        CommandResult::Checked { .. } => false,
    }
}

/// The statement that makes the index of `path` in `collection` (validated
/// by the caller to `[A-Za-z0-9_-]`: safe in a literal) if absent.
fn index_sql(schema: &str, collection: &str, path: &FieldPath) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {schema}.documents (collection, {}) WHERE collection = '{collection}'",
        index_name(collection, path),
        query::field(path)
    )
}

/// A stable, short name for the index of `path` in `collection` (PostgreSQL
/// names have at most 63 bytes): FNV-1a of both.
fn index_name(collection: &str, path: &FieldPath) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in collection.bytes().chain([0]).chain(path.as_str().bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"folio_index_{hash:016x}\"")
}

#[async_trait]
impl Engine for PgEngine {
    async fn commit(&self, batch: Batch) -> CommitResult {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        if batch.commands.len() == 1 && !needs_serializable(&batch) {
            return self.groups.commit(&self.inner, batch).await;
        }
        self.inner.commit_alone(&batch).await
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        validate::keys(collection, ids)?;
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        if let [id] = ids {
            let statement = client
                .prepare_cached(&self.inner.statements.get_one)
                .await
                .map_err(|e| storage("preparing a read", e))?;
            let row = client
                .query_opt(&statement, &[&collection, id])
                .await
                .map_err(|e| storage("reading a document", e))?;
            return Ok(vec![row.map(|row| self.inner.entry(&row, collection))]);
        }
        let statement = client
            .prepare_cached(&self.inner.statements.get)
            .await
            .map_err(|e| storage("preparing a read", e))?;
        // One statement: the documents come from one snapshot.
        let rows = client
            .query(&statement, &[&collection, &ids])
            .await
            .map_err(|e| storage("reading documents", e))?;
        let mut found: Vec<Option<Entry>> = vec![None; ids.len()];
        for row in rows {
            let entry = self.inner.entry(&row, collection);
            for (slot, id) in found.iter_mut().zip(ids) {
                if *id == entry.metadata.id {
                    *slot = Some(entry.clone());
                }
            }
        }
        Ok(found)
    }

    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        validate::keys(collection, ids)?;
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.inner.statements.metadata)
            .await
            .map_err(|e| storage("preparing a read", e))?;
        let rows = client
            .query(&statement, &[&collection, &ids])
            .await
            .map_err(|e| storage("reading metadata", e))?;
        let mut found: Vec<Option<Metadata>> = vec![None; ids.len()];
        for row in rows {
            let id: String = row.get(0);
            let etag: i64 = row.get(1);
            let revision: i64 = row.get(2);
            let metadata = Metadata {
                collection: collection.to_owned(),
                change_vector: self.inner.change_vector(etag),
                revision: u64::try_from(revision).unwrap_or(0),
                etag: u64::try_from(etag).unwrap_or(0),
                last_modified: time_from_millis(row.get(3)),
                id,
            };
            for (slot, id) in found.iter_mut().zip(ids) {
                if *id == metadata.id {
                    *slot = Some(metadata.clone());
                }
            }
        }
        Ok(found)
    }

    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        let sql = query::select(&self.inner.schema, query)?;
        let rows = self.inner.rows(&sql).await?;
        Ok(rows
            .iter()
            .map(|row| self.inner.entry(row, &query.collection))
            .collect())
    }

    async fn count(&self, query: &Query) -> Result<u64> {
        let sql = query::count(&self.inner.schema, query)?;
        self.inner.before_count();
        let rows = self.inner.rows(&sql).await?;
        let count: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn collections(&self) -> Result<Vec<CollectionCount>> {
        let sql = query::collections(&self.inner.schema);
        let rows = self.inner.rows(&sql).await?;
        let mut collections: Vec<CollectionCount> = rows
            .iter()
            .map(|row| CollectionCount {
                name: row.get(0),
                documents: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            })
            .collect();
        // By code point, as every engine orders them (the column's
        // collation is "C", which does; sorting here keeps it so whatever
        // the plan).
        collections.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(collections)
    }

    /// The page and the total in one transaction: one snapshot.
    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        let select = query::select(&self.inner.schema, query)?;
        let count = query::count(&self.inner.schema, query)?;
        let (rows, total) = self.inner.page(&select, &count).await?;
        Ok(QueryResult {
            entries: rows
                .iter()
                .map(|row| self.inner.entry(row, &query.collection))
                .collect(),
            total: u64::try_from(total).unwrap_or(0),
        })
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
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.inner.statements.scan)
            .await
            .map_err(|e| storage("preparing a scan", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&collection, &after.unwrap_or(""), &limit])
            .await
            .map_err(|e| storage("scanning a collection", e))?;
        Ok(rows
            .iter()
            .map(|row| self.inner.entry(row, collection))
            .collect())
    }

    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()> {
        validate::collection(collection)?;
        let sql = index_sql(&self.inner.schema, collection, path);
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| storage("creating an index", e))
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
        self.inner.feed.ensure_kept().await?;
        let horizon = self.inner.feed.horizon.current();
        if since >= horizon {
            return Ok(ChangesPage::new(Vec::new(), since, horizon, limit));
        }
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.inner.statements.changes)
            .await
            .map_err(|e| storage("preparing the changes feed", e))?;
        let bound = |etag: u64| i64::try_from(etag).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[
                    &bound(since),
                    &bound(horizon),
                    &collection,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| storage("reading the changes feed", e))?;
        let changes = rows
            .iter()
            .map(|row| {
                let etag: i64 = row.get(0);
                let kind: i16 = row.get(1);
                let revision: i64 = row.get(4);
                Change {
                    etag: u64::try_from(etag).unwrap_or(0),
                    kind: if kind == 1 {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Put
                    },
                    collection: row.get(2),
                    id: row.get(3),
                    change_vector: self.inner.change_vector(etag),
                    revision: u64::try_from(revision).unwrap_or(0),
                }
            })
            .collect();
        Ok(ChangesPage::new(changes, since, horizon, limit))
    }

    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64> {
        self.inner.feed.ensure_kept().await?;
        Ok(self.inner.feed.horizon.wait_beyond(since, timeout).await)
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        self.inner.feed.close();
    }
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine")
            .field("schema", &self.inner.schema)
            .field("database_id", &self.inner.database_id)
            .finish_non_exhaustive()
    }
}
