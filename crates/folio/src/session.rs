//! The unit of work: what a session read, what it will write, and how a
//! save becomes one [`Batch`] with an [`Expectation`] per write.
//!
//! A session never writes anything before [`Session::save_changes`], and a
//! failed save changes nothing in it: the batch is built from the session's
//! state without touching it, and the state moves on only after the engine
//! committed.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use folio_core::{
    Batch, BatchId, ChangeVector, Command, CommandKind, CommandResult, ConcurrencyError, Entry,
    Error, Expectation, Metadata, Position, Reads, Result, Revision, validate,
};
use serde_json::Value;

use crate::query::DocumentQuery;
use crate::store::StoreInner;
use crate::{ConcurrencyChecks, Document, OnConflict, SessionOptions, Tracking};

/// A tracked document's key: collection and id.
type Key = (&'static str, String);

/// What the session knows of the stored version of a document.
#[derive(Clone, Debug)]
enum Known {
    /// Never read (stored or deleted blind).
    Unknown,
    /// Read, and found missing (or deleted by this session).
    Missing,
    /// Read (loaded, queried) or saved by this session: this version.
    Version(Metadata),
}

/// A write queued by `store*` or `delete*`.
#[derive(Clone, Debug)]
enum PendingWrite {
    Put(String),
    Delete,
}

/// A value handed out by `load_mut`: the session owns it and compares it
/// with its snapshot on save.
struct Live {
    value: Box<dyn Any + Send>,
    /// The value's JSON when it was handed out (or last saved).
    snapshot: String,
    serialize: fn(&(dyn Any + Send)) -> Result<String>,
    change_vector: fn(&(dyn Any + Send)) -> Option<ChangeVector>,
    hydrate: fn(&mut (dyn Any + Send), &Metadata),
}

/// Everything the session holds about one document.
struct Tracked {
    type_name: &'static str,
    /// The type's own concurrency setting (store configuration, else attribute).
    type_setting: Option<bool>,
    /// Order of first tracking: commands are sent in this order.
    sequence: u64,
    known: Known,
    /// The stored JSON last read or saved (the identity map's copy).
    cached: Option<String>,
    live: Option<Live>,
    pending: Option<PendingWrite>,
    /// An expectation the caller gave explicitly with the pending write.
    explicit: Option<Expectation>,
}

/// A read-write unit of work: load, query, store, delete, then
/// [`save_changes`](Session::save_changes) as one atomic batch.
///
/// Owned by one task; not shared. See the crate documentation for the
/// concurrency rules.
pub struct Session {
    store: Arc<StoreInner>,
    options: SessionOptions,
    use_optimistic_concurrency: Option<bool>,
    /// foldhash rather than the standard SipHash: a session hashes its keys
    /// a few times per document (SipHash was 0.7 % of `folio bench update`'s
    /// CPU through `folio serve`), and the keys are the application's own.
    documents: foldhash::HashMap<Key, Tracked>,
    next_sequence: u64,
    /// The id of the last save, when it failed (not a conflict), with the
    /// fingerprint of its batch: the next save of the same batch takes the
    /// same id, so that if the failed one did commit, the engine answers
    /// with its results instead of a conflict against it.
    failed: Option<(BatchId, [u8; 32])>,
    /// Where the session reads: after its last save, or the position it
    /// was given ([`Session::read_after`]); `None`: after the store's last
    /// save.
    reads: Option<Reads>,
    /// Collections whose types declare revisions (`Document::REVISIONS`)
    /// that the store sets before this session's next save.
    declared: Vec<(&'static str, u32)>,
}

impl Session {
    pub(crate) fn new(store: Arc<StoreInner>, options: SessionOptions) -> Self {
        Session {
            store,
            options,
            use_optimistic_concurrency: None,
            documents: foldhash::HashMap::default(),
            next_sequence: 0,
            failed: None,
            reads: None,
            declared: Vec::new(),
        }
    }

    /// The options the session was opened with.
    pub fn options(&self) -> SessionOptions {
        self.options
    }

    /// Advanced operations: the per-session concurrency switch.
    pub fn advanced(&mut self) -> Advanced<'_> {
        Advanced { session: self }
    }

    // ---- reads -------------------------------------------------------------

    /// Loads the document `id` of type `T`, or `None` when it does not exist.
    ///
    /// With an identity map, an id the session already knows costs no round
    /// trip and returns the session's view (with its unsaved changes).
    pub async fn load<T: Document>(&mut self, id: &str) -> Result<Option<T>> {
        let mut loaded = self.load_many::<T>(&[id]).await?;
        Ok(loaded.pop().flatten())
    }

    /// Loads several documents in one round trip, in the order of `ids`.
    pub async fn load_many<T: Document>(&mut self, ids: &[&str]) -> Result<Vec<Option<T>>> {
        validate::collection(T::COLLECTION)?;
        ids.iter().try_for_each(|id| validate::id(id))?;
        let mut to_fetch: Vec<String> = Vec::new();
        for id in ids {
            let known_here = self.uses_identity_map()
                && self
                    .documents
                    .get(&(T::COLLECTION, (*id).to_owned()))
                    .is_some_and(|tracked| tracked.view().is_some());
            if !known_here && !to_fetch.iter().any(|fetched| fetched == id) {
                to_fetch.push((*id).to_owned());
            }
        }
        if !to_fetch.is_empty() {
            let entries = self.reader()?.get(T::COLLECTION, &to_fetch).await?;
            for (id, entry) in to_fetch.into_iter().zip(entries) {
                self.record_read::<T>(id, entry);
            }
        }
        let stored_only = !self.uses_identity_map();
        ids.iter()
            .map(|id| {
                let tracked = &self.documents[&(T::COLLECTION, (*id).to_owned())];
                tracked.materialize::<T>(id, stored_only)
            })
            .collect()
    }

    /// Loads the document `id` and keeps it in the session: changes made
    /// through the returned reference are saved by `save_changes` when the
    /// value differs from what was loaded.
    pub async fn load_mut<T: Document>(&mut self, id: &str) -> Result<Option<&mut T>> {
        let key = (T::COLLECTION, id.to_owned());
        let has_live = self
            .documents
            .get(&key)
            .is_some_and(|tracked| tracked.live.is_some());
        if !has_live {
            let Some(document) = self.load::<T>(id).await? else {
                return Ok(None);
            };
            let snapshot = to_json(&document)?;
            let tracked = self
                .documents
                .get_mut(&key)
                .expect("load tracks what it returns");
            tracked.live = Some(Live {
                value: Box::new(document),
                snapshot,
                serialize: serialize_any::<T>,
                change_vector: change_vector_any::<T>,
                hydrate: hydrate_any::<T>,
            });
        }
        let tracked = self.documents.get_mut(&key).expect("tracked above");
        if matches!(tracked.pending, Some(PendingWrite::Delete)) {
            return Ok(None);
        }
        let type_name = tracked.type_name;
        let live = tracked.live.as_mut().expect("made above");
        live.value.downcast_mut::<T>().map(Some).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{} #{id} is already tracked in this session as {type_name}, not {}",
                T::COLLECTION,
                T::TYPE_NAME
            ))
        })
    }

    /// A query over `T`'s collection; its results are tracked like loads.
    pub fn query<T: Document>(&mut self) -> DocumentQuery<'_, T> {
        DocumentQuery::new(self)
    }

    /// The metadata of document `id` as this session knows it (from a load,
    /// query or save), fetched from the engine when the session does not
    /// know it. `None` when the document does not exist.
    pub async fn metadata_for<T: Document>(&mut self, id: &str) -> Result<Option<Metadata>> {
        validate::id(id)?;
        if let Some(tracked) = self.documents.get(&(T::COLLECTION, id.to_owned())) {
            match &tracked.known {
                Known::Version(metadata) => return Ok(Some(metadata.clone())),
                Known::Missing => return Ok(None),
                Known::Unknown => {}
            }
        }
        let mut metadata = self
            .reader()?
            .metadata(T::COLLECTION, &[id.to_owned()])
            .await?;
        Ok(metadata.pop().flatten())
    }

    /// The change vector of document `id` as this session knows it; see
    /// [`Session::metadata_for`].
    pub async fn change_vector_for<T: Document>(
        &mut self,
        id: &str,
    ) -> Result<Option<ChangeVector>> {
        Ok(self
            .metadata_for::<T>(id)
            .await?
            .map(|metadata| metadata.change_vector))
    }

    // ---- history -----------------------------------------------------------

    /// Every kept version of document `id`, newest first, the current one
    /// included (and a deletion, marked `deleted`): its history, when its
    /// collection keeps revisions (`#[folio(revisions = N)]`, the
    /// builder's [`crate::DocumentConfig::revisions`]); empty otherwise.
    pub async fn revisions_for<T: Document>(&mut self, id: &str) -> Result<Vec<Revision>> {
        validate::id(id)?;
        let reader = self.reader()?;
        let mut revisions: Vec<Revision> = Vec::new();
        loop {
            let page = reader
                .revisions(
                    T::COLLECTION,
                    id,
                    revisions.len() as u64,
                    folio_core::MAX_REVISIONS_PAGE,
                )
                .await?;
            let done = page.items.is_empty()
                || revisions.len() as u64 + page.items.len() as u64 >= page.total;
            revisions.extend(page.items);
            if done {
                return Ok(revisions);
            }
        }
    }

    /// The kept version `change_vector` of document `id` as `T` (its
    /// version fields say which), or `None` when it is not kept (or is the
    /// document's deletion). Not tracked: storing it is a new write.
    pub async fn load_revision<T: Document>(
        &mut self,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<T>> {
        validate::id(id)?;
        let Some(entry) = self
            .reader()?
            .revision(T::COLLECTION, id, change_vector)
            .await?
        else {
            return Ok(None);
        };
        let version = (&entry.metadata.change_vector, entry.metadata.revision);
        crate::document::decode(id, &entry.document, Some(version)).map(Some)
    }

    /// Queues a write of the kept version `change_vector` of document `id`
    /// as its new version, conditional on the version now current: the
    /// one this session knows, else the one stored now (a deleted document
    /// must still be missing). Saved with the next
    /// [`Session::save_changes`]; [`Error::NotFound`] when that version is
    /// not kept.
    pub async fn revert<T: Document>(
        &mut self,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<()> {
        validate::id(id)?;
        let reader = self.reader()?;
        let entry = reader
            .revision(T::COLLECTION, id, change_vector)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} #{id} keeps no version {change_vector} to revert to",
                    T::TYPE_NAME
                ))
            })?;
        // The version must still be a `T`.
        crate::document::decode::<T>(id, &entry.document, None)?;
        let known = self
            .documents
            .get(&(T::COLLECTION, id.to_owned()))
            .map(|tracked| tracked.known.clone());
        let current = match known {
            Some(Known::Version(metadata)) => Expectation::version(metadata.change_vector),
            Some(Known::Missing) => Expectation::Missing,
            Some(Known::Unknown) | None => reader
                .metadata(T::COLLECTION, &[id.to_owned()])
                .await?
                .pop()
                .flatten()
                .map_or(Expectation::Missing, |metadata| {
                    Expectation::version(metadata.change_vector)
                }),
        };
        self.note_declared::<T>();
        let tracked = self.track::<T>(id.to_owned());
        tracked.pending = Some(PendingWrite::Put(entry.document));
        tracked.explicit = Some(current);
        tracked.live = None;
        Ok(())
    }

    // ---- writes ------------------------------------------------------------

    /// Queues an insert or update of `doc` (pass `&mut doc` to see a
    /// generated id). An empty id is replaced by a new time-sortable one.
    ///
    /// The version check follows the session's rules: a set change-vector
    /// field is always checked; with checks on, a document the session read
    /// must still have the version it read, and one new to the session must
    /// not exist.
    pub fn store<T: Document>(&mut self, doc: impl Storable<T>) -> Result<()> {
        self.queue_put(doc, None)
    }

    /// Queues an update of `doc` that succeeds only if the stored version is
    /// `change_vector`, whatever the session's settings (the web-app flow:
    /// the version comes back from the browser).
    pub fn store_with_change_vector<T: Document>(
        &mut self,
        doc: impl Storable<T>,
        change_vector: impl Into<ChangeVector>,
    ) -> Result<()> {
        self.queue_put(doc, Some(Expectation::version(change_vector)))
    }

    /// Queues an insert of `doc` that succeeds only if no document has its id.
    pub fn store_new<T: Document>(&mut self, doc: impl Storable<T>) -> Result<()> {
        self.queue_put(doc, Some(Expectation::Missing))
    }

    /// Queues a delete of document `id`; a document the session read is
    /// checked like `store` when checks are on.
    pub fn delete<T: Document>(&mut self, id: &str) -> Result<()> {
        self.queue_delete::<T>(id, None)
    }

    /// Queues a delete that succeeds only if the stored version is
    /// `change_vector`.
    pub fn delete_with_change_vector<T: Document>(
        &mut self,
        id: &str,
        change_vector: impl Into<ChangeVector>,
    ) -> Result<()> {
        self.queue_delete::<T>(id, Some(Expectation::version(change_vector)))
    }

    /// Forgets document `id`: what was read and what was queued for it.
    pub fn evict<T: Document>(&mut self, id: &str) {
        self.documents.remove(&(T::COLLECTION, id.to_owned()));
    }

    /// Forgets everything the session read and queued.
    pub fn clear(&mut self) {
        self.documents.clear();
    }

    /// Whether anything would be written by `save_changes`.
    pub fn has_changes(&self) -> Result<bool> {
        Ok(!self.plan()?.writes.is_empty())
    }

    /// Saves every queued write and every change made through `load_mut`
    /// as one atomic batch.
    ///
    /// On `Err(Error::Concurrency(e))` nothing was written and the session
    /// is as it was; `e.conflicts()` lists every conflict of the batch.
    /// After success the session knows the new versions, so a second save
    /// does not conflict with the first.
    ///
    /// Every save carries a batch id ([`Batch::id`]): an engine whose commit
    /// ends in doubt sends the batch again with it and answers with the
    /// outcome; [`Error::InDoubt`] when it could not learn it. After any
    /// failure the session is as it was, and saving the same changes again
    /// sends them under the same id, so that a save that did commit is
    /// answered as such rather than as a conflict with itself.
    pub async fn save_changes(&mut self) -> Result<()> {
        let mut plan = self.plan()?;
        if plan.batch.is_empty() {
            return Ok(());
        }
        // Collections keep the revisions their types declare from the
        // first save on.
        for (collection, keep) in std::mem::take(&mut self.declared) {
            if let Err(error) = self.store.ensure_revisions(collection, keep).await {
                self.declared.push((collection, keep));
                return Err(error);
            }
        }
        // Every save carries an id: an engine whose commit ends in doubt
        // sends it again with it, and learns the outcome. A save that sends
        // again the batch of a failed one takes its id.
        let mut merges = Merges::default();
        let committed = loop {
            let fingerprint = plan.batch.fingerprint();
            let id = match self.failed.take() {
                Some((id, failed)) if failed == fingerprint => id,
                _ => BatchId::new(),
            };
            // Only a merging save needs its batch again after a refusal.
            let batch = match self.options.on_conflict {
                OnConflict::Merge => plan.batch.clone(),
                OnConflict::Fail => std::mem::take(&mut plan.batch),
            };
            match self.store.engine.commit(batch.with_id(id.clone())).await {
                Ok(Ok(committed)) => break committed,
                Ok(Err(refusal)) => {
                    if self.options.on_conflict != OnConflict::Merge
                        || merges.rounds == MERGE_ROUNDS
                    {
                        return Err(Error::Concurrency(refusal));
                    }
                    self.merge(&mut plan, &mut merges, refusal)?;
                }
                Err(error) => {
                    if !matches!(error, Error::InvalidInput(_) | Error::BatchIdReused(_)) {
                        self.failed = Some((id, fingerprint));
                    }
                    return Err(error);
                }
            }
        };
        // Later reads see this save: after its position, or from the
        // primary when the engine could not tell one.
        let reads = committed
            .position
            .clone()
            .map_or(Reads::Primary, Reads::After);
        self.store.saved(reads.clone());
        self.reads = Some(reads);
        self.apply(plan.writes, plan.settled, committed.into_results());
        // A merged document is what was saved, not the session's copy.
        for key in merges.mine.into_keys() {
            if let Some(tracked) = self.documents.get_mut(&key) {
                tracked.live = None;
            }
        }
        Ok(())
    }

    /// Merges each document `refusal` names three ways into `plan`
    /// (`OnConflict::Merge`): base the version the session read, theirs
    /// the one stored now, mine the session's (as first planned). `Err`:
    /// the refusal to report, with the overlaps of each document that has
    /// some, or as it was when a conflict is not a changed document.
    fn merge(&self, plan: &mut Plan, merges: &mut Merges, refusal: ConcurrencyError) -> Result<()> {
        merges.rounds += 1;
        let mut outcomes = Vec::with_capacity(refusal.conflicts().len());
        for conflict in refusal.conflicts() {
            let Some(index) = plan.writes.iter().position(|((collection, id), ..)| {
                *collection == conflict.collection() && id == conflict.id()
            }) else {
                // A read guard: nothing of the session's to merge.
                return Err(Error::Concurrency(refusal));
            };
            let (key, PendingWrite::Put(planned), ..) = &plan.writes[index] else {
                return Err(Error::Concurrency(refusal));
            };
            let mine = merges
                .mine
                .entry(key.clone())
                .or_insert_with(|| planned.clone())
                .clone();
            let base = self
                .documents
                .get(key)
                .and_then(|tracked| tracked.cached.as_deref());
            let outcome = match (base, conflict.current()) {
                (Some(base), Some(theirs)) => three_way(base, &theirs.document, &mine)?
                    .map(|document| (document, theirs.change_vector.clone())),
                // Created elsewhere, or deleted since: the whole document.
                _ => Err(vec![String::new()]),
            };
            outcomes.push((index, outcome));
        }
        if outcomes.iter().any(|(_, outcome)| outcome.is_err()) {
            let conflicts = refusal
                .into_conflicts()
                .into_iter()
                .zip(outcomes)
                .map(|(conflict, (_, outcome))| {
                    conflict.with_overlaps(outcome.err().unwrap_or_default())
                })
                .collect();
            return Err(Error::Concurrency(ConcurrencyError::new(conflicts)));
        }
        for (index, outcome) in outcomes {
            let Ok((document, theirs)) = outcome else {
                continue;
            };
            let expect = Expectation::version(theirs);
            plan.writes[index].1 = PendingWrite::Put(document.clone());
            plan.writes[index].2 = expect.clone();
            let command = &mut plan.batch.commands[index];
            command.kind = CommandKind::Put { document };
            command.expect = expect;
        }
        Ok(())
    }

    // ---- read-your-writes --------------------------------------------------

    /// The position of the session's last save: sent back
    /// ([`Session::read_after`]), by this process or another, it makes a
    /// session's reads see that save, also on a cluster whose standbys
    /// serve reads. `None` before a save.
    pub fn position(&self) -> Option<&Position> {
        match &self.reads {
            Some(Reads::After(position)) => Some(position),
            _ => None,
        }
    }

    /// Makes the session's reads see the save at `position` (and every
    /// write before it): a web app that sent a save's position to the
    /// browser reads after it when the browser sends it back. After a
    /// position of another kind of database, reads come from the primary.
    pub fn read_after(&mut self, position: Position) {
        self.reads = Some(Reads::After(position));
    }

    /// The engine handle the session reads through: after the session's
    /// last save (or given position), else after the store's last save.
    pub(crate) fn reader(&self) -> Result<folio_core::EngineRef> {
        let reads = self.reads.clone().unwrap_or_else(|| self.store.reads());
        self.store.engine.clone().reads(reads)
    }

    // ---- internals ---------------------------------------------------------

    fn uses_identity_map(&self) -> bool {
        self.options.tracking != Tracking::Lightweight
    }

    fn track<T: Document>(&mut self, id: String) -> &mut Tracked {
        let type_setting = self.store.config.type_setting::<T>();
        let sequence = self.next_sequence;
        let tracked = self
            .documents
            .entry((T::COLLECTION, id))
            .or_insert_with(|| Tracked {
                type_name: T::TYPE_NAME,
                type_setting,
                sequence,
                known: Known::Unknown,
                cached: None,
                live: None,
                pending: None,
                explicit: None,
            });
        if tracked.sequence == sequence {
            self.next_sequence += 1;
        }
        tracked
    }

    /// Records what a read returned for `id`. With an identity map, a
    /// document the session already knows keeps the version it was first
    /// read at (re-reading does not silently refresh the expectation).
    pub(crate) fn record_read<T: Document>(&mut self, id: String, entry: Option<Entry>) {
        let identity_map = self.uses_identity_map();
        let tracked = self.track::<T>(id);
        if identity_map && !matches!(tracked.known, Known::Unknown) {
            return;
        }
        match entry {
            Some(entry) => {
                tracked.known = Known::Version(entry.metadata);
                tracked.cached = Some(entry.document);
            }
            None => {
                tracked.known = Known::Missing;
                tracked.cached = None;
            }
        }
    }

    /// The session's view of a queried document: the tracked copy when the
    /// identity map knows it, else the entry (now tracked). `None` when the
    /// session deleted it.
    pub(crate) fn query_result<T: Document>(&mut self, entry: Entry) -> Result<Option<T>> {
        let id = entry.metadata.id.clone();
        self.record_read::<T>(id.clone(), Some(entry));
        let stored_only = !self.uses_identity_map();
        self.documents[&(T::COLLECTION, id.clone())].materialize::<T>(&id, stored_only)
    }

    /// Notes that `T` declares revisions its collection must keep before
    /// the next save.
    fn note_declared<T: Document>(&mut self) {
        if let Some(keep) = self.store.config.declared_revisions::<T>()
            && !self.declared.contains(&(T::COLLECTION, keep))
        {
            self.declared.push((T::COLLECTION, keep));
        }
    }

    fn queue_put<T: Document>(
        &mut self,
        doc: impl Storable<T>,
        explicit: Option<Expectation>,
    ) -> Result<()> {
        validate::collection(T::COLLECTION)?;
        let (id, json, field_change_vector) = doc.with_document(|doc| -> Result<_> {
            if doc.id().is_empty() {
                doc.set_id(folio_core::generate_id());
            }
            validate::id(doc.id())?;
            let json = to_json(&*doc)?;
            Ok((doc.id().to_owned(), json, doc.change_vector().cloned()))
        })?;
        let explicit = explicit.or(field_change_vector.map(Expectation::version));
        self.note_declared::<T>();
        let tracked = self.track::<T>(id);
        tracked.pending = Some(PendingWrite::Put(json));
        tracked.explicit = explicit;
        tracked.live = None;
        Ok(())
    }

    fn queue_delete<T: Document>(&mut self, id: &str, explicit: Option<Expectation>) -> Result<()> {
        validate::collection(T::COLLECTION)?;
        validate::id(id)?;
        self.note_declared::<T>();
        let tracked = self.track::<T>(id.to_owned());
        tracked.pending = Some(PendingWrite::Delete);
        tracked.explicit = explicit;
        tracked.live = None;
        Ok(())
    }

    /// Whether writes of `tracked` are checked implicitly (docs/design.md rule 5).
    fn checks_on(&self, tracked: &Tracked) -> bool {
        match self.options.concurrency_checks {
            ConcurrencyChecks::Writes | ConcurrencyChecks::WritesAndReads => true,
            ConcurrencyChecks::Disabled => false,
            ConcurrencyChecks::Default => self
                .use_optimistic_concurrency
                .or(tracked.type_setting)
                .unwrap_or(self.store.config.optimistic_concurrency),
        }
    }

    /// Builds the batch of a save from the session's state, without changing it.
    fn plan(&self) -> Result<Plan> {
        let mut tracked: Vec<(&Key, &Tracked)> = self.documents.iter().collect();
        tracked.sort_by_key(|(_, tracked)| tracked.sequence);
        let mut writes = Vec::new();
        let mut guards = Vec::new();
        let mut settled = Vec::new();
        for (key, tracked) in tracked {
            let write = match (&tracked.pending, &tracked.live) {
                (Some(PendingWrite::Delete), _) => Some(PendingWrite::Delete),
                (Some(PendingWrite::Put(_)), Some(live)) => {
                    Some(PendingWrite::Put((live.serialize)(&*live.value)?))
                }
                (Some(PendingWrite::Put(json)), None) => Some(PendingWrite::Put(json.clone())),
                (None, Some(live)) => {
                    let json = (live.serialize)(&*live.value)?;
                    (json != live.snapshot).then_some(PendingWrite::Put(json))
                }
                (None, None) => None,
            };
            let expect = self.expectation(tracked, write.as_ref());
            let write = match write {
                Some(PendingWrite::Put(json))
                    if self.options.tracking == Tracking::DirtyTracking
                        && tracked.unchanged(&json) =>
                {
                    // Unchanged: nothing to write, but keep the version check.
                    if expect != Expectation::Any {
                        guards.push(
                            Command::check(key.0, key.1.clone(), expect)
                                .with_type_name(tracked.type_name),
                        );
                    }
                    settled.push(key.clone());
                    continue;
                }
                write => write,
            };
            match write {
                Some(write) => writes.push((key.clone(), write, expect, tracked.type_name)),
                None if self.options.concurrency_checks == ConcurrencyChecks::WritesAndReads => {
                    let guard = match &tracked.known {
                        Known::Version(metadata) => {
                            Some(Expectation::version(metadata.change_vector.clone()))
                        }
                        Known::Missing => Some(Expectation::Missing),
                        Known::Unknown => None,
                    };
                    if let Some(expect) = guard {
                        guards.push(
                            Command::check(key.0, key.1.clone(), expect)
                                .with_type_name(tracked.type_name),
                        );
                    }
                }
                None => {}
            }
        }
        let mut batch = Batch::new();
        for ((collection, id), write, expect, type_name) in &writes {
            let command = match write {
                PendingWrite::Put(json) => {
                    Command::put(*collection, id.clone(), json.clone(), expect.clone())
                }
                PendingWrite::Delete => Command::delete(*collection, id.clone(), expect.clone()),
            };
            batch.push(command.with_type_name(*type_name));
        }
        batch.commands.extend(guards);
        Ok(Plan {
            batch,
            writes,
            settled,
        })
    }

    /// The expectation of a write (docs/design.md rule 4).
    fn expectation(&self, tracked: &Tracked, write: Option<&PendingWrite>) -> Expectation {
        let field_change_vector = tracked
            .live
            .as_ref()
            .filter(|_| tracked.pending.is_none())
            .and_then(|live| (live.change_vector)(&*live.value));
        if let Some(explicit) = tracked
            .explicit
            .clone()
            .or(field_change_vector.map(Expectation::version))
        {
            return explicit;
        }
        if !self.checks_on(tracked) {
            return Expectation::Any;
        }
        match (&tracked.known, write) {
            (Known::Version(metadata), _) => Expectation::version(metadata.change_vector.clone()),
            (Known::Missing, _) => Expectation::Missing,
            (Known::Unknown, Some(PendingWrite::Delete)) => Expectation::Any,
            (Known::Unknown, _) => Expectation::Missing,
        }
    }

    /// Moves the session on after a successful commit.
    fn apply(
        &mut self,
        writes: Vec<(Key, PendingWrite, Expectation, &'static str)>,
        settled: Vec<Key>,
        results: Vec<CommandResult>,
    ) {
        for key in settled {
            if let Some(tracked) = self.documents.get_mut(&key) {
                tracked.pending = None;
                tracked.explicit = None;
            }
        }
        for ((key, write, _, _), result) in writes.into_iter().zip(results) {
            let Some(tracked) = self.documents.get_mut(&key) else {
                continue;
            };
            tracked.pending = None;
            tracked.explicit = None;
            match (write, result) {
                (PendingWrite::Put(json), CommandResult::Put(metadata)) => {
                    if let Some(live) = &mut tracked.live {
                        (live.hydrate)(&mut *live.value, &metadata);
                        live.snapshot = json.clone();
                    }
                    tracked.known = Known::Version(metadata);
                    tracked.cached = Some(json);
                }
                _ => {
                    tracked.known = Known::Missing;
                    tracked.cached = None;
                    tracked.live = None;
                }
            }
        }
    }
}

