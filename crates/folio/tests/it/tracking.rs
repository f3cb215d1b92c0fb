//! Tracking: the identity map and its round trips, `load_mut` dirty
//! tracking, the three `Tracking` modes, evict/clear, what `metadata_for`
//! knows, read-only sessions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use folio::testing::{Wrapper, wrap};
use folio::{
    Batch, CommandKind, ConcurrencyError, Document, DocumentStore, EngineRef, Entry, Error,
    Expectation, Metadata, Query, SessionOptions, Tracking,
};
use serde::{Deserialize, Serialize};

use crate::harness::{Account, Harness, Note, Person, conflicts, seed};

conformance!(
    loading_twice_is_one_round_trip,
    load_many_is_one_round_trip,
    load_sees_the_sessions_unsaved_writes,
    queried_documents_join_the_identity_map,
    load_mut_saves_only_what_changed,
    dirty_tracking_skips_unchanged_documents_but_keeps_their_check,
    lightweight_tracking_reads_from_the_engine_every_time,
    identity_map_keeps_the_first_read,
    evict_and_clear_forget_what_was_read,
    metadata_is_what_the_session_knows,
    query_session_reads,
    load_mut_refuses_a_second_type_for_one_document,
    dirty_tracking_a_saved_session_starts_clean,
    lightweight_load_returns_what_is_stored,
);

// ---- an engine that counts round trips ----------------------------------------

/// Delegates to the test's engine and counts the calls.
struct Counting {
    inner: EngineRef,
    gets: AtomicUsize,
    fetched_ids: AtomicUsize,
    metadata: AtomicUsize,
    queries: AtomicUsize,
    batches: Mutex<Vec<Batch>>,
}

impl Counting {
    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    fn fetched_ids(&self) -> usize {
        self.fetched_ids.load(Ordering::SeqCst)
    }

    fn metadata_calls(&self) -> usize {
        self.metadata.load(Ordering::SeqCst)
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn commits(&self) -> usize {
        self.batches.lock().unwrap().len()
    }

    /// The commands of the last commit: (kind, id).
    fn last_batch(&self) -> Vec<(&'static str, String)> {
        let batches = self.batches.lock().unwrap();
        let batch = batches.last().expect("a commit happened");
        batch
            .commands
            .iter()
            .map(|command| {
                let kind = match command.kind {
                    CommandKind::Put { .. } => "put",
                    CommandKind::Delete => "delete",
                    CommandKind::Check => "check",
                };
                (kind, command.id.clone())
            })
            .collect()
    }

    fn reset(&self) {
        self.gets.store(0, Ordering::SeqCst);
        self.fetched_ids.store(0, Ordering::SeqCst);
        self.metadata.store(0, Ordering::SeqCst);
        self.queries.store(0, Ordering::SeqCst);
        self.batches.lock().unwrap().clear();
    }
}

#[async_trait::async_trait]
impl Wrapper for Counting {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(
        &self,
        batch: Batch,
    ) -> folio::Result<Result<folio::Committed, ConcurrencyError>> {
        self.batches.lock().unwrap().push(batch.clone());
        self.inner.commit(batch).await
    }

    async fn get(&self, collection: &str, ids: &[String]) -> folio::Result<Vec<Option<Entry>>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.fetched_ids.fetch_add(ids.len(), Ordering::SeqCst);
        self.inner.get(collection, ids).await
    }

    async fn metadata(
        &self,
        collection: &str,
        ids: &[String],
    ) -> folio::Result<Vec<Option<Metadata>>> {
        self.metadata.fetch_add(1, Ordering::SeqCst);
        self.inner.metadata(collection, ids).await
    }

    async fn query(&self, query: &Query) -> folio::Result<Vec<Entry>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.inner.query(query).await
    }
}

/// A store over a counting wrapper of the test's engine, and a plain store
/// on the same database for "someone else".
async fn counted(h: &Harness) -> (Arc<Counting>, DocumentStore, DocumentStore) {
    let inner = h.store().await.engine().clone();
    let counting = Arc::new(Counting {
        inner: inner.clone(),
        gets: AtomicUsize::new(0),
        fetched_ids: AtomicUsize::new(0),
        metadata: AtomicUsize::new(0),
        queries: AtomicUsize::new(0),
        batches: Mutex::new(Vec::new()),
    });
    let store = DocumentStore::from_engine(wrap(counting.clone()));
    let others = DocumentStore::from_engine(inner);
    (counting, store, others)
}

