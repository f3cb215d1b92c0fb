//! The README's first example: two sessions edit one document, and the
//! second save, based on a version the first replaced, is refused. Its
//! data stays in `./folio-data`, so it runs again and again.
//!
//! Run it with `cargo run -p folio --example first`.

#![allow(clippy::print_stdout)]

use folio::{ChangeVector, Document, DocumentStore, Error};
use serde::{Deserialize, Serialize};

/// A person; every save of one is checked against the version it read.
#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[folio(collection = "people", optimistic_concurrency)]
struct Person {
    #[folio(id)]
    id: String,
    name: String,
    #[folio(change_vector)]
    #[serde(skip)]
    change_vector: Option<ChangeVector>,
}

#[tokio::main]
async fn main() -> folio::Result<()> {
    let store = DocumentStore::open("./folio-data").await?;

    // The first run creates the document; later runs find it.
    let mut session = store.open_session();
    if session.load::<Person>("people/1").await?.is_none() {
        session.store(Person {
            id: "people/1".into(),
            name: "Ada".into(),
            change_vector: None,
        })?;
        session.save_changes().await?;
    }

    // Alice and Bob open the same document…
    let mut alice = store.open_session();
    let mut bob = store.open_session();
    let mut a = alice.load::<Person>("people/1").await?.unwrap();
    let mut b = bob.load::<Person>("people/1").await?.unwrap();

    // …Alice saves first…
    a.name = "Ada Lovelace".into();
    alice.store(a)?;
    alice.save_changes().await?;

    // …so Bob's save is refused: his copy is stale.
    b.name = "Ada King".into();
    bob.store(b)?;
    match bob.save_changes().await {
        Err(Error::Concurrency(e)) => println!("{e}"), // Optimistic concurrency check failed for Person #people/1
        other => other?,
    }
    Ok(())
}