/// How many times a save merges (`OnConflict::Merge`) while the documents
/// it writes keep changing, before it reports the conflict.
const MERGE_ROUNDS: u32 = 5;

/// What a save's merges remember across rounds.
#[derive(Default)]
struct Merges {
    rounds: u32,
    /// Each merged document's JSON as the session planned it (mine).
    mine: HashMap<Key, String>,
}

/// Merges `mine` and `theirs` (JSON texts), both from `base`: the merged
/// JSON, or the overlaps. A text that is not JSON is an engine's fault.
fn three_way(
    base: &str,
    theirs: &str,
    mine: &str,
) -> Result<std::result::Result<String, Vec<String>>> {
    let parse = |json: &str| {
        serde_json::from_str::<Value>(json).map_err(|error| {
            Error::InvalidInput(format!("a document to merge is not JSON: {error}"))
        })
    };
    Ok(
        folio_core::merge(&parse(base)?, &parse(theirs)?, &parse(mine)?)
            .map(|merged| merged.to_string()),
    )
}

/// A save's batch, and the writes it carries (in command order) so the
/// session can apply their results.
struct Plan {
    batch: Batch,
    writes: Vec<(Key, PendingWrite, Expectation, &'static str)>,
    /// Queued stores that dirty tracking found unchanged: done once the
    /// batch (with their checks) commits.
    settled: Vec<Key>,
}

impl Tracked {
    /// The session's current view of the document: `Some(None)` when it is
    /// known not to exist (or deleted in the session), `Some(Some(json))`
    /// when the session holds it, `None` when only the engine knows.
    fn view(&self) -> Option<Option<Cow<'_, str>>> {
        match (&self.pending, &self.live) {
            (Some(PendingWrite::Delete), _) => return Some(None),
            (_, Some(live)) => return Some((live.serialize)(&*live.value).ok().map(Cow::Owned)),
            (Some(PendingWrite::Put(json)), None) => return Some(Some(Cow::Borrowed(json))),
            (None, None) => {}
        }
        match (&self.known, &self.cached) {
            (Known::Missing, _) => Some(None),
            (Known::Version(_), Some(json)) => Some(Some(Cow::Borrowed(json))),
            _ => None,
        }
    }