fn people() -> Vec<Person> {
    vec![
        Person::new("people/1", "Ada"),
        Person::new("people/2", "Alan"),
        Person::new("people/3", "Grace"),
    ]
}

async fn stored_person(store: &DocumentStore, id: &str) -> Option<Person> {
    store.open_session().load::<Person>(id).await.unwrap()
}

async fn stored_metadata(store: &DocumentStore, id: &str) -> Option<Metadata> {
    store
        .open_session()
        .metadata_for::<Person>(id)
        .await
        .unwrap()
}

/// Someone else renames a person (a blind write in another session).
async fn rename_elsewhere(others: &DocumentStore, id: &str, name: &str) {
    seed(others, vec![Person::new(id, name)]).await;
}

fn session_with(store: &DocumentStore, tracking: Tracking) -> folio::Session {
    store.open_session_with(SessionOptions {
        tracking,
        ..SessionOptions::default()
    })
}

// ---- the identity map -------------------------------------------------------------

async fn loading_twice_is_one_round_trip(h: Harness) {
    let (counting, store, _) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut session = store.open_session();
    let first = session.load::<Person>("people/1").await.unwrap().unwrap();
    let second = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(first.name, "Ada");
    assert!(first.change_vector.is_some());
    assert_eq!(first.revision, 1);
    let third = session.load_many::<Person>(&["people/1"]).await.unwrap();
    assert_eq!(third, [Some(first.clone())]);
    assert_eq!(counting.gets(), 1, "one round trip for one id");

    // A missing document is remembered as missing.
    assert!(
        session
            .load::<Person>("people/404")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        session
            .load::<Person>("people/404")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(counting.gets(), 2);

    // The identity map belongs to the session.
    let mut other = store.open_session();
    assert_eq!(other.load::<Person>("people/1").await.unwrap(), Some(first));
    assert_eq!(counting.gets(), 3);

    // The same id in another collection is another document.
    assert!(session.load::<Note>("people/1").await.unwrap().is_none());
    assert_eq!(counting.gets(), 4);
}

async fn load_many_is_one_round_trip(h: Harness) {
    let (counting, store, _) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut session = store.open_session();
    let loaded = session
        .load_many::<Person>(&["people/1", "people/404", "people/2", "people/1"])
        .await
        .unwrap();
    let names: Vec<Option<&str>> = loaded
        .iter()
        .map(|person| person.as_ref().map(|p| p.name.as_str()))
        .collect();
    assert_eq!(names, [Some("Ada"), None, Some("Alan"), Some("Ada")]);
    assert_eq!(counting.gets(), 1, "one round trip");
    assert_eq!(counting.fetched_ids(), 3, "each id fetched once");

    // Only what the session does not know yet is fetched.
    let loaded = session
        .load_many::<Person>(&["people/2", "people/3", "people/404"])
        .await
        .unwrap();
    assert_eq!(loaded[1].as_ref().unwrap().name, "Grace");
    assert!(loaded[2].is_none());
    assert_eq!((counting.gets(), counting.fetched_ids()), (2, 4));

    // Nothing to fetch, nothing sent.
    assert!(session.load_many::<Person>(&[]).await.unwrap().is_empty());
    assert_eq!(counting.gets(), 2);

    // A bad id fails before any round trip.
    match session.load_many::<Person>(&["people/5", ""]).await {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("an empty id must be InvalidInput, got {other:?}"),
    }
    assert_eq!(counting.gets(), 2);
}

async fn load_sees_the_sessions_unsaved_writes(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut session = store.open_session();
    // A new document stored in the session: no round trip.
    session.store(Person::new("people/9", "New")).unwrap();
    let new = session.load::<Person>("people/9").await.unwrap().unwrap();
    assert_eq!(new.name, "New");
    assert_eq!(new.change_vector, None, "not saved yet: no version");
    assert_eq!(counting.gets(), 0);

    // A loaded document, then changed and stored: the change is what loads see.
    let mut grace = session.load::<Person>("people/3").await.unwrap().unwrap();
    grace.name = "Grace Hopper".into();
    session.store(grace).unwrap();
    assert_eq!(
        session
            .load::<Person>("people/3")
            .await
            .unwrap()
            .unwrap()
            .name,
        "Grace Hopper"
    );

    // Deleted in the session: gone for the session, loaded or not.
    assert!(session.load::<Person>("people/1").await.unwrap().is_some());
    session.delete::<Person>("people/1").unwrap();
    assert!(session.load::<Person>("people/1").await.unwrap().is_none());
    session.delete::<Person>("people/2").unwrap();
    assert!(session.load::<Person>("people/2").await.unwrap().is_none());
    let many = session
        .load_many::<Person>(&["people/1", "people/2", "people/3", "people/9"])
        .await
        .unwrap();
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    assert_eq!(
        counting.gets(),
        2,
        "people/3 and people/1 were fetched once each"
    );
    assert!(
        session
            .load_mut::<Person>("people/1")
            .await
            .unwrap()
            .is_none()
    );

    // Nothing is written before save_changes.
    assert_eq!(
        stored_person(&others, "people/1").await.unwrap().name,
        "Ada"
    );
    assert!(stored_person(&others, "people/9").await.is_none());
    assert_eq!(
        stored_person(&others, "people/3").await.unwrap().name,
        "Grace"
    );

    session.save_changes().await.unwrap();
    assert!(stored_person(&others, "people/1").await.is_none());
    assert!(stored_person(&others, "people/2").await.is_none());
    assert_eq!(
        stored_person(&others, "people/3").await.unwrap().name,
        "Grace Hopper"
    );
    assert_eq!(
        stored_person(&others, "people/9").await.unwrap().name,
        "New"
    );
}

async fn queried_documents_join_the_identity_map(h: Harness) {
    let (counting, store, _) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut session = store.open_session();
    let found = session
        .query::<Person>()
        .where_op("name", folio::Op::StartsWith, "A")
        .to_list()
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(counting.queries(), 1);
    let ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(ada, found[0]);
    assert_eq!(
        counting.gets(),
        0,
        "a queried document is known to the session"
    );

    // A document deleted in the session is left out of query results.
    session.delete::<Person>("people/2").unwrap();
    let found = session.query::<Person>().to_list().await.unwrap();
    let ids: Vec<&str> = found.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["people/1", "people/3"]);

    // Without an identity map, loads go to the engine even after a query.
    let mut light = session_with(&store, Tracking::Lightweight);
    let _ = light.query::<Person>().to_list().await.unwrap();
    let _ = light.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(counting.gets(), 1);
}

