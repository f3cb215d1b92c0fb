//! The single writer: one thread that owns the write connection and merges
//! the batches of concurrent callers into one SQLite transaction.
//!
//! The loop takes the first waiting request, then every request already
//! queued behind it (up to a bound), and runs them as one group:
//!
//! ```text
//! BEGIN IMMEDIATE
//!   SAVEPOINT batch … RELEASE batch                 -- batch 1 committed
//!   SAVEPOINT batch … ROLLBACK TO batch; RELEASE    -- batch 2 conflicted: rolled back alone
//!   …
//! COMMIT                                            -- one sync for the whole group
//! ```
//!
//! Nobody is answered before COMMIT returns: a batch's success is durable
//! when its caller hears of it, and a conflict is only reported against
//! state that really committed. If COMMIT fails, every batch of the group
//! gets the error. The etag counter is read afresh inside each group's
//! transaction, so several writers on one file (other processes) stay
//! correct: SQLite's write lock orders them.
//! No waiting is added to gather a group: while one group syncs, the next
//! one queues up by itself, so the group grows with the load.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use folio_core::{
    Batch, CommandKind, CommandResult, CommitResult, ConcurrencyError, Conflict, DatabaseId,
    Expectation, Metadata, Result, millis_since_epoch, time_from_millis,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::cache::DocumentCache;
use crate::error::{closed, storage};
use crate::read::change_vector;