    /// The document as `T`, hydrated with the version the session knows:
    /// the session's view, or (`stored_only`) the copy last read.
    fn materialize<T: Document>(&self, id: &str, stored_only: bool) -> Result<Option<T>> {
        let json = match stored_only {
            true => self.cached.as_deref().map(Cow::Borrowed),
            false => self.view().flatten(),
        };
        let Some(json) = json else {
            return Ok(None);
        };
        let version = match &self.known {
            Known::Version(metadata) => Some((&metadata.change_vector, metadata.revision)),
            Known::Missing | Known::Unknown => None,
        };
        crate::document::decode(id, &json, version).map(Some)
    }

    /// Whether `json` says the same as the copy the session read.
    fn unchanged(&self, json: &str) -> bool {
        let Some(cached) = &self.cached else {
            return false;
        };
        match (
            serde_json::from_str::<Value>(json),
            serde_json::from_str::<Value>(cached),
        ) {
            (Ok(new), Ok(old)) => new == old,
            _ => false,
        }
    }
}

fn to_json<T: Document>(document: &T) -> Result<String> {
    let json = serde_json::to_string(document).map_err(|error| {
        Error::InvalidInput(format!(
            "{} does not serialize to JSON: {error}",
            T::TYPE_NAME
        ))
    })?;
    if !json.starts_with('{') {
        return Err(Error::InvalidInput(format!(
            "{} must serialize to a JSON object, not {json}",
            T::TYPE_NAME
        )));
    }
    if let Some(depth) = validate::deeper_than(&json, validate::MAX_NESTING) {
        return Err(Error::InvalidInput(format!(
            "{} nests {depth} deep; documents may nest at most {} deep",
            T::TYPE_NAME,
            validate::MAX_NESTING
        )));
    }
    Ok(json)
}

