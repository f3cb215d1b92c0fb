//! Writes: the expectation of every put and delete, atomic batches that
//! name every conflict, retrying after a conflict, versions (etag, change
//! vector, revision), generated ids, bad input, and reopening a database.

use std::collections::{HashMap, HashSet};

use folio::{
    Batch, ChangeVector, Command, CommandResult, ConcurrencyChecks, Document, DocumentStore, Error,
    Expectation, Metadata, Session, SessionOptions,
};
use serde::{Deserialize, Serialize};

use crate::harness::{Harness, Note, Person, conflicts, seed};

conformance!(
    store_new_over_an_existing_id_conflicts_and_keeps_the_original,
    new_document_over_an_existing_id_with_checks_on_expects_missing,
    stale_batch_fails_whole_and_lists_every_conflict_in_order,
    deletes_honour_expectations,
    failed_save_fails_again_until_reloaded,
    failed_save_succeeds_after_refresh,
    second_save_in_one_session_does_not_conflict_with_the_first,
    explicit_change_vector_is_checked_even_with_checks_disabled,
    change_vector_and_revision_fields_are_hydrated,
    etags_increase_revisions_count_and_change_vectors_differ,
    empty_id_is_replaced_by_a_time_sortable_ulid,
    bad_input_is_refused_at_the_call_and_nothing_is_written,
    reopening_keeps_documents_and_versions,
    a_refused_insert_leaves_nothing_behind_for_later_writes,
    revisions_count_only_committed_writes_around_refused_batches,
    every_kind_of_put_counts_revisions_across_a_reopen,
    a_key_repeated_in_one_object_is_refused_and_nothing_is_written,
    the_deepest_document_is_written_and_read_back_unchanged,
);

// ---- helpers of this module -------------------------------------------------

/// The document `id` as stored now, read in a fresh session.
async fn stored<T: Document>(store: &DocumentStore, id: &str) -> Option<T> {
    store
        .open_session()
        .load::<T>(id)
        .await
        .expect("a load succeeds")
}

/// The metadata of `id` as stored now, read in a fresh session.
async fn stored_metadata<T: Document>(store: &DocumentStore, id: &str) -> Option<Metadata> {
    store
        .open_session()
        .metadata_for::<T>(id)
        .await
        .expect("reading metadata succeeds")
}

/// Commits one put straight to the engine: its metadata, or its conflicts.
async fn put(store: &DocumentStore, command: Command) -> Result<Metadata, Vec<folio::Conflict>> {
    let verdict = store
        .engine()
        .commit(Batch::from(vec![command]))
        .await
        .expect("the engine answers");
    match verdict {
        Ok(results) => match results.into_iter().next() {
            Some(CommandResult::Put(metadata)) => Ok(metadata),
            other => panic!("a put answers with metadata: {other:?}"),
        },
        Err(error) => Err(error.into_conflicts()),
    }
}

fn session_with(store: &DocumentStore, concurrency_checks: ConcurrencyChecks) -> Session {
    store.open_session_with(SessionOptions {
        concurrency_checks,
        ..SessionOptions::default()
    })
}

/// Asserts that `result` is `Err(Error::InvalidInput(_))`.
#[track_caller]
fn assert_invalid_input<T: std::fmt::Debug>(result: folio::Result<T>, what: &str) {
    assert!(
        matches!(result, Err(Error::InvalidInput(_))),
        "{what}: expected Error::InvalidInput, got {result:?}"
    );
}

// ---- scenarios --------------------------------------------------------------

async fn store_new_over_an_existing_id_conflicts_and_keeps_the_original(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "original")]).await;
    let current = stored_metadata::<Note>(&store, "notes/1").await.unwrap();

    // Note does not opt in to checks: store_new checks regardless.
    let mut session = store.open_session();
    session.store_new(Note::new("notes/1", "impostor")).unwrap();
    let result = session.save_changes().await;
    assert_eq!(
        result.as_ref().unwrap_err().to_string(),
        "Optimistic concurrency check failed for Note #notes/1"
    );
    let conflicts = conflicts(result);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].type_name(), "Note");
    assert_eq!(conflicts[0].collection(), "notes");
    assert_eq!(conflicts[0].id(), "notes/1");
    assert_eq!(conflicts[0].expected(), &Expectation::Missing);
    assert_eq!(conflicts[0].actual(), Some(&current.change_vector));

    let kept = stored::<Note>(&store, "notes/1").await.unwrap();
    assert_eq!(kept.text, "original");
    assert_eq!(
        stored_metadata::<Note>(&store, "notes/1").await.unwrap(),
        current,
        "the refused batch did not touch the stored version"
    );

    // store_new of an id nobody has is accepted.
    let mut session = store.open_session();
    session.store_new(Note::new("notes/2", "new")).unwrap();
    session.save_changes().await.unwrap();
    let created = stored_metadata::<Note>(&store, "notes/2").await.unwrap();
    assert_eq!(created.revision, 1);
}

async fn new_document_over_an_existing_id_with_checks_on_expects_missing(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("people/1", "Ada")]).await;
    let current = stored_metadata::<Person>(&store, "people/1").await.unwrap();

    // Person opts in; the session never read people/1, so it must be new.
    let mut session = store.open_session();
    session.store(Person::new("people/1", "Grace")).unwrap();
    let conflicts = conflicts(session.save_changes().await);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].type_name(), "Person");
    assert_eq!(conflicts[0].id(), "people/1");
    assert_eq!(conflicts[0].expected(), &Expectation::Missing);
    assert_eq!(conflicts[0].actual(), Some(&current.change_vector));

    let kept = stored::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(kept.name, "Ada");
    assert_eq!(kept.revision, 1);
}

