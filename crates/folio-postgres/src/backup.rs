//! Whole databases on PostgreSQL: read in one snapshot (backups, copies,
//! exports), or built from a snapshot (restores, copies).
//!
//! * [`PgEngine::snapshot`] and [`open_snapshot`] read every table in one
//!   `REPEATABLE READ, READ ONLY` transaction: one consistent state, while
//!   writers go on. The header's last etag is the sequence's last value,
//!   read inside that transaction: sequences are not transactional, so it
//!   is at or above every etag the snapshot holds. Its feed position comes
//!   from the feed's barrier (the `feed` module) run just before the
//!   snapshot, so every change up to it is in the snapshot.
//! * [`PgLoader`] builds a **new** database (schema) from any engine's
//!   snapshot in one transaction: the schema, its layout, the source's
//!   database id, every row with its etag, revision and time (`COPY`), the
//!   indexes, and the sequence set to the snapshot's last etag, so the
//!   next etag is above every copied one. Nobody sees the schema before
//!   the commit, and a failed load leaves nothing. The feed's horizon
//!   invariant holds: every copied change is committed before the
//!   sequence's value is visible, so the barrier publishes them all at
//!   once. A schema that exists is refused: building from a snapshot is not
//!   a write path into a database that serves (other Folio processes may
//!   have it open, with its database id in memory).

use std::pin::pin;

use async_trait::async_trait;
use folio_core::{
    Change, ChangeKind, ChangeVector, CollectionConfig, DatabaseId, EngineError, EngineErrorKind,
    Entry, Error, FieldPath, Index, KeptVersion, Metadata, Result, SnapshotContents,
    SnapshotHeader, SnapshotPart, SnapshotReader, SnapshotWriter, Tombstone, millis_since_epoch,
    time_from_millis, validate,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, IsolationLevel, NoTls, Row, Transaction};

use crate::error::{pool as pool_error, storage};
use crate::{PgEngine, check_database_name, feed, index_sql, parse_url, schema};

/// How many rows one part of a snapshot holds.
const PART_ROWS: i32 = 1000;

/// How many parts a snapshot reader reads ahead of its consumer.
const PARTS_AHEAD: usize = 4;

/// How often the feed's barrier is tried before a snapshot (each try waits
/// at most the barrier's lock timeout for a long transaction to end).
const BARRIER_ATTEMPTS: usize = 5;

/// A consistent snapshot of a PostgreSQL database, read in parts by a task
/// of its own a few parts ahead of its consumer.
pub struct PgSnapshot {
    header: SnapshotHeader,
    parts: mpsc::Receiver<Result<SnapshotPart>>,
}

/// The connection a snapshot reads through.
enum Connection {
    Pooled(deadpool_postgres::Object),
    Own(Client, tokio::task::JoinHandle<()>),
}

