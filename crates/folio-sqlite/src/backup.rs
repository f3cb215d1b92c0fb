//! Backups of embedded databases, and new embedded databases built from
//! snapshots.
//!
//! **A backup is an embedded Folio database file.** It describes itself
//! (layout version, database id, every etag, the changes feed), SQLite
//! checks it (`PRAGMA integrity_check`), Folio opens it like any database,
//! and restoring one is placing it. A backup of a PostgreSQL database is
//! written in the same format ([`BackupWriter`]), so every backup restores
//! into either engine the same way.
//!
//! * [`SqliteEngine::backup_to`]: a consistent copy of a live database,
//!   made by SQLite itself (`VACUUM INTO`) on a read connection of its own.
//!   It reads one snapshot (WAL: the writer goes on meanwhile, and the log
//!   grows until it ends) and writes a compact file with the source's page
//!   size, reserved bytes per page and layout version: the copy has the
//!   engine's layout, whatever it is. It is handed out only once every
//!   commit it holds is durable in the source, so a backup never holds a
//!   version that a power loss could still take back.
//! * [`SqliteSnapshot`]: a snapshot read in parts ([`SnapshotReader`]), from
//!   a live engine (one read transaction) or from a file: exports, and
//!   copies into other engines.
//! * [`BackupWriter`]: a new database file built from any engine's snapshot
//!   ([`SnapshotWriter`]).
//! * [`verify_backup`], [`prepare_backup`], [`place_database`],
//!   [`restore_backup`]: a file is checked (its layout through the same
//!   `schema::open` every database goes through, so a newer or damaged
//!   layout is refused like anywhere else; then SQLite's integrity check
//!   and Folio's own invariants), then moved into place as a new database:
//!   absent, or empty and open nowhere. Restoring never writes into a
//!   database that serves: the one write path of a live database stays
//!   `Engine::commit`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use folio_core::{
    Change, ChangeKind, DatabaseId, EngineError, EngineErrorKind, Entry, Error, FieldPath,
    Identity, Index, KeptVersion, Metadata, Result, SnapshotContents, SnapshotCounts,
    SnapshotHeader, SnapshotPart, SnapshotReader, SnapshotWriter, Tombstone, millis_since_epoch,
    time_from_millis, validate,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::error::{closed, storage};
use crate::location::Location;
use crate::query::{INDEX_PREFIX, index_sql};
use crate::read::change_vector;
use crate::{SqliteEngine, absolute, lock_database, schema};

/// How long a backup or snapshot waits for the commits it holds to become
/// durable in the source (they are being synced as it starts; only a
/// failing disk takes this long).
const DURABLE_PATIENCE: Duration = Duration::from_secs(60);

/// The most documents in one part of a snapshot, and the most bytes of
/// document text (a part is held in memory between reader and writer).
const PART_ROWS: usize = 1000;
const PART_BYTES: usize = 1 << 20;

/// How many parts a snapshot reader reads ahead of its consumer.
const PARTS_AHEAD: usize = 4;

/// What a backup file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// The database's identity and position.
    pub header: SnapshotHeader,
    /// How much it holds.
    pub counts: SnapshotCounts,
    /// The layout version of the file.
    pub layout: i64,
    /// The size of the file, in bytes.
    pub bytes: u64,
}

/// What is at the path of a database a restore would make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseState {
    /// No file: a restore creates it.
    Absent,
    /// A Folio database that never took a write: a restore replaces it.
    Empty,
    /// A database with documents or history: a restore refuses it.
    HoldsData,
}

impl SqliteEngine {
    /// Writes a consistent copy of the database, as it is now, to the new
    /// file `path` (which must not exist): a backup, restored by
    /// [`restore_backup`] or opened as a database. Writes go on meanwhile.
    ///
    /// Returns once every commit the copy holds is durable in this
    /// database; on an error nothing is left at `path`.
    pub async fn backup_to(&self, path: impl AsRef<Path>) -> Result<BackupSummary> {
        let path = absolute(path.as_ref())?;
        refuse_existing(&path)?;
        let target = vacuum_target(&self.shared.location, &path)?;
        let shared = self.shared.clone();
        let output = path.clone();
        let made = tokio::task::spawn_blocking(move || {
            // A connection of its own: a long copy holds no pooled reader.
            let connection = shared.location.open_reader()?;
            connection
                .execute("VACUUM INTO ?1", [target])
                .map_err(|e| storage("copying the database into the backup file", e))?;
            drop(connection);
            summarize_file(&output)
        })
        .await
        .map_err(|_| closed());
        let summary = match made {
            Ok(Ok(summary)) => summary,
            Ok(Err(error)) | Err(error) => {
                remove_database_files(&path);
                return Err(error);
            }
        };
        if let Err(error) = self.wait_durable(summary.header.feed_position).await {
            remove_database_files(&path);
            return Err(error);
        }
        Ok(summary)
    }

