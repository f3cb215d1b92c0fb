//! The document cache: recently read documents, so that a load by id does
//! not open a SQLite read transaction.
//!
//! Coherence (a load never returns a version older than one a load that
//! finished earlier returned) comes from three rules:
//!
//! * just before a group's COMMIT, the writer marks every document the
//!   group wrote as being written and bumps the generation
//!   ([`DocumentCache::begin_write`]): a load of a marked document misses,
//!   even if an older version is still cached; after the COMMIT it bumps
//!   the generation again, replaces the cached versions with the ones it
//!   just committed (so a read-modify-write loop keeps hitting the cache),
//!   drops the other marked ones and clears the marks
//!   ([`DocumentCache::end_write`]);
//! * a reader that misses notes the generation *before* it reads SQLite;
//! * it inserts what it read only if the generation is unchanged and the
//!   document is not being written.
//!
//! A document the group creates is neither removed nor cached by the
//! writer: no cache holds it before the COMMIT (it did not exist), a reader
//! can only find it in a snapshot that has it, and the first load caches it.
//!
//! So while a document is being committed nobody can cache it, and a read
//! whose snapshot predates the commit finds the generation moved afterwards.
//! Every load in that window goes to SQLite, whose snapshots are ordered by
//! commit. Only this process writes the file (the engine holds an exclusive
//! lock on it), so no write escapes the writer's invalidation.
//!
//! Each cache holds at most its own `capacity_bytes`. Caches of several
//! engines may also share a [`CacheBudget`]: whoever takes the total over
//! it evicts, from the largest cache, its least recently used entries,
//! until the total holds. Evicting never breaks coherence (a miss reads
//! SQLite), and no two cache locks are ever held at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use folio_core::Entry;
use lru::LruCache;

/// Bytes counted per cached entry beyond its strings (keys, metadata, links).
const ENTRY_OVERHEAD: usize = 160;

pub(crate) struct DocumentCache {
    state: Mutex<State>,
    capacity_bytes: usize,
    /// The budget shared with other caches, if any.
    budget: Option<Arc<Budget>>,
    /// `State::bytes`, readable without the lock: the budget evicts from
    /// the largest cache.
    size: AtomicUsize,
}

/// A memory budget shared by the document caches of several engines
/// (`SqliteOptions::cache_budget`): together they hold at most its bytes
/// (each also at most its own `cache_bytes`). An insertion that takes the
/// total over evicts from the largest cache first, its least recently used
/// documents, so under pressure the caches of a process even out and one
/// database's cache is never emptied for another's while it is not the
/// largest. Cheap to clone: clones are one budget.
#[derive(Clone)]
pub struct CacheBudget {
    budget: Arc<Budget>,
}

struct Budget {
    capacity_bytes: usize,
    /// The bytes every cache of the budget holds, together.
    used: AtomicUsize,
    /// The caches sharing it (a cache leaves when its engine closes).
    caches: Mutex<Vec<Weak<DocumentCache>>>,
}