impl Connection {
    fn client(&mut self) -> &mut Client {
        match self {
            Connection::Pooled(object) => object,
            Connection::Own(client, _) => client,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Connection::Own(_, driver) = self {
            driver.abort();
        }
    }
}

impl PgEngine {
    /// A snapshot of the database as it is now, read in parts on a
    /// connection of the engine's pool (held until the snapshot is read to
    /// its end or dropped).
    pub async fn snapshot(&self, contents: SnapshotContents) -> Result<PgSnapshot> {
        let connection = self.inner.pool.get().await.map_err(pool_error)?;
        PgSnapshot::start(
            Connection::Pooled(connection),
            self.inner.schema.clone(),
            self.inner
                .schema
                .trim_matches('"')
                .trim_start_matches("folio_")
                .to_owned(),
            contents,
        )
        .await
    }
}

/// A snapshot of the Folio database `database` on the PostgreSQL server at
/// `url`, without an engine (it creates nothing: a database that does not
/// exist is [`Error::NotFound`]).
pub async fn open_snapshot(
    url: &str,
    database: &str,
    contents: SnapshotContents,
) -> Result<PgSnapshot> {
    check_database_name(database)?;
    let (client, driver) = connect(url).await?;
    PgSnapshot::start(
        Connection::Own(client, driver),
        schema::schema_name(database),
        database.to_owned(),
        contents,
    )
    .await
}

/// A connection of its own to the server at `url`, and its driver task.
async fn connect(url: &str) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    let (client, connection) = parse_url(url)?
        .connect(NoTls)
        .await
        .map_err(|e| storage("connecting to PostgreSQL", e))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

impl PgSnapshot {
    async fn start(
        connection: Connection,
        schema: String,
        database: String,
        contents: SnapshotContents,
    ) -> Result<Self> {
        if let SnapshotContents::Documents {
            collection: Some(collection),
        } = &contents
        {
            validate::collection(collection)?;
        }
        let (header_sender, header) = oneshot::channel();
        let (part_sender, parts) = mpsc::channel(PARTS_AHEAD);
        tokio::spawn(async move {
            let mut connection = connection;
            read_snapshot(
                connection.client(),
                &schema,
                &database,
                &contents,
                header_sender,
                &part_sender,
            )
            .await;
        });
        let header = header.await.map_err(|_| closed())??;
        Ok(PgSnapshot { header, parts })
    }
}

#[async_trait]
impl SnapshotReader for PgSnapshot {
    fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    async fn next_part(&mut self) -> Result<Option<SnapshotPart>> {
        self.parts.recv().await.transpose()
    }
}

impl std::fmt::Debug for PgSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSnapshot")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn closed() -> Error {
    Error::Engine(EngineError::new(
        EngineErrorKind::Closed,
        "the snapshot's reader stopped",
    ))
}

/// The snapshot task: the barrier, one read-only transaction, the header,
/// then every part. It stops early when the consumer is gone.
async fn read_snapshot(
    client: &mut Client,
    schema: &str,
    database: &str,
    contents: &SnapshotContents,
    header_sender: oneshot::Sender<Result<SnapshotHeader>>,
    parts: &mpsc::Sender<Result<SnapshotPart>>,
) {
    // Every transaction that took an etag up to the barrier's value has
    // ended when it returns; the snapshot, taken after, sees them all. A
    // barrier held up by a long transaction leaves the position at 0:
    // still true, only less useful.
    let mut feed_position = 0;
    for _ in 0..BARRIER_ATTEMPTS {
        if let Ok(position) = feed::barrier(client, schema).await {
            feed_position = position;
            break;
        }
    }
    let began = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| storage("starting the snapshot's transaction", e));
    let transaction = match began {
        Ok(transaction) => transaction,
        Err(error) => {
            let _ = header_sender.send(Err(error));
            return;
        }
    };
    let header = match read_header(&transaction, schema, database, feed_position).await {
        Ok(header) => header,
        Err(error) => {
            let _ = header_sender.send(Err(error));
            return;
        }
    };
    let database_id = header.database_id.clone();
    if header_sender.send(Ok(header)).is_err() {
        return;
    }
    let reader = PartReader {
        transaction: &transaction,
        schema,
        database_id: &database_id,
        parts,
    };
    if let Err(error) = reader.send_all(contents).await {
        let _ = parts.send(Err(error)).await;
    }
    // Read only: nothing to commit; dropping the transaction rolls it back.
}

async fn read_header(
    transaction: &Transaction<'_>,
    schema: &str,
    database: &str,
    feed_position: u64,
) -> Result<SnapshotHeader> {
    schema::check_current(transaction.client(), schema, database).await?;
    let row = transaction
        .query_one(
            &format!(
                "SELECT (SELECT value FROM {schema}.meta WHERE key = 'database_id'), \
                 (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {schema}.etags), \
                 (SELECT coalesce(max(etag), 0) FROM {schema}.changes)"
            ),
            &[],
        )
        .await
        .map_err(|e| storage("reading the database's identity", e))?;
    let database_id: Option<String> = row.get(0);
    let issued: i64 = row.get(1);
    let newest: i64 = row.get(2);
    let database_id = database_id.ok_or_else(|| {
        Error::InvalidInput("the database has no database id: it is not a Folio database".into())
    })?;
    Ok(SnapshotHeader {
        database_id: DatabaseId::parse(&database_id)?,
        last_etag: unsigned(issued.max(newest)),
        feed_position: feed_position.min(unsigned(newest.max(issued))),
    })
}

