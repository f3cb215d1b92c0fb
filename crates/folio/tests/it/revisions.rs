//! Revisions: a collection that keeps them keeps every version written
//! (and each deletion) in the write's transaction, at most `keep` per
//! document, readable after a delete; a refused batch keeps none; a
//! revert is a new write, conditional on the version current; the
//! configuration comes from the type's attribute, the builder or the
//! engine, on every engine.

use folio::{
    ChangeVector, CollectionConfig, Document, DocumentStore, Error, Expectation, Revision,
};
use serde::{Deserialize, Serialize};

use crate::harness::{Harness, Note, conflicts, seed};

conformance!(
    a_collection_keeps_its_last_versions_newest_first,
    a_deleted_documents_history_stays_readable_and_goes_on_when_it_returns,
    a_refused_batch_keeps_no_revision,
    a_revert_writes_an_old_version_again_only_over_the_current_one,
    the_configuration_is_set_by_the_builder_and_read_back,
    revisions_stop_when_turned_off_and_bad_requests_change_nothing,
);

/// Keeps its last three versions (the type says so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Document)]
#[folio(collection = "pages", revisions = 3, optimistic_concurrency)]
struct Page {
    id: String,
    title: String,
    #[folio(change_vector)]
    #[serde(skip)]
    change_vector: Option<ChangeVector>,
    #[folio(revision)]
    #[serde(skip)]
    revision: u64,
}

impl Page {
    fn new(id: &str, title: &str) -> Self {
        Page {
            id: id.into(),
            title: title.into(),
            change_vector: None,
            revision: 0,
        }
    }
}

