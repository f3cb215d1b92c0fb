//! The changes feed: every committed write, in etag order.
//!
//! Each put or delete that takes an etag is one [`Change`]. An engine
//! publishes changes up to a **horizon**: the largest etag below which
//! nothing can still commit. Readers only ever see changes at or below the
//! horizon, so a reader that resumes after etag `n` misses nothing, even on
//! engines where etags are taken before commit and commit out of order
//! (PostgreSQL: a transaction holding etag 10 may commit after one holding
//! 11; the horizon stays at 9 until it has).
//!
//! [`ChangeHorizon`] is the in-process half every engine shares: the
//! published horizon, and waiting for it to move without polling storage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ChangeVector;

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A document was created or replaced.
    Put,
    /// A document was deleted.
    Delete,
}

impl ChangeKind {
    /// `"put"` or `"delete"`: the SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One committed write, as the changes feed reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The etag the write took; feeds are ordered by it.
    pub etag: u64,
    /// A put or a delete.
    pub kind: ChangeKind,
    /// The collection of the document.
    pub collection: String,
    /// The id of the document.
    pub id: String,
    /// The change vector the write produced (for a delete: the delete's).
    pub change_vector: ChangeVector,
    /// The document's revision after a put; for a delete, the revision of
    /// the version deleted.
    pub revision: u64,
}

/// A page of the changes feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesPage {
    /// The changes, in etag order.
    pub changes: Vec<Change>,
    /// Where the next page starts: every change up to this etag that
    /// matches the request is in this page or an earlier one. Pass it as
    /// the next `since`.
    pub last_etag: u64,
}

impl ChangesPage {
    /// Checks a request for changes after `since` (the collection name,
    /// and that `since` is an etag: at most 2^63-1), and answers the one that needs no reading: `limit` 0 is an empty
    /// page that stays at `since`. Every engine starts with it.
    pub fn check_request(
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> crate::Result<Option<ChangesPage>> {
        if let Some(collection) = collection {
            crate::validate::collection(collection)?;
        }
        if i64::try_from(since).is_err() {
            return Err(crate::Error::InvalidInput(format!(
                "since is an etag, at most {}",
                i64::MAX
            )));
        }
        Ok((limit == 0).then(|| ChangesPage {
            changes: Vec::new(),
            last_etag: since,
        }))
    }

    /// The page of `changes` read from storage for a request after `since`
    /// with `limit`, when every change up to `horizon` was looked at: a
    /// full page ends at its last change, a short one at the horizon.
    pub fn new(changes: Vec<Change>, since: u64, horizon: u64, limit: usize) -> Self {
        let last_etag = match changes.last() {
            Some(last) if changes.len() >= limit => last.etag,
            _ => horizon.max(since),
        };
        ChangesPage { changes, last_etag }
    }
}

/// The published horizon of one database's feed, shared by its writers
/// (who move it) and its readers (who wait for it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use folio_core::ChangeHorizon;
///
/// let horizon = ChangeHorizon::new(7);
/// horizon.publish(9);
/// horizon.publish(8); // never goes back
/// assert_eq!(horizon.current(), 9);
/// assert_eq!(horizon.wait_beyond(5, Duration::ZERO).await, 9);
/// assert_eq!(horizon.wait_beyond(9, Duration::from_millis(10)).await, 9); // timed out
/// # }
/// ```
#[derive(Debug)]
pub struct ChangeHorizon {
    sender: watch::Sender<u64>,
    /// The horizon, readable without the channel's lock: every read of the
    /// embedded engine asks it (readers show only what is durable).
    current: AtomicU64,
}

impl ChangeHorizon {
    /// A horizon starting at `etag`.
    pub fn new(etag: u64) -> Self {
        ChangeHorizon {
            sender: watch::Sender::new(etag),
            current: AtomicU64::new(etag),
        }
    }

    /// The published horizon.
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Moves the horizon up to `etag` (never down) and wakes the waiters
    /// when it moved.
    pub fn publish(&self, etag: u64) {
        self.sender.send_if_modified(|current| {
            let moved = etag > *current;
            if moved {
                *current = etag;
                // Under the channel's lock: the two never disagree for long,
                // and the atomic never goes down.
                self.current.store(etag, Ordering::Release);
            }
            moved
        });
    }

    /// Waits until the horizon is beyond `since`, or `timeout` passed;
    /// returns the horizon then.
    pub async fn wait_beyond(&self, since: u64, timeout: Duration) -> u64 {
        let mut receiver = self.sender.subscribe();
        let beyond = receiver.wait_for(|etag| *etag > since);
        match tokio::time::timeout(timeout, beyond).await {
            Ok(Ok(etag)) => *etag,
            // Timed out (the sender lives as long as `self`).
            _ => self.current(),
        }
    }

    /// Waits until the horizon is at least `etag`, however long that takes.
    pub async fn wait_until(&self, etag: u64) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`, so this only ends at `etag`.
        let _ = receiver.wait_for(|current| *current >= etag).await;
    }

    /// How many readers are waiting (engines that pay for computing the
    /// horizon compute it only when someone waits).
    pub fn waiters(&self) -> usize {
        self.sender.receiver_count()
    }
}
