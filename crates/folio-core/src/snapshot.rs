//! Whole databases read in one consistent snapshot: what backups,
//! restores, copies between engines and exports read and write.
//!
//! A snapshot is the state of one database at one moment: every live
//! document with its metadata, every tombstone, the whole changes feed,
//! the indexes, and the database's identity ([`SnapshotHeader`]). An
//! engine reads one as a [`SnapshotReader`] (one read transaction, or one
//! file) in parts, in a fixed order; a [`SnapshotWriter`] builds a **new**
//! database from one, keeping every etag, revision, last-modified time and
//! (unless told otherwise) the database id, so that change vectors stay
//! what they were. [`copy_snapshot`] joins the two.
//!
//! Building a database from a snapshot is not a write path: it stamps no
//! new versions and runs only into a database that does not exist yet (or
//! is empty and unused), never into one that serves. Every write to a
//! database that serves still goes through [`crate::Engine::commit`].

use std::collections::HashSet;

use async_trait::async_trait;

use std::time::SystemTime;

use crate::{Change, CollectionConfig, DatabaseId, Entry, FieldPath, Result};

/// Which database id a database built from a snapshot takes.
///
/// A change vector is `A:{etag}-{database id}`, and a database built from
/// a snapshot keeps every etag; so the id decides whether the versions
/// clients hold from the source are valid in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// The source's id: every change vector stays what it was, and a
    /// client holding a version read before the snapshot can still write
    /// with it. The new database issues its etags [`RESTORED_ETAG_GAP`]
    /// after the snapshot's last one ([`SnapshotHeader::last_etag`]), so a
    /// version the source wrote after the snapshot (a restore of a backup
    /// older than what was lost) never shares its change vector with one
    /// of the new database: a client holding it gets a conflict, never an
    /// overwrite of a version it did not read.
    #[default]
    Keep,
    /// An id of its own: no change vector of the source matches a version
    /// of the new database, so a write conditional on a version read from
    /// the source is refused (a conflict), never applied over a version
    /// its client did not see. For a copy beside a source that lives on,
    /// or when clients may hold versions written after the snapshot.
    New,
}

/// How far above a snapshot's last etag a database built from it starts
/// issuing etags: more writes than a source could take after its snapshot
/// (2^40), so that no change vector names a version of the source and
/// another of the new database.
pub const RESTORED_ETAG_GAP: u64 = 1 << 40;

impl Identity {
    /// The database id a database built from a snapshot of `source` takes.
    pub fn database_id(self, source: &DatabaseId) -> DatabaseId {
        match self {
            Identity::Keep => source.clone(),
            Identity::New => DatabaseId::generate(),
        }
    }
}

/// The identity and position of the database a snapshot was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The database id: the tail of every change vector of the snapshot.
    pub database_id: DatabaseId,
    /// At or above every etag the source had issued when the snapshot was
    /// read (committed, rolled back or reserved). A database built from the
    /// snapshot issues its etags after this one, so it never issues again
    /// a change vector that the snapshot holds.
    pub last_etag: u64,
    /// Every change with an etag up to this one is in the snapshot (some
    /// later ones may be too): where to follow the source's changes feed
    /// from to miss nothing that happened after the snapshot.
    pub feed_position: u64,
}

/// A deleted document's last etag: its tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tombstone {
    /// The collection of the deleted document.
    pub collection: String,
    /// The id of the deleted document.
    pub id: String,
    /// The etag the delete took.
    pub etag: u64,
}

/// An index made by [`crate::Engine::ensure_index`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Index {
    /// The collection it covers.
    pub collection: String,
    /// The field path it indexes.
    pub path: FieldPath,
}

/// A kept version of a document ([`crate::Revision`] with its key and
/// document), as a snapshot carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVersion {
    /// The collection of the document.
    pub collection: String,
    /// The id of the document.
    pub id: String,
    /// The etag of the version's write (of the delete, for a deletion).
    pub etag: u64,
    /// The document's revision number at this version.
    pub revision: u64,
    /// When it was written.
    pub last_modified: SystemTime,
    /// The document, a JSON object as text; `None` for a deletion.
    pub document: Option<String>,
}

/// One part of a snapshot. A reader yields every part of one kind before
/// the next kind, in this order: documents (by collection, then id),
/// tombstones, changes (both by etag), indexes, collection configurations
/// (by collection), kept versions (by collection, id, etag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPart {
    /// Live documents with their metadata (the change vectors carry the
    /// source's database id; a writer stamps its own from the etags).
    Documents(Vec<Entry>),
    /// Tombstones of deleted documents.
    Tombstones(Vec<Tombstone>),
    /// Changes of the feed.
    Changes(Vec<Change>),
    /// Indexes.
    Indexes(Vec<Index>),
    /// Collections' configurations ([`crate::Engine::configure`]).
    Configurations(Vec<(String, CollectionConfig)>),
    /// Kept versions of documents (revisions).
    Revisions(Vec<KeptVersion>),
}

/// What a snapshot reader reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotContents {
    /// Everything: documents, tombstones, changes, indexes, configurations
    /// and kept versions (a backup).
    #[default]
    Everything,
    /// Only the live documents, of one collection when given (an export).
    Documents {
        /// The one collection to read, or every collection.
        collection: Option<String>,
    },
}

/// A consistent snapshot of a database, read in parts.
#[async_trait]
pub trait SnapshotReader: Send {
    /// The database's identity and position at the snapshot.
    fn header(&self) -> &SnapshotHeader;