impl CacheBudget {
    /// A budget of `capacity_bytes` for all the caches that share it.
    pub fn new(capacity_bytes: usize) -> Self {
        CacheBudget {
            budget: Arc::new(Budget {
                capacity_bytes,
                used: AtomicUsize::new(0),
                caches: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The most bytes the caches hold together.
    pub fn capacity_bytes(&self) -> usize {
        self.budget.capacity_bytes
    }

    /// The bytes the caches hold now, together (counted as each cache
    /// counts its own: documents, keys and a fixed overhead per entry).
    pub fn used_bytes(&self) -> usize {
        self.budget.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for CacheBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBudget")
            .field("capacity_bytes", &self.capacity_bytes())
            .field("used_bytes", &self.used_bytes())
            .finish()
    }
}

impl Budget {
    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.capacity_bytes
    }

    /// The cache holding the most bytes (forgetting closed ones).
    fn largest(&self) -> Option<Arc<DocumentCache>> {
        let mut caches = self
            .caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        caches.retain(|cache| cache.strong_count() > 0);
        caches
            .iter()
            .filter_map(Weak::upgrade)
            .max_by_key(|cache| cache.size.load(Ordering::Relaxed))
    }
}

struct State {
    generation: u64,
    /// Keyed by `collection:id` (collections cannot contain `:`).
    entries: LruCache<String, Entry>,
    bytes: usize,
    /// Documents of the group being committed: not cacheable until it is done.
    writing: foldhash::HashSet<String>,
}

/// The cache key of a document.
fn key(collection: &str, id: &str) -> String {
    let mut key = String::with_capacity(collection.len() + 1 + id.len());
    write_key(&mut key, collection, id);
    key
}

/// Writes the cache key of a document into `buffer` (cleared first), so
/// that a lookup allocates nothing.
fn write_key<'a>(buffer: &'a mut String, collection: &str, id: &str) -> &'a str {
    buffer.clear();
    buffer.push_str(collection);
    buffer.push(':');
    buffer.push_str(id);
    buffer
}

thread_local! {
    /// A reusable buffer for lookups, so a hit allocates no key.
    static LOOKUP: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The cache generation seen before a read, to hand back to [`DocumentCache::insert`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl DocumentCache {
    /// A cache holding at most `capacity_bytes` of documents (0: disabled).
    #[cfg(test)]
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        Self::unshared(capacity_bytes, None)
    }

    /// A cache holding at most `capacity_bytes` of documents (0: disabled),
    /// sharing `budget` with other caches when given.
    pub(crate) fn shared(capacity_bytes: usize, budget: Option<&CacheBudget>) -> Arc<Self> {
        let cache = Arc::new(Self::unshared(
            capacity_bytes,
            budget.map(|budget| budget.budget.clone()),
        ));
        if let Some(budget) = budget {
            budget
                .budget
                .caches
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Arc::downgrade(&cache));
        }
        cache
    }

    fn unshared(capacity_bytes: usize, budget: Option<Arc<Budget>>) -> Self {
        DocumentCache {
            state: Mutex::new(State {
                generation: 0,
                entries: LruCache::unbounded(),
                bytes: 0,
                writing: foldhash::HashSet::default(),
            }),
            capacity_bytes,
            budget,
            size: AtomicUsize::new(0),
        }
    }

    /// The largest entry cached: a quarter of the cache's capacity (or of
    /// its budget's, when smaller).
    fn entry_limit(&self) -> usize {
        let budget = self
            .budget
            .as_ref()
            .map_or(usize::MAX, |budget| budget.capacity_bytes);
        self.capacity_bytes.min(budget) / 4
    }

    /// Counts `bytes` more in the cache's `total` (its `State::bytes`) and
    /// in its budget.
    fn added(&self, total: &mut usize, bytes: usize) {
        *total += bytes;
        if let Some(budget) = &self.budget {
            self.size.store(*total, Ordering::Relaxed);
            budget.used.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts `bytes` fewer in the cache's `total` and in its budget.
    fn removed(&self, total: &mut usize, bytes: usize) {
        *total -= bytes;
        if let Some(budget) = &self.budget {
            self.size.store(*total, Ordering::Relaxed);
            budget.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// While the shared budget is exceeded, evicts the least recently used
    /// entries of the largest cache sharing it (this one included); the
    /// evicted entries, for the caller to free. Called with no cache lock
    /// held.
    fn reclaim(&self) -> Vec<Entry> {
        let mut evicted = Vec::new();
        let Some(budget) = &self.budget else {
            return evicted;
        };
        while budget.over() {
            let Some(victim) = budget.largest() else {
                break;
            };
            let before = evicted.len();
            let mut state = victim.state();
            while budget.over() {
                match state.entries.pop_lru() {
                    Some((_, entry)) => {
                        victim.removed(&mut state.bytes, entry_size(&entry));
                        evicted.push(entry);
                    }
                    None => break,
                }
            }
            drop(state);
            if evicted.len() == before {
                break;
            }
        }
        evicted
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached entry, or a ticket to insert what the caller reads instead.
    pub(crate) fn get(&self, collection: &str, id: &str) -> Result<Entry, Ticket> {
        LOOKUP.with_borrow_mut(|lookup| {
            let lookup = write_key(lookup, collection, id);
            let mut state = self.state();
            if !state.writing.is_empty() && state.writing.contains(lookup) {
                return Err(Ticket(state.generation));
            }
            match state.entries.get(lookup) {
                Some(entry) => Ok(entry.clone()),
                None => Err(Ticket(state.generation)),
            }
        })
    }

    /// Caches `entry`, read after `ticket` was taken, unless a commit
    /// invalidated entries since.
    pub(crate) fn insert(&self, ticket: Ticket, entry: &Entry) {
        let key = key(&entry.metadata.collection, &entry.metadata.id);
        let mut state = self.state();
        if state.generation != ticket.0 || state.writing.contains(&key) {
            return;
        }
        self.put(&mut state, entry.clone());
        drop(state);
        drop(self.reclaim());
    }

    fn put(&self, state: &mut State, entry: Entry) {
        let size = entry_size(&entry);
        if size > self.entry_limit() {
            return;
        }
        let key = key(&entry.metadata.collection, &entry.metadata.id);
        if let Some(previous) = state.entries.put(key, entry) {
            self.removed(&mut state.bytes, entry_size(&previous));
        }
        self.added(&mut state.bytes, size);
        self.shrink(state);
    }

    /// Evicts the least recently used entries until the cache's own
    /// capacity holds.
    fn shrink(&self, state: &mut State) {
        while state.bytes > self.capacity_bytes {
            match state.entries.pop_lru() {
                Some((_, evicted)) => self.removed(&mut state.bytes, entry_size(&evicted)),
                None => break,
            }
        }
    }

    /// Marks the documents a group is about to commit: loads of them miss
    /// and nothing read can cache them until [`DocumentCache::end_write`].
    /// The writer calls it just before COMMIT. (Their cached versions stay
    /// where they are, to be replaced in place by `end_write`.)
    pub(crate) fn begin_write<'a>(&self, written: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut state = self.state();
        state.generation += 1;
        for (collection, id) in written {
            state.writing.insert(key(collection, id));
        }
    }

    /// Ends the write begun by [`DocumentCache::begin_write`], after COMMIT
    /// returned, caching `committed`: the new versions, exactly as stored
    /// (empty when the COMMIT failed). Every other marked document leaves
    /// the cache. Returns the versions it replaced or dropped (and any
    /// entry a shared budget evicted), for the caller to free when it has
    /// time.
    pub(crate) fn end_write(&self, committed: Vec<Entry>) -> Vec<Entry> {
        let mut replaced = Vec::with_capacity(committed.len());
        let mut guard = self.state();
        let state = &mut *guard;
        state.generation += 1;
        let entry_limit = self.entry_limit();
        LOOKUP.with_borrow_mut(|buffer| {
            for entry in committed {
                let lookup = write_key(buffer, &entry.metadata.collection, &entry.metadata.id);
                state.writing.remove(lookup);
                let size = entry_size(&entry);
                match state.entries.get_mut(lookup) {
                    Some(cached) if size <= entry_limit => {
                        let old = std::mem::replace(cached, entry);
                        self.removed(&mut state.bytes, entry_size(&old));
                        self.added(&mut state.bytes, size);
                        replaced.push(old);
                    }
                    Some(_) => {
                        if let Some(old) = state.entries.pop(lookup) {
                            self.removed(&mut state.bytes, entry_size(&old));
                            replaced.push(old);
                        }
                    }
                    None => self.put(state, entry),
                }
            }
        });
        for key in state.writing.drain() {
            if let Some(old) = state.entries.pop(&key) {
                self.removed(&mut state.bytes, entry_size(&old));
                replaced.push(old);
            }
        }
        self.shrink(state);
        drop(guard);
        replaced.extend(self.reclaim());
        replaced
    }
}

impl Drop for DocumentCache {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            let state = self
                .state
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            budget.used.fetch_sub(state.bytes, Ordering::Relaxed);
        }
    }
}

fn entry_size(entry: &Entry) -> usize {
    entry.document.len()
        + entry.metadata.id.len()
        + entry.metadata.collection.len()
        + entry.metadata.change_vector.as_str().len()
        + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use folio_core::{ChangeVector, Metadata, time_from_millis};

    use super::*;

    fn entry(id: &str, document: &str) -> Entry {
        Entry {
            metadata: Metadata {
                id: id.into(),
                collection: "c".into(),
                change_vector: ChangeVector::from("A:1-x"),
                revision: 1,
                etag: 1,
                last_modified: time_from_millis(0),
            },
            document: document.into(),
        }
    }

    #[test]
    fn a_read_that_raced_a_commit_is_not_cached() {
        let cache = DocumentCache::new(1 << 20);
        // A read from before the commit, inserted after it began or ended.
        let before = cache.get("c", "a").unwrap_err();
        cache.begin_write([("c", "a")]);
        // A read taken while the commit is in flight (it may see the old version).
        let during = cache.get("c", "a").unwrap_err();
        cache.insert(during, &entry("a", "{\"old\":true}"));
        assert!(
            cache.get("c", "a").is_err(),
            "nothing is cached while being written"
        );
        cache.end_write(Vec::new());
        cache.insert(before, &entry("a", "{\"old\":true}"));
        cache.insert(during, &entry("a", "{\"old\":true}"));
        assert!(
            cache.get("c", "a").is_err(),
            "reads that raced the commit are not cached"
        );

        let after = cache.get("c", "a").unwrap_err();
        cache.insert(after, &entry("a", "{}"));
        assert_eq!(cache.get("c", "a").unwrap().document, "{}");
        cache.begin_write([("c", "a")]);
        assert!(cache.get("c", "a").is_err(), "a write invalidates");
        cache.end_write(Vec::new());
    }

    #[test]
    fn committed_versions_are_cached_and_failed_commits_cache_nothing() {
        let cache = DocumentCache::new(1 << 20);
        cache.begin_write([("c", "a")]);
        cache.end_write(vec![entry("a", "{\"v\":2}")]);
        assert_eq!(cache.get("c", "a").unwrap().document, "{\"v\":2}");
        cache.begin_write([("c", "a")]);
        cache.end_write(Vec::new());
        assert!(cache.get("c", "a").is_err());
    }

    #[test]
    fn a_committed_version_replaces_the_cached_one_in_place() {
        let cache = DocumentCache::new(1 << 20);
        for id in ["a", "b"] {
            let ticket = cache.get("c", id).unwrap_err();
            cache.insert(ticket, &entry(id, "{\"v\":1}"));
        }
        cache.begin_write([("c", "a"), ("c", "b")]);
        assert!(
            cache.get("c", "a").is_err(),
            "the old version is not served"
        );
        // "b" was written in a form the writer does not cache.
        cache.end_write(vec![entry("a", "{\"v\":2,\"longer\":true}")]);
        assert_eq!(
            cache.get("c", "a").unwrap().document,
            "{\"v\":2,\"longer\":true}"
        );
        assert!(
            cache.get("c", "b").is_err(),
            "a marked document without a new version leaves"
        );
        let state = cache.state();
        assert_eq!(
            state.bytes,
            entry_size(&entry("a", "{\"v\":2,\"longer\":true}"))
        );
        assert_eq!(state.entries.len(), 1);
        assert!(state.writing.is_empty());
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = DocumentCache::new(4 * (ENTRY_OVERHEAD + 100));
        for n in 0..100 {
            let ticket = cache.get("c", &n.to_string()).unwrap_err();
            cache.insert(ticket, &entry(&n.to_string(), &"x".repeat(90)));
        }
        let state = cache.state();
        assert!(state.bytes <= cache.capacity_bytes);
        assert!(state.entries.len() >= 3);
        drop(state);
        assert!(cache.get("c", "99").is_ok(), "the most recent entry stays");
        assert!(cache.get("c", "0").is_err(), "the oldest entry went");
    }

    /// Caches `count` entries of about `ENTRY_OVERHEAD + 100` bytes named
    /// `prefix0…` in `cache`, as a reader would.
    fn fill(cache: &DocumentCache, prefix: &str, count: usize) {
        for n in 0..count {
            let id = format!("{prefix}{n}");
            let ticket = cache.get("c", &id).unwrap_err();
            cache.insert(ticket, &entry(&id, &"x".repeat(100 - id.len())));
        }
    }

    fn cached(cache: &DocumentCache) -> usize {
        cache.state().entries.len()
    }

    #[test]
    fn caches_sharing_a_budget_hold_at_most_its_bytes_together() {
        let size = entry_size(&entry("a0", &"x".repeat(98)));
        let budget = CacheBudget::new(10 * size);
        // Each cache alone could hold the whole budget and more.
        let first = DocumentCache::shared(1 << 20, Some(&budget));
        let second = DocumentCache::shared(1 << 20, Some(&budget));
        fill(&first, "a", 10);
        assert_eq!(budget.used_bytes(), 10 * size);
        assert_eq!(cached(&first), 10);
        for n in 0..10 {
            fill(&second, &format!("b{n}-"), 1);
            assert!(
                budget.used_bytes() <= budget.capacity_bytes(),
                "{budget:?} after {n}"
            );
        }
        // The largest gave way until both held about the same.
        assert_eq!(cached(&first) + cached(&second), 10);
        assert!(
            cached(&first).abs_diff(cached(&second)) <= 1,
            "{} and {}",
            cached(&first),
            cached(&second)
        );
        // The first cache's most recent entries stayed.
        assert!(first.get("c", "a9").is_ok());
        assert!(first.get("c", "a0").is_err());
        assert_eq!(
            budget.used_bytes(),
            first.state().bytes + second.state().bytes
        );
    }

    #[test]
    fn committed_versions_count_against_the_budget_and_evictions_are_handed_back() {
        let size = entry_size(&entry("a0", &"x".repeat(98)));
        let budget = CacheBudget::new(4 * size);
        let reader = DocumentCache::shared(1 << 20, Some(&budget));
        let writer = DocumentCache::shared(1 << 20, Some(&budget));
        fill(&reader, "a", 4);
        let ids: Vec<String> = (0..3).map(|n| format!("w{n}")).collect();
        writer.begin_write(ids.iter().map(|id| ("c", id.as_str())));
        let handed_back = writer.end_write(
            ids.iter()
                .map(|id| entry(id, &"x".repeat(100 - id.len())))
                .collect(),
        );
        assert!(budget.used_bytes() <= budget.capacity_bytes(), "{budget:?}");
        assert_eq!(cached(&writer), 3, "the new versions are cached");
        assert_eq!(cached(&reader), 1);
        assert_eq!(handed_back.len(), 3, "the evicted entries are handed back");
    }

    #[test]
    fn a_closed_cache_gives_its_bytes_back_to_the_budget() {
        let budget = CacheBudget::new(1 << 20);
        let first = DocumentCache::shared(1 << 20, Some(&budget));
        let second = DocumentCache::shared(1 << 20, Some(&budget));
        fill(&first, "a", 5);
        fill(&second, "b", 3);
        let second_bytes = second.state().bytes;
        drop(first);
        assert_eq!(budget.used_bytes(), second_bytes);
        drop(second);
        assert_eq!(budget.used_bytes(), 0);
        // A budget smaller than an entry's quarter caches nothing.
        let tiny = CacheBudget::new(100);
        let cache = DocumentCache::shared(1 << 20, Some(&tiny));
        fill(&cache, "t", 3);
        assert_eq!(cached(&cache), 0);
        assert_eq!(tiny.used_bytes(), 0);
    }
}
