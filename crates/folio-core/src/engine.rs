use std::sync::Arc;

use async_trait::async_trait;

use std::time::{Duration, Instant};

use crate::{
    Batch, ChangeVector, ChangesPage, CollectionConfig, Committed, ConcurrencyError, Entry,
    FieldPath, Metadata, Query, Reads, Result, RevisionsPage,
};

/// The result of [`Engine::commit`]: the outer `Result` is a failure of the
/// storage or network, the inner one is the verdict on the batch.
pub type CommitResult = Result<std::result::Result<Committed, ConcurrencyError>>;

/// What [`Engine::query_page`] returns: one page of results and the number of
/// documents matching the filters, before `skip`/`take`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResult {
    /// The matching documents of the page.
    pub entries: Vec<Entry>,
    /// How many documents match in all.
    pub total: u64,
}

/// A collection that holds documents, and how many ([`Engine::collections`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectionCount {
    /// The collection's name.
    pub name: String,
    /// How many documents it holds.
    pub documents: u64,
}

/// A storage engine: the one interface between Folio's front ends (sessions,
/// the HTTP server) and storage.
///
/// # The contract
///
/// * [`Engine::commit`] is the **only** write path. It checks every
///   command's expectation and applies every write inside one storage
///   transaction, or applies nothing and returns every conflict of the batch.
///   A put or delete that changes something takes the next database-wide
///   etag, a new change vector `A:{etag}-{database id}`, and (for puts) the
///   next revision and the commit time. A delete of a missing document with
///   an `Any` expectation changes nothing and takes no etag.
/// * A batch names each document at most once ([`Batch::validate`]), so
///   every expectation is judged against the state committed before the
///   batch, and a conflict's actual version is always a committed one (or
///   none). Commands apply in order.
/// * No change vector is ever issued twice: an etag taken by a write that
///   is rolled back (a refused batch, a failed group) is never taken again,
///   not after a restart either.
/// * A batch with an id ([`Batch::id`]) that commits records the id, a
///   fingerprint of its commands and its results in the same transaction,
///   kept for the engine's retention (a day by default). A batch whose id
///   is recorded is answered with the recorded results
///   ([`crate::Committed::replayed`]) and writes nothing, even when its
///   expectations no longer hold; under an id recorded with other
///   commands it is refused ([`crate::Error::BatchIdReused`]). A refused
///   or failed batch records nothing. Two batches with one id sent
///   together: the second is answered after the first, with its outcome.
///   An empty batch with an id writes and records nothing: it is answered
///   with the recorded results when that id (with that fingerprint)
///   committed, else with none — how a front end asks whether a batch
///   committed before it does anything else.
/// * A commit whose outcome is unknown (a connection lost during `COMMIT`)
///   is resolved by sending the batch again with its id, for a bounded
///   time; only if that fails is it [`crate::Error::InDoubt`], never a
///   plain failure.
/// * When commit returns `Ok(Ok(_))` the batch is durable as configured.
/// * Reads show only committed data that is durable as configured: a
///   version that a power loss could still erase is not shown (a read waits
///   for it, or fails if its durability is in doubt).
/// * Every put or delete that takes an etag is a [`crate::Change`] of the
///   changes feed; [`Engine::changes`] returns them in etag order, only up
///   to the published horizon (see [`crate::changes`]), so none is ever
///   skipped or repeated by a reader that resumes where it stopped.
/// * Reads through a handle come from the primary: they see every
///   committed write. [`Engine::reads`] makes a handle whose reads may come
///   from standbys ([`Reads`]); a commit answers with the
///   [`crate::Position`] that such a handle's reads wait for.
/// * A collection with revisions on ([`Engine::configure`]) keeps, in the
///   transaction of every committed put or delete of it, the version
///   written (a delete: an item marking the deletion), and drops the
///   oldest beyond its `keep`; a refused batch keeps none (see
///   [`crate::Revision`]).
/// * Engines validate their input (ids, collections, documents, queries)
///   and return [`crate::Error::InvalidInput`] before writing anything.
///
/// Every engine passes the same conformance suite (`crates/folio/tests`).
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Checks and applies `batch` atomically; see the trait documentation.
    async fn commit(&self, batch: Batch) -> CommitResult;

    /// A handle on this engine whose reads (`get`, `metadata`, `query`,
    /// `count`, `query_page`, `collections`, `scan`) are served as `reads`
    /// says; its writes and changes feed are this engine's. An engine
    /// whose every read sees every committed write (one node) returns
    /// itself. Reads after a position this engine cannot have written (a
    /// token of another kind of database) come from the primary, which
    /// shows every committed write.
    fn reads(self: Arc<Self>, reads: Reads) -> Result<EngineRef>;

    /// The stored documents with these ids in `collection`, in the order of
    /// `ids` (`None` for a missing one).
    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>>;

    /// The metadata of the stored documents with these ids, in order.
    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>>;

    /// The documents matching `query`, in its order (then by id), after
    /// `skip`, at most `take`.
    async fn query(&self, query: &Query) -> Result<Vec<Entry>>;

    /// How many documents match `query`'s filters (ignoring order and paging).
    async fn count(&self, query: &Query) -> Result<u64>;

    /// The collections that hold documents now, in order of name (by code
    /// point, on every engine), each with how many it holds, read in one
    /// snapshot. A collection whose last document was deleted is not one.
    async fn collections(&self) -> Result<Vec<CollectionCount>>;

    /// A page of `query` with the total number of matches, both read in
    /// one snapshot. Provided: `query`, then `count`, which are two; every
    /// engine of Folio overrides it (one read transaction, or one request).
    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        Ok(QueryResult {
            entries: self.query(query).await?,
            total: self.count(query).await?,
        })
    }

    /// Up to `limit` documents of `collection` with ids after `after`, in id
    /// order (stable paging).
    async fn scan(&self, collection: &str, after: Option<&str>, limit: usize)
    -> Result<Vec<Entry>>;

    /// Creates (if absent) an index on `path` in `collection`, so that
    /// queries filtering or ordering on it do not scan the collection.
    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()>;

    /// Replaces `collection`'s configuration ([`CollectionConfig`]); the
    /// writes committed after it follow it. Not a document write: it takes
    /// no etag.
    async fn configure(&self, collection: &str, config: &CollectionConfig) -> Result<()>;

    /// `collection`'s configuration (the default, all off, when never set).
    async fn configuration(&self, collection: &str) -> Result<CollectionConfig>;

    /// A page of the kept versions of `collection/id`, newest first (the
    /// current one included; a deleted document's too): `take` (1 to
    /// [`crate::MAX_REVISIONS_PAGE`]) after skipping `start`, with how many
    /// are kept in all. Read in one snapshot.
    async fn revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<RevisionsPage>;

    /// The kept version `change_vector` of `collection/id` with its
    /// document; `None` when it is not kept, or is the document's deletion.
    async fn revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<Entry>>;

    /// Up to `limit` published changes with etags after `since`, of
    /// `collection` only when given, in etag order; does not wait.
    async fn changes(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage>;

    /// Waits until the feed's horizon is beyond `since` (a change after
    /// `since` may be read), or `timeout` passed; returns the horizon. Wakes
    /// on a notification, never by polling storage in a loop.
    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64>;

    /// Whether the engine can serve now: `Ok`, or the failure that stops
    /// it from taking writes (a failed sync, a damaged database, a full
    /// disk), as the error its writes would get. Reads may still work.
    /// Provided: `Ok` (an engine with no such state).
    fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Long polling: the changes after `since` as [`Engine::changes`] does,
    /// but when there are none yet, waits up to `timeout` for some.
    async fn changes_wait(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
        timeout: Duration,
    ) -> Result<ChangesPage> {
        let deadline = Instant::now() + timeout;
        let mut since = since;
        loop {
            let page = self.changes(since, collection, limit).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !page.changes.is_empty() || left.is_zero() {
                return Ok(page);
            }
            // Nothing matched up to the page's end: wait beyond it.
            since = page.last_etag.max(since);
            self.wait_for_changes(since, left).await?;
        }
    }
}

/// A shared handle to any engine.
pub type EngineRef = Arc<dyn Engine>;