fn serialize_any<T: Document>(value: &(dyn Any + Send)) -> Result<String> {
    to_json(
        value
            .downcast_ref::<T>()
            .expect("a live value keeps its type"),
    )
}

fn change_vector_any<T: Document>(value: &(dyn Any + Send)) -> Option<ChangeVector> {
    value
        .downcast_ref::<T>()
        .and_then(|document| document.change_vector().cloned())
}

fn hydrate_any<T: Document>(value: &mut (dyn Any + Send), metadata: &Metadata) {
    if let Some(document) = value.downcast_mut::<T>() {
        document.set_change_vector(Some(metadata.change_vector.clone()));
        document.set_revision(metadata.revision);
    }
}

/// What `store` accepts: a document by value, or `&mut` a document (then a
/// generated id is written back into it).
pub trait Storable<T: Document> {
    /// Runs `f` on the document.
    #[doc(hidden)]
    fn with_document<R>(self, f: impl FnOnce(&mut T) -> R) -> R;
}

impl<T: Document> Storable<T> for T {
    fn with_document<R>(mut self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self)
    }
}

impl<T: Document> Storable<T> for &mut T {
    fn with_document<R>(self, f: impl FnOnce(&mut T) -> R) -> R {
        f(self)
    }
}

/// Advanced session operations; see [`Session::advanced`].
pub struct Advanced<'s> {
    session: &'s mut Session,
}