async fn stale_batch_fails_whole_and_lists_every_conflict_in_order(h: Harness) {
    let store = h.store().await;
    let ids = ["people/1", "people/2", "people/3"];
    seed(
        &store,
        ids.iter().map(|id| Person::new(id, "original")).collect(),
    )
    .await;

    let mut session = store.open_session();
    let loaded = session.load_many::<Person>(&ids).await.unwrap();
    let read_versions: Vec<ChangeVector> = loaded
        .iter()
        .map(|person| person.as_ref().unwrap().change_vector.clone().unwrap())
        .collect();

    // Someone else changes all three.
    seed(
        &store,
        ids.iter()
            .map(|id| Person::new(id, "changed elsewhere"))
            .collect(),
    )
    .await;

    for person in loaded {
        let mut person = person.unwrap();
        person.name = "changed by the stale session".into();
        session.store(person).unwrap();
    }
    session
        .store(Person::new("people/4", "fresh, no conflict"))
        .unwrap();

    let result = session.save_changes().await;
    let message = result.as_ref().unwrap_err().to_string();
    assert!(
        message.starts_with("Optimistic concurrency check failed for 3 documents"),
        "the message names the count: {message}"
    );
    for id in ids {
        assert!(
            message.contains(&format!("Person #{id}")),
            "the message names {id}: {message}"
        );
    }
    assert!(!message.contains("people/4"), "{message}");

    let conflicts = conflicts(result);
    assert_eq!(
        conflicts.iter().map(|c| c.id()).collect::<Vec<_>>(),
        ids,
        "every conflict, in command order, and only those"
    );
    for (conflict, read) in conflicts.iter().zip(&read_versions) {
        let now = stored_metadata::<Person>(&store, conflict.id())
            .await
            .unwrap();
        assert_eq!(conflict.type_name(), "Person");
        assert_eq!(conflict.expected(), &Expectation::version(read.clone()));
        assert_eq!(conflict.actual(), Some(&now.change_vector));
        assert_ne!(conflict.actual(), Some(read));
    }

    // Nothing of the batch was written, not even the fresh document.
    assert!(stored::<Person>(&store, "people/4").await.is_none());
    for id in ids {
        let person = stored::<Person>(&store, id).await.unwrap();
        assert_eq!(person.name, "changed elsewhere");
        assert_eq!(person.revision, 2);
    }
}

async fn deletes_honour_expectations(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "v1")]).await;
    let v1 = stored_metadata::<Note>(&store, "notes/1")
        .await
        .unwrap()
        .change_vector;
    seed(&store, vec![Note::new("notes/1", "v2")]).await;
    let v2 = stored_metadata::<Note>(&store, "notes/1")
        .await
        .unwrap()
        .change_vector;

    // A stale explicit change vector: refused, the document stays.
    let mut session = store.open_session();
    session
        .delete_with_change_vector::<Note>("notes/1", v1.clone())
        .unwrap();
    let conflicts_stale = conflicts(session.save_changes().await);
    assert_eq!(conflicts_stale.len(), 1);
    assert_eq!(conflicts_stale[0].type_name(), "Note");
    assert_eq!(conflicts_stale[0].id(), "notes/1");
    assert_eq!(conflicts_stale[0].expected(), &Expectation::version(v1));
    assert_eq!(conflicts_stale[0].actual(), Some(&v2));
    assert_eq!(stored::<Note>(&store, "notes/1").await.unwrap().text, "v2");

    // The right change vector: deleted.
    let mut session = store.open_session();
    session
        .delete_with_change_vector::<Note>("notes/1", v2.clone())
        .unwrap();
    session.save_changes().await.unwrap();
    assert!(stored::<Note>(&store, "notes/1").await.is_none());
    assert!(stored_metadata::<Note>(&store, "notes/1").await.is_none());

    // The same change vector once more: the document is gone, so refused
    // with nothing stored.
    let mut session = store.open_session();
    session
        .delete_with_change_vector::<Note>("notes/1", v2.clone())
        .unwrap();
    let conflicts_gone = conflicts(session.save_changes().await);
    assert_eq!(conflicts_gone[0].expected(), &Expectation::version(v2));
    assert_eq!(conflicts_gone[0].actual(), None);

    // A loaded Person (checks on) changed elsewhere: the delete is refused.
    seed(&store, vec![Person::new("people/1", "Ada")]).await;
    let mut session = store.open_session();
    let read = session
        .load::<Person>("people/1")
        .await
        .unwrap()
        .unwrap()
        .change_vector
        .unwrap();
    seed(&store, vec![Person::new("people/1", "Ada, edited")]).await;
    let now = stored_metadata::<Person>(&store, "people/1")
        .await
        .unwrap()
        .change_vector;
    session.delete::<Person>("people/1").unwrap();
    let conflicts_loaded = conflicts(session.save_changes().await);
    assert_eq!(conflicts_loaded.len(), 1);
    assert_eq!(conflicts_loaded[0].type_name(), "Person");
    assert_eq!(conflicts_loaded[0].id(), "people/1");
    assert_eq!(conflicts_loaded[0].expected(), &Expectation::version(read));
    assert_eq!(conflicts_loaded[0].actual(), Some(&now));
    assert_eq!(
        stored::<Person>(&store, "people/1").await.unwrap().name,
        "Ada, edited"
    );

    // Without checks, deleting a document that does not exist is fine.
    let mut session = store.open_session();
    session.delete::<Note>("notes/never-existed").unwrap();
    session.save_changes().await.unwrap();
    assert!(
        stored::<Note>(&store, "notes/never-existed")
            .await
            .is_none()
    );

    // And a delete without checks of an existing document removes it.
    seed(&store, vec![Note::new("notes/2", "doomed")]).await;
    let mut session = store.open_session();
    session.delete::<Note>("notes/2").unwrap();
    session.save_changes().await.unwrap();
    assert!(stored::<Note>(&store, "notes/2").await.is_none());
}

