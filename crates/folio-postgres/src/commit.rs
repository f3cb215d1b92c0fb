//! The commit path: a batch checked and applied in one PostgreSQL
//! transaction, each command's check in the statement that writes it.
//!
//! [`Inner::commit_alone`] runs a batch as a transaction of its own (READ
//! COMMITTED, or SERIALIZABLE when it holds read guards, retried when
//! PostgreSQL aborts it to stay serializable); the `group` module commits
//! one-write batches that arrive together as one transaction. Both prepare
//! the statements ([`Inner::prepare_all`]), run them pipelined in
//! (collection, id) order ([`Inner::run_in_key_order`]) and judge them
//! ([`Inner::judge`]). A refused write's statement answers with the stored
//! version that refused it (document included): a conflict costs no read
//! of its own, except when the statement waited for a concurrent write
//! that its snapshot cannot show, or for a read guard.

pub(crate) mod group;

use std::borrow::Borrow;
use std::time::SystemTime;

use folio_core::{
    Batch, Command, CommandKind, CommandResult, CommitResult, Committed, ConcurrencyError,
    Conflict, Expectation, Metadata, Position, StoredDocument, millis_since_epoch,
    time_from_millis,
};
use futures_util::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, Statement};

use crate::Inner;
use crate::error::{Failure, classify, pool as pool_error, storage};
use folio_core::{EngineError, EngineErrorKind, Error, Result};

/// The statements of a batch or group, ready to go out pipelined.
pub(crate) struct Prepared {
    /// Each command's write statement (`None`: it needs none).
    statements: Vec<Option<Statement>>,
    /// `current_etag`: the version a read guard judges.
    current: Statement,
    /// `stored`: what is stored, for a conflict its statement did not read.
    stored: Statement,
    /// The command indexes in the order they run.
    order: Vec<usize>,
}

/// The id and fingerprint of a batch with an id ([`Batch::id`]), as its
/// record in `batches` holds them.
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) fingerprint: Vec<u8>,
}

impl Key {
    /// The key of `batch`, if it has an id.
    pub(crate) fn of(batch: &Batch) -> Option<Key> {
        batch.id.as_ref().map(|id| Key {
            id: id.as_str().to_owned(),
            fingerprint: batch.fingerprint().to_vec(),
        })
    }
}

/// What one command of a batch came to.
pub(crate) enum Outcome {
    Done(CommandResult),
    /// Refused: nothing written.
    Conflict(Seen),
}

/// What a refused command's statement saw of the stored document.
pub(crate) enum Seen {
    /// The stored version that refused it (`None`: no document).
    Stored(Option<StoredDocument>),
    /// Not read (a read guard judges only the version; a change vector of
    /// another database is refused unsent), or not what refused it (the
    /// write waited for a concurrent one, which its snapshot cannot see):
    /// read again, in the same transaction when there is one.
    Unread,
}

impl Inner {
    /// Commits `batch` as a transaction of its own, retrying it when
    /// PostgreSQL aborts it to stay serializable.
    pub(crate) async fn commit_alone(&self, batch: &Batch) -> CommitResult {
        let serializable = needs_serializable(batch);
        let key = Key::of(batch);
        let client = self.pool.get().await.map_err(pool_error)?;
        // If this future is dropped while a transaction block is open, the
        // connection must not go back to the pool: the guard detaches it
        // (closing it makes the server roll back).
        let mut guard = ConnectionGuard(Some(client));
        let mut attempt = 0;
        loop {
            let client = guard.0.as_ref().expect("held until the end");
            match self
                .try_commit(client, batch, key.as_ref(), serializable)
                .await
            {
                Ok(verdict) => {
                    guard.release();
                    if let Ok(results) = &verdict
                        && results.iter().any(took_etag)
                    {
                        self.feed.committed();
                    }
                    return Ok(verdict);
                }
                Err(Failure::Retry(error)) => {
                    attempt += 1;
                    if attempt > self.options.serialization_retries {
                        guard.release();
                        return Err(storage("committing", error));
                    }
                    // Deterministic: the same batch runs again, against the
                    // newer state. Give the winner a moment first.
                    tokio::task::yield_now().await;
                }
                Err(Failure::Fatal(error)) => {
                    guard.release();
                    return Err(error);
                }
            }
        }
    }

