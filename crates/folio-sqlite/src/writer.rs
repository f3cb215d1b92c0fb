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
//! gets the error. The etag counter is read in the first group's
//! transaction (the feed's newest etag) and then kept in memory (the file
//! is locked to this engine, so no other writer moves it); a group that
//! fails makes the next one read it again.
//! Every write is recorded in the changes feed by the writer, in the same
//! transaction: an update's record just before it (`update_row`), an
//! insert's just after, a delete's beside its tombstone; the group's last
//! etag goes to the acknowledger, which publishes it as the feed's horizon
//! once the group is durable. A batch of one conditional update runs
//! without a savepoint (`needs_savepoint`).
//! No waiting is added to gather a group: while one group syncs, the next
//! one queues up by itself, so the group grows with the load.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use folio_core::{
    Batch, BatchId, CollectionConfig, Command, CommandKind, CommandResult, CommitResult, Committed,
    ConcurrencyError, Conflict, DatabaseId, Entry, Error, Expectation, Metadata, Result,
    StoredDocument, millis_since_epoch, time_from_millis,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::cache::DocumentCache;
use crate::checkpoint::Checkpoints;
use crate::error::{closed, storage};
use crate::health::Health;
use crate::jsonb::{self, Encoded};
use crate::location::WRITER_CHECKPOINT_PAGES;
use crate::read::change_vector;
use crate::space::Space;
use crate::sync::{Acknowledger, Reply, answer};

/// The smallest log (pages) the writer lets grow before checkpointing,
/// however little room is left: below it, checkpoints cost more than the
/// room they keep. Within `space::LOG_ROOM` (for 2 KiB pages), so that a
/// log on a full disk starts over inside the room it kept.
const MIN_LOG_PAGES: i64 = 256;

/// How many etags beyond a group's needs the writer reserves at once: the
/// reservation is one more row written in one group out of thousands, and a
/// reopened database starts above it (skipping at most this many).
const ETAGS_RESERVED_AHEAD: u64 = 4096;

/// The kinds of change in the `changes` table.
const PUT: i64 = 0;
const DELETE: i64 = 1;