/// Sends the parts of a snapshot, read through portals in its transaction.
struct PartReader<'a> {
    transaction: &'a Transaction<'a>,
    schema: &'a str,
    database_id: &'a DatabaseId,
    parts: &'a mpsc::Sender<Result<SnapshotPart>>,
}

impl PartReader<'_> {
    /// Every part in order; stops early (`Ok`) when the consumer is gone.
    async fn send_all(&self, contents: &SnapshotContents) -> Result<()> {
        let schema = self.schema;
        let collection = match contents {
            SnapshotContents::Everything => None,
            SnapshotContents::Documents { collection } => collection.clone(),
        };
        let documents = format!(
            "SELECT collection, id, etag, revision, last_modified, data::text FROM {schema}.documents \
             WHERE $1::text IS NULL OR collection = $1 ORDER BY collection, id"
        );
        let sent = self
            .send_rows(&documents, &[&collection], |rows| {
                SnapshotPart::Documents(rows.iter().map(|row| self.entry(row)).collect())
            })
            .await?;
        if !sent || !matches!(contents, SnapshotContents::Everything) {
            return Ok(());
        }
        let tombstones =
            format!("SELECT etag, collection, id FROM {schema}.tombstones ORDER BY etag");
        let sent = self
            .send_rows(&tombstones, &[], |rows| {
                SnapshotPart::Tombstones(
                    rows.iter()
                        .map(|row| Tombstone {
                            etag: unsigned(row.get(0)),
                            collection: row.get(1),
                            id: row.get(2),
                        })
                        .collect(),
                )
            })
            .await?;
        if !sent {
            return Ok(());
        }
        let changes = format!(
            "SELECT etag, kind, collection, id, revision FROM {schema}.changes ORDER BY etag"
        );
        let sent = self
            .send_rows(&changes, &[], |rows| {
                SnapshotPart::Changes(rows.iter().map(|row| self.change(row)).collect())
            })
            .await?;
        if !sent {
            return Ok(());
        }
        let indexes = self.indexes().await?;
        if !indexes.is_empty()
            && self
                .parts
                .send(Ok(SnapshotPart::Indexes(indexes)))
                .await
                .is_err()
        {
            return Ok(());
        }
        let rows = self
            .transaction
            .query(
                &format!("SELECT collection, config FROM {schema}.collections ORDER BY collection"),
                &[],
            )
            .await
            .map_err(|e| storage("reading the collections' configurations", e))?;
        let mut configurations = Vec::with_capacity(rows.len());
        for row in &rows {
            let collection: String = row.get(0);
            let config = CollectionConfig::from_stored(&collection, row.get(1))?;
            configurations.push((collection, config));
        }
        if !configurations.is_empty()
            && self
                .parts
                .send(Ok(SnapshotPart::Configurations(configurations)))
                .await
                .is_err()
        {
            return Ok(());
        }
        let revisions = format!(
            "SELECT collection, id, etag, revision, last_modified, data::text \
             FROM {schema}.revisions ORDER BY collection, id, etag"
        );
        self.send_rows(&revisions, &[], |rows| {
            SnapshotPart::Revisions(
                rows.iter()
                    .map(|row| KeptVersion {
                        collection: row.get(0),
                        id: row.get(1),
                        etag: unsigned(row.get(2)),
                        revision: unsigned(row.get(3)),
                        last_modified: time_from_millis(row.get(4)),
                        document: row.get(5),
                    })
                    .collect(),
            )
        })
        .await?;
        Ok(())
    }

    /// Runs `sql` through a portal, sending each batch of rows as a part
    /// made by `make`; false when the consumer is gone.
    async fn send_rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        make: impl Fn(&[Row]) -> SnapshotPart,
    ) -> Result<bool> {
        let portal = self
            .transaction
            .bind(sql, params)
            .await
            .map_err(|e| storage("reading a snapshot", e))?;
        loop {
            let rows = self
                .transaction
                .query_portal(&portal, PART_ROWS)
                .await
                .map_err(|e| storage("reading a snapshot", e))?;
            if rows.is_empty() {
                return Ok(true);
            }
            let last = rows.len() < usize::try_from(PART_ROWS).unwrap_or(usize::MAX);
            if self.parts.send(Ok(make(&rows))).await.is_err() {
                return Ok(false);
            }
            if last {
                return Ok(true);
            }
        }
    }

    fn change_vector(&self, etag: i64) -> ChangeVector {
        ChangeVector::new(unsigned(etag), self.database_id)
    }

    fn entry(&self, row: &Row) -> Entry {
        let etag: i64 = row.get(2);
        Entry {
            metadata: Metadata {
                collection: row.get(0),
                id: row.get(1),
                change_vector: self.change_vector(etag),
                revision: unsigned(row.get(3)),
                etag: unsigned(etag),
                last_modified: time_from_millis(row.get(4)),
            },
            document: row.get(5),
        }
    }

    fn change(&self, row: &Row) -> Change {
        let etag: i64 = row.get(0);
        let kind: i16 = row.get(1);
        Change {
            etag: unsigned(etag),
            kind: if kind == 1 {
                ChangeKind::Delete
            } else {
                ChangeKind::Put
            },
            collection: row.get(2),
            id: row.get(3),
            change_vector: self.change_vector(etag),
            revision: unsigned(row.get(4)),
        }
    }

    /// The indexes `ensure_index` made, read back from their definitions:
    /// a partial index `WHERE collection = '…'` on `data #> '{…}'`. One
    /// that does not read as that is left out.
    async fn indexes(&self) -> Result<Vec<Index>> {
        let schema = self.schema;
        let rows = self
            .transaction
            .query(
                &format!(
                    "SELECT pg_get_expr(i.indpred, i.indrelid), pg_get_indexdef(i.indexrelid, 2, false) \
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE i.indrelid = '{schema}.documents'::regclass \
                     AND c.relname LIKE 'folio\\_index\\_%' ORDER BY c.relname"
                ),
                &[],
            )
            .await
            .map_err(|e| storage("reading the indexes", e))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                index_from_definition(row.get::<_, Option<String>>(0)?.as_str(), row.get(1))
            })
            .collect())
    }
}

