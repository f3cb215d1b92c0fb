//! Conflicts that help: every refused write carries what is stored now
//! (`Conflict::current`), read in the transaction that refused it, for
//! each kind of conflict, in batches of one and of several commands, and
//! in PostgreSQL's groups of one-write batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use folio::testing::{Wrapper, wrap};
use folio::{
    Batch, ConcurrencyChecks, ConflictExt, DocumentStore, EngineRef, Expectation, OnConflict,
    SessionOptions, StoredDocument,
};

use crate::harness::{Harness, Note, Person, conflicts, seed};

conformance!(
    a_stale_version_conflict_carries_the_version_stored_now,
    a_create_conflict_carries_the_document_that_exists,
    a_document_deleted_since_conflicts_with_nothing_stored,
    a_read_guard_conflict_carries_the_version_stored_now,
    every_conflict_of_a_batch_carries_its_own_document,
    conflicts_of_concurrent_one_write_batches_each_carry_their_document,
    a_merging_session_saves_both_sides_changes,
    a_merging_session_is_refused_naming_the_overlaps,
    a_merging_session_merges_again_when_theirs_moves_during_the_merge,
    a_merging_session_does_not_merge_what_is_not_a_changed_document,
);

/// Renames `id` in a session of its own.
async fn rename(store: &DocumentStore, id: &str, name: &str) {
    let mut session = store.open_session();
    let mut person = session
        .load::<Person>(id)
        .await
        .expect("loaded")
        .expect("exists");
    person.name = name.into();
    session.store(person).expect("stored");
    session.save_changes().await.expect("saved");
}

/// The stored document as a JSON value.
fn json(stored: &StoredDocument) -> serde_json::Value {
    serde_json::from_str(&stored.document).expect("a stored document is JSON")
}

async fn a_stale_version_conflict_carries_the_version_stored_now(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("p1", "Ann")]).await;
    let mut mine = store.open_session();
    let mut person = mine.load::<Person>("p1").await.unwrap().unwrap();
    rename(&store, "p1", "Theirs").await;

    person.name = "Mine".into();
    mine.store(person).unwrap();
    let refused = conflicts(mine.save_changes().await);
    let [conflict] = refused.as_slice() else {
        panic!("one conflict: {refused:?}")
    };
    let current = conflict.current().expect("the document exists");
    assert_eq!(Some(&current.change_vector), conflict.actual());
    assert_eq!(current.revision, 2);
    assert_eq!(json(current)["name"], "Theirs");
    // Typed, with its version fields filled.
    let theirs: Person = conflict.current_as().unwrap().expect("exists");
    assert_eq!(theirs.name, "Theirs");
    assert_eq!(theirs.id, "p1");
    assert_eq!(theirs.revision, 2);
    assert_eq!(theirs.change_vector.as_ref(), conflict.actual());
    // It is what a load reads now.
    let loaded = store.open_session().load::<Person>("p1").await.unwrap();
    assert_eq!(loaded, Some(theirs));
}

async fn a_create_conflict_carries_the_document_that_exists(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("p1", "Ann")]).await;
    let mut session = store.open_session();
    session.store_new(Person::new("p1", "Second Ann")).unwrap();
    let refused = conflicts(session.save_changes().await);
    assert_eq!(refused[0].expected(), &Expectation::Missing);
    let current = refused[0].current().expect("it exists");
    assert_eq!(json(current)["name"], "Ann");
    assert_eq!(current.revision, 1);
    assert_eq!(Some(&current.change_vector), refused[0].actual());
}

async fn a_document_deleted_since_conflicts_with_nothing_stored(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Person::new("p1", "Ann"), Person::new("p2", "Bob")],
    )
    .await;
    let mut mine = store.open_session();
    let mut ann = mine.load::<Person>("p1").await.unwrap().unwrap();
    let _ = mine.load::<Person>("p2").await.unwrap().unwrap();
    let mut theirs = store.open_session();
    theirs.delete::<Person>("p1").unwrap();
    theirs.save_changes().await.unwrap();
    rename(&store, "p2", "Robert").await;

    // An update of a deleted document: nothing is stored.
    ann.name = "Annie".into();
    mine.store(ann).unwrap();
    let refused = conflicts(mine.save_changes().await);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].current(), None);
    assert_eq!(refused[0].actual(), None);
    assert!(refused[0].current_as::<Person>().unwrap().is_none());

    // A delete of a changed document: what changed it.
    let mut mine = store.open_session();
    let _ = mine.load::<Person>("p2").await.unwrap().unwrap();
    rename(&store, "p2", "Bobby").await;
    mine.delete::<Person>("p2").unwrap();
    let refused = conflicts(mine.save_changes().await);
    let current = refused[0].current().expect("p2 exists");
    assert_eq!(json(current)["name"], "Bobby");
    assert_eq!(current.revision, 3);
}