    /// A snapshot of the database as it is now, read in parts: one read
    /// transaction on a connection of its own, held until the snapshot is
    /// read to its end or dropped (the write-ahead log cannot start over
    /// meanwhile). Its first part comes once every commit it holds is
    /// durable.
    pub async fn snapshot(&self, contents: SnapshotContents) -> Result<SqliteSnapshot> {
        check_contents(&contents)?;
        let connection = self.shared.location.open_reader()?;
        let snapshot = SqliteSnapshot::start(connection, contents).await?;
        self.wait_durable(snapshot.header.feed_position).await?;
        Ok(snapshot)
    }

    /// Waits until every commit up to `etag` is durable (published to the
    /// changes feed's horizon, which moves only after the sync).
    async fn wait_durable(&self, etag: u64) -> Result<()> {
        if etag == 0 {
            return Ok(());
        }
        let horizon = self
            .shared
            .horizon
            .wait_beyond(etag - 1, DURABLE_PATIENCE)
            .await;
        if horizon >= etag {
            Ok(())
        } else {
            Err(Error::Engine(EngineError::new(
                EngineErrorKind::Timeout,
                format!(
                    "the snapshot holds commits up to etag {etag}, and they did not become durable \
                     within {} s (durable up to {horizon}): the database's disk may be failing",
                    DURABLE_PATIENCE.as_secs()
                ),
            )))
        }
    }
}

/// What `VACUUM INTO` is given for `output`: a plain path, opened through
/// the reader's own file layer; for an in-memory database (whose
/// connections use SQLite's `memdb`) a URI naming the file layer that
/// database files use.
fn vacuum_target(location: &Location, output: &Path) -> Result<String> {
    let text = output.to_str().ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} is not valid UTF-8: give the backup file a UTF-8 name",
            output.display()
        ))
    })?;
    Ok(match location {
        Location::File(_) => text.to_owned(),
        Location::Memory(_) => {
            let vfs = if crate::vfs::register() {
                crate::vfs::NAME
            } else {
                "unix"
            };
            format!("file:{}?vfs={vfs}", uri_path(text))
        }
    })
}

/// `path` for a `file:` URI: every byte but unreserved ones and `/`
/// percent-encoded.
fn uri_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn check_contents(contents: &SnapshotContents) -> Result<()> {
    if let SnapshotContents::Documents {
        collection: Some(collection),
    } = contents
    {
        validate::collection(collection)?;
    }
    Ok(())
}

/// A consistent snapshot of an embedded database (live, or a file), read
/// in parts by a thread of its own a few parts ahead of its consumer.
pub struct SqliteSnapshot {
    header: SnapshotHeader,
    parts: mpsc::Receiver<Result<SnapshotPart>>,
}

impl SqliteSnapshot {
    /// A snapshot of the database file `path` (a backup, or a database no
    /// engine has open), checked first with [`verify_backup`] when it is
    /// not known to be sound.
    pub async fn open_file(path: impl AsRef<Path>, contents: SnapshotContents) -> Result<Self> {
        check_contents(&contents)?;
        let path = absolute(path.as_ref())?;
        require_folio_file(&path)?;
        let connection = Location::File(path).open_reader()?;
        Self::start(connection, contents).await
    }

    async fn start(connection: Connection, contents: SnapshotContents) -> Result<Self> {
        let (header_sender, header) = oneshot::channel();
        let (part_sender, parts) = mpsc::channel(PARTS_AHEAD);
        std::thread::Builder::new()
            .name("folio-sqlite-snapshot".into())
            .spawn(move || read_snapshot(&connection, &contents, header_sender, &part_sender))
            .map_err(|error| {
                Error::Engine(
                    EngineError::new(EngineErrorKind::Other, "starting a snapshot thread failed")
                        .with_source(error),
                )
            })?;
        let header = header.await.map_err(|_| closed())??;
        Ok(SqliteSnapshot { header, parts })
    }
}

#[async_trait::async_trait]
impl SnapshotReader for SqliteSnapshot {
    fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    async fn next_part(&mut self) -> Result<Option<SnapshotPart>> {
        self.parts.recv().await.transpose()
    }
}