/// An index from its predicate (`(collection = 'people'::text)`) and
/// expression (`(data #> '{address,city}'::text[])`), as PostgreSQL prints
/// them.
fn index_from_definition(predicate: &str, expression: &str) -> Option<Index> {
    let collection = predicate
        .trim_start_matches('(')
        .trim_end_matches(')')
        .strip_prefix("collection = '")?
        .strip_suffix("'::text")?;
    let segments = expression
        .trim_start_matches('(')
        .trim_end_matches(')')
        .strip_prefix("data #> '{")?
        .strip_suffix("}'::text[]")?;
    let path = segments
        .split(',')
        .map(|segment| segment.trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".");
    validate::collection(collection).ok()?;
    Some(Index {
        collection: collection.to_owned(),
        path: FieldPath::parse(&path).ok()?,
    })
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Document text sent as `jsonb` in the binary protocol: a version byte,
/// then the text, which PostgreSQL parses.
#[derive(Debug)]
struct JsonbText<'a>(&'a str);

impl ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// Builds a new Folio database on a PostgreSQL server from a snapshot, in
/// one transaction on a connection of its own (see the module
/// documentation). Dropped before [`SnapshotWriter::finish`], it leaves
/// nothing: closing the connection rolls the transaction back.
pub struct PgLoader {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    schema: String,
    /// The largest etag loaded or issued by the source: where the sequence
    /// ends up.
    last_etag: u64,
    indexes: Vec<Index>,
}