/// Writes `titles` to page `id` one save after the other, and the change
/// vector of each version.
async fn write_versions(store: &DocumentStore, id: &str, titles: &[&str]) -> Vec<ChangeVector> {
    let mut versions = Vec::new();
    for title in titles {
        let mut session = store.open_session();
        let page = match session.load::<Page>(id).await.unwrap() {
            Some(mut page) => {
                page.title = (*title).into();
                page
            }
            None => Page::new(id, title),
        };
        session.store(page).unwrap();
        session.save_changes().await.unwrap();
        versions.push(
            session
                .change_vector_for::<Page>(id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    versions
}

async fn history(store: &DocumentStore, id: &str) -> Vec<Revision> {
    store
        .open_session()
        .revisions_for::<Page>(id)
        .await
        .unwrap()
}

async fn a_collection_keeps_its_last_versions_newest_first(h: Harness) {
    let store = h.store().await;
    let versions = write_versions(&store, "p1", &["one", "two", "three", "four"]).await;
    // The type's attribute configured the collection at its first save.
    assert_eq!(
        store.engine().configuration("pages").await.unwrap(),
        CollectionConfig::revisions(3)
    );
    let kept = history(&store, "p1").await;
    let listed: Vec<(&ChangeVector, u64, bool)> = kept
        .iter()
        .map(|revision| (&revision.change_vector, revision.revision, revision.deleted))
        .collect();
    assert_eq!(
        listed,
        [
            (&versions[3], 4, false),
            (&versions[2], 3, false),
            (&versions[1], 2, false)
        ]
    );
    assert!(kept.windows(2).all(|pair| pair[0].etag > pair[1].etag));
    let mut session = store.open_session();
    let two = session
        .load_revision::<Page>("p1", &versions[1])
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(two.title, "two");
    assert_eq!(two.revision, 2);
    assert_eq!(two.change_vector.as_ref(), Some(&versions[1]));
    // The oldest is gone; a version of another document is not this one's.
    assert_eq!(
        session
            .load_revision::<Page>("p1", &versions[0])
            .await
            .unwrap(),
        None
    );
    let other = write_versions(&store, "p2", &["other"]).await;
    assert_eq!(
        session
            .load_revision::<Page>("p1", &other[0])
            .await
            .unwrap(),
        None
    );
    // Paging: start and take, the total of all kept.
    let page = store.engine().revisions("pages", "p1", 1, 1).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].change_vector, versions[2]);
    let beyond = store
        .engine()
        .revisions("pages", "p1", 10, 5)
        .await
        .unwrap();
    assert_eq!((beyond.items.len(), beyond.total), (0, 3));
}

async fn a_deleted_documents_history_stays_readable_and_goes_on_when_it_returns(h: Harness) {
    let store = h.store().await;
    let versions = write_versions(&store, "p1", &["one", "two"]).await;
    let mut session = store.open_session();
    session.delete::<Page>("p1").unwrap();
    session.save_changes().await.unwrap();
    let kept = history(&store, "p1").await;
    assert_eq!(kept.len(), 3);
    assert!(kept[0].deleted);
    assert_eq!(
        kept[0].revision, 2,
        "a deletion names the version it deleted"
    );
    assert!(kept[0].etag > kept[1].etag);
    assert_eq!(kept[1].change_vector, versions[1]);
    // A deletion has no document; the versions before it do.
    let mut session = store.open_session();
    assert_eq!(
        session
            .load_revision::<Page>("p1", &kept[0].change_vector)
            .await
            .unwrap(),
        None
    );
    let last = session
        .load_revision::<Page>("p1", &versions[1])
        .await
        .unwrap()
        .expect("kept after the delete");
    assert_eq!(last.title, "two");

    // Created again: its history goes on, still at most three.
    let again = write_versions(&store, "p1", &["back"]).await;
    let kept = history(&store, "p1").await;
    let listed: Vec<(u64, bool)> = kept
        .iter()
        .map(|revision| (revision.revision, revision.deleted))
        .collect();
    assert_eq!(listed, [(1, false), (2, true), (2, false)]);
    assert_eq!(kept[0].change_vector, again[0]);
}

async fn a_refused_batch_keeps_no_revision(h: Harness) {
    let store = h.store().await;
    write_versions(&store, "p1", &["one"]).await;
    write_versions(&store, "p2", &["one"]).await;
    let mut stale = store.open_session();
    let mut p2 = stale.load::<Page>("p2").await.unwrap().unwrap();
    write_versions(&store, "p2", &["two"]).await;

    let mut session = store.open_session();
    let mut p1 = session.load::<Page>("p1").await.unwrap().unwrap();
    p1.title = "changed".into();
    session.store(p1).unwrap();
    p2.title = "stale".into();
    session.store(p2).unwrap();
    session.store_new(Page::new("p3", "new")).unwrap();
    let refused = conflicts(session.save_changes().await);
    assert_eq!(refused.len(), 1);
    assert_eq!(history(&store, "p1").await.len(), 1);
    assert_eq!(history(&store, "p2").await.len(), 2);
    assert!(history(&store, "p3").await.is_empty());
    drop(stale);
}

async fn a_revert_writes_an_old_version_again_only_over_the_current_one(h: Harness) {
    let store = h.store().await;
    let versions = write_versions(&store, "p1", &["one", "two", "three"]).await;
    let mut session = store.open_session();
    session.revert::<Page>("p1", &versions[0]).await.unwrap();
    session.save_changes().await.unwrap();
    let now = store
        .open_session()
        .load::<Page>("p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.title.as_str(), now.revision), ("one", 4));
    let kept = history(&store, "p1").await;
    assert_eq!(kept[0].revision, 4);
    assert_eq!(kept[0].change_vector, now.change_vector.clone().unwrap());

    // Conditional on the version current when it was asked for: a write
    // in between refuses it, and nothing is written.
    let mut reverting = store.open_session();
    reverting.revert::<Page>("p1", &versions[1]).await.unwrap();
    write_versions(&store, "p1", &["in between"]).await;
    let refused = conflicts(reverting.save_changes().await);
    assert_eq!(
        refused[0].actual(),
        history(&store, "p1")
            .await
            .first()
            .map(|r| &r.change_vector)
    );
    let now = store
        .open_session()
        .load::<Page>("p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.title, "in between");

    // A version that is not kept: nothing queued.
    let mut session = store.open_session();
    let unknown = ChangeVector::from("A:999999-nope");
    assert!(matches!(
        session.revert::<Page>("p1", &unknown).await,
        Err(Error::NotFound(_))
    ));
    assert!(!session.has_changes().unwrap());

    // A deleted document comes back: the revert expects it still missing.
    let mut session = store.open_session();
    session.delete::<Page>("p1").unwrap();
    session.save_changes().await.unwrap();
    let kept = history(&store, "p1").await;
    assert!(kept[0].deleted);
    let mut session = store.open_session();
    session
        .revert::<Page>("p1", &kept[1].change_vector)
        .await
        .unwrap();
    session.save_changes().await.unwrap();
    let back = store
        .open_session()
        .load::<Page>("p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((back.title.as_str(), back.revision), ("in between", 1));
}

async fn the_configuration_is_set_by_the_builder_and_read_back(h: Harness) {
    let store = h
        .located_builder(None)
        .document::<Note>(|d| d.revisions(2))
        .open()
        .await
        .unwrap();
    let engine = store.engine().clone();
    assert_eq!(
        engine.configuration("notes").await.unwrap(),
        CollectionConfig::revisions(2)
    );
    // Never configured: all off.
    assert_eq!(
        engine.configuration("elsewhere").await.unwrap(),
        CollectionConfig::default()
    );
    for text in ["a", "b", "c"] {
        seed(&store, vec![Note::new("n1", text)]).await;
    }
    let page = engine.revisions("notes", "n1", 0, 10).await.unwrap();
    assert_eq!(page.total, 2);
    let newest = engine
        .revision("notes", "n1", &page.items[0].change_vector)
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(newest.metadata.revision, 3);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&newest.document).unwrap()["text"],
        "c"
    );
    assert_eq!(newest.metadata.change_vector, page.items[0].change_vector);
    assert_eq!(newest.metadata.last_modified, page.items[0].last_modified);
}

async fn revisions_stop_when_turned_off_and_bad_requests_change_nothing(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    engine
        .configure("notes", &CollectionConfig::revisions(10))
        .await
        .unwrap();
    let put = |text: &str| folio::Batch::from(vec![Note::put("n1", text, Expectation::Any)]);
    for text in ["a", "b"] {
        engine.commit(put(text)).await.unwrap().unwrap();
    }
    // Out of range: refused, the configuration stays.
    assert!(matches!(
        engine
            .configure("notes", &CollectionConfig::revisions(folio::MAX_KEEP + 1))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        engine
            .configure("bad name!", &CollectionConfig::revisions(1))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        engine.configuration("notes").await.unwrap(),
        CollectionConfig::revisions(10)
    );
    for take in [0, folio::MAX_REVISIONS_PAGE + 1] {
        assert!(matches!(
            engine.revisions("notes", "n1", 0, take).await,
            Err(Error::InvalidInput(_))
        ));
    }
    // Off: nothing more is kept; what was kept stays.
    engine
        .configure("notes", &CollectionConfig::default())
        .await
        .unwrap();
    engine.commit(put("c")).await.unwrap().unwrap();
    let page = engine.revisions("notes", "n1", 0, 10).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(page.items[0].revision, 2);
}