// ---- load_mut ---------------------------------------------------------------------

async fn load_mut_saves_only_what_changed(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    let before_2 = stored_metadata(&others, "people/2").await.unwrap();
    counting.reset();

    let mut session = store.open_session();
    session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap()
        .name = "Ada Lovelace".into();
    let alan = session
        .load_mut::<Person>("people/2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alan.name, "Alan");
    assert!(
        session
            .load_mut::<Person>("people/404")
            .await
            .unwrap()
            .is_none()
    );
    assert!(session.has_changes().unwrap());
    session.save_changes().await.unwrap();

    assert_eq!(counting.commits(), 1);
    assert_eq!(
        counting.last_batch(),
        [("put", "people/1".to_owned())],
        "only the changed document is written"
    );
    let ada = stored_person(&others, "people/1").await.unwrap();
    assert_eq!((ada.name.as_str(), ada.revision), ("Ada Lovelace", 2));
    assert_eq!(
        stored_metadata(&others, "people/2").await.unwrap(),
        before_2,
        "the unchanged document keeps its version"
    );

    // The value the session holds now carries the new version, so a second
    // change in the same session saves too.
    let held = session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.change_vector, ada.change_vector);
    assert_eq!(held.revision, 2);
    held.age = 36;
    assert!(session.has_changes().unwrap());
    session.save_changes().await.unwrap();
    let ada = stored_person(&others, "people/1").await.unwrap();
    assert_eq!((ada.age, ada.revision), (36, 3));
    assert_eq!(
        counting.gets(),
        3,
        "people/1, people/2 and people/404, once each"
    );

    // Unchanged values: nothing to save, nothing sent.
    let mut idle = store.open_session();
    let _ = idle.load_mut::<Person>("people/1").await.unwrap().unwrap();
    let held = idle.load_mut::<Person>("people/3").await.unwrap().unwrap();
    held.name = "Grace".into(); // the same value
    assert!(!idle.has_changes().unwrap());
    let commits = counting.commits();
    idle.save_changes().await.unwrap();
    assert_eq!(counting.commits(), commits);
    assert_eq!(
        stored_person(&others, "people/1").await.unwrap().revision,
        3
    );
    assert_eq!(
        stored_person(&others, "people/3").await.unwrap().revision,
        1
    );
}