async fn failed_save_fails_again_until_reloaded(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("people/1", "Ada")]).await;

    let mut session = store.open_session();
    let mut ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    seed(
        &store,
        vec![Person::new("people/1", "Ada, edited elsewhere")],
    )
    .await;
    ada.name = "Ada Lovelace".into();
    session.store(ada).unwrap();

    let first = conflicts(session.save_changes().await);
    let second = conflicts(session.save_changes().await);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first, second,
        "a failed save leaves the session as it was: still stale"
    );
    assert_eq!(
        stored::<Person>(&store, "people/1").await.unwrap().name,
        "Ada, edited elsewhere"
    );

    // Forget the stale copy, read the current one, apply the change again.
    session.evict::<Person>("people/1");
    let mut current = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(current.name, "Ada, edited elsewhere");
    assert_eq!(current.change_vector.as_ref(), first[0].actual());
    current.name = "Ada Lovelace".into();
    session.store(current).unwrap();
    session.save_changes().await.unwrap();

    let saved = stored::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(saved.name, "Ada Lovelace");
    assert_eq!(saved.revision, 3);
}

async fn failed_save_succeeds_after_refresh(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "v1")]).await;

    // A session with checks; its pending write is based on a stale read.
    let mut session = session_with(&store, ConcurrencyChecks::Writes);
    let mut note = session.load::<Note>("notes/1").await.unwrap().unwrap();
    seed(&store, vec![Note::new("notes/1", "v2 from elsewhere")]).await;
    note.text = "mine".into();
    session.store(note).unwrap();
    let first = conflicts(session.save_changes().await);
    let second = conflicts(session.save_changes().await);
    assert_eq!(first, second);
    let current = stored_metadata::<Note>(&store, "notes/1").await.unwrap();

    // Refreshing reads the stored version again (the queued write is kept),
    // so the save is now checked against the current version.
    let _ = session
        .advanced()
        .refresh::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.metadata_for::<Note>("notes/1").await.unwrap(),
        Some(current.clone()),
        "after a refresh the session knows the stored version"
    );
    session.save_changes().await.unwrap();
    assert_eq!(
        stored::<Note>(&store, "notes/1").await.unwrap().text,
        "mine"
    );

    // The same with a type that carries its change vector: refresh, apply
    // the change to what refresh returned, store it, save.
    seed(&store, vec![Person::new("people/1", "Ada")]).await;
    let mut session = store.open_session();
    let mut ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    seed(
        &store,
        vec![Person::new("people/1", "Ada, edited elsewhere")],
    )
    .await;
    ada.name = "Ada Lovelace".into();
    session.store(ada).unwrap();
    let _ = conflicts(session.save_changes().await);
    let now = stored_metadata::<Person>(&store, "people/1").await.unwrap();

    let mut refreshed = session
        .advanced()
        .refresh::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refreshed.change_vector.as_ref(), Some(&now.change_vector));
    assert_eq!(refreshed.revision, now.revision);
    refreshed.name = "Ada Lovelace".into();
    session.store(refreshed).unwrap();
    session.save_changes().await.unwrap();
    let saved = stored::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(saved.name, "Ada Lovelace");
    assert_eq!(saved.revision, 3);
}

async fn second_save_in_one_session_does_not_conflict_with_the_first(h: Harness) {
    let store = h.store().await;
    seed(
        &store,
        vec![Person::new("people/1", "v1"), Person::new("people/2", "v1")],
    )
    .await;
    seed(&store, vec![Note::new("notes/1", "v1")]).await;

    // load, change, store, save; load again (the session's copy), change, save.
    let mut session = store.open_session();
    let mut person = session.load::<Person>("people/1").await.unwrap().unwrap();
    person.name = "v2".into();
    session.store(person).unwrap();
    session.save_changes().await.unwrap();
    let mut person = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(person.revision, 2, "the session knows its own save");
    person.name = "v3".into();
    session.store(person).unwrap();
    session
        .save_changes()
        .await
        .expect("the second save is checked against the first one's version");
    let saved = stored::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(saved.name, "v3");
    assert_eq!(saved.revision, 3);

    // The same through load_mut.
    session
        .load_mut::<Person>("people/2")
        .await
        .unwrap()
        .unwrap()
        .name = "v2".into();
    session.save_changes().await.unwrap();
    session
        .load_mut::<Person>("people/2")
        .await
        .unwrap()
        .unwrap()
        .name = "v3".into();
    session.save_changes().await.unwrap();
    let saved = stored::<Person>(&store, "people/2").await.unwrap();
    assert_eq!(saved.name, "v3");
    assert_eq!(saved.revision, 3);

    // A type without a change-vector field, checks on, the caller's own
    // value stored twice: the session's knowledge of its first save counts.
    let mut session = session_with(&store, ConcurrencyChecks::Writes);
    let mut note = session.load::<Note>("notes/1").await.unwrap().unwrap();
    note.text = "v2".into();
    session.store(note.clone()).unwrap();
    session.save_changes().await.unwrap();
    note.text = "v3".into();
    session.store(note).unwrap();
    session.save_changes().await.unwrap();
    assert_eq!(stored::<Note>(&store, "notes/1").await.unwrap().text, "v3");
    assert_eq!(
        stored_metadata::<Note>(&store, "notes/1")
            .await
            .unwrap()
            .revision,
        3
    );
}

