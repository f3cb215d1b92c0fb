//! Group commit: one PostgreSQL transaction for many one-document batches.
//!
//! Most `save_changes` write one document. Alone, each is a transaction of
//! its own: a round trip, a commit record, a wait for the WAL flush, and the
//! wake-ups of a backend and of the client around them. The engine's
//! gatherer task takes the one-write batches that queue while earlier groups
//! run (at most [`MAX_GROUP`]) and commits each gathering as one READ
//! COMMITTED transaction: `BEGIN`, the batches' statements and `COMMIT` in
//! one pipelined flight. At most
//! `PgOptions::commit_groups` groups run at once, each on its own
//! connection; the longer a group takes, the more the next one gathers.
//!
//! Each batch keeps the meaning it has alone:
//!
//! * Its check is in its own statement (`UPDATE … WHERE etag = $expected`,
//!   `INSERT … ON CONFLICT DO NOTHING`): a conflict writes nothing, so the
//!   other batches of the group commit regardless, and the statement
//!   answers with the stored version that refused it, as for a batch
//!   alone.
//! * Statements run in (collection, id) order, as in every batch, so groups
//!   and batches lock rows in one order and never deadlock one another.
//!   Batches on one document keep their arrival order: the second sees the
//!   first's write, as it would one after the other.
//! * When a statement fails (an error, not a conflict), the group is rolled
//!   back and each batch runs alone, so the failure reaches only its own.
//! * When `COMMIT` fails, whether it took effect is unknown: every batch of
//!   the group gets the error, as a batch alone would.
//!
//! Batches with read guards (SERIALIZABLE) and batches of several commands
//! always run alone (`Inner::commit_alone`).
//!
//! A group runs in a task of its own: a caller that stops waiting cannot
//! leave the rest of its group without an answer, or a connection inside
//! a transaction block.

use std::sync::Arc;
use std::time::SystemTime;

use folio_core::{
    Batch, Command, CommandResult, CommitResult, Committed, ConcurrencyError, Conflict,
    EngineError, EngineErrorKind, Error, Position, millis_since_epoch,
};
use futures_util::future::{join_all, join4};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{ConnectionGuard, Key, Outcome, log_position, took_etag};
use crate::Inner;
use crate::error::{Failure, pool as pool_error, storage};

/// The most batches one group takes.
pub(crate) const MAX_GROUP: usize = 64;

/// A batch of one write, waiting for its group.
struct Pending {
    batch: Batch,
    reply: oneshot::Sender<CommitResult>,
}

/// Where one-write batches queue; the gatherer task takes them from here.
pub(crate) struct Queue {
    /// `None` when grouping is off (`commit_groups` is 0).
    sender: Option<mpsc::UnboundedSender<Pending>>,
}

impl Queue {
    /// Starts the gatherer task of an engine. It ends when the queue is
    /// dropped, after answering every batch it took.
    pub(crate) fn start(inner: Arc<Inner>) -> Self {
        let groups = inner.options.commit_groups;
        if groups == 0 {
            return Queue { sender: None };
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(gather(inner, receiver, groups));
        Queue {
            sender: Some(sender),
        }
    }

    /// Commits `batch`, one validated write without read guards, in the
    /// next group (alone when grouping is off).
    pub(crate) async fn commit(&self, inner: &Inner, batch: Batch) -> CommitResult {
        let Some(sender) = &self.sender else {
            return inner.commit_alone(&batch).await;
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = sender.send(Pending { batch, reply }) {
            // The gatherer is gone (it only stops when the queue drops, or
            // if it panicked): the batch still runs, alone.
            return inner.commit_alone(&pending.batch).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::Engine(EngineError::new(
                EngineErrorKind::Other,
                "the group committing this batch stopped before answering; \
                 the write may or may not have been applied",
            )))
        })
    }
}

/// The gatherer: takes what queued, waits for a free group slot, takes what
/// queued meanwhile, and runs the group in a task of its own.
async fn gather(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<Pending>, groups: usize) {
    let slots = Arc::new(Semaphore::new(groups));
    while let Some(first) = queue.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.commit_group(group).await;
            drop(slot);
        });
    }
}

/// How a group's transaction failed.
enum GroupFailure {
    /// A statement failed, so the transaction was rolled back: nothing of
    /// the group was written.
    RolledBack,
    /// `COMMIT` failed: whether the writes took effect is unknown.
    Unknown(Error),
}

/// What one batch of a committed group came to.
enum Verdict {
    Done(CommandResult),
    /// It wrote nothing: the document's version was not the expected one.
    Conflict(Conflict),
    /// It failed: its statement (when the group ran without a block), or
    /// reading a conflict's actual version.
    Failed(Error),
}