async fn load_mut_refuses_a_second_type_for_one_document(h: Harness) {
    let store = h.store().await;
    seed(&store, people()).await;

    let mut session = store.open_session();
    session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap()
        .name = "Ada Lovelace".into();
    match session.load_mut::<PersonCard>("people/1").await {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("Person"), "{message}");
            assert!(message.contains("PersonCard"), "{message}");
        }
        other => panic!("a second type for one document must be InvalidInput, got {other:?}"),
    }
    // Other documents of the collection load as either type.
    let card = session
        .load_mut::<PersonCard>("people/2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(card.name, "Alan");

    // The session is intact: the change made through the first type is saved.
    let held = session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.name, "Ada Lovelace");
    session.save_changes().await.unwrap();
    assert_eq!(
        stored_person(&store, "people/1").await.unwrap().name,
        "Ada Lovelace"
    );
}

/// A second view of the `people` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(collection = "people")]
pub struct PersonCard {
    pub id: String,
    pub name: String,
}

// ---- the tracking modes -----------------------------------------------------------

async fn dirty_tracking_skips_unchanged_documents_but_keeps_their_check(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    seed(&store, vec![Note::new("notes/1", "mine")]).await;
    let before = stored_metadata(&others, "people/1").await.unwrap();
    counting.reset();

    // Unchanged: nothing written, the version is unchanged.
    let mut session = session_with(&store, Tracking::DirtyTracking);
    let ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    session.store(ada).unwrap();
    assert!(!session.has_changes().unwrap());
    session.save_changes().await.unwrap();
    assert_eq!(stored_metadata(&others, "people/1").await.unwrap(), before);
    assert!(
        counting
            .last_batch()
            .iter()
            .all(|(kind, _)| *kind == "check"),
        "at most a check is sent: {:?}",
        counting.last_batch()
    );

    // Changed: written as usual.
    let mut alan = session.load::<Person>("people/2").await.unwrap().unwrap();
    alan.age = 41;
    session.store(alan).unwrap();
    assert!(session.has_changes().unwrap());
    session.save_changes().await.unwrap();
    assert_eq!(
        stored_person(&others, "people/2").await.unwrap().revision,
        2
    );

    // The identity map alone writes every store, changed or not.
    let mut plain = store.open_session();
    let ada = plain.load::<Person>("people/1").await.unwrap().unwrap();
    plain.store(ada).unwrap();
    assert!(plain.has_changes().unwrap());
    plain.save_changes().await.unwrap();
    let current = stored_metadata(&others, "people/1").await.unwrap();
    assert_eq!(current.revision, 2);

    // Unchanged but stale: still checked, so the save is refused.
    let mut session = session_with(&store, Tracking::DirtyTracking);
    let stale = session.load::<Person>("people/1").await.unwrap().unwrap();
    rename_elsewhere(&others, "people/1", "Ada King").await;
    session.store(stale).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id(), "people/1");
    assert_eq!(
        found[0].expected(),
        &Expectation::version(current.change_vector.clone())
    );
    let now = stored_person(&others, "people/1").await.unwrap();
    assert_eq!(now.name, "Ada King");
    assert_eq!(found[0].actual(), now.change_vector.as_ref());

    // Unchanged, stale and unchecked (Note has no opt-in): nothing is
    // written, so the other write is not overwritten with the stale copy.
    let mut session = session_with(&store, Tracking::DirtyTracking);
    let note = session.load::<Note>("notes/1").await.unwrap().unwrap();
    seed(&others, vec![Note::new("notes/1", "theirs")]).await;
    session.store(note).unwrap();
    session.save_changes().await.unwrap();
    let stored = others
        .open_session()
        .load::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.text, "theirs");
}