impl std::fmt::Debug for SqliteSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSnapshot")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// The snapshot thread: one read transaction, the header, then every part.
/// It stops early when the consumer is gone.
fn read_snapshot(
    connection: &Connection,
    contents: &SnapshotContents,
    header_sender: oneshot::Sender<Result<SnapshotHeader>>,
    parts: &mpsc::Sender<Result<SnapshotPart>>,
) {
    let begun = connection
        .execute_batch("BEGIN")
        .map_err(|e| storage("starting the snapshot's read transaction", e))
        // The first read fixes the transaction's snapshot.
        .and_then(|()| read_header(connection));
    let header = match begun {
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
    let send = |part: SnapshotPart| parts.blocking_send(Ok(part)).is_ok();
    if let Err(error) = send_parts(connection, contents, &database_id, send) {
        let _ = parts.blocking_send(Err(error));
    }
    let _ = connection.execute_batch("ROLLBACK");
}

/// Reads the parts in order and hands each to `send`, until it returns
/// false (the consumer is gone).
fn send_parts(
    connection: &Connection,
    contents: &SnapshotContents,
    database: &DatabaseId,
    mut send: impl FnMut(SnapshotPart) -> bool,
) -> Result<()> {
    let collection = match contents {
        SnapshotContents::Everything => None,
        SnapshotContents::Documents { collection } => collection.as_deref(),
    };
    if !send_documents(connection, collection, database, &mut send)? {
        return Ok(());
    }
    if !matches!(contents, SnapshotContents::Everything) {
        return Ok(());
    }
    let mut statement = connection
        .prepare("SELECT etag, collection, id FROM tombstones ORDER BY etag")
        .map_err(|e| storage("reading the tombstones", e))?;
    let tombstones = statement
        .query_map([], |row| {
            Ok(Tombstone {
                etag: etag_of(row.get(0)?),
                collection: row.get(1)?,
                id: row.get(2)?,
            })
        })
        .map_err(|e| storage("reading the tombstones", e))?;
    if !send_in_parts(tombstones, SnapshotPart::Tombstones, &mut send)? {
        return Ok(());
    }
    let mut statement = connection
        .prepare("SELECT etag, kind, collection, id, revision FROM changes ORDER BY etag")
        .map_err(|e| storage("reading the changes feed", e))?;
    let changes = statement
        .query_map([], |row| {
            let etag: i64 = row.get(0)?;
            let kind: i64 = row.get(1)?;
            Ok(Change {
                etag: etag_of(etag),
                kind: if kind == 1 {
                    ChangeKind::Delete
                } else {
                    ChangeKind::Put
                },
                collection: row.get(2)?,
                id: row.get(3)?,
                change_vector: change_vector(etag, database),
                revision: etag_of(row.get(4)?),
            })
        })
        .map_err(|e| storage("reading the changes feed", e))?;
    if !send_in_parts(changes, SnapshotPart::Changes, &mut send)? {
        return Ok(());
    }
    let indexes = read_indexes(connection)?;
    if !indexes.is_empty() && !send(SnapshotPart::Indexes(indexes)) {
        return Ok(());
    }
    let mut statement = connection
        .prepare("SELECT collection, config FROM folio_collections ORDER BY collection")
        .map_err(|e| storage("reading the collections' configurations", e))?;
    let configurations = statement
        .query_map([], |row| {
            let collection: String = row.get(0)?;
            let config: String = row.get(1)?;
            Ok((collection, config))
        })
        .map_err(|e| storage("reading the collections' configurations", e))?
        .map(|row| {
            let (collection, config) =
                row.map_err(|e| storage("reading the collections' configurations", e))?;
            let config = folio_core::CollectionConfig::from_stored(&collection, &config)?;
            Ok((collection, config))
        })
        .collect::<Result<Vec<_>>>()?;
    if !configurations.is_empty() && !send(SnapshotPart::Configurations(configurations)) {
        return Ok(());
    }
    send_revisions(connection, &mut send).map(drop)
}

/// Sends the kept versions by collection, id and etag, in parts bounded in
/// rows and bytes; false when the consumer is gone.
fn send_revisions(
    connection: &Connection,
    send: &mut impl FnMut(SnapshotPart) -> bool,
) -> Result<bool> {
    let failed = |e| storage("reading the revisions", e);
    let mut statement = connection
        .prepare(
            "SELECT collection, id, etag, revision, last_modified, \
             CASE WHEN deleted THEN NULL ELSE json(data) END FROM revisions \
             ORDER BY collection, id, etag",
        )
        .map_err(failed)?;
    let mut rows = statement.query([]).map_err(failed)?;
    let mut part = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next().map_err(failed)? {
        let version = (|| {
            Ok::<_, rusqlite::Error>(KeptVersion {
                collection: row.get(0)?,
                id: row.get(1)?,
                etag: etag_of(row.get(2)?),
                revision: etag_of(row.get(3)?),
                last_modified: time_from_millis(row.get(4)?),
                document: row.get(5)?,
            })
        })()
        .map_err(failed)?;
        bytes += version.document.as_ref().map_or(0, String::len);
        part.push(version);
        if part.len() >= PART_ROWS || bytes >= PART_BYTES {
            bytes = 0;
            if !send(SnapshotPart::Revisions(std::mem::take(&mut part))) {
                return Ok(false);
            }
        }
    }
    Ok(part.is_empty() || send(SnapshotPart::Revisions(part)))
}

/// Sends the documents (of `collection`, or all) by collection and id, in
/// parts bounded in rows and bytes; false when the consumer is gone.
fn send_documents(
    connection: &Connection,
    collection: Option<&str>,
    database: &DatabaseId,
    send: &mut impl FnMut(SnapshotPart) -> bool,
) -> Result<bool> {
    let mut statement = connection
        .prepare(
            "SELECT collection, id, etag, revision, last_modified, json(data) FROM documents \
             WHERE ?1 IS NULL OR collection = ?1 ORDER BY collection, id",
        )
        .map_err(|e| storage("reading the documents", e))?;
    let mut rows = statement
        .query([collection])
        .map_err(|e| storage("reading the documents", e))?;
    let mut part = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows
        .next()
        .map_err(|e| storage("reading the documents", e))?
    {
        let entry = (|| {
            let etag: i64 = row.get(2)?;
            Ok::<_, rusqlite::Error>(Entry {
                metadata: Metadata {
                    collection: row.get(0)?,
                    id: row.get(1)?,
                    change_vector: change_vector(etag, database),
                    revision: etag_of(row.get(3)?),
                    etag: etag_of(etag),
                    last_modified: time_from_millis(row.get(4)?),
                },
                document: row.get(5)?,
            })
        })()
        .map_err(|e| storage("reading a document", e))?;
        bytes += entry.document.len();
        part.push(entry);
        if part.len() >= PART_ROWS || bytes >= PART_BYTES {
            bytes = 0;
            if !send(SnapshotPart::Documents(std::mem::take(&mut part))) {
                return Ok(false);
            }
        }
    }
    Ok(part.is_empty() || send(SnapshotPart::Documents(part)))
}

/// Sends `rows` in parts of [`PART_ROWS`]; false when the consumer is gone.
fn send_in_parts<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    make: impl Fn(Vec<T>) -> SnapshotPart,
    send: &mut impl FnMut(SnapshotPart) -> bool,
) -> Result<bool> {
    let mut part = Vec::new();
    for row in rows {
        part.push(row.map_err(|e| storage("reading a snapshot", e))?);
        if part.len() >= PART_ROWS && !send(make(std::mem::take(&mut part))) {
            return Ok(false);
        }
    }
    Ok(part.is_empty() || send(make(part)))
}