async fn explicit_change_vector_is_checked_even_with_checks_disabled(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("people/1", "v1")]).await;
    let v1 = stored_metadata::<Person>(&store, "people/1")
        .await
        .unwrap()
        .change_vector;
    seed(&store, vec![Person::new("people/1", "v2")]).await;
    let v2 = stored_metadata::<Person>(&store, "people/1")
        .await
        .unwrap()
        .change_vector;

    // store_with_change_vector, stale.
    let mut session = session_with(&store, ConcurrencyChecks::Disabled);
    session
        .store_with_change_vector(Person::new("people/1", "stale write"), v1.clone())
        .unwrap();
    let by_argument = conflicts(session.save_changes().await);
    assert_eq!(by_argument.len(), 1);
    assert_eq!(by_argument[0].type_name(), "Person");
    assert_eq!(by_argument[0].id(), "people/1");
    assert_eq!(by_argument[0].expected(), &Expectation::version(v1.clone()));
    assert_eq!(by_argument[0].actual(), Some(&v2));

    // The document's own change-vector field, stale.
    let mut session = session_with(&store, ConcurrencyChecks::Disabled);
    let mut stale = Person::new("people/1", "stale write");
    stale.change_vector = Some(v1.clone());
    session.store(stale).unwrap();
    let by_field = conflicts(session.save_changes().await);
    assert_eq!(by_field.len(), 1);
    assert_eq!(by_field[0].id(), "people/1");
    assert_eq!(by_field[0].expected(), &Expectation::version(v1));
    assert_eq!(by_field[0].actual(), Some(&v2));

    assert_eq!(
        stored::<Person>(&store, "people/1").await.unwrap().name,
        "v2"
    );

    // The current change vector passes the check.
    let mut session = session_with(&store, ConcurrencyChecks::Disabled);
    session
        .store_with_change_vector(Person::new("people/1", "v3"), v2)
        .unwrap();
    session.save_changes().await.unwrap();
    assert_eq!(
        stored::<Person>(&store, "people/1").await.unwrap().name,
        "v3"
    );
}

async fn change_vector_and_revision_fields_are_hydrated(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("people/1", "Ada")]).await;
    seed(&store, vec![Person::new("people/1", "Ada Lovelace")]).await;
    let metadata = stored_metadata::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(metadata.revision, 2);

    // After a load.
    let mut session = store.open_session();
    let loaded = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(loaded.change_vector.as_ref(), Some(&metadata.change_vector));
    assert_eq!(loaded.revision, 2);
    assert_eq!(
        session
            .change_vector_for::<Person>("people/1")
            .await
            .unwrap(),
        Some(metadata.change_vector.clone())
    );

    // After a query.
    let mut session = store.open_session();
    let queried = session
        .query::<Person>()
        .where_eq("name", "Ada Lovelace")
        .to_list()
        .await
        .unwrap();
    assert_eq!(queried.len(), 1);
    assert_eq!(
        queried[0].change_vector.as_ref(),
        Some(&metadata.change_vector)
    );
    assert_eq!(queried[0].revision, 2);

    // On the value held by load_mut, after save_changes.
    let mut session = store.open_session();
    let held = session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.change_vector.as_ref(), Some(&metadata.change_vector));
    held.name = "Countess of Lovelace".into();
    session.save_changes().await.unwrap();
    let saved = stored_metadata::<Person>(&store, "people/1").await.unwrap();
    assert_ne!(saved.change_vector, metadata.change_vector);
    let held = session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.name, "Countess of Lovelace");
    assert_eq!(held.change_vector.as_ref(), Some(&saved.change_vector));
    assert_eq!(held.revision, 3);
}