impl PgLoader {
    /// Starts building the Folio database `database` (which must not exist)
    /// on the server at `url`, with the identity in `header`.
    pub async fn create(url: &str, database: &str, header: &SnapshotHeader) -> Result<Self> {
        check_database_name(database)?;
        let (client, driver) = connect(url).await?;
        let schema = schema::schema_name(database);
        let exists = || {
            Error::InvalidInput(format!(
                "the database {database:?} exists on this PostgreSQL server: a restore makes a new \
                 database; choose another name (or drop the schema folio_{database} if it is unused)"
            ))
        };
        if schema::schema_exists(&client, &schema).await? {
            return Err(exists());
        }
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| storage("starting the load", e))?;
        if let Err(error) =
            schema::create_in_transaction(&client, &schema, &header.database_id).await
        {
            // Another process created it since the check above.
            let duplicate = std::error::Error::source(&error)
                .and_then(|source| source.downcast_ref::<tokio_postgres::Error>())
                .and_then(tokio_postgres::Error::code)
                == Some(&SqlState::DUPLICATE_SCHEMA);
            return Err(if duplicate { exists() } else { error });
        }
        Ok(PgLoader {
            client,
            driver,
            schema,
            last_etag: header.last_etag,
            indexes: Vec::new(),
        })
    }

    /// Starts `COPY {table} ({columns}) FROM STDIN (FORMAT binary)`.
    async fn copy_in(&self, table_and_columns: &str, types: &[Type]) -> Result<BinaryCopyInWriter> {
        let sink = self
            .client
            .copy_in(&format!(
                "COPY {}.{table_and_columns} FROM STDIN (FORMAT binary)",
                self.schema
            ))
            .await
            .map_err(loading)?;
        Ok(BinaryCopyInWriter::new(sink, types))
    }
}

/// A failure of the load; PostgreSQL refusing the data itself (class 22,
/// say a document it cannot store) is a fault of the snapshot.
fn loading(error: tokio_postgres::Error) -> Error {
    match error.code() {
        Some(code) if code.code().starts_with("22") => Error::InvalidInput(format!(
            "PostgreSQL refuses the snapshot's data: {}",
            error
                .as_db_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned())
        )),
        _ => storage("loading the database", error),
    }
}