async fn a_read_guard_conflict_carries_the_version_stored_now(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("p1", "Ann")]).await;
    seed(&store, vec![Note::new("n1", "read only")]).await;
    let mut session = store.open_session_with(SessionOptions {
        concurrency_checks: ConcurrencyChecks::WritesAndReads,
        ..SessionOptions::default()
    });
    let _ = session.load::<Person>("p1").await.unwrap().unwrap();
    let _ = session.load::<Note>("n1").await.unwrap().unwrap();
    rename(&store, "p1", "Changed").await;

    // Only the note is written; the person was only read.
    session.store(Note::new("n1", "written")).unwrap();
    let refused = conflicts(session.save_changes().await);
    let [conflict] = refused.as_slice() else {
        panic!("one conflict: {refused:?}")
    };
    assert_eq!(conflict.id(), "p1");
    let current = conflict.current().expect("p1 exists");
    assert_eq!(json(current)["name"], "Changed");
    assert_eq!(Some(&current.change_vector), conflict.actual());
}

async fn every_conflict_of_a_batch_carries_its_own_document(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![
            Person::new("p1", "Ann"),
            Person::new("p2", "Bob"),
            Person::new("p3", "Cy"),
        ],
    )
    .await;
    let mut mine = store.open_session();
    let mut loaded = Vec::new();
    for id in ["p1", "p2", "p3"] {
        loaded.push(mine.load::<Person>(id).await.unwrap().unwrap());
    }
    rename(&store, "p1", "Ann 2").await;
    rename(&store, "p3", "Cy 2").await;
    rename(&store, "p3", "Cy 3").await;
    for mut person in loaded {
        person.age = 40;
        mine.store(person).unwrap();
    }
    mine.store_new(Person::new("p4", "New")).unwrap();
    let refused = conflicts(mine.save_changes().await);
    let found: Vec<(&str, String, u64)> = refused
        .iter()
        .map(|conflict| {
            let current = conflict.current().expect("each exists");
            assert_eq!(Some(&current.change_vector), conflict.actual());
            (
                conflict.id(),
                json(current)["name"].as_str().unwrap().to_owned(),
                current.revision,
            )
        })
        .collect();
    assert_eq!(
        found,
        [("p1", "Ann 2".to_owned(), 2), ("p3", "Cy 3".to_owned(), 3)]
    );
    // Nothing of the batch was written.
    let mut check = store.open_session();
    assert!(check.load::<Person>("p4").await.unwrap().is_none());
    assert_eq!(
        check.load::<Person>("p2").await.unwrap().unwrap().revision,
        1
    );
}

async fn conflicts_of_concurrent_one_write_batches_each_carry_their_document(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let mut first = Vec::new();
    for index in 0..16 {
        let id = format!("n{index}");
        let committed = engine
            .commit(Batch::from(vec![Note::put(
                &id,
                "one",
                Expectation::Missing,
            )]))
            .await
            .unwrap()
            .unwrap();
        let folio::CommandResult::Put(metadata) = &committed[0] else {
            panic!("a put")
        };
        first.push(metadata.change_vector.clone());
        engine
            .commit(Batch::from(vec![Note::put(
                &id,
                &format!("two of {id}"),
                Expectation::Any,
            )]))
            .await
            .unwrap()
            .unwrap();
    }
    // Stale writes that arrive together (PostgreSQL commits them as one
    // group), and creates of documents that exist.
    let refused = futures_util::future::join_all(first.iter().enumerate().map(|(index, stale)| {
        let engine = engine.clone();
        let id = format!("n{index}");
        let expect = if index % 2 == 0 {
            Expectation::version(stale.clone())
        } else {
            Expectation::Missing
        };
        async move {
            let verdict = engine
                .commit(Batch::from(vec![Note::put(&id, "mine", expect)]))
                .await
                .unwrap();
            (id, verdict.expect_err("refused"))
        }
    }))
    .await;
    for (id, refusal) in refused {
        let conflict = &refusal.conflicts()[0];
        let current = conflict.current().expect("it exists");
        assert_eq!(json(current)["text"], format!("two of {id}"));
        assert_eq!(current.revision, 2);
        assert_eq!(Some(&current.change_vector), conflict.actual());
    }
}

fn merging(store: &DocumentStore) -> folio::Session {
    store.open_session_with(SessionOptions {
        on_conflict: OnConflict::Merge,
        ..SessionOptions::default()
    })
}

async fn a_merging_session_saves_both_sides_changes(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("p1", "Ann")]).await;
    let mut mine = merging(&store);
    let mut person = mine.load::<Person>("p1").await.unwrap().unwrap();
    rename(&store, "p1", "Theirs").await;

    person.age = 40;
    mine.store(person).unwrap();
    mine.save_changes().await.expect("merged and saved");
    let stored = store
        .open_session()
        .load::<Person>("p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.age, stored.revision),
        ("Theirs", 40, 3)
    );
    // The session knows what it saved: the merge, at its version.
    let known = mine.load::<Person>("p1").await.unwrap().unwrap();
    assert_eq!(known, stored);
    assert!(!mine.has_changes().unwrap());
    // And saves on from there without a conflict.
    let mut again = known;
    again.age = 41;
    mine.store(again).unwrap();
    mine.save_changes().await.unwrap();
}