/// Work for the writer thread.
pub(crate) enum Request {
    /// Check and apply a batch.
    Commit {
        batch: Prepared,
        reply: oneshot::Sender<CommitResult>,
    },
    /// Run a schema statement (index creation) outside any group.
    Execute {
        sql: String,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Replace a collection's configuration, in a transaction of its own
    /// after the group gathered so far, answered once durable.
    Configure {
        collection: String,
        config: CollectionConfig,
        reply: oneshot::Sender<CommitResult>,
    },
}

/// A validated batch with the JSONB of its documents, encoded by the
/// caller's thread so that the writer only stores it (`jsonb.rs`).
pub(crate) struct Prepared {
    batch: Batch,
    /// The encoding of each put's document, in command order.
    documents: Vec<Encoded>,
    /// The batch's id and the fingerprint of its commands, when it has one.
    key: Option<(BatchId, [u8; 32])>,
}

impl Prepared {
    /// Encodes the documents of `batch`, which passed `Batch::validate`.
    pub(crate) fn new(batch: Batch) -> Result<Prepared> {
        let documents = batch
            .commands
            .iter()
            .filter_map(|command| match &command.kind {
                CommandKind::Put { document } => Some(jsonb::encode(document)),
                _ => None,
            })
            .collect::<Result<_>>()?;
        let key = batch.id.clone().map(|id| (id, batch.fingerprint()));
        Ok(Prepared {
            batch,
            documents,
            key,
        })
    }
}

/// The handle to the writer thread; dropping it stops the thread after the
/// requests already queued, and waits for it.
pub(crate) struct Writer {
    sender: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer shares with the rest of the engine.
pub(crate) struct Links {
    /// The document cache, kept coherent by the writer.
    pub(crate) cache: Arc<DocumentCache>,
    /// Counts commits for the checkpointer, and keeps checkpoints apart.
    pub(crate) commits: Arc<Checkpoints>,
    /// Set when a sync failed: no more writes.
    pub(crate) health: Arc<Health>,
    /// Whether the tombstones table may hold rows, as readers see it.
    pub(crate) tombstones: Arc<AtomicBool>,
    /// The room on the disk (`space.rs`).
    pub(crate) space: Space,
}

impl Writer {
    /// Starts the writer thread on `connection`.
    pub(crate) fn start(
        mut connection: Connection,
        database_id: DatabaseId,
        max_batches_per_group: usize,
        batch_retention: Duration,
        acknowledger: Acknowledger,
        links: Links,
    ) -> Result<Self> {
        let Links {
            cache,
            commits,
            health,
            tombstones: readers_tombstones,
            space,
        } = links;
        let log_pages = Arc::new(AtomicI64::new(WRITER_CHECKPOINT_PAGES));
        checkpoint_past(&mut connection, commits.clone(), log_pages.clone())?;
        let page_size: i64 = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(|e| storage("reading the page size", e))?;
        let (sender, receiver) = mpsc::channel();
        // The file is locked to this engine, so only this writer adds
        // tombstones: once it knows there are none, it can skip looking.
        let tombstones = connection
            .query_row("SELECT EXISTS (SELECT 1 FROM tombstones)", [], |row| {
                row.get(0)
            })
            .unwrap_or(true);
        readers_tombstones.store(tombstones, Ordering::Release);
        let revisions = kept_revisions(&connection)?;
        let state = WriterState {
            connection,
            database_id,
            last_etag: 0,
            etag_known: false,
            reserved: 0,
            tombstones,
            readers_tombstones,
            rowids: RowIds::default(),
            untrusted: false,
            cache,
            commits,
            acknowledger,
            health,
            space,
            page_size: u64::try_from(page_size).unwrap_or(4096),
            log_pages,
            log_owed: false,
            max_batches_per_group: max_batches_per_group.max(1),
            batch_retention,
            pruned_at: 0,
            revisions,
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
    /// The last etag issued.
    last_etag: u64,
    /// Whether `reserved` is what storage holds (false until the first
    /// group reads it, and after a group failed).
    etag_known: bool,
    /// The etags reserved in storage: every etag up to it may have been
    /// taken (`reserve_etags`).
    reserved: u64,
    /// Whether the tombstones table may hold rows: false only while the
    /// writer knows it is empty (then a new document has no tombstone to
    /// remove, and the statement that would remove it is skipped: 7 % of
    /// the writer's instructions per document in `folio import`).
    tombstones: bool,
    /// `tombstones` as the readers see it, set before a tombstone is written.
    readers_tombstones: Arc<AtomicBool>,
    /// Where the documents this writer wrote lately are (`RowIds`).
    rowids: RowIds,
    /// Set when a feed record of a write that did not happen could not be
    /// removed: the current group must not commit.
    untrusted: bool,
    cache: Arc<DocumentCache>,
    commits: Arc<Checkpoints>,
    /// Answers callers once their group is durable.
    acknowledger: Acknowledger,
    /// Whether a sync failed or a damaged page was read: no more writes.
    health: Arc<Health>,
    /// The room on the disk: only deletes while it is full.
    space: Space,
    page_size: u64,
    /// The log size (pages) at which the writer checkpoints, bounded by the
    /// room on the disk (`space.rs`); its log hook reads it.
    log_pages: Arc<AtomicI64>,
    /// Set while the disk is full and the log could not be emptied yet.
    log_owed: bool,
    max_batches_per_group: usize,
    /// How long the ids of committed batches are kept (`folio_batches`).
    batch_retention: Duration,
    /// When the writer last deleted ids older than the retention (ms).
    pruned_at: i64,
    /// How many versions each collection with revisions on keeps
    /// (`folio_collections`), as committed.
    revisions: HashMap<String, u32>,
}

/// How often the writer deletes the ids of committed batches older than
/// the retention (in the transaction of a group).
const PRUNE_INTERVAL_MILLIS: i64 = 60_000;

/// Makes the writer checkpoint after each commit that leaves the log at
/// `log_pages` pages or more. The checkpointer thread (`checkpoint.rs`)
/// copies most of the log while the writer works, but a checkpoint that
/// runs beside a writer never finishes, and only a finished one lets the
/// log start over: so the writer finishes one itself once the log is
/// large. Little is left to copy by then, and the next group writes the
/// log from its beginning again. It takes its turn with the checkpointer
/// (SQLite's own automatic checkpoint would give up at once while the
/// checkpointer copies, and the log would grow on).
fn checkpoint_past(
    connection: &mut Connection,
    checkpoints: Arc<Checkpoints>,
    log_pages: Arc<AtomicI64>,
) -> Result<()> {
    connection
        .wal_hook(Some(move |log: &mut rusqlite::hooks::Wal, pages| {
            if i64::from(pages) >= log_pages.load(Ordering::Relaxed) {
                let _apart = checkpoints.apart();
                // As SQLite's own: a checkpoint that fails loses nothing
                // (the log keeps the pages), and the next commit tries again.
                let _ = log.checkpoint();
            }
            Ok(())
        }))
        .map_err(|e| storage("configuring checkpoints", e))
}

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
                    Request::Configure {
                        collection,
                        config,
                        reply,
                    } => {
                        self.commit_group(&mut group);
                        self.configure(collection, config, reply);
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
        self.close();
    }

    /// Replaces `collection`'s configuration in a transaction of its own;
    /// the syncers answer once it is durable. The writes after it follow
    /// it.
    fn configure(
        &mut self,
        collection: String,
        config: CollectionConfig,
        reply: oneshot::Sender<CommitResult>,
    ) {
        if let Some(refusal) = self.health.refusal() {
            let _ = reply.send(Err(refusal));
            return;
        }
        let json = serde_json::to_string(&config).expect("a configuration serializes");
        let written = self
            .execute("BEGIN IMMEDIATE", "starting a transaction")
            .and_then(|()| {
                self.connection
                    .prepare_cached(
                        "INSERT INTO folio_collections (collection, config) VALUES (?1, ?2) \
                         ON CONFLICT (collection) DO UPDATE SET config = excluded.config",
                    )
                    .and_then(|mut statement| statement.execute(params![collection, json]))
                    .map(drop)
                    .map_err(|e| storage("writing a collection's configuration", e))
            })
            .and_then(|()| self.execute("COMMIT", "committing"));
        match written {
            Ok(()) => {
                match config.revisions.keep {
                    0 => self.revisions.remove(&collection),
                    keep => self.revisions.insert(collection, keep),
                };
                self.commits.committed();
                self.acknowledger.acknowledge(
                    vec![(reply, Ok(Ok(Committed::default())))],
                    self.last_etag,
                    Box::new(()),
                );
            }
            Err(error) => {
                if !self.connection.is_autocommit() {
                    let _ = self.execute("ROLLBACK", "rolling back");
                }
                self.health.note(&error);
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Once every batch is answered, copies the log into the database
    /// file and empties it, so that a closed database is one file (a copy
    /// of it alone is a backup). SQLite does this when the last connection
    /// to a database closes, but the engine's last one is a reader, which
    /// may not. Skipped after a failed sync: the engine touches the disk no
    /// more. A failure loses nothing: the next open recovers from the log.
    fn close(self) {
        let WriterState {
            connection,
            acknowledger,
            health,
            mut space,
            ..
        } = self;
        // Waits for the syncers' last answers.
        drop(acknowledger);
        if !health.sync_failed() {
            let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        space.close();
    }

    /// Runs `group` in one transaction and answers every caller.
    fn commit_group(&mut self, group: &mut Vec<(Prepared, oneshot::Sender<CommitResult>)>) {
        if group.is_empty() {
            return;
        }
        let now = millis_since_epoch(SystemTime::now());
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        if self.health.refusal().is_some() {
            for (_, reply) in group.drain(..) {
                if let Some(refusal) = self.health.refusal() {
                    replies.push((reply, Err(refusal)));
                }
            }
            answer(replies);
            return;
        }
        if self.space.full(&self.health) {
            if self.log_owed {
                self.empty_log();
            }
            // Only batches that put nothing are tried: deleting makes room.
            let (tried, refused): (Vec<_>, Vec<_>) = group.drain(..).partition(|(batch, _)| {
                !batch
                    .batch
                    .commands
                    .iter()
                    .any(|command| matches!(command.kind, CommandKind::Put { .. }))
            });
            answer(
                refused
                    .into_iter()
                    .map(|(_, reply)| (reply, Err(self.space.refusal())))
                    .collect(),
            );
            group.extend(tried);
            if group.is_empty() {
                return;
            }
        }
        self.bound_log();
        let etags_needed = group
            .iter()
            .map(|(batch, _)| batch.batch.len() as u64)
            .sum::<u64>();
        let began = self
            .execute("BEGIN IMMEDIATE", "starting a transaction")
            .and_then(|()| {
                if self.etag_known {
                    Ok(())
                } else {
                    self.read_last_etag()
                }
            })
            .and_then(|()| self.reserve_etags(etags_needed));
        if let Err(error) = began {
            self.etag_known = false;
            if !self.connection.is_autocommit() {
                let _ = self.execute("ROLLBACK", "rolling back");
            }
            for (_, reply) in group.drain(..) {
                replies.push((reply, Err(group_failure(&error))));
            }
            self.note_damage(&replies);
            self.note_room(&replies);
            answer(replies);
            return;
        }
        self.untrusted = false;
        self.prune_batches(now);
        let mut written = Vec::new();
        let mut lost = None;
        // What the group is done with is freed by the thread that answers,
        // after answering: most of it was allocated by the callers' threads,
        // and freeing it here would take the writer's time.
        let mut spent = Vec::with_capacity(group.len());
        for (mut batch, reply) in group.drain(..) {
            if lost.is_some() {
                // Never run a batch outside the group's transaction.
                replies.push((reply, Err(transaction_lost())));
                continue;
            }
            let (verdict, entries) = self.run_batch(&mut batch, now);
            spent.push(batch);
            if self.untrusted && !self.connection.is_autocommit() {
                // A write that did not happen could not be taken back out
                // of the transaction: the group does not commit.
                lost = Some(transaction_lost());
            } else if self.connection.is_autocommit() {
                // SQLite rolled the whole transaction back (it may on
                // SQLITE_FULL, IOERR, NOMEM or BUSY): the batches before
                // this one are undone too.
                lost = Some(transaction_lost());
            }
            written.extend(entries);
            replies.push((reply, verdict));
        }
        // Keep what this group writes out of the read cache until it committed.
        self.cache.begin_write(
            replies
                .iter()
                .flat_map(|(_, verdict)| written_keys(verdict)),
        );
        // The last etag needs no record of its own: it is the feed's newest
        // (`schema::LAST_ETAG`).
        let committed = match lost {
            Some(error) => Err(error),
            None => self.execute("COMMIT", "committing"),
        };
        match committed {
            Ok(()) => self.commits.committed(),
            Err(_) => written.clear(),
        }
        let replaced = self.cache.end_write(written);
        if let Err(error) = committed {
            self.etag_known = false;
            if !self.connection.is_autocommit() {
                let _ = self.execute("ROLLBACK", "rolling back");
            }
            for (_, verdict) in &mut replies {
                // A batch that failed by itself keeps its own error.
                if !matches!(verdict, Err(folio_core::Error::Engine(_))) {
                    *verdict = Err(group_failure(&error));
                }
            }
            self.note_damage(&replies);
            self.note_room(&replies);
            answer(replies);
            return;
        }
        self.note_damage(&replies);
        self.note_room(&replies);
        self.acknowledger
            .acknowledge(replies, self.last_etag, Box::new((spent, replaced)));
    }

    /// When a verdict reports the disk full: the engine gives its reserve
    /// back and empties its log into the database file (`space.rs`).
    fn note_room(&mut self, replies: &[Reply]) {
        let out_of_room = replies.iter().any(|(_, verdict)| {
            matches!(verdict, Err(folio_core::Error::Engine(error))
                if error.kind() == folio_core::EngineErrorKind::Full)
        });
        if out_of_room {
            self.space.ran_out(&self.health);
            if !self.connection.is_autocommit() {
                let _ = self.execute("ROLLBACK", "rolling back");
            }
            self.empty_log();
        }
    }

    /// Copies the log into the database file (which may grow into the
    /// reserve just given back) and truncates it, so its blocks return to
    /// the disk and the next writes start it over. It waits for the
    /// checkpointer's round to end (SQLite would answer busy and copy
    /// nothing). What cannot finish now (no room even for the copy) is
    /// owed, and tried again before the next group.
    fn empty_log(&mut self) {
        let outcome = {
            let _apart = self.commits.apart();
            self.connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(|e| storage("emptying the log", e))
        };
        self.log_owed = !matches!(outcome, Ok(0));
        match outcome {
            Ok(0) => self.space.keep_log_room(),
            Ok(_) => {}
            Err(error) => self.health.note(&error),
        }
    }

    /// Lets the log grow to at most a quarter of the free space before the
    /// writer checkpoints (looked at once a second, or before every group
    /// when the disk has little room: `space.rs`).
    fn bound_log(&mut self) {
        if let Some(pages) =
            self.space
                .log_pages(self.page_size, MIN_LOG_PAGES, WRITER_CHECKPOINT_PAGES)
        {
            self.log_pages.store(pages, Ordering::Relaxed);
        }
    }

    /// Records a damaged page any verdict reports: no more writes then.
    fn note_damage(&self, replies: &[Reply]) {
        for (_, verdict) in replies {
            if let Err(error) = verdict {
                self.health.note(error);
            }
        }
    }

    /// Runs one batch inside its own savepoint; on a conflict or a failure the
    /// savepoint is rolled back (the etags it took stay taken). Also returns
    /// the entries the batch wrote, for the read cache.
    fn run_batch(&mut self, batch: &mut Prepared, now: i64) -> (CommitResult, Vec<Entry>) {
        // A batch whose id is recorded committed before: its results again,
        // nothing written (a batch earlier in this group counts too).
        if let Some((id, fingerprint)) = &batch.key {
            match self.recorded(id, fingerprint) {
                Ok(None) => {}
                Ok(Some(results)) => return (Ok(Ok(Committed::replayed(results))), Vec::new()),
                Err(error) => return (Err(error), Vec::new()),
            }
        }
        // An empty batch only asks whether its id committed: it did not.
        if batch.batch.is_empty() {
            return (Ok(Ok(Committed::default())), Vec::new());
        }
        // The etags a refused or failed batch took are never given back:
        // a change vector names one version forever, and a version that was
        // written and then rolled back must not lend its name to the next.
        // A batch with an id records it after its writes; if the record
        // fails, the writes cannot be taken back without a savepoint, and the
        // group does not commit (`untrusted`).
        if !needs_savepoint(&batch.batch) {
            // A refused one wrote nothing, and a failed one took back what
            // it wrote (`update_row`): no savepoint.
            let mut written = Vec::new();
            let outcome = self.apply(batch, now, &mut written);
            if !matches!(outcome, Ok(Ok(_))) {
                written.clear();
            }
            return (outcome, written);
        }
        if let Err(error) = self.execute("SAVEPOINT batch", "starting a savepoint") {
            return (Err(error), Vec::new());
        }
        let mut written = Vec::new();
        let outcome = self.apply(batch, now, &mut written);
        let kept = match outcome {
            Ok(Ok(_)) => self.execute("RELEASE batch", "releasing a savepoint"),
            _ if self.connection.is_autocommit() => {
                // SQLite rolled the whole transaction back, the savepoint
                // with it: the caller hears what failed.
                return (outcome, Vec::new());
            }
            _ => {
                written.clear();
                let rolled_back = self
                    .execute("ROLLBACK TO batch", "rolling back a savepoint")
                    .and_then(|()| self.execute("RELEASE batch", "releasing a savepoint"));
                if rolled_back.is_ok() {
                    // Whatever the batch could not take back is undone.
                    self.untrusted = false;
                }
                rolled_back
            }
        };
        match kept {
            Ok(()) => (outcome, written),
            Err(error) => {
                // What the batch wrote may still be in the transaction.
                self.untrusted = true;
                (Err(error), Vec::new())
            }
        }
    }

    /// Checks every command's expectation and applies the writes in order.
    /// All commands are judged even after a conflict, so that every conflict
    /// of the batch is reported. Puts of minified JSON are added to
    /// `written` (their stored text is exactly the input: SQLite's JSONB
    /// keeps number and string literals as written).
    ///
    /// A write and its check are one statement (`UPDATE … WHERE etag = ?`,
    /// `INSERT … ON CONFLICT DO NOTHING`, …): the common case costs one index
    /// lookup, and only a refused write reads the actual version.
    fn apply(&mut self, batch: &mut Prepared, now: i64, written: &mut Vec<Entry>) -> CommitResult {
        let Prepared {
            batch,
            documents,
            key,
        } = batch;
        let mut documents = documents.iter();
        let mut conflicts = Vec::new();
        let mut results = Vec::with_capacity(batch.commands.len());
        for command in &mut batch.commands {
            let Command {
                collection,
                id,
                expect,
                kind,
                type_name,
            } = command;
            let (collection, id, expect, type_name) = (&*collection, &*id, &*expect, &*type_name);
            let outcome = match kind {
                CommandKind::Put { document } => {
                    let Some(encoded) = documents.next() else {
                        return Err(storage("writing a document", rusqlite::Error::InvalidQuery));
                    };
                    let etag = self.next_etag();
                    let revision = self.put(collection, id, &encoded.jsonb, expect, etag, now)?;
                    if let Some(revision) = revision {
                        self.keep_revision(
                            collection,
                            id,
                            etag,
                            revision,
                            now,
                            Some(&encoded.jsonb),
                        )?;
                    }
                    revision.map(|revision| {
                        let metadata = Metadata {
                            change_vector: change_vector(etag, &self.database_id),
                            id: id.clone(),
                            collection: collection.clone(),
                            revision: u64::try_from(revision).unwrap_or(0),
                            etag: u64::try_from(etag).unwrap_or(0),
                            last_modified: time_from_millis(now),
                        };
                        // A new document goes into the cache on its first
                        // load, not here (see `written_keys`).
                        if revision > 1 && encoded.minified {
                            written.push(Entry {
                                metadata: metadata.clone(),
                                document: std::mem::take(document),
                            });
                        }
                        CommandResult::Put(metadata)
                    })
                }
                CommandKind::Delete => {
                    let etag = self.next_etag();
                    let deleted = self.delete(collection, id, expect, etag, now)?;
                    deleted.map(|deleted| {
                        if !deleted {
                            // Nothing was there: no version, no tombstone
                            // and no feed record carries the etag, so it was
                            // never issued.
                            self.last_etag -= 1;
                        }
                        CommandResult::Deleted {
                            collection: collection.clone(),
                            id: id.clone(),
                            etag: deleted.then(|| u64::try_from(etag).unwrap_or(0)),
                        }
                    })
                }
                CommandKind::Check => {
                    let current = self.current_etag(collection, id)?;
                    expectation_met(expect, current, &self.database_id).then(|| {
                        CommandResult::Checked {
                            collection: collection.clone(),
                            id: id.clone(),
                        }
                    })
                }
            };
            match outcome {
                Some(result) => results.push(result),
                None => {
                    let current = self.stored(collection, id)?;
                    conflicts.push(
                        Conflict::stored(collection.clone(), id.clone(), expect.clone(), current)
                            .with_type_name(type_name.clone()),
                    );
                }
            }
        }
        if !conflicts.is_empty() {
            return Ok(Err(ConcurrencyError::new(conflicts)));
        }
        if let Some((id, fingerprint)) = key
            && let Err(error) = self.record(id, fingerprint, &results, now)
        {
            // What the batch wrote stays in the transaction unless its
            // savepoint takes it back (which clears this).
            self.untrusted = true;
            return Err(error);
        }
        Ok(Ok(Committed::new(results)))
    }

    /// The recorded results of the committed batch `id`, if it is recorded;
    /// [`Error::BatchIdReused`] when it was recorded with other commands.
    fn recorded(&self, id: &BatchId, fingerprint: &[u8; 32]) -> Result<Option<Vec<CommandResult>>> {
        let row: Option<(Vec<u8>, String, i64)> = self
            .connection
            .prepare_cached(
                "SELECT fingerprint, results, committed_at FROM folio_batches WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([id.as_str()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .map_err(|e| storage("reading the record of a committed batch", e))?;
        let Some((recorded, results, committed_at)) = row else {
            return Ok(None);
        };
        if recorded.as_slice() != fingerprint.as_slice() {
            return Err(Error::BatchIdReused(id.clone()));
        }
        folio_core::recorded_results(&results, committed_at, |etag| {
            change_vector(i64::try_from(etag).unwrap_or(0), &self.database_id)
        })
        .map(Some)
        .ok_or_else(|| {
            Error::Engine(folio_core::EngineError::new(
                folio_core::EngineErrorKind::Corrupt,
                format!("the recorded results of batch {id} are damaged"),
            ))
        })
    }

    /// Records the committed batch `id` with its results
    /// (`folio_core::record_results`), in its transaction.
    fn record(
        &self,
        id: &BatchId,
        fingerprint: &[u8; 32],
        results: &[CommandResult],
        now: i64,
    ) -> Result<()> {
        let results = folio_core::record_results(results);
        self.connection
            .prepare_cached(
                "INSERT INTO folio_batches (id, fingerprint, results, committed_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut statement| {
                statement.execute(params![id.as_str(), fingerprint.as_slice(), results, now])
            })
            .map(drop)
            .map_err(|e| storage("recording a committed batch", e))
    }

    /// Deletes the ids of batches committed longer ago than the retention,
    /// at most once a [`PRUNE_INTERVAL_MILLIS`], in the group's transaction.
    /// A failure is left for the next time: the ids only take room.
    fn prune_batches(&mut self, now: i64) {
        if now - self.pruned_at < PRUNE_INTERVAL_MILLIS {
            return;
        }
        self.pruned_at = now;
        let retention = i64::try_from(self.batch_retention.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .connection
            .prepare_cached("DELETE FROM folio_batches WHERE committed_at < ?1")
            .and_then(|mut statement| statement.execute([now.saturating_sub(retention)]));
    }

    /// Writes a document if `expect` holds; the new revision, or `None` when
    /// the expectation failed (nothing written).
    fn put(
        &mut self,
        collection: &str,
        id: &str,
        document: &[u8],
        expect: &Expectation,
        etag: i64,
        now: i64,
    ) -> Result<Option<i64>> {
        match expect {
            Expectation::Version { change_vector } => {
                let Some(expected) = expected_etag(change_vector, &self.database_id) else {
                    return Ok(None);
                };
                // Where the expected version is: remembered if this writer
                // wrote it lately, otherwise one lookup by key. The update
                // then goes to the row and sets the revision it knows (an
                // update with `RETURNING` builds a temporary table per
                // statement).
                if let Some(revision) =
                    self.update_remembered(collection, id, document, Some(expected), etag, now)?
                {
                    return Ok(Some(revision));
                }
                return match self.find_current(collection, id)? {
                    Some(known)
                        if known.etag == expected
                            && self.update_row(collection, id, document, known, etag, now)? =>
                    {
                        Ok(Some(known.revision + 1))
                    }
                    _ => Ok(None),
                };
            }
            Expectation::Missing => {
                if !self.insert_row(collection, id, document, etag, now)? {
                    return Ok(None);
                }
            }
            Expectation::Any => {
                if let Some(revision) =
                    self.update_remembered(collection, id, document, None, etag, now)?
                {
                    return Ok(Some(revision));
                }
                if !self.insert_row(collection, id, document, etag, now)? {
                    // Stored already: overwrite whatever version it is at.
                    let overwritten = match self.find_current(collection, id)? {
                        Some(known) => self
                            .update_row(collection, id, document, known, etag, now)?
                            .then_some(known.revision + 1),
                        None => None,
                    };
                    // Inside the writer's transaction the row cannot vanish
                    // between these statements.
                    return overwritten.map(Some).ok_or_else(|| {
                        storage(
                            "overwriting a document",
                            rusqlite::Error::QueryReturnedNoRows,
                        )
                    });
                }
            }
        }
        if self.tombstones {
            // A new document: it may replace a tombstone.
            self.connection
                .prepare_cached("DELETE FROM tombstones WHERE collection = ?1 AND id = ?2")
                .and_then(|mut statement| statement.execute(params![collection, id]))
                .map_err(|e| storage("removing a tombstone", e))?;
        }
        Ok(Some(1))
    }

    /// Deletes a document if `expect` holds: `Some(true)` deleted,
    /// `Some(false)` nothing to delete, `None` the expectation failed.
    fn delete(
        &mut self,
        collection: &str,
        id: &str,
        expect: &Expectation,
        etag: i64,
        now: i64,
    ) -> Result<Option<bool>> {
        let deleted: Option<i64> = match expect {
            Expectation::Missing => {
                return Ok(self
                    .current_etag(collection, id)?
                    .is_none()
                    .then_some(false));
            }
            Expectation::Version { change_vector } => {
                let Some(expected) = expected_etag(change_vector, &self.database_id) else {
                    return Ok(None);
                };
                self.connection
                    .prepare_cached(
                        "DELETE FROM documents WHERE collection = ?1 AND id = ?2 AND etag = ?3 \
                         RETURNING revision",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![collection, id, expected], |row| row.get(0))
                            .optional()
                    })
            }
            Expectation::Any => self
                .connection
                .prepare_cached(
                    "DELETE FROM documents WHERE collection = ?1 AND id = ?2 RETURNING revision",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![collection, id], |row| row.get(0))
                        .optional()
                }),
        }
        .map_err(|e| storage("deleting a document", e))?;
        match (deleted, expect) {
            (None, Expectation::Any) => Ok(Some(false)),
            (None, _) => Ok(None),
            (Some(revision), _) => {
                self.rowids.remove(collection, id);
                // Set before the insert: if it is rolled back, the flag only
                // costs a lookup.
                self.tombstones = true;
                self.readers_tombstones.store(true, Ordering::Release);
                self.connection
                    .prepare_cached(
                        "INSERT INTO tombstones (etag, collection, id) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (collection, id) DO UPDATE SET etag = excluded.etag",
                    )
                    .and_then(|mut statement| statement.execute(params![etag, collection, id]))
                    .map_err(|e| storage("recording a delete", e))?;
                self.record_change(DELETE, etag, collection, id, revision)?;
                self.keep_revision(collection, id, etag, revision, now, None)?;
                Ok(Some(true))
            }
        }
    }

    /// The etag of the stored document, `None` when it does not exist.
    /// Keeps the version `etag` of `collection/id` (`data`: its JSONB;
    /// `None`: its deletion) when the collection keeps revisions, and drops
    /// the oldest beyond what it keeps; in the write's transaction.
    fn keep_revision(
        &self,
        collection: &str,
        id: &str,
        etag: i64,
        revision: i64,
        now: i64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let Some(&keep) = self.revisions.get(collection) else {
            return Ok(());
        };
        self.connection
            .prepare_cached(
                "INSERT INTO revisions (collection, id, etag, revision, last_modified, deleted, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut statement| {
                statement.execute(params![collection, id, etag, revision, now, data.is_none(), data])
            })
            .map_err(|e| storage("keeping a revision", e))?;
        // The newest version beyond what is kept, if any: it and those
        // before it go. Looked up first, so that the common case (nothing
        // to drop) is a read, not a delete that SQLite would journal.
        let beyond: Option<i64> = self
            .connection
            .prepare_cached(
                "SELECT etag FROM revisions WHERE collection = ?1 AND id = ?2 \
                 ORDER BY etag DESC LIMIT 1 OFFSET ?3",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![collection, id, keep], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| storage("keeping a revision", e))?;
        let Some(beyond) = beyond else {
            return Ok(());
        };
        self.connection
            .prepare_cached(
                "DELETE FROM revisions WHERE collection = ?1 AND id = ?2 AND etag <= ?3",
            )
            .and_then(|mut statement| statement.execute(params![collection, id, beyond]))
            .map(drop)
            .map_err(|e| storage("dropping the oldest revisions", e))
    }

    /// Appends a write to the changes feed (`schema.rs`), in the write's
    /// transaction.
    fn record_change(
        &self,
        kind: i64,
        etag: i64,
        collection: &str,
        id: &str,
        revision: i64,
    ) -> Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO changes (etag, kind, collection, id, revision) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| statement.execute(params![etag, kind, collection, id, revision]))
            .map(drop)
            .map_err(|e| storage("recording a write in the changes feed", e))
    }

