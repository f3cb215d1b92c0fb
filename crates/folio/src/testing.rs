//! Test helpers: engine wrappers.
//!
//! A test that needs an engine which observes or changes some calls of
//! another (counting round trips, recording batches, injecting faults)
//! implements [`Wrapper`] for the calls it cares about; every other call
//! goes to the inner engine, and [`wrap`] makes it an [`Engine`].
//!
//! [`FaultyEngine`] is one: it makes chosen commits fail with an
//! [`Error::Engine`] (an I/O failure), before they reach the inner engine,
//! so that tests can show that a failed save changes neither the database
//! nor the session, and that the failure is not mistaken for a conflict.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use folio_core::{
    Batch, ChangesPage, CommitResult, Engine, EngineError, EngineErrorKind, EngineRef, Entry,
    Error, FieldPath, Metadata, Query, QueryResult, Result,
};

/// The calls a test wrapper of an engine may observe or change. Each
/// defaults to passing the call on to [`Wrapper::inner`]; the engine's other
/// calls always go there. [`wrap`] makes a wrapper an [`Engine`].
///
/// ```
/// # use std::sync::Arc;
/// # use std::sync::atomic::{AtomicUsize, Ordering};
/// use folio::testing::{Wrapper, wrap};
///
/// /// Counts commits.
/// struct Counting {
///     inner: folio::EngineRef,
///     commits: AtomicUsize,
/// }
///
/// #[async_trait::async_trait]
/// impl Wrapper for Counting {
///     fn inner(&self) -> &folio::EngineRef {
///         &self.inner
///     }
///
///     async fn commit(
///         &self,
///         batch: folio::Batch,
///     ) -> folio::Result<Result<folio::Committed, folio::ConcurrencyError>> {
///         self.commits.fetch_add(1, Ordering::SeqCst);
///         self.inner.commit(batch).await
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let inner = folio::DocumentStore::in_memory().await?.engine().clone();
/// let counting = Arc::new(Counting { inner, commits: AtomicUsize::new(0) });
/// let store = folio::DocumentStore::from_engine(wrap(counting.clone()));
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Wrapper: Send + Sync + 'static {
    /// The engine the calls go on to.
    fn inner(&self) -> &EngineRef;

    /// [`Engine::commit`].
    async fn commit(&self, batch: Batch) -> CommitResult {
        self.inner().commit(batch).await
    }

    /// [`Engine::get`].
    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        self.inner().get(collection, ids).await
    }

    /// [`Engine::metadata`].
    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        self.inner().metadata(collection, ids).await
    }

    /// [`Engine::query`].
    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        self.inner().query(query).await
    }

    /// [`Engine::query_page`] (the inner engine's, one snapshot).
    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        self.inner().query_page(query).await
    }
}

/// The engine made of `wrapper`; keep the `Arc` to look at the wrapper.
pub fn wrap<W: Wrapper>(wrapper: Arc<W>) -> EngineRef {
    Arc::new(Wrapped(wrapper))
}

struct Wrapped<W>(Arc<W>);

#[async_trait]
impl<W: Wrapper> Engine for Wrapped<W> {
    async fn commit(&self, batch: Batch) -> CommitResult {
        self.0.commit(batch).await
    }

    /// Itself, whatever `reads` says: the wrapper's reads go to the inner
    /// engine's own handle (its primary), which shows every write.
    fn reads(self: Arc<Self>, _: folio_core::Reads) -> Result<EngineRef> {
        Ok(self)
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        self.0.get(collection, ids).await
    }

    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        self.0.metadata(collection, ids).await
    }

    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        self.0.query(query).await
    }

    async fn count(&self, query: &Query) -> Result<u64> {
        self.0.inner().count(query).await
    }

    async fn collections(&self) -> Result<Vec<folio_core::CollectionCount>> {
        self.0.inner().collections().await
    }

    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        self.0.query_page(query).await
    }

    async fn scan(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.0.inner().scan(collection, after, limit).await
    }

    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()> {
        self.0.inner().ensure_index(collection, path).await
    }

    async fn configure(
        &self,
        collection: &str,
        config: &folio_core::CollectionConfig,
    ) -> Result<()> {
        self.0.inner().configure(collection, config).await
    }

    async fn configuration(&self, collection: &str) -> Result<folio_core::CollectionConfig> {
        self.0.inner().configuration(collection).await
    }

    async fn revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<folio_core::RevisionsPage> {
        self.0.inner().revisions(collection, id, start, take).await
    }

    async fn revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &folio_core::ChangeVector,
    ) -> Result<Option<Entry>> {
        self.0.inner().revision(collection, id, change_vector).await
    }

    async fn changes(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage> {
        self.0.inner().changes(since, collection, limit).await
    }

    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64> {
        self.0.inner().wait_for_changes(since, timeout).await
    }

    fn health(&self) -> Result<()> {
        self.0.inner().health()
    }
}

/// An engine that delegates to another and fails the commits it is told to.
///
/// ```
/// # use std::sync::Arc;
/// # use folio::testing::FaultyEngine;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let inner = folio::DocumentStore::in_memory().await?.engine().clone();
/// let faulty = Arc::new(FaultyEngine::new(inner));
/// faulty.fail_next_commits(1);
/// let store = folio::DocumentStore::from_engine(folio::testing::wrap(faulty.clone()));
/// # drop(store);
/// # Ok(())
/// # }
/// ```
pub struct FaultyEngine {
    inner: EngineRef,
    failures_left: AtomicUsize,
    failed: AtomicUsize,
}

impl FaultyEngine {
    /// Wraps `inner`; no failures until told.
    pub fn new(inner: EngineRef) -> Self {
        FaultyEngine {
            inner,
            failures_left: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Makes the next `count` commits fail.
    pub fn fail_next_commits(&self, count: usize) {
        self.failures_left.store(count, Ordering::SeqCst);
    }

    /// How many commits failed so far.
    pub fn failed_commits(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Wrapper for FaultyEngine {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(&self, batch: Batch) -> CommitResult {
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Engine(EngineError::new(
                EngineErrorKind::Io,
                format!("injected fault: commit of {} commands refused", batch.len()),
            )));
        }
        self.inner.commit(batch).await
    }
}