async fn a_merging_session_is_refused_naming_the_overlaps(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Person::new("p1", "Ann"), Person::new("p2", "Bob")],
    )
    .await;
    let mut mine = merging(&store);
    let mut ann = mine.load::<Person>("p1").await.unwrap().unwrap();
    let mut bob = mine.load::<Person>("p2").await.unwrap().unwrap();
    rename(&store, "p1", "Theirs").await;
    rename(&store, "p2", "Robert").await;

    ann.name = "Mine".into();
    bob.age = 7;
    mine.store(ann).unwrap();
    mine.store(bob).unwrap();
    let refused = conflicts(mine.save_changes().await);
    let overlaps: Vec<(&str, &[String])> = refused
        .iter()
        .map(|conflict| (conflict.id(), conflict.overlaps()))
        .collect();
    assert_eq!(
        overlaps,
        [("p1", &["/name".to_owned()][..]), ("p2", &[][..])]
    );
    assert_eq!(refused[0].current().map(|stored| stored.revision), Some(2));
    // Nothing written, the session as it was.
    let stored = store
        .open_session()
        .load::<Person>("p2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.name.as_str(), stored.age), ("Robert", 0));
    assert!(mine.has_changes().unwrap());
}

/// Writes `name` to person `id` through the inner engine just before the
/// `at`-th commit (counting from 1) goes on.
struct WriteBefore {
    inner: EngineRef,
    commits: AtomicUsize,
    at: usize,
    id: &'static str,
}

#[async_trait::async_trait]
impl Wrapper for WriteBefore {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(
        &self,
        batch: Batch,
    ) -> folio::Result<Result<folio::Committed, folio::ConcurrencyError>> {
        if self.commits.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            let inner = DocumentStore::from_engine(self.inner.clone());
            let mut session = inner.open_session();
            let mut person = session.load::<Person>(self.id).await?.expect("exists");
            person.name = "Moved again".into();
            session.store(person)?;
            session.save_changes().await?;
        }
        self.inner.commit(batch).await
    }
}

async fn a_merging_session_merges_again_when_theirs_moves_during_the_merge(h: Harness) {
    let inner = h.store().await.engine().clone();
    seed(
        &DocumentStore::from_engine(inner.clone()),
        vec![Person::new("p1", "Ann")],
    )
    .await;
    // The merging save's second try (its first merge) meets a newer version.
    let wrapper = Arc::new(WriteBefore {
        inner,
        commits: AtomicUsize::new(0),
        at: 2,
        id: "p1",
    });
    let store = DocumentStore::from_engine(wrap(wrapper.clone()));
    let mut mine = merging(&store);
    let mut person = mine.load::<Person>("p1").await.unwrap().unwrap();
    rename(
        &DocumentStore::from_engine(wrapper.inner.clone()),
        "p1",
        "Theirs",
    )
    .await;
    person.age = 9;
    mine.store(person).unwrap();
    mine.save_changes().await.expect("merged twice");
    assert_eq!(wrapper.commits.load(Ordering::SeqCst), 3);
    let stored = store
        .open_session()
        .load::<Person>("p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.age, stored.revision),
        ("Moved again", 9, 4)
    );
}

async fn a_merging_session_does_not_merge_what_is_not_a_changed_document(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Person::new("p1", "Ann"), Person::new("p2", "Bob")],
    )
    .await;
    // Deleted since: the whole document overlaps.
    let mut mine = merging(&store);
    let mut ann = mine.load::<Person>("p1").await.unwrap().unwrap();
    let mut theirs = store.open_session();
    theirs.delete::<Person>("p1").unwrap();
    theirs.save_changes().await.unwrap();
    ann.age = 3;
    mine.store(ann).unwrap();
    let refused = conflicts(mine.save_changes().await);
    assert_eq!(refused[0].overlaps(), [String::new()]);
    assert!(
        store
            .open_session()
            .load::<Person>("p1")
            .await
            .unwrap()
            .is_none()
    );
    // Created elsewhere: the same.
    let mut mine = merging(&store);
    mine.store_new(Person::new("p2", "Second Bob")).unwrap();
    let refused = conflicts(mine.save_changes().await);
    assert_eq!(refused[0].overlaps(), [String::new()]);
    // A delete of a changed document is refused as without merging.
    let mut mine = merging(&store);
    let _ = mine.load::<Person>("p2").await.unwrap();
    rename(&store, "p2", "Robert").await;
    mine.delete::<Person>("p2").unwrap();
    let refused = conflicts(mine.save_changes().await);
    assert!(refused[0].overlaps().is_empty());
    assert!(matches!(
        store.open_session().load::<Person>("p2").await,
        Ok(Some(_))
    ));
}