    /// Updates `collection/id` where this writer remembers writing it
    /// (`RowIds`), if it remembers it, and at `expected` only if given; the
    /// new revision when it did. A remembered write that was rolled back is
    /// forgotten, and the caller looks the document up instead.
    fn update_remembered(
        &mut self,
        collection: &str,
        id: &str,
        document: &[u8],
        expected: Option<i64>,
        etag: i64,
        now: i64,
    ) -> Result<Option<i64>> {
        let Some(known) = self
            .rowids
            .get(collection, id)
            .filter(|known| expected.is_none_or(|expected| known.etag == expected))
        else {
            return Ok(None);
        };
        if self.update_row(collection, id, document, known, etag, now)? {
            return Ok(Some(known.revision + 1));
        }
        self.rowids.remove(collection, id);
        Ok(None)
    }

    /// Where `collection/id` is stored and at which version, if it is.
    fn find_current(&self, collection: &str, id: &str) -> Result<Option<Known>> {
        self.connection
            .prepare_cached(
                "SELECT rowid, etag, revision FROM documents WHERE collection = ?1 AND id = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![collection, id], |row| {
                        Ok(Known {
                            rowid: row.get(0)?,
                            etag: row.get(1)?,
                            revision: row.get(2)?,
                        })
                    })
                    .optional()
            })
            .map_err(|e| storage("reading a document's version", e))
    }

    /// Inserts `collection/id` at revision 1 unless it is stored already;
    /// whether it did.
    fn insert_row(
        &mut self,
        collection: &str,
        id: &str,
        document: &[u8],
        etag: i64,
        now: i64,
    ) -> Result<bool> {
        let inserted = self
            .connection
            .prepare_cached(
                "INSERT INTO documents (etag, revision, last_modified, data, collection, id) \
                 VALUES (?1, 1, ?2, ?3, ?4, ?5) ON CONFLICT (collection, id) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![etag, now, document, collection, id])
            })
            .map_err(|e| storage("writing a document", e))?;
        if inserted == 1 {
            let rowid = self.connection.last_insert_rowid();
            self.rowids.insert(
                collection,
                id,
                Known {
                    rowid,
                    etag,
                    revision: 1,
                },
            );
            self.record_change(PUT, etag, collection, id, 1)?;
        }
        Ok(inserted == 1)
    }

    /// Rewrites the row `known` names with `document` at `etag`, if it still
    /// holds `collection/id` at `known.etag`; whether it did. The new
    /// revision is `known.revision + 1`.
    ///
    /// The feed record goes first: a conditional update runs without a
    /// savepoint (`needs_savepoint`), so if recording failed after the
    /// update, nothing could undo the update alone. Recorded first, a
    /// failed record leaves nothing behind, and a record whose update then
    /// changes nothing (a hint gone stale) or fails is taken back.
    fn update_row(
        &mut self,
        collection: &str,
        id: &str,
        document: &[u8],
        known: Known,
        etag: i64,
        now: i64,
    ) -> Result<bool> {
        let revision = known.revision + 1;
        self.record_change(PUT, etag, collection, id, revision)?;
        let updated = self
            .connection
            .prepare_cached(
                "UPDATE documents SET etag = ?1, revision = ?2, last_modified = ?3, data = ?4 \
                 WHERE rowid = ?5 AND collection = ?6 AND id = ?7 AND etag = ?8",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    etag,
                    revision,
                    now,
                    document,
                    known.rowid,
                    collection,
                    id,
                    known.etag
                ])
            })
            .map_err(|e| storage("writing a document", e));
        if !matches!(updated, Ok(1)) {
            self.take_back_change(etag)?;
            return updated.map(|_| false);
        }
        self.rowids.insert(
            collection,
            id,
            Known {
                rowid: known.rowid,
                etag,
                revision,
            },
        );
        Ok(true)
    }

    /// Removes the feed record of a write that did not happen. If even
    /// that fails, the group's transaction holds a record of nothing: the
    /// group must not commit (`commit_group` checks `untrusted`).
    fn take_back_change(&mut self, etag: i64) -> Result<()> {
        let taken = self
            .connection
            .prepare_cached("DELETE FROM changes WHERE etag = ?1")
            .and_then(|mut statement| statement.execute([etag]));
        match taken {
            Ok(1) => Ok(()),
            Ok(_) => {
                self.untrusted = true;
                Err(storage(
                    "taking back a feed record",
                    rusqlite::Error::QueryReturnedNoRows,
                ))
            }
            Err(error) => {
                self.untrusted = true;
                Err(storage("taking back a feed record", error))
            }
        }
    }

    /// What is stored of `collection/id` now, in the write transaction:
    /// what a conflict reports.
    fn stored(&self, collection: &str, id: &str) -> Result<Option<StoredDocument>> {
        self.connection
            .prepare_cached(
                "SELECT json(data), etag, revision, last_modified FROM documents \
                 WHERE collection = ?1 AND id = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![collection, id], |row| {
                        Ok(StoredDocument {
                            document: row.get(0)?,
                            change_vector: change_vector(row.get(1)?, &self.database_id),
                            revision: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                            last_modified: time_from_millis(row.get(3)?),
                        })
                    })
                    .optional()
            })
            .map_err(|e| storage("reading the stored version of a conflict", e))
    }

    fn current_etag(&self, collection: &str, id: &str) -> Result<Option<i64>> {
        Ok(self.find_current(collection, id)?.map(|known| known.etag))
    }

    /// Reads the last etag issued and the etags reserved, inside the write
    /// transaction. The counter only moves up: after a failed group, the
    /// etags that group took stay taken though nothing of it is stored.
    fn read_last_etag(&mut self) -> Result<()> {
        let (last, reserved): (i64, i64) = self
            .connection
            .prepare_cached(crate::schema::LAST_AND_RESERVED_ETAGS)
            .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
            .map_err(|e| storage("reading the last etag", e))?;
        let (last, reserved) = (
            u64::try_from(last).unwrap_or(0),
            u64::try_from(reserved).unwrap_or(0),
        );
        // Every etag up to the reservation may have been taken before the
        // database was last closed (or crashed): start above all of them.
        self.last_etag = self.last_etag.max(last).max(reserved);
        self.reserved = reserved;
        self.etag_known = true;
        Ok(())
    }

    /// Makes sure the stored reservation covers the `needed` etags the group
    /// may take, raising it in the group's transaction when it does not. A
    /// group that commits has its etags reserved with it, so a database that
    /// is reopened (after a crash too) never takes one of them again; a
    /// group that fails leaves its etags taken in memory, and the next
    /// group's reservation covers them.
    fn reserve_etags(&mut self, needed: u64) -> Result<()> {
        let wanted = self.last_etag.saturating_add(needed);
        if wanted <= self.reserved {
            return Ok(());
        }
        let reserved = wanted.saturating_add(ETAGS_RESERVED_AHEAD);
        let value = i64::try_from(reserved).map_err(|_| {
            folio_core::Error::Engine(folio_core::EngineError::new(
                folio_core::EngineErrorKind::Other,
                "the database has used up its etags (2^63)",
            ))
        })?;
        self.connection
            .prepare_cached(crate::schema::RESERVE_ETAGS)
            .and_then(|mut statement| statement.execute([value]))
            .map_err(|e| storage("reserving etags", e))?;
        self.reserved = reserved;
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

/// Where and at which version the writer last wrote each document, for
/// the documents it wrote lately: an update of a version this writer wrote
/// goes to its row directly, without the `(collection, id)` index (one
/// B-tree descent instead of two: the index lookup was 11 % of the writer's
/// time in `folio bench update`), and sets the revision it knows instead of
/// reading it back with `RETURNING` (which builds a temporary table per
/// statement). What is remembered is only a hint: the update also matches
/// the collection, the id and the etag, so a hint gone stale (its document
/// deleted, its write rolled back) changes nothing, and the update by index
/// runs as before. An etag names one write of one document and the file is
/// locked to this engine, so a document still at the remembered etag is at
/// the remembered revision.
///
/// Documents are remembered by a keyed 64-bit hash of `(collection, id)`,
/// not by their names: one small map entry per document, no string kept or
/// compared. Two documents sharing a hash would only make a hint wrong,
/// which, as above, changes nothing.
///
/// Bounded: once it holds `ROWIDS_REMEMBERED` documents it starts over
/// (about 4 MB at most).
#[derive(Default)]
struct RowIds {
    keys: foldhash::quality::RandomState,
    known: foldhash::HashMap<u64, Known>,
}

/// A document as the writer last wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    rowid: i64,
    etag: i64,
    revision: i64,
}