/// A store that dirty tracking skipped (unchanged) is settled by the save:
/// later saves of the session do not re-send its old check.
async fn dirty_tracking_a_saved_session_starts_clean(h: Harness) {
    let store = h.store().await;
    seed(&store, people()).await;

    let mut session = session_with(&store, Tracking::DirtyTracking);
    let ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    session.store(ada).unwrap();
    session.save_changes().await.unwrap();
    assert!(!session.has_changes().unwrap());

    // The store of people/1 was handled by that save. A later change of
    // people/1 elsewhere does not concern the session's next save, which
    // writes people/2 only.
    rename_elsewhere(&store, "people/1", "Ada King").await;
    let mut alan = session.load::<Person>("people/2").await.unwrap().unwrap();
    alan.age = 41;
    session.store(alan).unwrap();
    session
        .save_changes()
        .await
        .expect("the saved, unchanged people/1 is not checked again");
    assert_eq!(stored_person(&store, "people/2").await.unwrap().age, 41);
    assert_eq!(
        stored_person(&store, "people/1").await.unwrap().name,
        "Ada King"
    );
}

async fn lightweight_tracking_reads_from_the_engine_every_time(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    seed(&store, vec![account("a1", 10)]).await;
    counting.reset();

    let mut session = session_with(&store, Tracking::Lightweight);
    let first = session.load::<Person>("people/1").await.unwrap().unwrap();
    let _ = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(counting.gets(), 2, "every load is a round trip");
    let _ = session
        .load_many::<Person>(&["people/1", "people/2"])
        .await
        .unwrap();
    assert_eq!(counting.gets(), 3);

    // Others' writes are seen.
    rename_elsewhere(&others, "people/1", "Ada Lovelace").await;
    let fresh = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(fresh.name, "Ada Lovelace");
    assert_ne!(fresh.change_vector, first.change_vector);
    assert_eq!(fresh.revision, 2);

    // The last read wins: read, someone writes, read again, save: accepted
    // (Account has no change-vector field: only the session knows what was
    // read).
    let _ = session.load::<Account>("a1").await.unwrap().unwrap();
    seed(&others, vec![account("a1", 99)]).await;
    let mut current = session.load::<Account>("a1").await.unwrap().unwrap();
    assert_eq!(current.balance, 99);
    current.balance = 100;
    session.store(current).unwrap();
    session.save_changes().await.unwrap();
    assert_eq!(stored_account(&others, "a1").await.balance, 100);

    // Versions are still tracked: a copy gone stale is refused.
    let mut stale = session.load::<Account>("a1").await.unwrap().unwrap();
    assert_eq!(stale.balance, 100);
    seed(&others, vec![account("a1", 5)]).await;
    stale.balance = 200;
    session.store(stale).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id(), "a1");
    assert_eq!(stored_account(&others, "a1").await.balance, 5);
}

/// With `Tracking::Lightweight`, load and query return what is stored, not
/// the session's queued writes.
async fn lightweight_load_returns_what_is_stored(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![account("a1", 10)]).await;
    let mut session = session_with(&store, Tracking::Lightweight);
    let mut mine = session.load::<Account>("a1").await.unwrap().unwrap();
    mine.balance = 20;
    session.store(mine).unwrap();
    // "No identity map: every load and query goes to the engine and
    // returns what is stored" (Tracking::Lightweight).
    let loaded = session.load::<Account>("a1").await.unwrap().unwrap();
    assert_eq!(loaded.balance, 10);
    let queried = session.query::<Account>().single().await.unwrap();
    assert_eq!(queried.balance, 10);
    // The queued write is still saved.
    session.save_changes().await.unwrap();
    assert_eq!(stored_account(&store, "a1").await.balance, 20);
}