/// The indexes `ensure_index` made, from their names
/// (`folio_index:{collection}:{path}`).
fn read_indexes(connection: &Connection) -> Result<Vec<Index>> {
    let mut statement = connection
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' ORDER BY name")
        .map_err(|e| storage("reading the indexes", e))?;
    let names = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|e| storage("reading the indexes", e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| storage("reading the indexes", e))?;
    Ok(names
        .iter()
        .filter_map(|name| {
            let (collection, path) = name.strip_prefix(INDEX_PREFIX)?.split_once(':')?;
            validate::collection(collection).ok()?;
            Some(Index {
                collection: collection.to_owned(),
                path: FieldPath::parse(path).ok()?,
            })
        })
        .collect())
}

/// The header of the database `connection` reads (inside its transaction).
fn read_header(connection: &Connection) -> Result<SnapshotHeader> {
    let database_id: Option<String> = connection
        .query_row(
            "SELECT value FROM folio_meta WHERE key = 'database_id'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| storage("reading the database id", e))?;
    let database_id = database_id.ok_or_else(|| {
        Error::InvalidInput("the database has no database id: it is not a Folio database".into())
    })?;
    let last_etag: i64 = connection
        .query_row(schema::LAST_ETAG, [], |row| row.get(0))
        .map_err(|e| storage("reading the last etag", e))?;
    // One writer commits etags in order: every change up to the newest
    // committed one is in the snapshot.
    let newest: i64 = connection
        .query_row("SELECT coalesce(max(etag), 0) FROM changes", [], |row| {
            row.get(0)
        })
        .map_err(|e| storage("reading the changes feed", e))?;
    Ok(SnapshotHeader {
        database_id: DatabaseId::parse(&database_id)?,
        last_etag: etag_of(last_etag.max(newest)),
        feed_position: etag_of(newest),
    })
}

fn etag_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What the backup file at `path` (known to be sound: made by Folio) holds,
/// without checking it (see [`verify_backup`]).
pub fn backup_summary(path: impl AsRef<Path>) -> Result<BackupSummary> {
    summarize_file(&absolute(path.as_ref())?)
}

/// The summary of the database file at `path`.
fn summarize_file(path: &Path) -> Result<BackupSummary> {
    let connection = Location::File(path.to_owned()).open_reader()?;
    summarize(&connection, path)
}

fn summarize(connection: &Connection, path: &Path) -> Result<BackupSummary> {
    let count = |sql: &str| -> Result<u64> {
        connection
            .query_row(sql, [], |row| row.get::<_, i64>(0))
            .map(etag_of)
            .map_err(|e| storage("summarizing the backup", e))
    };
    let layout: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| storage("reading the layout version", e))?;
    let header = read_header(connection)?;
    let counts = SnapshotCounts {
        documents: count("SELECT count(*) FROM documents")?,
        collections: count("SELECT count(*) FROM (SELECT DISTINCT collection FROM documents)")?,
        tombstones: count("SELECT count(*) FROM tombstones")?,
        changes: count("SELECT count(*) FROM changes")?,
        indexes: u64::try_from(read_indexes(connection)?.len()).unwrap_or(u64::MAX),
        configurations: count("SELECT count(*) FROM folio_collections")?,
        revisions: count("SELECT count(*) FROM revisions")?,
    };
    let bytes = std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .map_err(|error| io_error(format!("reading the size of {}", path.display()), error))?;
    Ok(BackupSummary {
        header,
        counts,
        layout,
        bytes,
    })
}

