//! [`DocumentStore::changes`]: the changes feed as a reader of the library
//! sees it.

use std::collections::VecDeque;
use std::time::Duration;

use folio_core::{Change, EngineRef, Result, validate};

use crate::DocumentStore;

/// How many changes one read of the engine fetches.
const PAGE: usize = 256;
/// How long one wait for new changes lasts before asking again.
const WAIT: Duration = Duration::from_secs(25);

/// A reader of the changes feed: every committed write after a starting
/// etag, in etag order, each exactly once, waiting for new ones as they
/// commit. Made by [`DocumentStore::changes`].
///
/// ```
/// # use folio::{Document, DocumentStore};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Document)]
/// #[folio(collection = "people")]
/// struct Person { id: String, name: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let store = DocumentStore::in_memory().await?;
/// let mut feed = store.changes(0);
/// let mut session = store.open_session();
/// session.store(Person { id: "p1".into(), name: "Ada".into() })?;
/// session.save_changes().await?;
///
/// let change = feed.next().await?;
/// assert_eq!((change.collection.as_str(), change.id.as_str(), change.revision), ("people", "p1", 1));
/// assert_eq!(feed.position(), change.etag); // resume from here after a restart
/// # Ok(())
/// # }
/// ```
pub struct ChangeFeed {
    engine: EngineRef,
    collection: Option<String>,
    /// Every change up to here was returned or skipped by the filter.
    position: u64,
    buffered: VecDeque<Change>,
}

impl ChangeFeed {
    pub(crate) fn new(store: &DocumentStore, since: u64) -> Self {
        ChangeFeed {
            engine: store.engine().clone(),
            collection: None,
            position: since,
            buffered: VecDeque::new(),
        }
    }

    /// Only the changes of `collection`.
    pub fn collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = Some(collection.into());
        self
    }

    /// The etag to resume from: every change up to it was returned by
    /// [`ChangeFeed::next`] (or filtered out).
    pub fn position(&self) -> u64 {
        match self.buffered.front() {
            Some(next) => next.etag - 1,
            None => self.position,
        }
    }

    /// The next change, waiting as long as it takes for one to commit.
    /// Fails with [`crate::Error::InvalidInput`] for an invalid collection
    /// name, and with the engine's errors; after an error, calling again
    /// resumes where the feed stood.
    pub async fn next(&mut self) -> Result<Change> {
        loop {
            if let Some(change) = self.next_now().await? {
                return Ok(change);
            }
            self.engine.wait_for_changes(self.position, WAIT).await?;
        }
    }

    /// The next change if one has committed, without waiting for one.
    pub async fn next_now(&mut self) -> Result<Option<Change>> {
        if let Some(change) = self.buffered.pop_front() {
            return Ok(Some(change));
        }
        if let Some(collection) = &self.collection {
            validate::collection(collection)?;
        }
        let page = self
            .engine
            .changes(self.position, self.collection.as_deref(), PAGE)
            .await?;
        self.position = self.position.max(page.last_etag);
        self.buffered.extend(page.changes);
        Ok(self.buffered.pop_front())
    }

    /// The feed as a [`futures_util::Stream`] that never ends by itself
    /// (an error is one item; the stream goes on after it).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Change>> + Send {
        futures_util::stream::unfold(self, |mut feed| async move {
            let next = feed.next().await;
            Some((next, feed))
        })
    }
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("collection", &self.collection)
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}