impl Advanced<'_> {
    /// Switches implicit concurrency checks on or off for this session,
    /// overriding the document types' settings and the store default (but
    /// not the session's [`ConcurrencyChecks`] option when it is not
    /// `Default`).
    pub fn set_use_optimistic_concurrency(&mut self, enabled: bool) {
        self.session.use_optimistic_concurrency = Some(enabled);
    }

    /// The per-session switch, if set.
    pub fn use_optimistic_concurrency(&self) -> Option<bool> {
        self.session.use_optimistic_concurrency
    }

    /// Forgets what the session read of `T` `id` and reads it again, so the
    /// next save is checked against the version stored now. Queued writes
    /// for it are kept (the result is the session's view, like `load`).
    pub async fn refresh<T: Document>(&mut self, id: &str) -> Result<Option<T>> {
        validate::collection(T::COLLECTION)?;
        validate::id(id)?;
        // Always read from the engine: `load` would answer from a queued
        // write without reading, leaving the version unknown. Read before
        // forgetting, so that a failed read leaves the session as it was.
        let entry = self
            .session
            .store
            .engine
            .get(T::COLLECTION, &[id.to_owned()])
            .await?
            .pop()
            .flatten();
        let key = (T::COLLECTION, id.to_owned());
        if let Some(tracked) = self.session.documents.get_mut(&key) {
            tracked.known = Known::Unknown;
            tracked.cached = None;
            tracked.live = None;
        }
        self.session.record_read::<T>(id.to_owned(), entry);
        self.session.documents[&key].materialize::<T>(id, false)
    }
}