/// Builds a new embedded database file from a snapshot: the backup of a
/// database of another engine. The file takes the snapshot's database id,
/// etags, revisions and times (a restore of it issues new etags
/// `RESTORED_ETAG_GAP` beyond the snapshot's last, `prepare_backup`).
/// Until [`SnapshotWriter::finish`] the file is incomplete (and
/// removed if the writer is dropped).
pub struct BackupWriter {
    path: PathBuf,
    connection: Option<Connection>,
    finished: bool,
}

impl BackupWriter {
    /// Starts the new file `path` (which must not exist) for a snapshot
    /// with `header`.
    pub async fn create(path: impl AsRef<Path>, header: &SnapshotHeader) -> Result<Self> {
        let path = absolute(path.as_ref())?;
        refuse_existing(&path)?;
        let mut writer = BackupWriter {
            path: path.clone(),
            connection: None,
            finished: false,
        };
        let header = header.clone();
        let connection = tokio::task::spawn_blocking(move || start_file(path, &header))
            .await
            .map_err(|_| closed())??;
        writer.connection = Some(connection);
        Ok(writer)
    }

    /// Runs `work` on the writer's connection on the blocking pool.
    async fn with_connection(
        &mut self,
        work: impl FnOnce(&mut Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let mut connection = self.connection.take().ok_or_else(closed)?;
        let (connection, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = work(&mut connection);
            (connection, outcome)
        })
        .await
        .map_err(|_| closed())?;
        self.connection = Some(connection);
        outcome
    }
}

/// Makes the layout in the new file `path`, with the snapshot's identity,
/// and opens the transaction the parts go into.
fn start_file(path: PathBuf, header: &SnapshotHeader) -> Result<Connection> {
    let mut connection = Location::File(path).open_writer()?;
    schema::open(&mut connection)?;
    // The file is being built: no journal and no syncs while it is (a
    // failed build removes the file); `finish` syncs it once, whole.
    connection
        .query_row("PRAGMA journal_mode = OFF", [], |_| Ok(()))
        .and_then(|()| connection.pragma_update(None, "synchronous", "OFF"))
        .and_then(|()| connection.execute_batch("BEGIN IMMEDIATE"))
        .map_err(|e| storage("preparing the backup file", e))?;
    connection
        .execute(
            "UPDATE folio_meta SET value = ?1 WHERE key = 'database_id'",
            [header.database_id.as_str()],
        )
        .map_err(|e| storage("recording the database id", e))?;
    // The last etag issued, even if no change holds it (`schema::LAST_ETAG`
    // reads the larger of this and the feed's newest).
    connection
        .execute(
            "UPDATE folio_counters SET value = ?1 WHERE name = 'last_etag'",
            [stored(header.last_etag)],
        )
        .map_err(|e| storage("recording the last etag", e))?;
    Ok(connection)
}