#[async_trait]
impl SnapshotWriter for PgLoader {
    async fn write(&mut self, part: SnapshotPart) -> Result<()> {
        match part {
            SnapshotPart::Documents(entries) => {
                let writer = self
                    .copy_in(
                        "documents (collection, id, etag, revision, last_modified, data)",
                        &[
                            Type::TEXT,
                            Type::TEXT,
                            Type::INT8,
                            Type::INT8,
                            Type::INT8,
                            Type::JSONB,
                        ],
                    )
                    .await?;
                let mut writer = pin!(writer);
                for entry in &entries {
                    let metadata = &entry.metadata;
                    self.last_etag = self.last_etag.max(metadata.etag);
                    writer
                        .as_mut()
                        .write(&[
                            &metadata.collection,
                            &metadata.id,
                            &signed(metadata.etag),
                            &signed(metadata.revision),
                            &millis_since_epoch(metadata.last_modified),
                            &JsonbText(&entry.document),
                        ])
                        .await
                        .map_err(loading)?;
                }
                writer.finish().await.map_err(loading)?;
            }
            SnapshotPart::Tombstones(tombstones) => {
                let writer = self
                    .copy_in(
                        "tombstones (collection, id, etag)",
                        &[Type::TEXT, Type::TEXT, Type::INT8],
                    )
                    .await?;
                let mut writer = pin!(writer);
                for tombstone in &tombstones {
                    self.last_etag = self.last_etag.max(tombstone.etag);
                    writer
                        .as_mut()
                        .write(&[
                            &tombstone.collection,
                            &tombstone.id,
                            &signed(tombstone.etag),
                        ])
                        .await
                        .map_err(loading)?;
                }
                writer.finish().await.map_err(loading)?;
            }
            SnapshotPart::Changes(changes) => {
                let writer = self
                    .copy_in(
                        "changes (etag, kind, collection, id, revision)",
                        &[Type::INT8, Type::INT2, Type::TEXT, Type::TEXT, Type::INT8],
                    )
                    .await?;
                let mut writer = pin!(writer);
                for change in &changes {
                    self.last_etag = self.last_etag.max(change.etag);
                    let kind: i16 = match change.kind {
                        ChangeKind::Put => 0,
                        ChangeKind::Delete => 1,
                    };
                    writer
                        .as_mut()
                        .write(&[
                            &signed(change.etag),
                            &kind,
                            &change.collection,
                            &change.id,
                            &signed(change.revision),
                        ])
                        .await
                        .map_err(loading)?;
                }
                writer.finish().await.map_err(loading)?;
            }
            SnapshotPart::Indexes(indexes) => self.indexes.extend(indexes),
            SnapshotPart::Configurations(configurations) => {
                for (collection, config) in &configurations {
                    validate::collection(collection)?;
                    config.validate()?;
                    let json = serde_json::to_string(config).expect("a configuration serializes");
                    let keep = i32::try_from(config.revisions.keep).unwrap_or(i32::MAX);
                    self.client
                        .execute(
                            &format!(
                                "INSERT INTO {}.collections (collection, keep, config) VALUES ($1, $2, $3)",
                                self.schema
                            ),
                            &[collection, &keep, &json],
                        )
                        .await
                        .map_err(loading)?;
                }
            }
            SnapshotPart::Revisions(versions) => {
                let writer = self
                    .copy_in(
                        "revisions (collection, id, etag, revision, last_modified, deleted, data)",
                        &[
                            Type::TEXT,
                            Type::TEXT,
                            Type::INT8,
                            Type::INT8,
                            Type::INT8,
                            Type::BOOL,
                            Type::JSONB,
                        ],
                    )
                    .await?;
                let mut writer = pin!(writer);
                for version in &versions {
                    self.last_etag = self.last_etag.max(version.etag);
                    writer
                        .as_mut()
                        .write(&[
                            &version.collection,
                            &version.id,
                            &signed(version.etag),
                            &signed(version.revision),
                            &millis_since_epoch(version.last_modified),
                            &version.document.is_none(),
                            &version.document.as_deref().map(JsonbText),
                        ])
                        .await
                        .map_err(loading)?;
                }
                writer.finish().await.map_err(loading)?;
            }
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        let schema = &self.schema;
        // Far above every copied etag (`RESTORED_ETAG_GAP`): the source
        // may have issued the next ones after its snapshot, for versions
        // this database never had.
        if self.last_etag > 0 {
            let restarted = self.last_etag.saturating_add(folio_core::RESTORED_ETAG_GAP);
            self.client
                .query_one(
                    &format!("SELECT setval('{schema}.etags', $1, true)"),
                    &[&signed(restarted)],
                )
                .await
                .map_err(|e| storage("setting the etag sequence", e))?;
        }
        for index in &self.indexes {
            validate::collection(&index.collection)?;
            self.client
                .batch_execute(&index_sql(schema, &index.collection, &index.path))
                .await
                .map_err(|e| storage("creating an index", e))?;
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| storage("committing the load", e))?;
        // The planner's statistics, which a fresh table lacks (the changes
        // table is left to itself: autovacuum is off for it, and only
        // range scans by etag read it).
        self.client
            .batch_execute(&format!(
                "ANALYZE {schema}.documents; ANALYZE {schema}.tombstones"
            ))
            .await
            .map_err(|e| storage("analyzing the loaded tables", e))
    }
}

impl Drop for PgLoader {
    fn drop(&mut self) {
        // Closing the connection ends an unfinished transaction: rolled back.
        self.driver.abort();
    }
}

impl std::fmt::Debug for PgLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLoader")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_read_back() {
        let index = index_from_definition(
            "(collection = 'people'::text)",
            "(data #> '{address,city}'::text[])",
        )
        .unwrap();
        assert_eq!(index.collection, "people");
        assert_eq!(index.path.as_str(), "address.city");
        assert!(
            index_from_definition("(collection = 'a b'::text)", "(data #> '{x}'::text[])")
                .is_none()
        );
        assert!(index_from_definition("(collection = 'a'::text)", "(data -> 'x')").is_none());
    }
}
