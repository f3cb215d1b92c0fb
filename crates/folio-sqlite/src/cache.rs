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

use std::sync::Mutex;

use folio_core::Entry;
use lru::LruCache;

/// Bytes counted per cached entry beyond its strings (keys, metadata, links).
const ENTRY_OVERHEAD: usize = 160;

pub(crate) struct DocumentCache {
    state: Mutex<State>,
    capacity_bytes: usize,
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
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        DocumentCache {
            state: Mutex::new(State {
                generation: 0,
                entries: LruCache::unbounded(),
                bytes: 0,
                writing: foldhash::HashSet::default(),
            }),
            capacity_bytes,
        }
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
    }

    fn put(&self, state: &mut State, entry: Entry) {
        let size = entry_size(&entry);
        if size > self.capacity_bytes / 4 {
            return;
        }
        let key = key(&entry.metadata.collection, &entry.metadata.id);
        if let Some(previous) = state.entries.put(key, entry) {
            state.bytes -= entry_size(&previous);
        }
        state.bytes += size;
        self.shrink(state);
    }

    /// Evicts the least recently used entries until the budget holds.
    fn shrink(&self, state: &mut State) {
        while state.bytes > self.capacity_bytes {
            match state.entries.pop_lru() {
                Some((_, evicted)) => state.bytes -= entry_size(&evicted),
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
    /// the cache. Returns the versions it replaced or dropped, for the
    /// caller to free when it has time.
    pub(crate) fn end_write(&self, committed: Vec<Entry>) -> Vec<Entry> {
        let mut replaced = Vec::with_capacity(committed.len());
        let mut state = self.state();
        let state = &mut *state;
        state.generation += 1;
        LOOKUP.with_borrow_mut(|buffer| {
            for entry in committed {
                let lookup = write_key(buffer, &entry.metadata.collection, &entry.metadata.id);
                state.writing.remove(lookup);
                let size = entry_size(&entry);
                match state.entries.get_mut(lookup) {
                    Some(cached) if size <= self.capacity_bytes / 4 => {
                        state.bytes = state.bytes - entry_size(cached) + size;
                        replaced.push(std::mem::replace(cached, entry));
                    }
                    Some(_) => {
                        if let Some(old) = state.entries.pop(lookup) {
                            state.bytes -= entry_size(&old);
                            replaced.push(old);
                        }
                    }
                    None => self.put(state, entry),
                }
            }
        });
        for key in state.writing.drain() {
            if let Some(old) = state.entries.pop(&key) {
                state.bytes -= entry_size(&old);
                replaced.push(old);
            }
        }
        self.shrink(state);
        replaced
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
}