async fn etags_increase_revisions_count_and_change_vectors_differ(h: Harness) {
    let store = h.store().await;
    let ids = ["notes/a", "notes/b", "notes/c"];
    let mut last_etag = 0u64;
    let mut change_vectors: HashSet<ChangeVector> = HashSet::new();
    let mut revisions: HashMap<&str, u64> = HashMap::new();

    for round in 0..6 {
        // All three in one batch: etags follow command order.
        let mut session = store.open_session();
        for id in ids {
            session
                .store(Note::new(id, &format!("round {round}")))
                .unwrap();
        }
        session.save_changes().await.unwrap();
        for id in ids {
            let metadata = stored_metadata::<Note>(&store, id).await.unwrap();
            assert!(
                metadata.etag > last_etag,
                "round {round}, {id}: etag {} after {last_etag}",
                metadata.etag
            );
            last_etag = metadata.etag;
            assert!(
                change_vectors.insert(metadata.change_vector.clone()),
                "change vector {} seen before",
                metadata.change_vector
            );
            let revision = revisions.entry(id).or_insert(0);
            *revision += 1;
            assert_eq!(metadata.revision, *revision, "round {round}, {id}");
        }

        // One document alone, in its own batch.
        let mut session = store.open_session();
        session
            .store(Note::new("notes/a", &format!("round {round}, again")))
            .unwrap();
        session.save_changes().await.unwrap();
        let metadata = stored_metadata::<Note>(&store, "notes/a").await.unwrap();
        assert!(metadata.etag > last_etag);
        last_etag = metadata.etag;
        assert!(change_vectors.insert(metadata.change_vector));
        *revisions.get_mut("notes/a").unwrap() += 1;
        assert_eq!(metadata.revision, revisions["notes/a"]);

        // Every other round, delete notes/b: the delete takes an etag too,
        // and the next creation starts again at revision 1.
        if round % 2 == 1 {
            let results = store
                .engine()
                .commit(Batch::from(vec![Command::delete(
                    "notes",
                    "notes/b",
                    Expectation::Any,
                )]))
                .await
                .unwrap()
                .unwrap();
            match &results[..] {
                [
                    CommandResult::Deleted {
                        etag: Some(etag), ..
                    },
                ] => {
                    assert!(*etag > last_etag, "delete etag {etag} after {last_etag}");
                    last_etag = *etag;
                }
                other => panic!("expected one applied delete, got {other:?}"),
            }
            assert!(stored_metadata::<Note>(&store, "notes/b").await.is_none());
            revisions.insert("notes/b", 0);
        }
    }

    // Deleting what does not exist changes nothing and takes no etag.
    let results = store
        .engine()
        .commit(Batch::from(vec![Command::delete(
            "notes",
            "notes/missing",
            Expectation::Any,
        )]))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&results[..], [CommandResult::Deleted { etag: None, .. }]),
        "{results:?}"
    );
    let mut session = store.open_session();
    session.store(Note::new("notes/c", "last")).unwrap();
    session.save_changes().await.unwrap();
    let metadata = stored_metadata::<Note>(&store, "notes/c").await.unwrap();
    assert!(metadata.etag > last_etag);
    assert!(change_vectors.insert(metadata.change_vector));
}

async fn empty_id_is_replaced_by_a_time_sortable_ulid(h: Harness) {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let store = h.store().await;
    let mut session = store.open_session();

    let mut first = Note::new("", "first");
    session.store(&mut first).unwrap();
    let mut second = Note::new("", "second");
    session.store(&mut second).unwrap();

    for id in [&first.id, &second.id] {
        assert_eq!(id.len(), 26, "a ULID has 26 characters: {id}");
        assert!(
            id.chars().all(|c| CROCKFORD.contains(c)),
            "a ULID is Crockford base32: {id}"
        );
    }
    assert!(
        first.id < second.id,
        "ids sort in creation order: {} then {}",
        first.id,
        second.id
    );
    session.save_changes().await.unwrap();

    let loaded = stored::<Note>(&store, &first.id).await.unwrap();
    assert_eq!(loaded.id, first.id);
    assert_eq!(loaded.text, "first");
    let loaded = stored::<Note>(&store, &second.id).await.unwrap();
    assert_eq!(loaded.text, "second");
}

/// A hand-written `Document` with a collection name the derive refuses.
#[derive(Debug, Serialize, Deserialize)]
struct BadCollection {
    id: String,
}

impl Document for BadCollection {
    const COLLECTION: &'static str = "bad name";
    const TYPE_NAME: &'static str = "BadCollection";

