//! What the engine's threads know of its state, and report: whether a sync
//! failed, whether a damaged page was read, whether the disk is full
//! (`space.rs`).
//!
//! Both stop writes and leave reads going: after a failed sync the kernel
//! may call the lost pages clean, so nothing more is written until the
//! database is reopened (`sync.rs`); a page that failed its checksum means
//! the file is damaged, and writing on would build on what cannot be read.

use std::sync::atomic::{AtomicBool, Ordering};

use folio_core::{EngineError, EngineErrorKind, Error};

/// The shared state; see the module documentation.
#[derive(Default)]
pub(crate) struct Health {
    sync_failed: AtomicBool,
    damaged: AtomicBool,
    /// Whether the disk is full (`space.rs`): only deletes are taken.
    full: AtomicBool,
    /// Woken when a sync fails.
    changed: tokio::sync::Notify,
}

impl Health {
    /// Whether a sync failed.
    pub(crate) fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::Acquire)
    }

    /// Records that a sync failed.
    pub(crate) fn fail_sync(&self) {
        self.sync_failed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Returns once a sync has failed.
    pub(crate) async fn wait_for_sync_failure(&self) {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a failure in between wakes it.
            notified.as_mut().enable();
            if self.sync_failed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether a damaged page was read.
    pub(crate) fn damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// Records the damage `error` reports, if it reports any.
    pub(crate) fn note(&self, error: &Error) {
        if let Error::Engine(error) = error
            && error.kind() == EngineErrorKind::Corrupt
        {
            self.damaged.store(true, Ordering::Release);
        }
    }

    /// Notes the damage a result reports, and passes it on.
    pub(crate) fn noted<T>(&self, result: folio_core::Result<T>) -> folio_core::Result<T> {
        if let Err(error) = &result {
            self.note(error);
        }
        result
    }

    /// Records whether the disk is full.
    pub(crate) fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::Release);
    }

    /// What keeps the engine from serving, as `Engine::health` reports it:
    /// the refusal of every write, or a full disk.
    pub(crate) fn report(&self) -> folio_core::Result<()> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        if self.full.load(Ordering::Acquire) {
            return Err(Error::Engine(EngineError::new(
                EngineErrorKind::Full,
                "the disk is full: the database takes no writes but deletes until there is room",
            )));
        }
        Ok(())
    }

    /// Why the engine takes no writes at all now, if it does not.
    pub(crate) fn refusal(&self) -> Option<Error> {
        if self.damaged() {
            Some(Error::Engine(EngineError::new(
                EngineErrorKind::Corrupt,
                "the database is damaged (a page failed its checksum, or SQLite found it \
                 malformed), so it takes no writes and nothing of this batch was written; \
                 restore it from a backup",
            )))
        } else if self.sync_failed() {
            Some(crate::sync::refused_after_sync_failure())
        } else {
            None
        }
    }
}
