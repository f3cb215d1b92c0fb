//! The on-disk layout and its migrations.
//!
//! * `documents`: one row per live document, found by `(collection, id)`.
//!   Its row id never changes, so an update rewrites the row in place and
//!   touches no index: one B-tree page per write. `data` is SQLite JSONB.
//! * `tombstones`: one row per deleted document, with the etag of its
//!   delete, so the last etag survives deletes. A put of the same id
//!   removes its tombstone.
//! * `changes`: the changes feed, one row per write that took an etag
//!   (`kind` 0 = put, 1 = delete), keyed by the etag (appends go to the
//!   right edge of the B-tree). The writer records each write right after
//!   it, in the same transaction (layout 2 did it with triggers on
//!   `documents`; a trigger makes SQLite journal every statement's pages,
//!   and layout 3 dropped them).
//! * `folio_meta`: key/value settings, among them the database id.
//! * `folio_collections`, `revisions`: collection configurations and the
//!   kept versions of documents ([`LAYOUT_V6`]).
//! * `folio_counters`: `last_etag`, the last etag issued as of layout 2
//!   (written once per group then). Since layout 3 the last etag is the
//!   feed's ([`LAST_ETAG`]): every write that keeps its etag is in it.
//!   `etags_reserved`: every etag up to it may have been taken, by a write
//!   that committed or one that was rolled back; the writer starts above it
//!   and raises it ahead of use ([`RESERVE_ETAGS`]), so no etag (and no
//!   change vector) is ever taken twice.
//!
//! `PRAGMA user_version` holds the layout version.

use folio_core::{DatabaseId, Error, Result};
use rusqlite::{Connection, OptionalExtension};

use crate::error::storage;

/// The layout version this build writes.
///
/// Layout 4 changes no table: its pages reserve 8 bytes for a checksum
/// (`vfs.rs`; `file.rs` converts older files). Its number keeps an older
/// Folio, which would write pages without checksums, from opening it.
/// Layout 5 adds `folio_batches` ([`LAYOUT_V5`]), layout 6 collection
/// configurations and revisions ([`LAYOUT_V6`]).
const LAYOUT_VERSION: i64 = 6;

const LAYOUT_V1: &str = "
CREATE TABLE folio_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE folio_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO folio_counters (name, value) VALUES ('last_etag', 0);
CREATE TABLE documents (
    collection    TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    etag          INTEGER NOT NULL,
    revision      INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    data          BLOB    NOT NULL
);
CREATE UNIQUE INDEX documents_by_key ON documents (collection, id);
CREATE TABLE tombstones (
    etag       INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL
);
CREATE UNIQUE INDEX tombstones_by_key ON tombstones (collection, id);
";

/// Version 2: the changes feed. A database of version 1 gets the current
/// state as its history (one change per live document and per tombstone;
/// a tombstone's revision is unknown there and reads as 0).
const LAYOUT_V2: &str = "
CREATE TABLE changes (
    etag       INTEGER PRIMARY KEY,
    kind       INTEGER NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    revision   INTEGER NOT NULL
);
CREATE TRIGGER changes_of_inserts AFTER INSERT ON documents BEGIN
    INSERT INTO changes (etag, kind, collection, id, revision)
    VALUES (new.etag, 0, new.collection, new.id, new.revision);
END;
CREATE TRIGGER changes_of_updates AFTER UPDATE ON documents BEGIN
    INSERT INTO changes (etag, kind, collection, id, revision)
    VALUES (new.etag, 0, new.collection, new.id, new.revision);
END;
INSERT INTO changes (etag, kind, collection, id, revision)
    SELECT etag, 0, collection, id, revision FROM documents
    UNION ALL SELECT etag, 1, collection, id, 0 FROM tombstones;
";

/// Version 3: the writer records puts in `changes` itself, beside the
/// write (`writer.rs`): no triggers, so SQLite needs no statement journal
/// for a single-row write.
const LAYOUT_V3: &str = "
DROP TRIGGER changes_of_inserts;
DROP TRIGGER changes_of_updates;
";

