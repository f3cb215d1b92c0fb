//! Batch ids (`Batch::id`, HTTP's `Idempotency-Key`): an engine records a
//! committed batch's id with its results in the batch's transaction, and
//! answers the same batch sent again with them, writing nothing; another
//! batch under a recorded id is refused; a refused batch records nothing;
//! the same batch sent twice at once commits once. Every save of a session
//! carries an id of its own.

use std::sync::{Arc, Mutex};

use folio::testing::{Wrapper, wrap};
use folio::{Batch, BatchId, Document, DocumentStore, EngineRef, Error, Expectation};

use crate::harness::{EngineKind, Harness, Note};

conformance!(
    a_batch_sent_again_gets_its_results_and_writes_nothing,
    an_id_taken_by_another_batch_is_refused,
    a_refused_batch_records_nothing,
    one_batch_sent_twice_at_once_commits_once,
    an_empty_batch_asks_whether_its_id_committed,
    every_save_carries_an_id_of_its_own,
);

fn two_notes() -> Vec<folio::Command> {
    vec![
        Note::put("n1", "one", Expectation::Missing),
        Note::put("n2", "two", Expectation::Missing),
    ]
}

/// How many changes the feed holds (every write that took an etag).
async fn changes(engine: &EngineRef) -> usize {
    engine
        .changes(0, None, 1000)
        .await
        .expect("the feed is read")
        .changes
        .len()
}

async fn a_batch_sent_again_gets_its_results_and_writes_nothing(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let batch = Batch::from(two_notes()).with_id(BatchId::new());
    let first = engine
        .commit(batch.clone())
        .await
        .expect("committed")
        .expect("no conflict");
    assert!(!first.replayed);
    assert_eq!(first.len(), 2);
    // Sent again, its expectations no longer hold (both notes exist): the
    // recorded results all the same, and nothing written.
    let again = engine
        .commit(batch.clone())
        .await
        .expect("answered")
        .expect("the recorded results, not a conflict");
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.results, first.results);
    assert_eq!(changes(&engine).await, 2, "nothing written again");
    let stored = engine
        .metadata(Note::COLLECTION, &["n1".into(), "n2".into()])
        .await
        .expect("read");
    for (stored, result) in stored.iter().zip(&first.results) {
        let folio::CommandResult::Put(written) = result else {
            panic!("{result:?}")
        };
        assert_eq!(stored.as_ref(), Some(written));
    }
    // Through a second engine on the same database too (another pool,
    // another client of the server).
    if matches!(h.kind, EngineKind::Postgres | EngineKind::Remote) {
        let other = h.fresh_engine().await;
        let replayed = other
            .commit(batch)
            .await
            .expect("answered")
            .expect("the recorded results");
        assert!(replayed.replayed);
        assert_eq!(replayed.results, first.results);
    }
}

async fn an_id_taken_by_another_batch_is_refused(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let id = BatchId::new();
    engine
        .commit(Batch::from(two_notes()).with_id(id.clone()))
        .await
        .expect("committed")
        .expect("no conflict");
    let other =
        Batch::from(vec![Note::put("n3", "three", Expectation::Missing)]).with_id(id.clone());
    match engine.commit(other).await {
        Err(Error::BatchIdReused(reused)) => assert_eq!(reused, id),
        other => panic!("another batch under a taken id: {other:?}"),
    }
    let stored = engine
        .metadata(Note::COLLECTION, &["n3".into()])
        .await
        .expect("read");
    assert_eq!(stored, [None], "nothing of the refused batch written");
}