#[async_trait::async_trait]
impl SnapshotWriter for BackupWriter {
    async fn write(&mut self, part: SnapshotPart) -> Result<()> {
        self.with_connection(move |connection| write_part(connection, &part))
            .await
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        self.with_connection(|connection| {
            connection
                .execute_batch("COMMIT")
                .and_then(|()| connection.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())))
                .map_err(|e| storage("completing the backup file", e))
        })
        .await?;
        drop(self.connection.take());
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || sync_file(&path))
            .await
            .map_err(|_| closed())??;
        self.finished = true;
        Ok(())
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.connection.take());
            remove_database_files(&self.path);
        }
    }
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn write_part(connection: &mut Connection, part: &SnapshotPart) -> Result<()> {
    let failed = |e| storage("writing the backup file", e);
    match part {
        SnapshotPart::Documents(entries) => {
            let mut statement = connection
                .prepare_cached(
                    "INSERT INTO documents (collection, id, etag, revision, last_modified, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, jsonb(?6))",
                )
                .map_err(failed)?;
            for entry in entries {
                let metadata = &entry.metadata;
                statement
                    .execute(params![
                        metadata.collection,
                        metadata.id,
                        stored(metadata.etag),
                        stored(metadata.revision),
                        millis_since_epoch(metadata.last_modified),
                        entry.document,
                    ])
                    .map_err(failed)?;
            }
        }
        SnapshotPart::Tombstones(tombstones) => {
            let mut statement = connection
                .prepare_cached("INSERT INTO tombstones (etag, collection, id) VALUES (?1, ?2, ?3)")
                .map_err(failed)?;
            for tombstone in tombstones {
                statement
                    .execute(params![
                        stored(tombstone.etag),
                        tombstone.collection,
                        tombstone.id
                    ])
                    .map_err(failed)?;
            }
        }
        SnapshotPart::Changes(changes) => {
            let mut statement = connection
                .prepare_cached(
                    "INSERT INTO changes (etag, kind, collection, id, revision) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(failed)?;
            for change in changes {
                let kind = match change.kind {
                    ChangeKind::Put => 0,
                    ChangeKind::Delete => 1,
                };
                statement
                    .execute(params![
                        stored(change.etag),
                        kind,
                        change.collection,
                        change.id,
                        stored(change.revision)
                    ])
                    .map_err(failed)?;
            }
        }
        SnapshotPart::Indexes(indexes) => {
            for index in indexes {
                validate::collection(&index.collection)?;
                connection
                    .execute_batch(&index_sql(&index.collection, &index.path))
                    .map_err(failed)?;
            }
        }
        SnapshotPart::Configurations(configurations) => {
            let mut statement = connection
                .prepare_cached(
                    "INSERT INTO folio_collections (collection, config) VALUES (?1, ?2)",
                )
                .map_err(failed)?;
            for (collection, config) in configurations {
                validate::collection(collection)?;
                config.validate()?;
                let json = serde_json::to_string(config).expect("a configuration serializes");
                statement
                    .execute(params![collection, json])
                    .map_err(failed)?;
            }
        }
        SnapshotPart::Revisions(versions) => {
            let mut statement = connection
                .prepare_cached(
                    "INSERT INTO revisions (collection, id, etag, revision, last_modified, deleted, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, jsonb(?7))",
                )
                .map_err(failed)?;
            for version in versions {
                statement
                    .execute(params![
                        version.collection,
                        version.id,
                        stored(version.etag),
                        stored(version.revision),
                        millis_since_epoch(version.last_modified),
                        version.document.is_none(),
                        version.document,
                    ])
                    .map_err(failed)?;
            }
        }
    }
    Ok(())
}

/// Checks that the file at `path` is a sound Folio database: an SQLite
/// file whose pages and indexes SQLite finds intact
/// (`PRAGMA integrity_check`), and which keeps Folio's invariants: every
/// live document and tombstone is its last change in the feed, no document
/// is live and deleted at once, every document is a JSON object, every
/// collection and id is valid, and nothing runs on writes (no triggers or
/// views). Reads only. Returns what it holds.
///
/// A file that is none of this is [`Error::InvalidInput`], saying why.
pub fn verify_backup(path: impl AsRef<Path>) -> Result<BackupSummary> {
    let path = absolute(path.as_ref())?;
    require_folio_file(&path)?;
    let connection = Location::File(path.clone()).open_reader()?;
    verify(&connection).map_err(damaged)?;
    summarize(&connection, &path).map_err(damaged)
}

fn verify(connection: &Connection) -> Result<()> {
    let mut problems = Vec::new();
    let mut statement = connection
        .prepare("PRAGMA integrity_check(10)")
        .map_err(|e| storage("checking the file's integrity", e))?;
    let reports = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|e| storage("checking the file's integrity", e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| storage("checking the file's integrity", e))?;
    if reports != ["ok"] {
        return Err(Error::InvalidInput(format!(
            "the file is damaged (SQLite's integrity check: {})",
            reports.join("; ")
        )));
    }
    let checks = [
        (
            "SELECT count(*) FROM sqlite_schema WHERE type IN ('trigger', 'view')",
            "triggers or views, which Folio never makes",
        ),
        (
            "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM changes c \
             WHERE c.etag = d.etag AND c.kind = 0 AND c.collection = d.collection \
             AND c.id = d.id AND c.revision = d.revision)",
            "documents whose version is not in the changes feed",
        ),
        (
            "SELECT count(*) FROM tombstones t WHERE NOT EXISTS (SELECT 1 FROM changes c \
             WHERE c.etag = t.etag AND c.kind = 1 AND c.collection = t.collection AND c.id = t.id)",
            "deletes that are not in the changes feed",
        ),
        (
            "SELECT count(*) FROM documents d JOIN tombstones t \
             ON t.collection = d.collection AND t.id = d.id",
            "documents both live and deleted",
        ),
        (
            "SELECT count(*) FROM documents WHERE NOT json_valid(data, 8) \
             OR json_type(data) <> 'object'",
            "documents that are not JSON objects",
        ),
        (
            "SELECT count(*) FROM revisions WHERE NOT deleted AND (data IS NULL \
             OR NOT json_valid(data, 8) OR json_type(data) <> 'object')",
            "kept versions that are not JSON objects",
        ),
    ];
    for (sql, what) in checks {
        let found: i64 = connection
            .query_row(sql, [], |row| row.get(0))
            .map_err(|e| storage("checking the file", e))?;
        if found > 0 {
            problems.push(format!("{found} {what}"));
        }
    }
    let mut statement = connection
        .prepare(
            "SELECT collection, id FROM documents UNION ALL SELECT collection, id FROM tombstones",
        )
        .map_err(|e| storage("checking the names", e))?;
    let mut rows = statement
        .query([])
        .map_err(|e| storage("checking the names", e))?;
    while let Some(row) = rows.next().map_err(|e| storage("checking the names", e))? {
        let collection: String = row.get(0).map_err(|e| storage("checking the names", e))?;
        let id: String = row.get(1).map_err(|e| storage("checking the names", e))?;
        if let Err(error) = validate::collection(&collection).and_then(|()| validate::id(&id)) {
            problems.push(format!("an invalid document key ({error})"));
            break;
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "the file breaks Folio's invariants: {}",
            problems.join("; ")
        )))
    }
}