    fn id(&self) -> &str {
        &self.id
    }

    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

async fn bad_input_is_refused_at_the_call_and_nothing_is_written(h: Harness) {
    let store = h.store().await;
    let longest = "x".repeat(512);
    let too_long = "x".repeat(513);
    let too_many_bytes = "✓".repeat(171); // 171 characters, 513 bytes
    let bad_ids = [
        too_long.as_str(),
        too_many_bytes.as_str(),
        "line\nbreak",
        "nul\0byte",
    ];

    let mut session = store.open_session();
    session.store(Note::new("notes/good", "good")).unwrap();
    for id in bad_ids {
        let what = format!("id {id:?}");
        assert_invalid_input(session.store(Note::new(id, "bad")), &what);
        assert_invalid_input(session.store_new(Note::new(id, "bad")), &what);
        assert_invalid_input(
            session.store_with_change_vector(Note::new(id, "bad"), "A:1-x"),
            &what,
        );
        assert_invalid_input(session.delete::<Note>(id), &what);
        assert_invalid_input(
            session.delete_with_change_vector::<Note>(id, "A:1-x"),
            &what,
        );
        assert_invalid_input(session.load::<Note>(id).await, &what);
        assert_invalid_input(session.load_many::<Note>(&["notes/good", id]).await, &what);
        assert_invalid_input(session.metadata_for::<Note>(id).await, &what);
    }
    // An empty id is refused where no document could give it one.
    assert_invalid_input(session.delete::<Note>(""), "empty id");
    assert_invalid_input(
        session.delete_with_change_vector::<Note>("", "A:1-x"),
        "empty id",
    );
    assert_invalid_input(session.load::<Note>("").await, "empty id");
    assert_invalid_input(session.metadata_for::<Note>("").await, "empty id");

    // A collection name the engine cannot take.
    assert_invalid_input(
        session.store(BadCollection { id: "b1".into() }),
        "bad collection",
    );
    assert_invalid_input(
        session.store_new(BadCollection { id: "b1".into() }),
        "bad collection",
    );
    assert_invalid_input(session.delete::<BadCollection>("b1"), "bad collection");
    assert_invalid_input(session.load::<BadCollection>("b1").await, "bad collection");

    // The longest id is fine; the refused calls queued nothing.
    session.store(Note::new(&longest, "longest id")).unwrap();
    session.save_changes().await.unwrap();
    let stored_ids: Vec<String> = store
        .engine()
        .scan("notes", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.metadata.id)
        .collect();
    assert_eq!(stored_ids, vec!["notes/good".to_owned(), longest.clone()]);
    assert_eq!(
        stored::<Note>(&store, &longest).await.unwrap().text,
        "longest id"
    );

    // The engine refuses bad commands whole: the good put beside them is
    // not written either.
    let engine = store.engine();
    let good = || Command::put("notes", "notes/beside", r#"{"text":"x"}"#, Expectation::Any);
    let bad_commands = [
        (
            "collection with a space",
            Command::put("bad name", "b1", "{}", Expectation::Any),
        ),
        (
            "empty collection",
            Command::put("", "b1", "{}", Expectation::Any),
        ),
        (
            "id with a newline",
            Command::put("notes", "a\nb", "{}", Expectation::Any),
        ),
        ("empty id", Command::delete("notes", "", Expectation::Any)),
        (
            "id too long",
            Command::check("notes", too_long.clone(), Expectation::Missing),
        ),
        (
            "not JSON",
            Command::put("notes", "b1", "not json", Expectation::Any),
        ),
        (
            "not an object",
            Command::put("notes", "b1", "[1, 2]", Expectation::Any),
        ),
    ];
    for (what, bad) in bad_commands {
        let result = engine.commit(Batch::from(vec![good(), bad])).await;
        assert!(
            matches!(result, Err(Error::InvalidInput(_))),
            "{what}: expected Error::InvalidInput, got {result:?}"
        );
    }
    assert_invalid_input(
        engine.get("bad name", &["b1".to_owned()]).await,
        "engine get",
    );
    assert_invalid_input(
        engine.metadata("notes", &["a\0b".to_owned()]).await,
        "engine metadata",
    );
    assert!(stored::<Note>(&store, "notes/beside").await.is_none());
    assert!(stored::<Note>(&store, "b1").await.is_none());
}

/// A type whose serialized form can name a key twice: `extra` is
/// flattened beside `name`.
#[derive(Debug, Serialize, Deserialize, folio::Document)]
#[folio(collection = "notes")]
struct Loose {
    #[folio(id)]
    id: String,
    name: String,
    #[serde(flatten)]
    extra: HashMap<String, serde_json::Value>,
}

async fn a_key_repeated_in_one_object_is_refused_and_nothing_is_written(h: Harness) {
    let store = h.store().await;
    fn refused_naming<T: std::fmt::Debug>(result: folio::Result<T>, key: &str, object: &str) {
        match result {
            Err(Error::InvalidInput(message)) => assert!(
                message.contains(&format!(
                    "the key \"{key}\" twice in the object at {object}"
                )),
                "{message}"
            ),
            other => panic!("a repeated {key:?} must be InvalidInput, got {other:?}"),
        }
    }

    // Through the session: serde writes `name` twice.
    let mut session = store.open_session();
    session
        .store(Loose {
            id: "notes/loose".into(),
            name: "first".into(),
            extra: HashMap::from([("name".to_owned(), serde_json::json!("second"))]),
        })
        .unwrap();
    session.store(Note::new("notes/beside", "x")).unwrap();
    refused_naming(session.save_changes().await, "name", "the top level");

    // Straight to the engine, escaped and nested, beside a good put.
    let engine = store.engine();
    for (document, key, object) in [
        (r#"{"a":1,"\u0061":2}"#, "a", "the top level"),
        (r#"{"list":[{"k":1},{"k":1,"k":2}]}"#, "k", "/list/1"),
    ] {
        let batch = Batch::from(vec![
            Command::put("notes", "notes/beside", r#"{"text":"x"}"#, Expectation::Any),
            Command::put("notes", "notes/repeated", document, Expectation::Any),
        ]);
        refused_naming(engine.commit(batch).await, key, object);
    }
    for id in ["notes/loose", "notes/beside", "notes/repeated"] {
        assert_eq!(
            engine.get("notes", &[id.to_owned()]).await.unwrap(),
            vec![None],
            "{id} was not written"
        );
    }
    // The same key in two objects is fine.
    let verdict = engine
        .commit(Batch::from(vec![Command::put(
            "notes",
            "notes/fine",
            r#"{"a":{"k":1},"b":{"k":2},"k":[{"k":3}]}"#,
            Expectation::Any,
        )]))
        .await
        .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
}

/// A document nesting as deep as allowed is committed (alone and in a
/// batch), read, listed and queried unchanged; one level deeper is
/// refused. The remote engine sends it inside a batch body, which nests
/// deeper than the document.
async fn the_deepest_document_is_written_and_read_back_unchanged(h: Harness) {
    let store = h.store().await;
    let engine = store.engine();
    let limit = folio_core::validate::MAX_NESTING;
    let nested = |depth: usize| {
        format!(
            "{{\"k\":\"deep\",\"a\":{}1{}}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    let deepest = nested(limit);
    let verdict = engine
        .commit(Batch::from(vec![Command::put(
            "notes",
            "notes/alone",
            deepest.as_str(),
            Expectation::Missing,
        )]))
        .await
        .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    let verdict = engine
        .commit(Batch::from(vec![
            Command::put(
                "notes",
                "notes/first",
                r#"{"k":"flat"}"#,
                Expectation::Missing,
            ),
            Command::put(
                "notes",
                "notes/second",
                deepest.as_str(),
                Expectation::Missing,
            ),
        ]))
        .await
        .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    let as_value = |text: &str| -> serde_json::Value {
        folio_core::validate::read_value(text).expect("stored JSON")
    };
    let expected = as_value(&deepest);
    for id in ["notes/alone", "notes/second"] {
        let entry = engine
            .get("notes", &[id.to_owned()])
            .await
            .unwrap()
            .remove(0);
        let entry = entry.unwrap_or_else(|| panic!("{id} is stored"));
        assert_eq!(as_value(&entry.document), expected, "{id}");
    }
    let listed = engine.scan("notes", None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    let queried = engine
        .query(
            &folio::Query::new("notes")
                .filter("k", folio::Op::Eq, "deep")
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(queried.len(), 2);
    for entry in listed
        .iter()
        .filter(|entry| entry.metadata.id != "notes/first")
        .chain(&queried)
    {
        assert_eq!(as_value(&entry.document), expected, "{}", entry.metadata.id);
    }
    let refused = engine
        .commit(Batch::from(vec![Command::put(
            "notes",
            "notes/deeper",
            nested(limit + 1),
            Expectation::Any,
        )]))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidInput(_))),
        "{refused:?}"
    );
}

async fn reopening_keeps_documents_and_versions(h: Harness) {
    if !h.persists() {
        return;
    }
    let store = h.store().await;
    seed(
        &store,
        vec![
            Person::new("people/1", "Ada"),
            Person::new("people/2", "Alan"),
        ],
    )
    .await;
    let mut session = store.open_session();
    session
        .load_mut::<Person>("people/1")
        .await
        .unwrap()
        .unwrap()
        .name = "Ada Lovelace".into();
    session.save_changes().await.unwrap();
    let before = stored_metadata::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(before.revision, 2);
    // The last write before closing is a delete: its etag must survive too.
    let results = store
        .engine()
        .commit(Batch::from(vec![Command::delete(
            "people",
            "people/2",
            Expectation::Any,
        )]))
        .await
        .unwrap()
        .unwrap();
    let [
        CommandResult::Deleted {
            etag: Some(delete_etag),
            ..
        },
    ] = results[..]
    else {
        panic!("expected one applied delete, got {results:?}");
    };
    assert!(delete_etag > before.etag);
    drop(session);
    drop(store);

    // On PostgreSQL: a new engine, as after restarting the application.
    let store = h.reopened().await.open().await.unwrap();
    let mut session = store.open_session();
    let ada = session.load::<Person>("people/1").await.unwrap().unwrap();
    assert_eq!(ada.name, "Ada Lovelace");
    assert_eq!(ada.change_vector.as_ref(), Some(&before.change_vector));
    assert_eq!(ada.revision, 2);
    assert_eq!(
        session.metadata_for::<Person>("people/1").await.unwrap(),
        Some(before.clone())
    );
    assert!(session.load::<Person>("people/2").await.unwrap().is_none());

    // The version read before closing is still the current one, and new
    // writes continue above every etag issued before.
    let mut session = store.open_session();
    session
        .store_with_change_vector(
            Person::new("people/1", "Countess of Lovelace"),
            before.change_vector.clone(),
        )
        .unwrap();
    session.store(Person::new("people/3", "Grace")).unwrap();
    session.save_changes().await.unwrap();
    let after = stored_metadata::<Person>(&store, "people/1").await.unwrap();
    assert_eq!(after.revision, 3);
    assert!(
        after.etag > delete_etag,
        "{} after {delete_etag}",
        after.etag
    );
    assert_ne!(after.change_vector, before.change_vector);
    let grace = stored_metadata::<Person>(&store, "people/3").await.unwrap();
    assert!(grace.etag > delete_etag);
    assert_eq!(grace.revision, 1);
}

/// A document whose insert was refused (its batch conflicted) leaves nothing
/// a later write could touch: the next new document may take its place in
/// storage, an update of the refused one by that document's version
/// conflicts, and the other document keeps its text and version. (The
/// embedded writer remembers where it wrote documents, as a hint; a hint
/// gone stale must change nothing.)
async fn a_refused_insert_leaves_nothing_behind_for_later_writes(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let refused = engine
        .commit(Batch::from(vec![
            Note::put("ghost", "never stored", Expectation::Missing),
            Command::check("notes", "absent", Expectation::version("A:1-x")),
        ]))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "the check fails, so the batch does: {refused:?}"
    );

    let created = engine
        .commit(Batch::from(vec![Note::put(
            "taker",
            "mine",
            Expectation::Missing,
        )]))
        .await
        .unwrap()
        .unwrap();
    let CommandResult::Put(taker) = &created[0] else {
        panic!("a put answers with metadata: {created:?}");
    };
    let overwrite = engine
        .commit(Batch::from(vec![Note::put(
            "ghost",
            "overwrites",
            Expectation::version(taker.change_vector.clone()),
        )]))
        .await
        .unwrap();
    let conflict = overwrite.expect_err("the ghost does not exist");
    assert_eq!(conflict.conflicts().len(), 1);
    assert_eq!(conflict.conflicts()[0].actual(), None);

    let stored = engine
        .get("notes", &["taker".to_owned(), "ghost".to_owned()])
        .await
        .unwrap();
    let taker_now = stored[0].as_ref().expect("the taker is stored");
    assert_eq!(taker_now.metadata.change_vector, taker.change_vector);
    assert!(
        taker_now.document.contains("mine"),
        "{}",
        taker_now.document
    );
    assert!(stored[1].is_none(), "the ghost is not stored");
}

/// A refused batch takes back the etags it used; the next write takes them
/// again. Revisions still count committed writes only, whatever the engine
/// remembered of the refused one (the embedded writer remembers the version
/// it last wrote of each document, as a hint).
async fn revisions_count_only_committed_writes_around_refused_batches(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let put = async |command: Command| -> Metadata {
        put(&store, command).await.expect("the put commits")
    };
    let first = put(Note::put("x", "one", Expectation::Missing)).await;
    assert_eq!(first.revision, 1);
    for round in 0..3 {
        let refused = engine
            .commit(Batch::from(vec![
                Note::put(
                    "x",
                    "refused",
                    Expectation::version(first.change_vector.clone()),
                ),
                Command::check("notes", "absent", Expectation::version("A:1-x")),
            ]))
            .await
            .unwrap();
        assert!(refused.is_err(), "round {round}: {refused:?}");
        // Takes the etag the refused write had.
        put(Note::put(
            &format!("y{round}"),
            "other",
            Expectation::Missing,
        ))
        .await;
    }
    let second = put(Note::put(
        "x",
        "two",
        Expectation::version(first.change_vector),
    ))
    .await;
    assert_eq!(second.revision, 2, "one committed write since the first");
    let third = put(Note::put(
        "x",
        "three",
        Expectation::version(second.change_vector),
    ))
    .await;
    assert_eq!(third.revision, 3);
    let stored = stored_metadata::<Note>(&store, "x").await.unwrap();
    assert_eq!(stored.revision, 3);
    assert_eq!(stored.change_vector, third.change_vector);
}

/// Every kind of put (insert, overwrite, conditional update), on documents
/// the engine wrote in this process and on documents it only finds on disk
/// after a reopen (the embedded writer remembers rows it wrote; a reopened
/// one looks them up), and after a rolled-back write of the same document.
async fn every_kind_of_put_counts_revisions_across_a_reopen(h: Harness) {
    if !h.persists() {
        return;
    }
    let store = h.store().await;
    let first = put(&store, Note::put("r", "one", Expectation::Missing))
        .await
        .unwrap();
    let second = put(&store, Note::put("r", "two", Expectation::Any))
        .await
        .unwrap();
    let third = put(
        &store,
        Note::put(
            "r",
            "three",
            Expectation::version(second.change_vector.clone()),
        ),
    )
    .await
    .unwrap();
    assert_eq!((first.revision, second.revision, third.revision), (1, 2, 3));
    // A write of "r" rolled back with its batch: what the engine learnt
    // from it must not count.
    let refused = store
        .engine()
        .commit(Batch::from(vec![
            Note::put(
                "r",
                "refused",
                Expectation::version(third.change_vector.clone()),
            ),
            Command::check("notes", "absent", Expectation::version("A:1-x")),
        ]))
        .await
        .unwrap();
    assert!(refused.is_err());
    let fourth = put(&store, Note::put("r", "four", Expectation::Any))
        .await
        .unwrap();
    assert_eq!(fourth.revision, 4);
    // The feed has each committed write once, and nothing of the refused one.
    let feed = store
        .engine()
        .changes(0, Some("notes"), 100)
        .await
        .unwrap()
        .changes;
    let revisions: Vec<(u64, u64)> = feed
        .iter()
        .filter(|change| change.id == "r")
        .map(|change| (change.etag, change.revision))
        .collect();
    assert_eq!(
        revisions,
        [&first, &second, &third, &fourth]
            .iter()
            .map(|metadata| (metadata.etag, metadata.revision))
            .collect::<Vec<_>>()
    );
    drop(store);

    let store = h.reopened().await.open().await.unwrap();
    let stale = put(
        &store,
        Note::put(
            "r",
            "stale",
            Expectation::version(third.change_vector.clone()),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].actual(), Some(&fourth.change_vector));
    let taken = put(&store, Note::put("r", "taken", Expectation::Missing))
        .await
        .unwrap_err();
    assert_eq!(taken[0].actual(), Some(&fourth.change_vector));
    let fifth = put(
        &store,
        Note::put(
            "r",
            "five",
            Expectation::version(fourth.change_vector.clone()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(fifth.revision, 5);
    drop(store);

    let store = h.reopened().await.open().await.unwrap();
    let sixth = put(&store, Note::put("r", "six", Expectation::Any))
        .await
        .unwrap();
    assert_eq!(sixth.revision, 6);
    assert!(sixth.etag > fifth.etag);
    let stored = stored::<Note>(&store, "r").await.unwrap();
    assert_eq!(stored.text, "six");
    let metadata = stored_metadata::<Note>(&store, "r").await.unwrap();
    assert_eq!(metadata, sixth);
}