/// Work for the writer thread.
pub(crate) enum Request {
    /// Check and apply a batch.
    Commit {
        batch: Batch,
        reply: oneshot::Sender<CommitResult>,
    },
    /// Run a schema statement (index creation) outside any group.
    Execute {
        sql: String,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The handle to the writer thread; dropping it stops the thread after the
/// requests already queued, and waits for it.
pub(crate) struct Writer {
    sender: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `connection`.
    pub(crate) fn start(
        connection: Connection,
        database_id: DatabaseId,
        max_batches_per_group: usize,
        cache: Arc<DocumentCache>,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let state = WriterState {
            connection,
            database_id,
            last_etag: 0,
            cache,
            max_batches_per_group: max_batches_per_group.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("folio-sqlite-writer".into())
            .spawn(move || state.run(receiver))
            .map_err(|e| {
                folio_core::Error::Engine(
                    folio_core::EngineError::new(
                        folio_core::EngineErrorKind::Other,
                        "starting the writer thread failed",
                    )
                    .with_source(e),
                )
            })?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queues a request.
    pub(crate) fn send(&self, request: Request) -> Result<()> {
        self.sender
            .as_ref()
            .ok_or_else(closed)?
            .send(request)
            .map_err(|_| closed())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the loop once the queue is drained.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct WriterState {
    connection: Connection,
    database_id: DatabaseId,
    /// The last etag issued; read afresh at the start of every group.
    last_etag: u64,
    cache: Arc<DocumentCache>,
    max_batches_per_group: usize,
}

type Reply = (oneshot::Sender<CommitResult>, CommitResult);

impl WriterState {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut group = Vec::new();
        while let Ok(first) = receiver.recv() {
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Commit { batch, reply } => group.push((batch, reply)),
                    Request::Execute { sql, reply } => {
                        // Schema changes run alone, after the group gathered so far.
                        self.commit_group(&mut group);
                        let result = self
                            .connection
                            .execute_batch(&sql)
                            .map_err(|e| storage("creating an index", e));
                        let _ = reply.send(result);
                    }
                }
                if group.len() < self.max_batches_per_group {
                    match receiver.try_recv() {
                        Ok(request) => next = Some(request),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                    }
                }
            }
            self.commit_group(&mut group);
        }
    }

    /// Runs `group` in one transaction and answers every caller.
    fn commit_group(&mut self, group: &mut Vec<(Batch, oneshot::Sender<CommitResult>)>) {
        if group.is_empty() {
            return;
        }
        let now = millis_since_epoch(SystemTime::now());
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        let began = self
            .execute("BEGIN IMMEDIATE", "starting a transaction")
            .and_then(|()| self.read_last_etag());
        if let Err(error) = began {
            if !self.connection.is_autocommit() {
                let _ = self.execute("ROLLBACK", "rolling back");
            }
            let message = error.to_string();
            for (_, reply) in group.drain(..) {
                replies.push((reply, Err(group_failure(&message))));
            }
            answer(replies);
            return;
        }
        for (batch, reply) in group.drain(..) {
            let verdict = self.run_batch(batch, now);
            replies.push((reply, verdict));
        }
        // Keep what this group writes out of the read cache until it committed.
        self.cache.begin_write(
            replies
                .iter()
                .flat_map(|(_, verdict)| written_keys(verdict)),
        );
        let committed = self.execute("COMMIT", "committing");
        self.cache.end_write();
        if let Err(error) = committed {
            if !self.connection.is_autocommit() {
                let _ = self.execute("ROLLBACK", "rolling back");
            }
            let message = error.to_string();
            for (_, verdict) in &mut replies {
                *verdict = Err(group_failure(&message));
            }
        }
        answer(replies);
    }

    /// Runs one batch inside its own savepoint; on a conflict or a failure the
    /// savepoint is rolled back and the etag counter restored.
    fn run_batch(&mut self, batch: Batch, now: i64) -> CommitResult {
        self.execute("SAVEPOINT batch", "starting a savepoint")?;
        let etag_before = self.last_etag;
        let outcome = self.apply(batch, now);
        let keep = matches!(outcome, Ok(Ok(_)));
        if keep {
            self.execute("RELEASE batch", "releasing a savepoint")?;
        } else {
            self.last_etag = etag_before;
            self.execute("ROLLBACK TO batch", "rolling back a savepoint")?;
            self.execute("RELEASE batch", "releasing a savepoint")?;
        }
        outcome
    }

    /// Checks every command's expectation and applies the writes in order.
    /// All commands are judged even after a conflict, so that every conflict
    /// of the batch is reported.
    fn apply(&mut self, batch: Batch, now: i64) -> CommitResult {
        let mut conflicts = Vec::new();
        let mut results = Vec::with_capacity(batch.commands.len());
        for command in batch.commands {
            let current: Option<(i64, i64)> = self
                .connection
                .prepare_cached(
                    "SELECT etag, revision FROM documents WHERE collection = ?1 AND id = ?2",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![command.collection, command.id], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                })
                .map_err(|e| storage("reading a document's version", e))?;
            let current_etag = current.map(|(etag, _)| etag);
            if !expectation_met(&command.expect, current_etag, &self.database_id) {
                conflicts.push(
                    Conflict::new(
                        command.collection,
                        command.id,
                        command.expect,
                        current_etag.map(|etag| change_vector(etag, &self.database_id)),
                    )
                    .with_type_name(command.type_name),
                );
                continue;
            }
            let result = match command.kind {
                CommandKind::Put { document } => {
                    let etag = self.next_etag();
                    let revision = current.map_or(1, |(_, revision)| revision + 1);
                    let sql = if current.is_some() {
                        "UPDATE documents SET etag = ?1, revision = ?4, last_modified = ?5, data = jsonb(?6) \
                         WHERE collection = ?2 AND id = ?3"
                    } else {
                        "INSERT INTO documents (etag, collection, id, revision, last_modified, data) \
                         VALUES (?1, ?2, ?3, ?4, ?5, jsonb(?6))"
                    };
                    self.connection
                        .prepare_cached(sql)
                        .and_then(|mut statement| {
                            statement.execute(params![
                                etag,
                                command.collection,
                                command.id,
                                revision,
                                now,
                                document
                            ])
                        })
                        .map_err(|e| storage("writing a document", e))?;
                    if current.is_none() {
                        self.connection
                            .prepare_cached(
                                "DELETE FROM tombstones WHERE collection = ?1 AND id = ?2",
                            )
                            .and_then(|mut statement| {
                                statement.execute(params![command.collection, command.id])
                            })
                            .map_err(|e| storage("removing a tombstone", e))?;
                    }
                    CommandResult::Put(Metadata {
                        change_vector: change_vector(etag, &self.database_id),
                        id: command.id,
                        collection: command.collection,
                        revision: u64::try_from(revision).unwrap_or(0),
                        etag: u64::try_from(etag).unwrap_or(0),
                        last_modified: time_from_millis(now),
                    })
                }
                CommandKind::Delete => {
                    let etag = match current {
                        Some(_) => {
                            let etag = self.next_etag();
                            self.connection
                                .prepare_cached(
                                    "DELETE FROM documents WHERE collection = ?1 AND id = ?2",
                                )
                                .and_then(|mut statement| {
                                    statement.execute(params![command.collection, command.id])
                                })
                                .map_err(|e| storage("deleting a document", e))?;
                            self.connection
                                .prepare_cached(
                                    "INSERT INTO tombstones (etag, collection, id) VALUES (?1, ?2, ?3) \
                                     ON CONFLICT (collection, id) DO UPDATE SET etag = excluded.etag",
                                )
                                .and_then(|mut statement| {
                                    statement.execute(params![etag, command.collection, command.id])
                                })
                                .map_err(|e| storage("recording a delete", e))?;
                            Some(u64::try_from(etag).unwrap_or(0))
                        }
                        None => None,
                    };
                    CommandResult::Deleted {
                        collection: command.collection,
                        id: command.id,
                        etag,
                    }
                }
                CommandKind::Check => CommandResult::Checked {
                    collection: command.collection,
                    id: command.id,
                },
            };
            results.push(result);
        }
        if conflicts.is_empty() {
            Ok(Ok(results))
        } else {
            Ok(Err(ConcurrencyError::new(conflicts)))
        }
    }

    /// Reads the last etag issued, inside the write transaction: another
    /// process (or another engine of this one) may have written to the file
    /// since this writer's last group, so the counter is never trusted
    /// across transactions.
    fn read_last_etag(&mut self) -> Result<()> {
        let last: i64 = self
            .connection
            .prepare_cached(
                "SELECT max(coalesce((SELECT max(etag) FROM documents), 0), \
                            coalesce((SELECT max(etag) FROM tombstones), 0))",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| storage("reading the last etag", e))?;
        self.last_etag = u64::try_from(last).unwrap_or(0);
        Ok(())
    }

    fn next_etag(&mut self) -> i64 {
        self.last_etag += 1;
        i64::try_from(self.last_etag).expect("etags stay below 2^63")
    }

    fn execute(&self, sql: &str, doing: &str) -> Result<()> {
        self.connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(|e| storage(doing, e))
    }
}

/// Whether the stored document (its etag, `None` when missing) satisfies
/// `expect`. A change vector satisfies a version expectation only if it is
/// one this database issued for exactly the stored etag.
fn expectation_met(expect: &Expectation, current_etag: Option<i64>, database: &DatabaseId) -> bool {
    match expect {
        Expectation::Any => true,
        Expectation::Missing => current_etag.is_none(),
        Expectation::Version { change_vector } => {
            current_etag.is_some_and(|etag| etag_of(change_vector.as_str(), database) == Some(etag))
        }
    }
}

/// The etag inside a change vector `A:{etag}-{database id}` of `database`.
fn etag_of(change_vector: &str, database: &DatabaseId) -> Option<i64> {
    let (etag, tail) = change_vector.strip_prefix("A:")?.split_once('-')?;
    if tail != database.as_str() || !etag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    etag.parse().ok()
}

/// The documents a committed batch changed.
fn written_keys(verdict: &CommitResult) -> impl Iterator<Item = (&str, &str)> {
    let results = match verdict {
        Ok(Ok(results)) => results.as_slice(),
        _ => &[],
    };
    results.iter().filter_map(|result| match result {
        CommandResult::Put(metadata) => Some((metadata.collection.as_str(), metadata.id.as_str())),
        CommandResult::Deleted { collection, id, .. } => Some((collection.as_str(), id.as_str())),
        CommandResult::Checked { .. } => None,
    })
}

fn group_failure(message: &str) -> folio_core::Error {
    folio_core::Error::Engine(folio_core::EngineError::new(
        folio_core::EngineErrorKind::Io,
        format!("the group commit failed, nothing of this batch was written: {message}"),
    ))
}

fn answer(replies: Vec<Reply>) {
    for (reply, verdict) in replies {
        // A caller that went away no longer needs its answer.
        let _ = reply.send(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_vectors_of_other_databases_never_match() {
        let ours = DatabaseId::parse("Ab-cdefghijklmnopqrstu").unwrap();
        let theirs = DatabaseId::parse("Xb-cdefghijklmnopqrstu").unwrap();
        assert_eq!(etag_of("A:42-Ab-cdefghijklmnopqrstu", &ours), Some(42));
        assert_eq!(etag_of("A:42-Xb-cdefghijklmnopqrstu", &ours), None);
        assert_eq!(etag_of("A:+42-Ab-cdefghijklmnopqrstu", &ours), None);
        assert_eq!(etag_of("B:42-Ab-cdefghijklmnopqrstu", &ours), None);
        assert_eq!(etag_of("garbage", &ours), None);
        let stored = Some(42);
        let version = |database| Expectation::version(folio_core::ChangeVector::new(42, database));
        assert!(expectation_met(&version(&ours), stored, &ours));
        assert!(!expectation_met(&version(&theirs), stored, &ours));
        assert!(!expectation_met(&Expectation::Missing, stored, &ours));
        assert!(expectation_met(&Expectation::Missing, None, &ours));
    }
}