/// A read-only session: loads and queries, no writes (a different type, so
/// a write does not compile).
pub struct QuerySession {
    session: Session,
}

impl QuerySession {
    pub(crate) fn new(session: Session) -> Self {
        QuerySession { session }
    }

    /// See [`Session::load`].
    pub async fn load<T: Document>(&mut self, id: &str) -> Result<Option<T>> {
        self.session.load(id).await
    }

    /// See [`Session::load_many`].
    pub async fn load_many<T: Document>(&mut self, ids: &[&str]) -> Result<Vec<Option<T>>> {
        self.session.load_many(ids).await
    }

    /// See [`Session::query`].
    pub fn query<T: Document>(&mut self) -> DocumentQuery<'_, T> {
        self.session.query()
    }

    /// See [`Session::metadata_for`].
    pub async fn metadata_for<T: Document>(&mut self, id: &str) -> Result<Option<Metadata>> {
        self.session.metadata_for::<T>(id).await
    }

    /// See [`Session::change_vector_for`].
    pub async fn change_vector_for<T: Document>(
        &mut self,
        id: &str,
    ) -> Result<Option<ChangeVector>> {
        self.session.change_vector_for::<T>(id).await
    }

    /// See [`Session::evict`].
    pub fn evict<T: Document>(&mut self, id: &str) {
        self.session.evict::<T>(id);
    }

    /// See [`Session::clear`].
    pub fn clear(&mut self) {
        self.session.clear();
    }
}