const ROWIDS_REMEMBERED: usize = 131_072;

impl RowIds {
    fn key(&self, collection: &str, id: &str) -> u64 {
        self.keys.hash_one((collection, id))
    }

    fn get(&self, collection: &str, id: &str) -> Option<Known> {
        self.known.get(&self.key(collection, id)).copied()
    }

    fn insert(&mut self, collection: &str, id: &str, known: Known) {
        let key = self.key(collection, id);
        if self.known.len() >= ROWIDS_REMEMBERED && !self.known.contains_key(&key) {
            self.known.clear();
        }
        self.known.insert(key, known);
    }

    fn remove(&mut self, collection: &str, id: &str) {
        let key = self.key(collection, id);
        self.known.remove(&key);
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
            current_etag.is_some_and(|etag| expected_etag(change_vector, database) == Some(etag))
        }
    }
}

/// The etag a version expectation names, when this database issued it.
fn expected_etag(change_vector: &folio_core::ChangeVector, database: &DatabaseId) -> Option<i64> {
    change_vector
        .etag_in(database)
        .and_then(|etag| i64::try_from(etag).ok())
}

/// Whether `batch` needs a savepoint to be undone alone. A single
/// conditional update (its statement changes nothing when the version is
/// not the expected one) or a single read guard does not. Inserts and
/// deletes also touch tombstones, and may write before they are refused.
fn needs_savepoint(batch: &Batch) -> bool {
    !matches!(
        batch.commands.as_slice(),
        [command] if matches!(
            (&command.kind, &command.expect),
            (CommandKind::Put { .. }, Expectation::Version { .. }) | (CommandKind::Check, _)
        )
    )
}