/// Version 5: the ids of committed batches (`Batch::id`), each with a
/// SHA-256 of its commands, its results (JSON) and when it committed
/// (milliseconds since the epoch), written in the batch's transaction; the
/// writer deletes those older than the retention.
const LAYOUT_V5: &str = "
CREATE TABLE folio_batches (
    id           TEXT    PRIMARY KEY,
    fingerprint  BLOB    NOT NULL,
    results      TEXT    NOT NULL,
    committed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX folio_batches_by_time ON folio_batches (committed_at);
";

/// Version 6: each collection's configuration (`CollectionConfig`, JSON)
/// and the kept versions of documents (`folio_core::Revision`): one row
/// per version kept (`data`: its JSONB; none for a deletion), stored in
/// the order of `(collection, id, etag)` (one B-tree: a kept version costs
/// one more page written per commit, not two).
const LAYOUT_V6: &str = "
CREATE TABLE folio_collections (
    collection TEXT PRIMARY KEY,
    config     TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE revisions (
    collection    TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    etag          INTEGER NOT NULL,
    revision      INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    data          BLOB,
    PRIMARY KEY (collection, id, etag)
) WITHOUT ROWID;
";

/// The last etag any committed write took: the feed's newest (an
/// `INTEGER PRIMARY KEY`, so one B-tree step), or what layout 2 recorded.
pub(crate) const LAST_ETAG: &str = "SELECT max(\
    coalesce((SELECT value FROM folio_counters WHERE name = 'last_etag'), 0), \
    coalesce((SELECT max(etag) FROM changes), 0))";

/// The last etag any committed write took (as [`LAST_ETAG`]) and the etags
/// reserved (`writer.rs`: an etag up to the reservation may have been taken
/// by a write that did not commit, and is never taken again).
pub(crate) const LAST_AND_RESERVED_ETAGS: &str = "SELECT max(\
    coalesce((SELECT value FROM folio_counters WHERE name = 'last_etag'), 0), \
    coalesce((SELECT max(etag) FROM changes), 0)), \
    coalesce((SELECT value FROM folio_counters WHERE name = 'etags_reserved'), 0)";

/// Records the etags reserved (`?1`).
pub(crate) const RESERVE_ETAGS: &str = "INSERT INTO folio_counters (name, value) \
    VALUES ('etags_reserved', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value";

/// What opening a database learned.
pub(crate) struct Opened {
    pub(crate) database_id: DatabaseId,
    /// The last etag issued so far.
    pub(crate) last_etag: u64,
}

/// Creates the layout in a new database or checks an existing one, and reads
/// the database id. Runs on the writer connection.
pub(crate) fn open(connection: &mut Connection) -> Result<Opened> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| storage("starting the schema transaction", e))?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| storage("reading the layout version", e))?;
    match version {
        0 => {
            transaction
                .execute_batch(LAYOUT_V1)
                .map_err(|e| storage("creating the database layout", e))?;
            transaction
                .execute(
                    "INSERT INTO folio_meta (key, value) VALUES ('database_id', ?1)",
                    [DatabaseId::generate().as_str()],
                )
                .map_err(|e| storage("recording the database id", e))?;
        }
        1..=LAYOUT_VERSION => {}
        newer => {
            return Err(Error::Engine(folio_core::EngineError::new(
                folio_core::EngineErrorKind::Unsupported,
                format!(
                    "the database has layout {newer}, written by a newer Folio than this one \
                     (which reads layouts up to {LAYOUT_VERSION}): open it with that Folio or a \
                     newer one"
                ),
            )));
        }
    }
    if version < 2 {
        transaction
            .execute_batch(LAYOUT_V2)
            .map_err(|e| storage("adding the changes feed to the layout", e))?;
    }
    if version < 3 {
        transaction
            .execute_batch(LAYOUT_V3)
            .map_err(|e| storage("moving the changes feed to the writer", e))?;
    }
    if version < 5 {
        transaction
            .execute_batch(LAYOUT_V5)
            .map_err(|e| storage("adding the record of committed batches", e))?;
    }
    if version < 6 {
        transaction
            .execute_batch(LAYOUT_V6)
            .map_err(|e| storage("adding collection configurations and revisions", e))?;
    }
    if version < LAYOUT_VERSION {
        transaction
            .pragma_update(None, "user_version", LAYOUT_VERSION)
            .map_err(|e| storage("recording the layout version", e))?;
    }
    let last_etag: i64 = transaction
        .query_row(LAST_ETAG, [], |row| row.get(0))
        .map_err(|e| storage("reading the last etag", e))?;
    let database_id: String = transaction
        .query_row(
            "SELECT value FROM folio_meta WHERE key = 'database_id'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| storage("reading the database id", e))?
        .ok_or_else(|| {
            Error::InvalidInput(
                "the database has no database id: it is not a Folio database".into(),
            )
        })?;
    transaction
        .commit()
        .map_err(|e| storage("committing the schema", e))?;
    Ok(Opened {
        database_id: DatabaseId::parse(&database_id)?,
        last_etag: u64::try_from(last_etag).unwrap_or(0),
    })
}