    /// One attempt at a batch.
    ///
    /// A batch of one command is one statement, atomic on its own: it runs
    /// without a transaction block (one round trip), and records its `key`
    /// in that statement. A larger batch sends `BEGIN` and every statement
    /// in one pipelined flight, then the record of its key with `COMMIT`, or
    /// `ROLLBACK` after reading the actual versions of the conflicts.
    async fn try_commit(
        &self,
        client: &deadpool_postgres::Object,
        batch: &Batch,
        key: Option<&Key>,
        serializable: bool,
    ) -> std::result::Result<std::result::Result<Committed, ConcurrencyError>, Failure> {
        let now = millis_since_epoch(SystemTime::now());
        let single = batch.commands.len() == 1;
        let keys: Vec<Option<&Key>> = vec![key.filter(|_| single); batch.commands.len()];
        let prepared = self.prepare_all(client, &batch.commands, &keys).await?;
        let run_all = async {
            let ran = self
                .run_in_key_order(client, &batch.commands, &keys, &prepared, now)
                .await;
            // The first failure in execution order is the cause; the
            // statements after it only report the aborted transaction.
            let mut outcomes: Vec<Option<Outcome>> = (0..ran.len()).map(|_| None).collect();
            for (index, outcome) in ran {
                outcomes[index] = Some(outcome?);
            }
            Ok::<_, Failure>(
                outcomes
                    .into_iter()
                    .map(|outcome| outcome.expect("every command ran"))
                    .collect::<Vec<_>>(),
            )
        };
        if let [command] = batch.commands.as_slice() {
            // The statement commits on its own; the log's position goes out
            // behind it.
            let (ran, position) = futures_util::future::join(run_all, log_position(client)).await;
            return match ran?.pop().expect("one command") {
                Outcome::Done(result) => Ok(Ok(Committed::new(vec![result]).at(position))),
                Outcome::Conflict(seen) => {
                    let current = self.seen(client, &prepared.stored, command, seen).await?;
                    Ok(Err(ConcurrencyError::new(vec![
                        self.conflict(command, current),
                    ])))
                }
            };
        }
        let begin = if serializable {
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
        } else {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        };
        let (began, outcomes) =
            futures_util::future::join(client.batch_execute(begin), run_all).await;
        let verdict = self
            .judge(client, batch, &prepared.stored, began, outcomes)
            .await;
        let (recorded, ended, position) = match (&verdict, key) {
            // The record, COMMIT and the log's position in one flight, in
            // that order. If the record fails (the id is taken), the
            // transaction is aborted and PostgreSQL answers COMMIT with a
            // rollback.
            (Ok(Ok(results)), Some(key)) => match self.prepare_record(client).await {
                Ok(statement) => {
                    let record = record(client, &statement, key, results, now);
                    futures_util::future::join3(
                        record,
                        client.batch_execute("COMMIT"),
                        log_position(client),
                    )
                    .await
                }
                Err(failure) => (Err(failure), client.batch_execute("ROLLBACK").await, None),
            },
            (Ok(Ok(_)), None) => {
                let (ended, position) = futures_util::future::join(
                    client.batch_execute("COMMIT"),
                    log_position(client),
                )
                .await;
                (Ok(()), ended, position)
            }
            _ => (Ok(()), client.batch_execute("ROLLBACK").await, None),
        };
        match (verdict, recorded, ended) {
            (Ok(Ok(results)), Ok(()), Ok(())) => Ok(Ok(Committed::new(results).at(position))),
            (Ok(Ok(_)), Err(failure), _) => Err(failure),
            (Ok(Ok(_)), Ok(()), Err(error)) => Err(classify("committing", error)),
            (verdict, _, _) => verdict.map(|verdict| verdict.map(Committed::new)),
        }
    }