async fn a_refused_batch_records_nothing(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let existing = engine
        .commit(Batch::from(vec![Note::put(
            "n1",
            "first",
            Expectation::Any,
        )]))
        .await
        .expect("committed")
        .expect("no conflict");
    let folio::CommandResult::Put(existing) = &existing[0] else {
        panic!("{existing:?}")
    };
    // Refused: the id is not taken, and the same id may be sent again with
    // the version read since (other commands).
    let id = BatchId::new();
    let refused = engine
        .commit(
            Batch::from(vec![Note::put("n1", "mine", Expectation::Missing)]).with_id(id.clone()),
        )
        .await
        .expect("answered");
    assert!(refused.is_err(), "{refused:?}");
    let retried = Batch::from(vec![Note::put(
        "n1",
        "mine",
        Expectation::version(existing.change_vector.clone()),
    )])
    .with_id(id);
    let committed = engine
        .commit(retried.clone())
        .await
        .expect("committed")
        .expect("no conflict");
    assert!(!committed.replayed);
    let again = engine
        .commit(retried)
        .await
        .expect("answered")
        .expect("the recorded results");
    assert!(again.replayed);
    assert_eq!(again.results, committed.results);
}

async fn one_batch_sent_twice_at_once_commits_once(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    for round in 0..5 {
        let id = format!("n{round}");
        let batch =
            Batch::from(vec![Note::put(&id, "once", Expectation::Missing)]).with_id(BatchId::new());
        let (a, b) = tokio::join!(engine.commit(batch.clone()), engine.commit(batch));
        let a = a.expect("answered").expect("committed or replayed");
        let b = b.expect("answered").expect("committed or replayed");
        assert_eq!(a.results, b.results, "round {round}");
        assert!(
            a.replayed != b.replayed,
            "one commit, one replay: {a:?} {b:?}"
        );
    }
    assert_eq!(changes(&engine).await, 5, "each batch wrote once");
}

async fn an_empty_batch_asks_whether_its_id_committed(h: Harness) {
    if h.kind == EngineKind::Remote {
        // Over HTTP the key stands for the request's bytes (the server
        // asks its own engine this way: `folio-server`'s tests).
        return;
    }
    let store = h.store().await;
    let engine = store.engine().clone();
    let id = BatchId::new();
    let digest = [7; 32];
    let ask = |digest: [u8; 32]| Batch::new().with_id(id.clone()).with_digest(digest);
    let before = engine
        .commit(ask(digest))
        .await
        .expect("answered")
        .expect("no conflict");
    assert!(!before.replayed && before.is_empty(), "{before:?}");
    assert_eq!(changes(&engine).await, 0, "asking writes nothing");
    let committed = engine
        .commit(
            Batch::from(two_notes())
                .with_id(id.clone())
                .with_digest(digest),
        )
        .await
        .expect("committed")
        .expect("no conflict");
    assert!(!committed.replayed, "asking recorded nothing");
    let after = engine
        .commit(ask(digest))
        .await
        .expect("answered")
        .expect("no conflict");
    assert!(after.replayed);
    assert_eq!(after.results, committed.results);
    assert!(matches!(
        engine.commit(ask([8; 32])).await,
        Err(Error::BatchIdReused(_))
    ));
}

/// Records the id of every batch.
struct Ids {
    inner: EngineRef,
    seen: Mutex<Vec<Option<BatchId>>>,
}

#[async_trait::async_trait]
impl Wrapper for Ids {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(
        &self,
        batch: Batch,
    ) -> folio::Result<Result<folio::Committed, folio::ConcurrencyError>> {
        self.seen.lock().unwrap().push(batch.id.clone());
        self.inner.commit(batch).await
    }
}

async fn every_save_carries_an_id_of_its_own(h: Harness) {
    let inner = h.store().await.engine().clone();
    let ids = Arc::new(Ids {
        inner,
        seen: Mutex::new(Vec::new()),
    });
    let store = DocumentStore::from_engine(wrap(ids.clone()));
    for text in ["one", "two"] {
        let mut session = store.open_session();
        session.store(Note::new("n1", text)).expect("stored");
        session.save_changes().await.expect("saved");
    }
    let seen = ids.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(Option::is_some), "{seen:?}");
    assert_ne!(seen[0], seen[1]);
}