/// The documents a committed batch changed.
/// A new document (revision 1) is left out: no cache holds it before its
/// COMMIT, and a reader can only find it after (`cache.rs`). So a bulk load
/// neither fills the cache with what nobody read nor pays for it (`folio
/// import`: 16 % fewer writer instructions per document, 52,000 → 43,700).
fn written_keys(verdict: &CommitResult) -> impl Iterator<Item = (&str, &str)> {
    let results = match verdict {
        Ok(Ok(results)) => results.as_slice(),
        _ => &[],
    };
    results.iter().filter_map(|result| match result {
        CommandResult::Put(metadata) => {
            (metadata.revision > 1).then_some((metadata.collection.as_str(), metadata.id.as_str()))
        }
        CommandResult::Deleted { collection, id, .. } => Some((collection.as_str(), id.as_str())),
        CommandResult::Checked { .. } => None,
    })
}

fn transaction_lost() -> folio_core::Error {
    folio_core::Error::Engine(folio_core::EngineError::new(
        folio_core::EngineErrorKind::Io,
        "SQLite rolled back the group's transaction after a failure of another batch",
    ))
}

/// The error each batch of a group hears when the group's transaction
/// failed: the kind and the native cause of `error`, which only one caller
/// could own, copied for every caller.
fn group_failure(error: &folio_core::Error) -> folio_core::Error {
    let kind = match error {
        folio_core::Error::Engine(engine) => engine.kind(),
        _ => folio_core::EngineErrorKind::Other,
    };
    let mut failure = folio_core::EngineError::new(
        kind,
        format!("the group commit failed, nothing of this batch was written: {error}"),
    );
    if let Some(cause) = crate::error::NativeCause::of(error) {
        failure = failure.with_source(cause);
    }
    folio_core::Error::Engine(failure)
}

