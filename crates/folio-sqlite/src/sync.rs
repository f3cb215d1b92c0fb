//! The syncer: makes a group's commit durable and only then answers its
//! callers, on its own thread, while the writer already runs the next group.
//!
//! The writer connection commits with `synchronous = NORMAL`: COMMIT writes
//! the group's pages to the write-ahead log but does not wait for the disk.
//! The syncer then calls `fdatasync` on the log, which covers every group
//! committed before the call, and answers all of them. So one sync serves
//! every group that committed while the previous sync ran, and the writer
//! never waits for the disk.
//!
//! Nothing is acknowledged before it is on disk. Other sessions may read a
//! commit before its sync completes (as they may in any database between
//! commit and acknowledgment); anything that depends on it commits later in
//! the same log, so its own sync covers both.
//!
//! The changes feed's horizon moves with the answers: a group's last etag is
//! published once the group is durable, never before.
//!
//! If a sync fails, the data of the groups waiting for it may not be on
//! disk: they are answered with an error, and the engine refuses every later
//! write (the failure is reported, never retried: a failed `fsync` can leave
//! the kernel believing the pages are clean).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use folio_core::{ChangeHorizon, CommitResult, EngineError, EngineErrorKind, Error, Result};
use tokio::sync::oneshot;

/// A caller waiting for its batch's verdict.
pub(crate) type Reply = (oneshot::Sender<CommitResult>, CommitResult);

/// Set once a sync failed: the engine takes no more writes.
#[derive(Default)]
pub(crate) struct Failed(AtomicBool);

impl Failed {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The error of a write refused or lost because syncing failed.
pub(crate) fn sync_failure() -> Error {
    Error::Engine(EngineError::new(
        EngineErrorKind::Io,
        "syncing the write-ahead log to disk failed; the embedded database takes no more writes \
         until it is reopened (check the disk)",
    ))
}

/// The replies of one or more groups, and the last etag they committed.
type Group = (Vec<Reply>, u64);

/// Answers callers, after a sync when their writes must be durable, and
/// publishes the changes feed's horizon at the same moment.
pub(crate) enum Acknowledger {
    /// Answer at once (in-memory databases, `Durability::Relaxed`).
    Immediate(Arc<ChangeHorizon>),
    /// Answer after syncing the log, on the syncer thread.
    Synced {
        sender: Option<Sender<Group>>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Acknowledger {
    /// A syncer for the log at `wal_path`.
    pub(crate) fn synced(
        wal_path: PathBuf,
        failed: Arc<Failed>,
        horizon: Arc<ChangeHorizon>,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("folio-sqlite-sync".into())
            .spawn(move || run(&wal_path, &receiver, &failed, &horizon))
            .map_err(|e| {
                Error::Engine(
                    EngineError::new(EngineErrorKind::Other, "starting the sync thread failed")
                        .with_source(e),
                )
            })?;
        Ok(Acknowledger::Synced {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Answers `replies` once their group, whose last etag is `last_etag`,
    /// is durable.
    pub(crate) fn acknowledge(&self, replies: Vec<Reply>, last_etag: u64) {
        match self {
            Acknowledger::Immediate(horizon) => {
                horizon.publish(last_etag);
                answer(replies);
            }
            Acknowledger::Synced { sender, .. } => {
                if let Some(sender) = sender
                    && let Err(mpsc::SendError((replies, _))) = sender.send((replies, last_etag))
                {
                    fail(replies);
                }
            }
        }
    }
}

impl Drop for Acknowledger {
    fn drop(&mut self) {
        if let Acknowledger::Synced { sender, thread } = self {
            // Closing the channel ends the thread once it answered everyone.
            drop(sender.take());
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn run(wal_path: &PathBuf, receiver: &Receiver<Group>, failed: &Failed, horizon: &ChangeHorizon) {
    let mut log: Option<File> = None;
    while let Ok((mut replies, mut last_etag)) = receiver.recv() {
        // Everything committed so far is covered by one sync.
        while let Ok((more, etag)) = receiver.try_recv() {
            replies.extend(more);
            last_etag = last_etag.max(etag);
        }
        if failed.is_set() {
            fail(replies);
            continue;
        }
        let synced = match &log {
            Some(file) => file.sync_data(),
            None => File::open(wal_path).and_then(|file| {
                let result = file.sync_data();
                log = Some(file);
                result
            }),
        };
        match synced {
            Ok(()) => {
                horizon.publish(last_etag);
                answer(replies);
            }
            Err(_) => {
                failed.set();
                fail(replies);
            }
        }
    }
}

/// Sends every verdict.
pub(crate) fn answer(replies: Vec<Reply>) {
    for (reply, verdict) in replies {
        // A caller that went away no longer needs its answer.
        let _ = reply.send(verdict);
    }
}

fn fail(replies: Vec<Reply>) {
    for (reply, _) in replies {
        let _ = reply.send(Err(sync_failure()));
    }
}