/// A failure to read a file given as a backup is a fault of the file.
fn damaged(error: Error) -> Error {
    match error {
        Error::Engine(engine) if engine.kind() == EngineErrorKind::Corrupt => {
            Error::InvalidInput(format!("the file is damaged: {}", full_message(&engine)))
        }
        // A backup of a newer layout is not one this build can restore.
        Error::Engine(engine) if engine.kind() == EngineErrorKind::Unsupported => {
            Error::InvalidInput(engine.message().to_owned())
        }
        other => other,
    }
}

fn full_message(error: &EngineError) -> String {
    let mut message = error.message().to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Refuses, with a message that says why, a file that is not an SQLite
/// database with a Folio layout, before anything opens it for writing
/// (where SQLite would take an empty file for a new database, and Folio
/// would lay out its tables in someone else's database).
fn require_folio_file(path: &Path) -> Result<()> {
    use std::io::Read;
    // No file name: a server's problem body carries this message.
    let not_backup = |why: &str| Error::InvalidInput(format!("not a Folio backup: {why}"));
    let mut file = std::fs::File::open(path)
        .map_err(|error| io_error(format!("opening {}", path.display()), error))?;
    let mut head = [0u8; 100];
    let read = file
        .read(&mut head)
        .map_err(|error| io_error(format!("reading {}", path.display()), error))?;
    if read == 0 {
        return Err(not_backup("the file is empty"));
    }
    if read < head.len() || !head.starts_with(b"SQLite format 3\0") {
        return Err(not_backup("it is not an SQLite database file"));
    }
    let connection = Location::File(path.to_owned())
        .open_reader()
        .map_err(damaged)?;
    let layout: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| damaged(storage("reading the layout version", e)))?;
    let has_meta: bool = connection
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'folio_meta'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| damaged(storage("reading the layout", e)))?;
    if layout < 1 || !has_meta {
        return Err(not_backup(
            "it is an SQLite database without Folio's layout",
        ));
    }
    Ok(())
}

/// Makes `file`, a copy the caller owns, ready to become a database: its
/// layout goes through `schema::open` (a newer one is refused, an older
/// one migrated), it takes a new database id when `identity` says so, and
/// [`verify_backup`] checks it. Changes `file`; on an error the caller
/// removes it.
pub fn prepare_backup(file: impl AsRef<Path>, identity: Identity) -> Result<BackupSummary> {
    let file = absolute(file.as_ref())?;
    require_folio_file(&file)?;
    {
        let mut connection = Location::File(file.clone())
            .open_writer()
            .map_err(damaged)?;
        let opened = schema::open(&mut connection).map_err(damaged)?;
        // Etags go on far above the backup's: the source may have issued
        // the next ones after it, for versions this database never had.
        let last = connection
            .query_row(schema::LAST_AND_RESERVED_ETAGS, [], |row| {
                Ok(row.get::<_, i64>(0)?.max(row.get::<_, i64>(1)?))
            })
            .map_err(|e| storage("reading the backup's last etag", e))?;
        let restarted = u64::try_from(last)
            .unwrap_or(0)
            .saturating_add(folio_core::RESTORED_ETAG_GAP);
        connection
            .execute(
                schema::RESERVE_ETAGS,
                [i64::try_from(restarted).map_err(|_| {
                    folio_core::Error::InvalidInput("the backup's etags are used up".into())
                })?],
            )
            .map_err(|e| storage("reserving the restored database's etags", e))?;
        if identity == Identity::New {
            connection
                .execute(
                    "UPDATE folio_meta SET value = ?1 WHERE key = 'database_id'",
                    [identity.database_id(&opened.database_id).as_str()],
                )
                .map_err(|e| storage("giving the database a new id", e))?;
        }
        // Back to one file, with no log beside it for the checks' readers
        // to leave behind: the engine that opens the database turns
        // write-ahead logging on again.
        connection
            .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
            .map_err(|e| storage("preparing the restored file", e))?;
    }
    verify_backup(&file)
}