    /// The next part, or `None` after the last one.
    async fn next_part(&mut self) -> Result<Option<SnapshotPart>>;
}

/// Builds a new database from a snapshot's parts, in the order a reader
/// yields them. Nothing of it is visible, or durable, before
/// [`SnapshotWriter::finish`] returns; a writer dropped before that leaves
/// nothing behind.
#[async_trait]
pub trait SnapshotWriter: Send {
    /// Adds one part.
    async fn write(&mut self, part: SnapshotPart) -> Result<()>;

    /// Completes the database and makes it durable.
    async fn finish(self: Box<Self>) -> Result<()>;
}

/// How much a snapshot held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Live documents.
    pub documents: u64,
    /// Collections with at least one live document.
    pub collections: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Changes of the feed.
    pub changes: u64,
    /// Indexes.
    pub indexes: u64,
    /// Collection configurations.
    pub configurations: u64,
    /// Kept versions of documents.
    pub revisions: u64,
}

impl SnapshotCounts {
    /// Counts `part` in.
    pub fn add(&mut self, part: &SnapshotPart, collections: &mut HashSet<String>) {
        let count = |items: usize| u64::try_from(items).unwrap_or(u64::MAX);
        match part {
            SnapshotPart::Documents(entries) => {
                self.documents += count(entries.len());
                for entry in entries {
                    if !collections.contains(&entry.metadata.collection) {
                        collections.insert(entry.metadata.collection.clone());
                    }
                }
                self.collections = count(collections.len());
            }
            SnapshotPart::Tombstones(tombstones) => self.tombstones += count(tombstones.len()),
            SnapshotPart::Changes(changes) => self.changes += count(changes.len()),
            SnapshotPart::Indexes(indexes) => self.indexes += count(indexes.len()),
            SnapshotPart::Configurations(configurations) => {
                self.configurations += count(configurations.len());
            }
            SnapshotPart::Revisions(revisions) => self.revisions += count(revisions.len()),
        }
    }
}

/// Reads every part of `reader` into `writer`, then finishes the writer:
/// the new database exists once this returns `Ok`. On an error the writer
/// is dropped unfinished, leaving nothing.
pub async fn copy_snapshot(
    reader: &mut dyn SnapshotReader,
    mut writer: Box<dyn SnapshotWriter>,
) -> Result<SnapshotCounts> {
    let mut counts = SnapshotCounts::default();
    let mut collections = HashSet::new();
    while let Some(part) = reader.next_part().await? {
        counts.add(&part, &mut collections);
        writer.write(part).await?;
    }
    writer.finish().await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{ChangeKind, ChangeVector, Metadata, time_from_millis};

    struct Parts(SnapshotHeader, Vec<SnapshotPart>);

    #[async_trait]
    impl SnapshotReader for Parts {
        fn header(&self) -> &SnapshotHeader {
            &self.0
        }

        async fn next_part(&mut self) -> Result<Option<SnapshotPart>> {
            Ok((!self.1.is_empty()).then(|| self.1.remove(0)))
        }
    }

    #[derive(Default)]
    struct Collected {
        parts: Vec<SnapshotPart>,
        finished: bool,
    }

    struct Collector(Arc<Mutex<Collected>>);

    #[async_trait]
    impl SnapshotWriter for Collector {
        async fn write(&mut self, part: SnapshotPart) -> Result<()> {
            self.0.lock().unwrap().parts.push(part);
            Ok(())
        }

        async fn finish(self: Box<Self>) -> Result<()> {
            self.0.lock().unwrap().finished = true;
            Ok(())
        }
    }

    fn entry(collection: &str, id: &str, etag: u64) -> Entry {
        Entry {
            metadata: Metadata {
                id: id.into(),
                collection: collection.into(),
                change_vector: ChangeVector::from(format!("A:{etag}-x")),
                revision: 1,
                etag,
                last_modified: time_from_millis(1),
            },
            document: "{}".into(),
        }
    }

    #[tokio::test]
    async fn copy_passes_every_part_in_order_and_counts_them() {
        let parts = vec![
            SnapshotPart::Documents(vec![entry("a", "1", 1), entry("a", "2", 2)]),
            SnapshotPart::Documents(vec![entry("b", "1", 4)]),
            SnapshotPart::Tombstones(vec![Tombstone {
                collection: "a".into(),
                id: "3".into(),
                etag: 3,
            }]),
            SnapshotPart::Changes(vec![Change {
                etag: 4,
                kind: ChangeKind::Put,
                collection: "b".into(),
                id: "1".into(),
                change_vector: ChangeVector::from("A:4-x"),
                revision: 1,
            }]),
        ];
        let header = SnapshotHeader {
            database_id: DatabaseId::generate(),
            last_etag: 4,
            feed_position: 4,
        };
        let collected = Arc::new(Mutex::new(Collected::default()));
        let counts = copy_snapshot(
            &mut Parts(header, parts.clone()),
            Box::new(Collector(collected.clone())),
        )
        .await
        .unwrap();
        let collected = collected.lock().unwrap();
        assert_eq!(collected.parts, parts);
        assert!(collected.finished);
        assert_eq!(
            counts,
            SnapshotCounts {
                documents: 3,
                collections: 2,
                tombstones: 1,
                changes: 1,
                indexes: 0,
                configurations: 0,
                revisions: 0,
            }
        );
    }
}
