//! Read-your-writes (`Position`, `Reads`; HTTP's `Folio-Position` and
//! `Folio-After`): every commit answers with a position; a handle that
//! reads after it sees that write, whatever node serves it; a session
//! reads after its own saves, and after a position it is given; after a
//! position of another kind of database, reads come from the primary.
//!
//! One node answers every read here; `ha` has standbys behind.

use folio::{Batch, BatchId, Error, Expectation, Position, Reads};

use crate::harness::{Harness, Note};

conformance!(
    every_commit_answers_a_position_that_reads_after_it_see,
    a_replayed_batch_answers_a_position_too,
    a_session_reads_after_its_saves_and_after_a_given_position,
    a_position_of_another_kind_of_database_reads_every_write,
);

async fn every_commit_answers_a_position_that_reads_after_it_see(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let committed = engine
        .commit(Batch::from(vec![Note::put(
            "n1",
            "one",
            Expectation::Missing,
        )]))
        .await
        .expect("committed")
        .expect("no conflict");
    let position = committed.position.clone().expect("a position");
    let after = engine
        .clone()
        .reads(Reads::After(position.clone()))
        .expect("a position of this database");
    let read = after.get("notes", &["n1".into()]).await.expect("read");
    assert_eq!(read[0].as_ref().expect("n1 is seen").metadata.revision, 1);
    // A position travels as text (a header, a browser's form) and back.
    let again: Position = position.to_string().parse().expect("a token");
    assert_eq!(again, position);
    let query = folio::Query::new("notes");
    assert_eq!(
        engine
            .clone()
            .reads(Reads::After(again))
            .expect("accepted")
            .count(&query)
            .await
            .expect("counted"),
        1
    );
    // Reads from any node, and the primary's, work too.
    for reads in [Reads::Any, Reads::Primary] {
        let handle = engine.clone().reads(reads).expect("a handle");
        assert_eq!(handle.count(&query).await.expect("counted"), 1);
    }
    // A later commit answers a position too; groups of one-write batches
    // (PostgreSQL) and several-command batches alike.
    let two = engine
        .commit(Batch::from(vec![
            Note::put("n2", "two", Expectation::Missing),
            Note::put("n3", "three", Expectation::Missing),
        ]))
        .await
        .expect("committed")
        .expect("no conflict");
    let after_two = engine
        .clone()
        .reads(Reads::After(two.position.clone().expect("a position")))
        .expect("accepted");
    assert_eq!(after_two.count(&query).await.expect("counted"), 3);
    let concurrent = futures_util::future::join_all((0..8).map(|index| {
        let engine = engine.clone();
        async move {
            engine
                .commit(Batch::from(vec![Note::put(
                    &format!("g{index}"),
                    "grouped",
                    Expectation::Missing,
                )]))
                .await
        }
    }))
    .await;
    for (index, committed) in concurrent.into_iter().enumerate() {
        let committed = committed.expect("committed").expect("no conflict");
        let seen = engine
            .clone()
            .reads(Reads::After(committed.position.expect("a position")))
            .expect("accepted")
            .get("notes", &[format!("g{index}")])
            .await
            .expect("read");
        assert!(seen[0].is_some(), "g{index} is seen after its position");
    }
}

async fn a_replayed_batch_answers_a_position_too(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let batch =
        Batch::from(vec![Note::put("n1", "one", Expectation::Missing)]).with_id(BatchId::new());
    let first = engine
        .commit(batch.clone())
        .await
        .expect("committed")
        .expect("no conflict");
    let again = engine
        .commit(batch)
        .await
        .expect("answered")
        .expect("recorded results");
    assert!(again.replayed);
    let position = again.position.expect("a replayed batch has a position");
    assert!(first.position.is_some());
    let seen = engine
        .clone()
        .reads(Reads::After(position))
        .expect("accepted")
        .get("notes", &["n1".into()])
        .await
        .expect("read");
    assert!(seen[0].is_some());
}

async fn a_session_reads_after_its_saves_and_after_a_given_position(h: Harness) {
    let store = h.store().await;
    let mut session = store.open_session();
    assert!(session.position().is_none(), "no save yet");
    session
        .store(crate::harness::Person::new("p1", "Ada"))
        .expect("stored");
    session.save_changes().await.expect("saved");
    let position = session
        .position()
        .cloned()
        .expect("a position after a save");
    let loaded = session
        .load::<crate::harness::Person>("p1")
        .await
        .expect("loaded");
    assert_eq!(loaded.expect("p1").name, "Ada");
    // Another session, given the position (a web app's round trip through
    // the browser), reads after it.
    let mut other = store.open_session();
    other.read_after(position.clone());
    assert_eq!(other.position(), Some(&position));
    let loaded = other
        .load::<crate::harness::Person>("p1")
        .await
        .expect("loaded")
        .expect("p1 is seen after the position");
    assert_eq!(loaded.name, "Ada");
    let count = other
        .query::<crate::harness::Person>()
        .count()
        .await
        .expect("counted");
    assert_eq!(count, 1);
}

async fn a_position_of_another_kind_of_database_reads_every_write(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    engine
        .commit(Batch::from(vec![Note::put(
            "n1",
            "one",
            Expectation::Missing,
        )]))
        .await
        .expect("committed")
        .expect("no conflict");
    // PostgreSQL writes log positions, the embedded engine etags; a token
    // of another form (a client that kept one across a move to another
    // engine) reads from the primary, which shows every write.
    for token in [
        "elsewhere:12",
        "lsn:FFFFFFFF/FFFFFFFF",
        "etag:99999999999999999999",
    ] {
        let foreign = Position::new(token).expect("well formed");
        let handle = engine
            .clone()
            .reads(Reads::After(foreign.clone()))
            .expect("a handle");
        let read = handle.get("notes", &["n1".into()]).await.expect("read");
        assert!(read[0].is_some(), "n1 is seen after {token}");
        let mut session = store.open_session();
        session.read_after(foreign);
        assert!(
            session
                .load::<crate::harness::Person>("p1")
                .await
                .expect("read")
                .is_none()
        );
    }
    // Malformed tokens are refused before any engine sees them.
    for bad in ["", "a b", "é"] {
        let refused = Position::new(bad).expect_err("malformed");
        assert!(
            matches!(refused, Error::InvalidInput(_)),
            "{bad:?}: {refused:?}"
        );
    }
    assert!(Position::new("x".repeat(256)).is_err());
}
