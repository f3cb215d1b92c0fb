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
//!   (the `commit::group` module; [`PgOptions::commit_groups`]).
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
mod commit;
mod error;
mod feed;
mod nodes;
mod query;
mod read;
mod revisions;
mod schema;
pub mod testing;

pub use crate::backup::{PgLoader, PgSnapshot, open_snapshot};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use folio_core::{
    Batch, ChangeVector, ChangesPage, CollectionConfig, CollectionCount, CommitResult, Committed,
    DatabaseId, Engine, EngineErrorKind, EngineRef, Entry, Error, FieldPath, Metadata, Query,
    QueryResult, Reads, Result, RevisionsPage, validate,
};
use tokio_postgres::NoTls;

use crate::commit::{Key, needs_serializable};
use crate::error::{pool as pool_error, storage};
use crate::query::ENTRY_COLUMNS;

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
    /// How long the id of a committed batch is kept ([`folio_core::Batch::id`]):
    /// a batch sent again with its id within this time gets its recorded
    /// results and writes nothing. A day by default.
    pub batch_retention: std::time::Duration,
    /// How long a batch with an id whose commit ended in doubt (the
    /// connection lost during `COMMIT`, a failover) is sent again, until a
    /// primary answers with its outcome, before it is
    /// [`folio_core::Error::InDoubt`]. 30 s by default.
    pub resend_for: std::time::Duration,
    /// How long one attempt at a batch with an id may take before its
    /// connection is dropped and the batch sent again (15 s by default):
    /// a primary cut off from its cluster (its Patroni frozen, say) holds
    /// commits forever, waiting for a standby that follows another leader.
    /// The attempt's backend is not cancelled (a cancelled wait would show
    /// an unreplicated commit); the id keeps the two from both committing.
    pub commit_timeout: std::time::Duration,
    /// How long a read after a position ([`folio_core::Reads::After`])
    /// waits for a node that shows it, when no node answering does (the
    /// standbys behind, no primary answering), before it fails. 2 s by
    /// default.
    pub standby_wait: std::time::Duration,
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
            batch_retention: std::time::Duration::from_secs(24 * 60 * 60),
            resend_for: std::time::Duration::from_secs(30),
            commit_timeout: std::time::Duration::from_secs(15),
            standby_wait: std::time::Duration::from_secs(2),
            #[cfg(feature = "fault-injection")]
            before_count: None,
        }
    }
}

/// The PostgreSQL engine: one Folio database is one PostgreSQL schema.
///
/// Cheap to share behind an `Arc`; it holds a connection pool (and, for a
/// URL naming several hosts, one per host for reads from standbys: the
/// `nodes` module).
pub struct PgEngine {
    inner: Arc<Inner>,
    /// Where one-document batches queue for a group (`commit::group`).
    groups: Arc<commit::group::Queue>,
    /// Where this handle's reads go ([`Engine::reads`]).
    route: Route,
}

/// Where a handle's reads go.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// The engine's pool: the primary.
    Primary,
    /// Any node; with a log position, one that replayed that far.
    Nodes(Option<u64>),
}

/// The engine's state, shared with the tasks that run groups of commits.
struct Inner {
    pool: Pool,
    schema: String,
    database_id: DatabaseId,
    statements: Statements,
    options: PgOptions,
    feed: Arc<feed::Feed>,
    /// Each host of a multi-host URL, for reads from any node.
    nodes: Option<nodes::Nodes>,
    /// Whether writes reach a primary: said once when they stop, once
    /// when they resume.
    primary: Primary,
}

/// Whether the engine's writes reach a primary. Losing it (a failover, a
/// network partition) is logged once, as a warning, and writes resuming
/// once, with how long they were held up: not once per failed request.
#[derive(Default)]
struct Primary {
    /// Set while no primary answers (the fast path of every commit reads
    /// only this).
    lost: std::sync::atomic::AtomicBool,
    since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Primary {
    /// A write failed in a way that passes once a primary answers.
    fn lost(&self, error: &Error) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_none() {
            *since = Some(std::time::Instant::now());
            self.lost.store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!(
                %error,
                "writes reach no PostgreSQL primary (a failover or a lost connection): each is \
                 sent again with its batch id until a primary answers"
            );
        }
    }