impl Inner {
    /// Commits a group and answers each of its batches.
    async fn commit_group(&self, mut group: Vec<Pending>) {
        if group.len() == 1 {
            let pending = group.pop().expect("one batch");
            let verdict = self.commit_alone(&pending.batch).await;
            let _ = pending.reply.send(verdict);
            return;
        }
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                answer_all_with(group, pool_error(error));
                return;
            }
        };
        let mut guard = ConnectionGuard(Some(client));
        let commands: Vec<&Command> = group
            .iter()
            .map(|pending| &pending.batch.commands[0])
            .collect();
        let keys: Vec<Option<Key>> = group
            .iter()
            .map(|pending| Key::of(&pending.batch))
            .collect();
        let keys: Vec<Option<&Key>> = keys.iter().map(Option::as_ref).collect();
        let outcome = self
            .try_group(guard.0.as_ref().expect("held"), &commands, &keys)
            .await;
        guard.release();
        match outcome {
            Ok((verdicts, position)) => {
                if verdicts
                    .iter()
                    .any(|verdict| matches!(verdict, Verdict::Done(result) if took_etag(result)))
                {
                    self.feed.committed();
                }
                for (pending, verdict) in group.into_iter().zip(verdicts) {
                    let _ = pending.reply.send(match verdict {
                        Verdict::Done(result) => {
                            Ok(Ok(Committed::new(vec![result]).at(position.clone())))
                        }
                        Verdict::Conflict(conflict) => {
                            Ok(Err(ConcurrencyError::new(vec![conflict])))
                        }
                        Verdict::Failed(error) => Err(error),
                    });
                }
            }
            Err(GroupFailure::Unknown(error)) => answer_all_with(group, error),
            Err(GroupFailure::RolledBack) => {
                // Nothing was written: each batch runs alone, so whatever
                // failed fails only its own batch; one after the other, in
                // arrival order, as batches on one document must.
                for pending in group {
                    let verdict = self.commit_alone(&pending.batch).await;
                    let _ = pending.reply.send(verdict);
                }
            }
        }
    }

    /// One transaction for `commands`, each one batch: see the module
    /// documentation.
    async fn try_group(
        &self,
        client: &deadpool_postgres::Object,
        commands: &[&Command],
        keys: &[Option<&Key>],
    ) -> std::result::Result<(Vec<Verdict>, Option<Position>), GroupFailure> {
        let now = millis_since_epoch(SystemTime::now());
        let prepared = self
            .prepare_all(client, commands, keys)
            .await
            .map_err(|_| GroupFailure::RolledBack)?;
        let run_all = self.run_in_key_order(client, commands, keys, &prepared, now);
        // One flight: BEGIN, the statements, COMMIT, the log's position.
        // PostgreSQL answers in order, so once COMMIT's answer is in, every
        // statement's is too.
        let (began, ran, committed, position) = join4(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            run_all,
            client.batch_execute("COMMIT"),
            log_position(client),
        )
        .await;
        if let Err(error) = committed {
            return Err(GroupFailure::Unknown(storage("committing", error)));
        }
        // With the block, a failed statement aborted it and COMMIT rolled it
        // back: nothing of the group was written. Without it (BEGIN failed,
        // yet the connection answered COMMIT), each statement ran on its
        // own: every outcome is final, a failure its own batch's.
        let in_block = began.is_ok();
        let mut outcomes: Vec<Option<std::result::Result<Outcome, Failure>>> =
            (0..commands.len()).map(|_| None).collect();
        for (index, outcome) in ran {
            if in_block && outcome.is_err() {
                return Err(GroupFailure::RolledBack);
            }
            outcomes[index] = Some(outcome);
        }
        // Committed. The conflicts wrote nothing; each carries what its
        // statement saw (read again only when that was not what refused it,
        // as for a batch alone).
        let stored = &prepared.stored;
        let verdicts = join_all(outcomes.into_iter().zip(commands).map(
            |(outcome, command)| async move {
                match outcome.expect("every command ran") {
                    Ok(Outcome::Done(result)) => Verdict::Done(result),
                    Ok(Outcome::Conflict(seen)) => {
                        match self.seen(client, stored, command, seen).await {
                            Ok(current) => Verdict::Conflict(self.conflict(command, current)),
                            Err(failure) => Verdict::Failed(failed(
                                "reading the stored version of a conflict",
                                failure,
                            )),
                        }
                    }
                    Err(failure) => Verdict::Failed(failed("writing a document", failure)),
                }
            },
        ))
        .await;
        Ok((verdicts, position))
    }
}

/// The error of a statement that failed `doing` something.
fn failed(doing: &str, failure: Failure) -> Error {
    match failure {
        Failure::Fatal(error) => error,
        Failure::Retry(error) => storage(doing, error),
    }
}

/// Answers every batch of `group` with `error`: the first gets it, the
/// others a copy without its source (sources cannot be cloned).
fn answer_all_with(group: Vec<Pending>, error: Error) {
    let mut error = Some(error);
    let copy = copy_of(error.as_ref().expect("set above"));
    for pending in group {
        let _ = pending
            .reply
            .send(Err(error.take().unwrap_or_else(|| copy_of(&copy))));
    }
}

/// An error like `error`, for one more batch.
fn copy_of(error: &Error) -> Error {
    match error {
        Error::Engine(engine) => {
            Error::Engine(EngineError::new(engine.kind(), engine.message().to_owned()))
        }
        Error::InvalidInput(message) => Error::InvalidInput(message.clone()),
        // A group only fails in the engine; anything else keeps its words.
        other => Error::Engine(EngineError::new(EngineErrorKind::Other, other.to_string())),
    }
}