/// How many versions each collection with revisions on keeps, as stored.
fn kept_revisions(connection: &Connection) -> Result<HashMap<String, u32>> {
    let mut statement = connection
        .prepare("SELECT collection, config FROM folio_collections")
        .map_err(|e| storage("reading collection configurations", e))?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(|e| storage("reading collection configurations", e))?;
    let mut kept = HashMap::new();
    for (collection, json) in rows {
        let config = CollectionConfig::from_stored(&collection, &json)?;
        if config.revisions.keep > 0 {
            kept.insert(collection, config.revisions.keep);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_are_remembered_per_collection_forgotten_on_delete_and_bounded() {
        let known = |rowid| Known {
            rowid,
            etag: rowid * 10,
            revision: 1,
        };
        let mut rowids = RowIds::default();
        rowids.insert("notes", "a", known(1));
        rowids.insert("people", "a", known(2));
        rowids.insert("notes", "a", known(3));
        assert_eq!(rowids.get("notes", "a"), Some(known(3)));
        assert_eq!(rowids.get("people", "a"), Some(known(2)));
        assert_eq!(rowids.get("notes", "b"), None);
        assert_eq!(rowids.known.len(), 2);
        rowids.remove("notes", "a");
        rowids.remove("notes", "missing");
        assert_eq!(rowids.get("notes", "a"), None);
        assert_eq!(rowids.known.len(), 1);
        for n in 0..ROWIDS_REMEMBERED {
            rowids.insert("bulk", &n.to_string(), known(10));
        }
        assert!(rowids.known.len() <= ROWIDS_REMEMBERED);
        assert_eq!(
            rowids.get("bulk", &(ROWIDS_REMEMBERED - 1).to_string()),
            Some(known(10))
        );
    }

    #[test]
    fn change_vectors_of_other_databases_never_match() {
        let ours = DatabaseId::parse("Ab-cdefghijklmnopqrstu").unwrap();
        let theirs = DatabaseId::parse("Xb-cdefghijklmnopqrstu").unwrap();
        let stored = Some(42);
        let version = |database| Expectation::version(folio_core::ChangeVector::new(42, database));
        assert!(expectation_met(&version(&ours), stored, &ours));
        assert!(!expectation_met(&version(&theirs), stored, &ours));
        assert!(!expectation_met(&Expectation::Missing, stored, &ours));
        assert!(expectation_met(&Expectation::Missing, None, &ours));
    }
}