fn account(id: &str, balance: i64) -> Account {
    Account {
        id: id.into(),
        balance,
    }
}

async fn stored_account(store: &DocumentStore, id: &str) -> Account {
    store
        .open_session()
        .load::<Account>(id)
        .await
        .unwrap()
        .expect("the account exists")
}

async fn identity_map_keeps_the_first_read(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, vec![account("a1", 10)]).await;
    counting.reset();

    let mut session = store.open_session();
    let mut mine = session.load::<Account>("a1").await.unwrap().unwrap();
    seed(&others, vec![account("a1", 99)]).await;
    // Loading again does not refresh the session's copy or its expectation.
    let again = session.load::<Account>("a1").await.unwrap().unwrap();
    assert_eq!(again.balance, 10);
    assert_eq!(counting.gets(), 1);
    mine.balance = 20;
    session.store(mine).unwrap();
    let found = conflicts(session.save_changes().await);
    assert_eq!(found[0].id(), "a1");
    assert_eq!(found[0].type_name(), "Account");
}

async fn evict_and_clear_forget_what_was_read(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    let accounts = |balance| vec![account("a1", balance), account("a2", balance)];
    seed(&store, accounts(10)).await;
    counting.reset();

    // evict: the stale document is read again and saves fine.
    let mut session = store.open_session();
    let _ = session.load::<Account>("a1").await.unwrap().unwrap();
    seed(&others, accounts(50)).await;
    session.evict::<Account>("a1");
    let mut fresh = session.load::<Account>("a1").await.unwrap().unwrap();
    assert_eq!(fresh.balance, 50);
    assert_eq!(counting.gets(), 2, "evicted: loaded again");
    fresh.balance = 60;
    session.store(fresh).unwrap();
    session.save_changes().await.unwrap();

    // With a change-vector field too.
    let stale = session.load::<Person>("people/1").await.unwrap().unwrap();
    rename_elsewhere(&others, "people/1", "Ada King").await;
    session.evict::<Person>("people/1");
    let mut fresh = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_ne!(fresh.change_vector, stale.change_vector);
    fresh.age = 36;
    session.store(fresh).unwrap();
    session.save_changes().await.unwrap();
    let stored = stored_person(&others, "people/1").await.unwrap();
    assert_eq!((stored.name.as_str(), stored.age), ("Ada King", 36));

    // evict forgets queued writes.
    session.store(Person::new("people/9", "Never")).unwrap();
    session.delete::<Person>("people/2").unwrap();
    session.evict::<Person>("people/9");
    session.evict::<Person>("people/2");
    assert!(!session.has_changes().unwrap());
    session.save_changes().await.unwrap();
    assert!(stored_person(&others, "people/9").await.is_none());
    assert!(stored_person(&others, "people/2").await.is_some());

    // clear: everything is forgotten, then read again in one round trip.
    let mut session = store.open_session();
    let _ = session.load_many::<Account>(&["a1", "a2"]).await.unwrap();
    session.store(Person::new("people/9", "Never")).unwrap();
    seed(&others, accounts(70)).await;
    session.clear();
    assert!(!session.has_changes().unwrap());
    counting.reset();
    let mut fresh = session.load_many::<Account>(&["a1", "a2"]).await.unwrap();
    assert_eq!(counting.gets(), 1);
    for loaded in &mut fresh {
        let loaded = loaded.as_mut().unwrap();
        assert_eq!(loaded.balance, 70);
        loaded.balance += 1;
    }
    for loaded in fresh {
        session.store(loaded.unwrap()).unwrap();
    }
    session.save_changes().await.unwrap();
    assert!(stored_person(&others, "people/9").await.is_none());
    let stored = others
        .open_session()
        .load_many::<Account>(&["a1", "a2"])
        .await
        .unwrap();
    assert!(stored.iter().all(|a| a.as_ref().unwrap().balance == 71));
}

// ---- metadata ---------------------------------------------------------------------

