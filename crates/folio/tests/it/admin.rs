//! `DocumentStore::admin`: creating and listing the databases beside a
//! store's own, where it is (a data directory, a PostgreSQL server, a
//! Folio server), and opening what was created.

use folio::Error;

use crate::harness::{EngineKind, Harness, Note, unique_database_name};

async fn creates_and_lists_databases_beside_the_stores_own(h: Harness) {
    let store = h.located_store().await;
    let admin = store.admin();
    let own = admin
        .list_databases()
        .await
        .expect("the databases are listed");
    let name = unique_database_name();
    if h.kind == EngineKind::Memory {
        // An in-memory store holds its one database.
        assert_eq!(own, [folio::DEFAULT_DATABASE]);
        assert!(matches!(
            admin.create_database(&name).await,
            Err(Error::InvalidInput(_))
        ));
        return;
    }
    assert!(!own.contains(&name), "{own:?}");
    assert!(admin.create_database(&name).await.expect("created"));
    assert!(!admin.create_database(&name).await.expect("it exists"));
    let listed = admin
        .list_databases()
        .await
        .expect("the databases are listed");
    assert!(listed.contains(&name), "{name} in {listed:?}");
    assert!(
        listed.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted: {listed:?}"
    );
    for bad in ["", "Upper", "../escape", "a b"] {
        assert!(
            matches!(
                admin.create_database(bad).await,
                Err(Error::InvalidInput(_))
            ),
            "{bad:?} is refused"
        );
    }

    // The new database is empty and takes writes of its own.
    let other = h
        .located_builder(Some(&name))
        .open()
        .await
        .expect("the new database opens");
    let mut session = other.open_session();
    session.store(Note::new("n1", "beside")).expect("stored");
    session.save_changes().await.expect("saved");
    let mut mine = store.open_session();
    assert!(mine.load::<Note>("n1").await.expect("read").is_none());
}

conformance!(creates_and_lists_databases_beside_the_stores_own);
