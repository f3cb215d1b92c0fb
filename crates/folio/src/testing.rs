//! Test helpers: an engine wrapper that fails on demand.
//!
//! [`FaultyEngine`] wraps any engine and makes chosen commits fail with an
//! [`Error::Engine`] (an I/O failure), before they reach the inner engine,
//! so that tests can show that a failed save changes neither the database
//! nor the session, and that the failure is not mistaken for a conflict.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use folio_core::{
    Batch, CommitResult, Engine, EngineError, EngineErrorKind, EngineRef, Entry, Error, FieldPath,
    Metadata, Query, Result,
};

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
/// let store = folio::DocumentStore::from_engine(faulty.clone());
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
impl Engine for FaultyEngine {
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

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        self.inner.get(collection, ids).await
    }

    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        self.inner.metadata(collection, ids).await
    }

    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        self.inner.query(query).await
    }

    async fn count(&self, query: &Query) -> Result<u64> {
        self.inner.count(query).await
    }

    async fn scan(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.inner.scan(collection, after, limit).await
    }

    async fn ensure_index(&self, collection: &str, path: &FieldPath) -> Result<()> {
        self.inner.ensure_index(collection, path).await
    }

    async fn changes(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<folio_core::ChangesPage> {
        self.inner.changes(since, collection, limit).await
    }

    async fn wait_for_changes(&self, since: u64, timeout: std::time::Duration) -> Result<u64> {
        self.inner.wait_for_changes(since, timeout).await
    }
}