    /// The statement that records a committed batch of several commands,
    /// prepared (cached per connection) before `COMMIT` goes out: prepared
    /// beside it, the record would reach the server after `COMMIT`.
    async fn prepare_record(
        &self,
        client: &deadpool_postgres::Object,
    ) -> std::result::Result<Statement, Failure> {
        client
            .prepare_cached(&self.statements.record_batch)
            .await
            .map_err(|e| classify("preparing a statement", e))
    }

    /// The recorded results of the batch `batch` (whose id is `key`), if it
    /// committed: `Err(BatchIdReused)` when its id was recorded with other
    /// commands.
    pub(crate) async fn recorded(&self, batch: &Batch, key: &Key) -> Result<Option<Committed>> {
        // (`batch` names the id in the refusal.)
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.statements.recorded_batch)
            .await
            .map_err(|e| storage("preparing a statement", e))?;
        let Some(row) = client
            .query_opt(&statement, &[&key.id])
            .await
            .map_err(|e| storage("reading the record of a committed batch", e))?
        else {
            return Ok(None);
        };
        let fingerprint: Vec<u8> = row.get(0);
        if fingerprint != key.fingerprint {
            return Err(Error::BatchIdReused(
                batch.id.clone().expect("a batch with a key has an id"),
            ));
        }
        let results: String = row.get(1);
        let committed_at: i64 = row.get(2);
        // Read on the primary after the batch committed: a position at or
        // beyond its commit.
        let position = u64::try_from(row.get::<_, i64>(3)).ok().map(Position::log);
        folio_core::recorded_results(&results, committed_at, |etag| {
            self.change_vector(i64::try_from(etag).unwrap_or(0))
        })
        .map(|results| Some(Committed::replayed(results).at(position)))
        .ok_or_else(|| {
            Error::Engine(EngineError::new(
                EngineErrorKind::Corrupt,
                "the record of a committed batch is damaged",
            ))
        })
    }

    /// Prepares the statements of `commands` (cached per connection) before
    /// any of them is sent, so that they can go out pipelined, and settles
    /// the order they run in.
    async fn prepare_all<C: Borrow<Command>>(
        &self,
        client: &deadpool_postgres::Object,
        commands: &[C],
        keys: &[Option<&Key>],
    ) -> std::result::Result<Prepared, Failure> {
        let mut statements = Vec::with_capacity(commands.len());
        for (command, key) in commands.iter().zip(keys) {
            statements.push(
                self.prepare(client, command.borrow(), key.is_some())
                    .await?,
            );
        }
        let current = client
            .prepare_cached(&self.statements.current_etag)
            .await
            .map_err(|e| classify("preparing a statement", e))?;
        let stored = client
            .prepare_cached(&self.statements.stored)
            .await
            .map_err(|e| classify("preparing a statement", e))?;
        // Statements run in (collection, id) order, so two batches (or
        // groups) touching the same documents lock them in the same order and
        // never deadlock. The sort is stable: commands on one document keep
        // their order, and commands on different documents do not depend on
        // each other.
        let mut order: Vec<usize> = (0..commands.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (commands[a].borrow(), commands[b].borrow());
            (&a.collection, &a.id).cmp(&(&b.collection, &b.id))
        });
        Ok(Prepared {
            statements,
            current,
            stored,
            order,
        })
    }

    /// Runs `commands`, pipelined, in the order `prepare_all` settled:
    /// each command's index with its outcome, in execution order. Each
    /// statement is sent when this future is first polled.
    async fn run_in_key_order<C: Borrow<Command>>(
        &self,
        client: &deadpool_postgres::Object,
        commands: &[C],
        keys: &[Option<&Key>],
        prepared: &Prepared,
        now: i64,
    ) -> Vec<(usize, std::result::Result<Outcome, Failure>)> {
        let outcomes = join_all(prepared.order.iter().map(|&index| {
            self.run(
                client,
                commands[index].borrow(),
                keys[index],
                prepared.statements[index].as_ref(),
                &prepared.current,
                now,
            )
        }))
        .await;
        prepared.order.iter().copied().zip(outcomes).collect()
    }

    /// The verdict on a pipelined batch: its results, its conflicts (with
    /// what is stored now, read inside its transaction), or the failure
    /// that aborted it.
    async fn judge(
        &self,
        client: &deadpool_postgres::Object,
        batch: &Batch,
        stored: &Statement,
        began: std::result::Result<(), tokio_postgres::Error>,
        outcomes: std::result::Result<Vec<Outcome>, Failure>,
    ) -> std::result::Result<std::result::Result<Vec<CommandResult>, ConcurrencyError>, Failure>
    {
        began.map_err(|e| classify("starting a transaction", e))?;
        let outcomes = outcomes?;
        let mut results = Vec::with_capacity(outcomes.len());
        let mut conflicted = Vec::new();
        for (command, outcome) in batch.commands.iter().zip(outcomes) {
            match outcome {
                Outcome::Done(result) => results.push(result),
                Outcome::Conflict(seen) => conflicted.push((command, seen)),
            }
        }
        if conflicted.is_empty() {
            return Ok(Ok(results));
        }
        let current = join_all(conflicted.iter_mut().map(|(command, seen)| {
            let seen = std::mem::replace(seen, Seen::Unread);
            self.seen(client, stored, command, seen)
        }))
        .await;
        let mut conflicts = Vec::with_capacity(conflicted.len());
        for ((command, _), current) in conflicted.into_iter().zip(current) {
            conflicts.push(self.conflict(command, current?));
        }
        Ok(Err(ConcurrencyError::new(conflicts)))
    }

    fn conflict(&self, command: &Command, current: Option<StoredDocument>) -> Conflict {
        Conflict::stored(
            command.collection.clone(),
            command.id.clone(),
            command.expect.clone(),
            current,
        )
        .with_type_name(command.type_name.clone())
    }

    /// What is stored of a refused command's document: what its statement
    /// saw, else read now (`stored`: the `stored` statement).
    pub(crate) async fn seen(
        &self,
        client: &deadpool_postgres::Object,
        stored: &Statement,
        command: &Command,
        seen: Seen,
    ) -> std::result::Result<Option<StoredDocument>, Failure> {
        match seen {
            Seen::Stored(current) => Ok(current),
            Seen::Unread => Ok(client
                .query_opt(stored, &[&command.collection, &command.id])
                .await
                .map_err(|e| classify("reading the stored version of a conflict", e))?
                .map(|row| self.stored_document(&row))),
        }
    }

    /// A row of `etag, revision, document, last_modified` as a stored
    /// document.
    fn stored_document(&self, row: &Row) -> StoredDocument {
        StoredDocument {
            change_vector: self.change_vector(row.get(0)),
            revision: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            document: row.get(2),
            last_modified: time_from_millis(row.get(3)),
        }
    }

    /// What a write statement that may be refused answered: written (its
    /// row has no document), or refused with the version it saw. A refusal
    /// that cannot be what the statement saw (the expected version, or no
    /// document where one must be missing) means it waited for a
    /// concurrent write its snapshot does not show: that one is read again.
    fn written_or_seen(&self, row: Option<Row>, expect: &Expectation) -> Result<Row, Seen> {
        match row {
            Some(row) if row.get::<_, Option<String>>(2).is_none() => Ok(row),
            Some(row) => {
                let stored = self.stored_document(&row);
                match expect {
                    Expectation::Version { change_vector }
                        if *change_vector == stored.change_vector =>
                    {
                        Err(Seen::Unread)
                    }
                    _ => Err(Seen::Stored(Some(stored))),
                }
            }
            None if matches!(expect, Expectation::Missing) => Err(Seen::Unread),
            None => Err(Seen::Stored(None)),
        }
    }

    /// The statement a command runs (`None`: it needs none, or only the
    /// version read); `keyed`: the one that records its batch too.
    async fn prepare(
        &self,
        client: &deadpool_postgres::Object,
        command: &Command,
        keyed: bool,
    ) -> std::result::Result<Option<Statement>, Failure> {
        let statements = &self.statements;
        let pick = |plain, keyed_sql| if keyed { keyed_sql } else { plain };
        let sql = match (&command.kind, &command.expect) {
            (CommandKind::Put { .. }, Expectation::Version { .. }) => {
                pick(&statements.put_version, &statements.put_version_keyed)
            }
            (CommandKind::Put { .. }, Expectation::Missing) => {
                pick(&statements.put_missing, &statements.put_missing_keyed)
            }
            (CommandKind::Put { .. }, Expectation::Any) => {
                pick(&statements.put_any, &statements.put_any_keyed)
            }
            (CommandKind::Delete, Expectation::Version { .. }) => {
                pick(&statements.delete_version, &statements.delete_version_keyed)
            }
            (CommandKind::Delete, Expectation::Any) => {
                pick(&statements.delete_any, &statements.delete_any_keyed)
            }
            (CommandKind::Delete, Expectation::Missing) | (CommandKind::Check, _) => {
                return Ok(None);
            }
        };
        client
            .prepare_cached(sql)
            .await
            .map(Some)
            .map_err(|e| classify("preparing a statement", e))
    }

    /// Runs one command: its check and its write in one statement (with
    /// the record of its batch, given its `key`: the statement `prepare`
    /// chose for it takes it as its last parameters).
    async fn run(
        &self,
        client: &deadpool_postgres::Object,
        command: &Command,
        key: Option<&Key>,
        statement: Option<&Statement>,
        current: &Statement,
        now: i64,
    ) -> std::result::Result<Outcome, Failure> {
        let (collection, id) = (&command.collection, &command.id);
        let record: Vec<&(dyn ToSql + Sync)> = match key {
            Some(key) => vec![&key.id, &key.fingerprint],
            None => Vec::new(),
        };
        let write = |params| write(client, statement, params, &record);
        match (&command.kind, &command.expect) {
            (CommandKind::Put { document }, expect) => {
                let row = match expect {
                    Expectation::Version { change_vector } => {
                        let Some(expected) = self.etag_of(change_vector) else {
                            return Ok(Outcome::Conflict(Seen::Unread));
                        };
                        write(&[collection, id, document, &now, &expected]).await?
                    }
                    Expectation::Missing | Expectation::Any => {
                        write(&[collection, id, document, &now]).await?
                    }
                };
                Ok(match self.written_or_seen(row, expect) {
                    Ok(row) => {
                        let etag: i64 = row.get(0);
                        let revision: i64 = row.get(1);
                        Outcome::Done(CommandResult::Put(Metadata {
                            id: id.clone(),
                            collection: collection.clone(),
                            change_vector: self.change_vector(etag),
                            revision: u64::try_from(revision).unwrap_or(0),
                            etag: u64::try_from(etag).unwrap_or(0),
                            last_modified: time_from_millis(now),
                        }))
                    }
                    Err(seen) => Outcome::Conflict(seen),
                })
            }
            (CommandKind::Delete, Expectation::Missing) => {
                Ok(match self.current_etag(client, current, command).await? {
                    Some(_) => Outcome::Conflict(Seen::Unread),
                    None => Outcome::Done(deleted(command, None)),
                })
            }
            (CommandKind::Delete, expect @ Expectation::Version { change_vector }) => {
                let Some(expected) = self.etag_of(change_vector) else {
                    return Ok(Outcome::Conflict(Seen::Unread));
                };
                let row = write(&[collection, id, &expected, &now]).await?;
                Ok(match self.written_or_seen(row, expect) {
                    Ok(row) => Outcome::Done(deleted(command, Some(row.get(0)))),
                    Err(seen) => Outcome::Conflict(seen),
                })
            }
            (CommandKind::Delete, Expectation::Any) => {
                let row = write(&[collection, id, &now]).await?;
                Ok(Outcome::Done(deleted(command, row.map(|row| row.get(0)))))
            }
            (CommandKind::Check, expect) => {
                let stored = self.current_etag(client, current, command).await?;
                let met = match expect {
                    Expectation::Any => true,
                    Expectation::Missing => stored.is_none(),
                    Expectation::Version { change_vector } => {
                        stored.is_some() && self.etag_of(change_vector) == stored
                    }
                };
                Ok(if met {
                    Outcome::Done(CommandResult::Checked {
                        collection: collection.clone(),
                        id: id.clone(),
                    })
                } else {
                    Outcome::Conflict(Seen::Unread)
                })
            }
        }
    }

    async fn current_etag(
        &self,
        client: &deadpool_postgres::Object,
        current: &Statement,
        command: &Command,
    ) -> std::result::Result<Option<i64>, Failure> {
        Ok(client
            .query_opt(current, &[&command.collection, &command.id])
            .await
            .map_err(|e| classify("reading a document's version", e))?
            .map(|row| row.get(0)))
    }
}