    /// A write committed: a primary answers.
    fn reached(&self) {
        if !self.lost.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lost) = since.take() {
            self.lost.store(false, std::sync::atomic::Ordering::Release);
            tracing::info!(
                seconds = format!("{:.1}", lost.elapsed().as_secs_f64()),
                "a PostgreSQL primary answers again: writes resumed"
            );
        }
    }
}

/// The SQL of the engine's statements, with the schema filled in.
struct Statements {
    get: String,
    /// `get` of one id: a plain equality, no array to encode.
    get_one: String,
    metadata: String,
    current_etag: String,
    /// What a conflict reports: the stored version and its document.
    stored: String,
    put_version: String,
    put_missing: String,
    put_any: String,
    delete_version: String,
    delete_any: String,
    /// The writes of a one-command batch with an id: each also records the
    /// batch (`batches`) in its statement, when it writes. The batch's id,
    /// fingerprint (and, for deletes, the time) are the last parameters.
    put_version_keyed: String,
    put_missing_keyed: String,
    put_any_keyed: String,
    delete_version_keyed: String,
    delete_any_keyed: String,
    /// Records a committed batch of several commands: id, fingerprint,
    /// results, time.
    record_batch: String,
    /// A recorded batch: fingerprint, results, time, and the log's
    /// position.
    recorded_batch: String,
    /// Deletes the batches recorded before `$1`.
    prune_batches: String,
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
        // A collection with revisions on keeps each version written (or a
        // deletion) in the write's statement, and drops its oldest beyond
        // `keep`: of the versions the statement sees, `keep - 1` stay, and
        // the one written now. `version` is the version's etag, revision,
        // time, deletion and document, from the relations `from`.
        let keep_revision = |version: &str, from: &str| {
            format!(
                "r AS (INSERT INTO {s}.revisions (collection, id, etag, revision, last_modified, deleted, data) \
                 SELECT $1, $2, {version} FROM {from}, {s}.collections k \
                 WHERE k.collection = $1 AND k.keep > 0 RETURNING etag), \
                 p AS (DELETE FROM {s}.revisions WHERE collection = $1 AND id = $2 \
                 AND EXISTS (SELECT 1 FROM r) AND etag <= (SELECT etag FROM {s}.revisions \
                 WHERE collection = $1 AND id = $2 ORDER BY etag DESC \
                 OFFSET (SELECT keep - 1 FROM {s}.collections WHERE collection = $1) LIMIT 1))"
            )
        };
        let keep_put = keep_revision("w.etag, w.revision, $4::bigint, false, w.data", "w");
        // A one-command batch with an id records itself in its write's
        // statement: its result as `folio_core::record_results` writes it
        // (kind 0 put, 1 delete), and the time.
        let record = |kind: u8, etag: &str, revision: &str, key: usize, now: &str| {
            format!(
                "b AS (INSERT INTO {s}.batches (id, fingerprint, results, committed_at) \
                 SELECT ${key}::text, ${}::bytea, json_build_array(json_build_object(\
                 'k', {kind}, 'c', $1::text, 'i', $2::text, \
                 'e', {etag}, 'r', {revision}))::text, {now}::bigint",
                key + 1
            )
        };
        // A write that can be refused answers with what refused it: when
        // its CTE `written` wrote nothing, the stored version its statement
        // saw (etag, revision, document, time); a written row has no
        // document (see `commit::Inner::run`).
        let stored_unless = |written: &str| {
            format!(
                " UNION ALL SELECT etag, revision, data::text, last_modified FROM {s}.documents \
                 WHERE collection = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM {written})"
            )
        };
        let put = |write: String, keyed: Option<usize>| {
            let b = keyed.map_or(String::new(), |key| {
                format!(", {} FROM w)", record(0, "etag", "revision", key, "$4"))
            });
            format!(
                "WITH w AS ({write} RETURNING etag, revision, data), {record_put}, {keep_put}{b} \
                 SELECT etag, revision, NULL::text, NULL::bigint FROM w{}",
                stored_unless("w")
            )
        };
        let put_new = |write: String, keyed: Option<usize>| {
            let b = keyed.map_or(String::new(), |key| {
                format!(", {} FROM w)", record(0, "etag", "revision", key, "$4"))
            });
            format!(
                "WITH w AS ({write} RETURNING etag, revision, data), {remove_tombstone}, {record_put}, \
                 {keep_put}{b} SELECT etag, revision, NULL::text, NULL::bigint FROM w{}",
                stored_unless("w")
            )
        };
        // A delete of a missing document under `Any` is a success too: it
        // records itself whether it deleted or not.
        // `now`: the parameter with the time.
        let delete_into_tombstone = |condition: &str, now: &str, keyed: Option<(usize, bool)>| {
            // Only a conditional delete can be refused.
            let refused = if condition.is_empty() {
                String::new()
            } else {
                stored_unless("d")
            };
            let b = keyed.map_or(String::new(), |(key, always)| {
                if always {
                    format!(", {})", record(1, "(SELECT etag FROM t)", "NULL", key, now))
                } else {
                    format!(", {} FROM t)", record(1, "etag", "NULL", key, now))
                }
            });
            let keep_delete = keep_revision(
                &format!("t.etag, d.revision, {now}::bigint, true, NULL::jsonb"),
                "t, d",
            );
            format!(
                "WITH d AS (DELETE FROM {s}.documents WHERE collection = $1 AND id = $2{condition} RETURNING revision), \
                 t AS (INSERT INTO {s}.tombstones (collection, id, etag) SELECT $1, $2, nextval('{s}.etags') FROM d \
                 ON CONFLICT (collection, id) DO UPDATE SET etag = excluded.etag RETURNING etag), \
                 c AS (INSERT INTO {s}.changes (etag, kind, collection, id, revision) \
                 SELECT t.etag, 1, $1, $2, d.revision FROM t, d), {keep_delete}{b} \
                 SELECT etag, NULL::bigint, NULL::text, NULL::bigint FROM t{refused}"
            )
        };
        let update = format!(
            "UPDATE {s}.documents SET data = $3::text::jsonb, etag = nextval('{s}.etags'), \
             revision = revision + 1, last_modified = $4 \
             WHERE collection = $1 AND id = $2 AND etag = $5"
        );
        let insert = format!(
            "INSERT INTO {s}.documents (collection, id, data, etag, revision, last_modified) \
             VALUES ($1, $2, $3::text::jsonb, nextval('{s}.etags'), 1, $4) \
             ON CONFLICT (collection, id) DO NOTHING"
        );
        let upsert = format!(
            "INSERT INTO {s}.documents (collection, id, data, etag, revision, last_modified) \
             VALUES ($1, $2, $3::text::jsonb, nextval('{s}.etags'), 1, $4) \
             ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, etag = excluded.etag, \
             revision = {s}.documents.revision + 1, last_modified = excluded.last_modified"
        );
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
            stored: format!(
                "SELECT etag, revision, data::text, last_modified FROM {s}.documents \
                 WHERE collection = $1 AND id = $2"
            ),
            put_version: put(update.clone(), None),
            put_missing: put_new(insert.clone(), None),
            put_any: put_new(upsert.clone(), None),
            delete_version: delete_into_tombstone(" AND etag = $3", "$4", None),
            delete_any: delete_into_tombstone("", "$3", None),
            put_version_keyed: put(update, Some(6)),
            put_missing_keyed: put_new(insert, Some(5)),
            put_any_keyed: put_new(upsert, Some(5)),
            delete_version_keyed: delete_into_tombstone(" AND etag = $3", "$4", Some((5, false))),
            delete_any_keyed: delete_into_tombstone("", "$3", Some((4, true))),
            record_batch: format!(
                "INSERT INTO {s}.batches (id, fingerprint, results, committed_at) VALUES ($1, $2, $3, $4)"
            ),
            recorded_batch: format!(
                "SELECT fingerprint, results, committed_at, \
                 (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint FROM {s}.batches WHERE id = $1"
            ),
            prune_batches: format!("DELETE FROM {s}.batches WHERE committed_at < $1"),
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
        let nodes = nodes::Nodes::of(&config, options.max_connections, options.standby_wait)?;
        let inner = Arc::new(Inner {
            statements: Statements::new(&schema),
            nodes,
            feed: feed::Feed::start(&schema, config, pool.clone()),
            pool,
            schema,
            database_id,
            options,
            primary: Primary::default(),
        });
        tokio::spawn(prune_batches(Arc::downgrade(&inner)));
        if inner.nodes.is_some() {
            tokio::spawn(nodes::Nodes::ask(Arc::downgrade(&inner)));
        }
        Ok(PgEngine {
            groups: Arc::new(commit::group::Queue::start(inner.clone())),
            inner,
            route: Route::Primary,
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

impl PgEngine {
    /// One attempt at `batch`: in a group when it is one write without read
    /// guards, else alone.
    async fn commit_once(&self, batch: Batch) -> CommitResult {
        if batch.commands.len() == 1 && !needs_serializable(&batch) {
            return self.groups.commit(&self.inner, batch).await;
        }
        self.inner.commit_alone(&batch).await
    }

    /// Commits a batch with an id, and learns the outcome when an attempt
    /// does not tell it.
    ///
    /// After a conflict or a failure, the batch's record is looked up: an
    /// earlier attempt (or an earlier sending of the batch) may have
    /// committed it, with the answer lost, and then the recorded results are
    /// the answer. A failure that can pass (the connection lost, a standby
    /// answering during a failover) sends the batch again, with a growing
    /// pause, for [`PgOptions::resend_for`]: the record, or the id's unique
    /// key when a lost attempt commits late, keeps it from committing twice.
    /// Past that time it is [`Error::InDoubt`].
    async fn commit_keyed(&self, batch: Batch, key: Key) -> CommitResult {
        let deadline = tokio::time::Instant::now() + self.inner.options.resend_for;
        let mut pause = std::time::Duration::from_millis(20);
        let mut in_doubt = false;
        loop {
            let attempt = tokio::time::timeout(
                self.inner.options.commit_timeout,
                self.commit_once(batch.clone()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::Engine(folio_core::EngineError::new(
                    EngineErrorKind::Timeout,
                    format!(
                        "committing took longer than {} s (a primary cut off from its \
                                 standby?); the batch is sent again",
                        self.inner.options.commit_timeout.as_secs()
                    ),
                )))
            });
            let attempt = match attempt {
                Ok(verdict) => {
                    self.inner.primary.reached();
                    match verdict {
                        Ok(committed) => return Ok(Ok(committed)),
                        conflict => Ok(conflict),
                    }
                }
                Err(error) => {
                    if passing(&error) {
                        self.inner.primary.lost(&error);
                    }
                    Err(error)
                }
            };
            let failure = match self.inner.recorded(&batch, &key).await {
                Ok(Some(committed)) => return Ok(Ok(committed)),
                Err(reused @ Error::BatchIdReused(_)) => return Err(reused),
                // Not recorded: the batch did not commit (yet).
                Ok(None) => match attempt {
                    Ok(Err(conflict)) => return Ok(Err(conflict)),
                    Err(error) if passing(&error) => error,
                    Err(error) if in_doubt => return Err(doubt(&batch, error)),
                    Err(error) => return Err(error),
                    Ok(Ok(_)) => unreachable!("returned above"),
                },
                // The record cannot be read either: while that can pass,
                // the batch is sent again (a conflict may be its own).
                Err(lookup) => match attempt {
                    Err(error) if passing(&error) => error,
                    _ if passing(&lookup) => lookup,
                    Err(error) if in_doubt => return Err(doubt(&batch, error)),
                    Err(error) => return Err(error),
                    Ok(Err(conflict)) => return Ok(Err(conflict)),
                    Ok(Ok(_)) => unreachable!("returned above"),
                },
            };
            in_doubt = true;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(doubt(&batch, failure));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }
}

/// How often an engine deletes the records of batches older than its
/// retention.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes the records of batches committed longer ago than the retention,
/// every [`PRUNE_INTERVAL`], while the engine lives. Each Folio process on
/// the database does; a failure waits for the next round (the records
/// only take room).
async fn prune_batches(inner: std::sync::Weak<Inner>) {
    let mut rounds = tokio::time::interval(PRUNE_INTERVAL);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let retention =
            i64::try_from(inner.options.batch_retention.as_millis()).unwrap_or(i64::MAX);
        let before =
            folio_core::millis_since_epoch(std::time::SystemTime::now()).saturating_sub(retention);
        if let Ok(client) = inner.pool.get().await {
            let _ = client
                .execute(&inner.statements.prune_batches, &[&before])
                .await;
        }
    }
}

/// Whether a failure can pass by itself: the connection lost or refused, a
/// standby answering, a timeout. A batch in doubt is sent again after one;
/// a read from a node is asked of another (the `nodes` module).
fn passing(error: &Error) -> bool {
    matches!(error, Error::Engine(engine)
        if matches!(engine.kind(), EngineErrorKind::Network | EngineErrorKind::Timeout))
}

/// The error of `batch`, whose outcome stayed unknown: the last failure.
fn doubt(batch: &Batch, failure: Error) -> Error {
    Error::InDoubt(
        folio_core::InDoubt::new(
            batch.id.clone(),
            "its commit was interrupted and no primary answered with its outcome in time",
        )
        .with_source(failure),
    )
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

/// The hosts a PostgreSQL URL names, as libpq reads it: every host of a
/// multi-host URL (`postgres://u@h1:5432,h2:5432/db`), socket directories,
/// and `host`/`hostaddr` parameters. None: libpq's default socket.
pub fn url_hosts(url: &str) -> Result<Vec<String>> {
    let config = parse_url(url)?;
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    hosts.extend(config.get_hostaddrs().iter().map(ToString::to_string));
    Ok(hosts)
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
/// created. A schema `folio_{name}` without Folio's layout counts as
/// absent and is given it; two callers creating one name at once may both
/// be told they created it (the layout's steps are idempotent).
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
        match Key::of(&batch) {
            None if batch.is_empty() => Ok(Ok(Committed::default())),
            None => self.commit_once(batch).await,
            // An empty batch only asks whether its id committed.
            Some(key) if batch.is_empty() => Ok(Ok(self
                .inner
                .recorded(&batch, &key)
                .await?
                .unwrap_or_default())),
            Some(key) => self.commit_keyed(batch, key).await,
        }
    }

    fn reads(self: Arc<Self>, reads: Reads) -> Result<EngineRef> {
        let route = match reads {
            Reads::Primary => Route::Primary,
            Reads::Any => Route::Nodes(None),
            // A token of another kind of database: the primary shows
            // every committed write.
            Reads::After(position) => position
                .number_after("lsn:")
                .map_or(Route::Primary, |lsn| Route::Nodes(Some(lsn))),
        };
        Ok(Arc::new(PgEngine {
            inner: self.inner.clone(),
            groups: self.groups.clone(),
            route,
        }))
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
        let sql = index_sql(&self.inner.schema, collection, path);
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| storage("creating an index", e))
    }

    async fn configure(&self, collection: &str, config: &CollectionConfig) -> Result<()> {
        self.write_configuration(collection, config).await
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
        self.inner.feed.ensure_kept().await?;
        Ok(self.inner.feed.horizon.wait_beyond(since, timeout).await)
    }
}

impl Drop for Inner {
    // After the last handle: the gatherer holds the state until it answered
    // every batch it took.
    fn drop(&mut self) {
        self.feed.close();
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