async fn metadata_is_what_the_session_knows(h: Harness) {
    let (counting, store, others) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut session = store.open_session();
    let ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    let known = session
        .metadata_for::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(&known.change_vector), ada.change_vector.as_ref());
    assert_eq!(known.id, "people/1");
    assert_eq!(known.collection, "people");
    assert_eq!(known.revision, 1);
    assert!(known.etag > 0);
    assert_eq!(counting.metadata_calls(), 0, "known from the load");
    assert_eq!(
        session
            .change_vector_for::<Person>("people/1")
            .await
            .unwrap(),
        Some(known.change_vector.clone())
    );

    // What the session read, not what is stored now.
    rename_elsewhere(&others, "people/1", "Ada King").await;
    assert_eq!(
        session.metadata_for::<Person>("people/1").await.unwrap(),
        Some(known.clone())
    );
    let stored = stored_metadata(&others, "people/1").await.unwrap();
    assert_ne!(stored.change_vector, known.change_vector);
    assert!(stored.etag > known.etag);
    assert_eq!(stored.revision, 2);
    assert_eq!(counting.metadata_calls(), 0);

    // Unknown to the session: fetched.
    let alan = session
        .change_vector_for::<Person>("people/2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counting.metadata_calls(), 1);
    assert_eq!(
        Some(alan),
        stored_person(&others, "people/2")
            .await
            .unwrap()
            .change_vector
    );
    assert!(
        session
            .metadata_for::<Person>("people/404")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(counting.metadata_calls(), 2);

    // Known missing: no round trip.
    assert!(
        session
            .load::<Person>("people/405")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        session
            .metadata_for::<Person>("people/405")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(counting.metadata_calls(), 2);

    // After a save, the new versions.
    let mut fresh = store.open_session();
    fresh.store(Person::new("people/7", "Seven")).unwrap();
    let mut grace = fresh.load::<Person>("people/3").await.unwrap().unwrap();
    grace.age = 85;
    fresh.store(grace).unwrap();
    fresh.save_changes().await.unwrap();
    counting.reset();
    let seven = fresh
        .metadata_for::<Person>("people/7")
        .await
        .unwrap()
        .unwrap();
    let grace = fresh
        .metadata_for::<Person>("people/3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counting.metadata_calls(), 0);
    assert_eq!(seven.revision, 1);
    assert_eq!(grace.revision, 2);
    assert_eq!(Some(seven), stored_metadata(&others, "people/7").await);
    assert_eq!(Some(grace), stored_metadata(&others, "people/3").await);

    match session.metadata_for::<Person>("").await {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("an empty id must be InvalidInput, got {other:?}"),
    }
}

// ---- read-only sessions ---------------------------------------------------------

async fn query_session_reads(h: Harness) {
    let (counting, store, _) = counted(&h).await;
    seed(&store, people()).await;
    counting.reset();

    let mut reader = store.query_session();
    let ada = reader.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(ada.name, "Ada");
    let again = reader.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(again, ada);
    assert_eq!(
        counting.gets(),
        1,
        "a query session has an identity map too"
    );
    let many = reader
        .load_many::<Person>(&["people/2", "people/404"])
        .await
        .unwrap();
    assert_eq!(many[0].as_ref().unwrap().name, "Alan");
    assert!(many[1].is_none());
    let found = reader
        .query::<Person>()
        .where_op("name", folio::Op::In, serde_json::json!(["Ada", "Grace"]))
        .order_by_desc("name")
        .to_list()
        .await
        .unwrap();
    let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Grace", "Ada"]);
    assert_eq!(reader.query::<Person>().count().await.unwrap(), 3);
    let metadata = reader
        .metadata_for::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(metadata.change_vector), ada.change_vector);
    assert_eq!(
        reader
            .change_vector_for::<Person>("people/3")
            .await
            .unwrap(),
        found[0].change_vector
    );
    reader.evict::<Person>("people/1");
    let _ = reader.load::<Person>("people/1").await.unwrap();
    reader.clear();
    let _ = reader.load::<Person>("people/1").await.unwrap();
    assert_eq!(counting.gets(), 4);
    assert_eq!(counting.commits(), 0, "a query session never writes");
}