/// What is at `database`: nothing, an empty Folio database, or one that
/// holds data (or is not a Folio database at all).
pub fn database_state(database: impl AsRef<Path>) -> Result<DatabaseState> {
    let database = database.as_ref();
    match std::fs::symlink_metadata(database) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DatabaseState::Absent);
        }
        Err(error) => {
            return Err(io_error(
                format!("looking at {}", database.display()),
                error,
            ));
        }
        Ok(_) => {}
    }
    if require_folio_file(database).is_err() {
        return Ok(DatabaseState::HoldsData);
    }
    let connection = Location::File(database.to_owned()).open_reader()?;
    let empty: bool = connection
        .query_row(
            &format!(
                "SELECT NOT EXISTS (SELECT 1 FROM documents) AND NOT EXISTS (SELECT 1 FROM tombstones) \
                 AND NOT EXISTS (SELECT 1 FROM changes) AND ({}) = 0",
                schema::LAST_ETAG
            ),
            [],
            |row| row.get(0),
        )
        .map_err(|e| storage("looking into the existing database", e))?;
    Ok(if empty {
        DatabaseState::Empty
    } else {
        DatabaseState::HoldsData
    })
}

/// Moves `file` (prepared by [`prepare_backup`], on the same file system)
/// to be the database `database`, which must be absent, or empty and open
/// nowhere (its lock is taken for the move). Synced: once this returns, the
/// database survives a crash.
pub fn place_database(file: impl AsRef<Path>, database: impl AsRef<Path>) -> Result<()> {
    let file = absolute(file.as_ref())?;
    let database = absolute(database.as_ref())?;
    sync_file(&file)?;
    let _lock = lock_database(&database)?;
    if database_state(&database)? == DatabaseState::HoldsData {
        return Err(Error::InvalidInput(format!(
            "the database {} exists and holds data: a restore makes a new database; \
             choose another name",
            database.display()
        )));
    }
    // An empty database's log and shared memory belong to the file being
    // replaced.
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&with_suffix(&database, suffix))?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&with_suffix(&file, suffix))?;
    }
    std::fs::rename(&file, &database).map_err(|error| {
        io_error(
            format!("moving the restored database to {}", database.display()),
            error,
        )
    })?;
    if let Some(directory) = database.parent() {
        sync_directory(directory)?;
    }
    Ok(())
}

/// Restores the backup file `backup` (left as it is) as the new database
/// `database`: absent, or empty and open nowhere. Everything is kept:
/// documents, etags, revisions, times, the changes feed, indexes and
/// (unless `identity` is [`Identity::New`]) the database id.
pub fn restore_backup(
    backup: impl AsRef<Path>,
    database: impl AsRef<Path>,
    identity: Identity,
) -> Result<BackupSummary> {
    let backup = absolute(backup.as_ref())?;
    let database = absolute(database.as_ref())?;
    require_folio_file(&backup)?;
    let state = database_state(&database)?;
    if state == DatabaseState::HoldsData {
        return Err(Error::InvalidInput(format!(
            "the database {} exists and holds data: a restore makes a new database; \
             choose another name",
            database.display()
        )));
    }
    let temporary = with_suffix(
        &database,
        &format!(".restoring-{}", folio_core::generate_id()),
    );
    let outcome = std::fs::copy(&backup, &temporary)
        .map_err(|error| io_error(format!("copying {}", backup.display()), error))
        .and_then(|_| prepare_backup(&temporary, identity))
        .and_then(|summary| place_database(&temporary, &database).map(|()| summary));
    if outcome.is_err() {
        remove_database_files(&temporary);
    }
    outcome
}

fn refuse_existing(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::InvalidInput(format!(
            "{} exists already: give a new file",
            path.display()
        )));
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", path.display()), error))
        }
        _ => Ok(()),
    }
}

/// Removes a database file and whatever SQLite made beside it.
pub(crate) fn remove_database_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|error| io_error(format!("syncing {}", path.display()), error))
}

fn sync_directory(directory: &Path) -> Result<()> {
    std::fs::File::open(directory)
        .and_then(|file| file.sync_all())
        .map_err(|error| io_error(format!("syncing {}", directory.display()), error))
}

fn io_error(doing: String, error: std::io::Error) -> Error {
    let kind = if error.raw_os_error() == Some(libc::ENOSPC) {
        EngineErrorKind::Full
    } else {
        EngineErrorKind::Io
    };
    Error::Engine(EngineError::new(kind, format!("{doing} failed")).with_source(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        assert_eq!(
            uri_path("/tmp/a b?c#d%e.sqlite"),
            "/tmp/a%20b%3Fc%23d%25e.sqlite"
        );
        assert_eq!(uri_path("/data/x-1_2.~"), "/data/x-1_2.~");
    }
}