/// Runs a command's write statement with `params`, then `record`'s (the
/// record of its batch, when it has one).
async fn write(
    client: &deadpool_postgres::Object,
    statement: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
    record: &[&(dyn ToSql + Sync)],
) -> std::result::Result<Option<Row>, Failure> {
    let statement = statement.expect("every write has a statement");
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().chain(record).copied().collect();
    client
        .query_opt(statement, &params)
        .await
        .map_err(|e| classify("writing a document", e))
}

/// Where the server's log stands, as a number: sent on a connection right
/// behind a commit (in its flight), the position of a state that includes
/// the commit.
pub(crate) const LOG_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";

/// The position of the server's log ([`LOG_POSITION`]), sent when first
/// polled. `None` when it cannot be read (the commit's outcome does not
/// depend on it: a session without a position reads from the primary).
pub(crate) async fn log_position(client: &tokio_postgres::Client) -> Option<Position> {
    let messages = client.simple_query(LOG_POSITION).await.ok()?;
    messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok().map(Position::log),
        _ => None,
    })
}

/// Holds a pooled connection while a batch runs; see `Engine::commit`.
pub(crate) struct ConnectionGuard(pub(crate) Option<deadpool_postgres::Object>);

impl ConnectionGuard {
    /// The batch ended (committed or rolled back): the connection may go
    /// back to the pool.
    pub(crate) fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Dropped mid-batch: never reuse a connection that may be
            // inside a transaction block.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// Records the committed batch `key` with its `results` in its transaction
/// (`statement`: [`Inner::prepare_record`]'s). Sent when first polled.
async fn record(
    client: &deadpool_postgres::Object,
    statement: &Statement,
    key: &Key,
    results: &[CommandResult],
    now: i64,
) -> std::result::Result<(), Failure> {
    let results = folio_core::record_results(results);
    client
        .execute(statement, &[&key.id, &key.fingerprint, &results, &now])
        .await
        .map(drop)
        .map_err(|e| classify("recording a committed batch", e))
}

fn deleted(command: &Command, etag: Option<i64>) -> CommandResult {
    CommandResult::Deleted {
        collection: command.collection.clone(),
        id: command.id.clone(),
        etag: etag.map(|etag| u64::try_from(etag).unwrap_or(0)),
    }
}

/// Whether `batch` has read guards (`check`, or a delete that expects the
/// document missing): those need SERIALIZABLE to hold against concurrent
/// writers.
pub(crate) fn needs_serializable(batch: &Batch) -> bool {
    batch.commands.iter().any(|command| {
        matches!(command.kind, CommandKind::Check)
            || matches!(
                (&command.kind, &command.expect),
                (CommandKind::Delete, Expectation::Missing)
            )
    })
}

/// Whether a command's result took an etag (a change of the feed).
pub(crate) fn took_etag(result: &CommandResult) -> bool {
    match result {
        CommandResult::Put(_) => true,
        CommandResult::Deleted { etag, .. } => etag.is_some(),
        CommandResult::Checked { .. } => false,
    }
}