/// Makes `connection`'s empty database one of layout 3, as Folio wrote it
/// before page checksums, for tests of the conversion (`file.rs`).
#[cfg(test)]
pub(crate) fn layout_3(connection: &Connection) {
    connection.execute_batch(LAYOUT_V1).unwrap();
    connection.execute_batch(LAYOUT_V2).unwrap();
    connection.execute_batch(LAYOUT_V3).unwrap();
    connection
        .execute(
            "INSERT INTO folio_meta (key, value) VALUES ('database_id', ?1)",
            [DatabaseId::generate().as_str()],
        )
        .unwrap();
    connection.pragma_update(None, "user_version", 3).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(connection: &Connection) -> (i64, i64, i64) {
        let version = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        let triggers = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let changes = connection
            .query_row("SELECT count(*) FROM changes", [], |row| row.get(0))
            .unwrap();
        (version, triggers, changes)
    }

    #[test]
    fn a_new_database_gets_the_current_layout() {
        let mut connection = Connection::open_in_memory().unwrap();
        open(&mut connection).unwrap();
        assert_eq!(layout(&connection), (LAYOUT_VERSION, 0, 0));
        open(&mut connection).unwrap();
        assert_eq!(layout(&connection), (LAYOUT_VERSION, 0, 0));
    }

    #[test]
    fn the_last_etag_is_the_feeds_newest() {
        let mut connection = Connection::open_in_memory().unwrap();
        assert_eq!(open(&mut connection).unwrap().last_etag, 0);
        connection
            .execute(
                "INSERT INTO changes (etag, kind, collection, id, revision) VALUES (9, 1, 'notes', 'a', 1)",
                [],
            )
            .unwrap();
        assert_eq!(open(&mut connection).unwrap().last_etag, 9);
        // A layout-2 counter ahead of the feed (a delete of nothing never
        // took an etag, but be safe) still counts.
        connection
            .execute(
                "UPDATE folio_counters SET value = 12 WHERE name = 'last_etag'",
                [],
            )
            .unwrap();
        assert_eq!(open(&mut connection).unwrap().last_etag, 12);
    }

    #[test]
    fn older_layouts_are_migrated_keeping_documents_and_their_history() {
        for old in [1, 2] {
            let mut connection = Connection::open_in_memory().unwrap();
            connection.execute_batch(LAYOUT_V1).unwrap();
            connection
                .execute(
                    "INSERT INTO folio_meta (key, value) VALUES ('database_id', ?1)",
                    [DatabaseId::generate().as_str()],
                )
                .unwrap();
            if old == 2 {
                connection.execute_batch(LAYOUT_V2).unwrap();
            }
            connection
                .execute_batch(
                    "INSERT INTO documents (collection, id, etag, revision, last_modified, data) \
                     VALUES ('notes', 'a', 1, 1, 0, jsonb('{}')); \
                     UPDATE folio_counters SET value = 1 WHERE name = 'last_etag';",
                )
                .unwrap();
            connection.pragma_update(None, "user_version", old).unwrap();
            let opened = open(&mut connection).unwrap();
            assert_eq!(opened.last_etag, 1);
            // Layout 2's trigger recorded the insert; layout 1 gets the
            // current state as its history.
            assert_eq!(
                layout(&connection),
                (LAYOUT_VERSION, 0, 1),
                "from layout {old}"
            );
        }
    }
}
