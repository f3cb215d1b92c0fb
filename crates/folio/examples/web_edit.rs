//! The web-app edit of RavenDB's and Marten's optimistic-concurrency
//! documentation, end to end: a form carries the document's change vector to
//! the browser and back; a save based on a version someone else has replaced
//! meanwhile is refused instead of silently overwriting their edit.
//!
//! Run it with `cargo run -p folio --example web_edit`.

#![allow(clippy::print_stdout)]

use folio::{ChangeVector, Document, DocumentStore, Error};
use serde::{Deserialize, Serialize};

/// A product in a shop's catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[folio(collection = "products")]
struct Product {
    id: String,
    name: String,
    price_cents: u64,
    description: String,
}

/// What the browser posts back: the user's edit and the version it was based on.
struct EditForm {
    id: String,
    description: String,
    change_vector: ChangeVector,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = DocumentStore::in_memory().await?;

    println!("1. The catalogue gets a product.");
    let mut setup = store.open_session();
    setup.store(Product {
        id: "products/chai".into(),
        name: "Chai".into(),
        price_cents: 1800,
        description: "Black tea".into(),
    })?;
    setup.save_changes().await?;
    let created = setup
        .metadata_for::<Product>("products/chai")
        .await?
        .ok_or("the product was just created")?;
    println!(
        "   products/chai is stored: change vector {}, revision {}.",
        created.change_vector, created.revision
    );

    println!();
    println!("2. Alice opens the edit page: GET /products/chai/edit.");
    let form_version = {
        let mut request = store.open_session();
        let product = request
            .load::<Product>("products/chai")
            .await?
            .ok_or("the product exists")?;
        let version = request
            .change_vector_for::<Product>("products/chai")
            .await?
            .ok_or("a loaded product has a version")?;
        println!(
            "   The page shows \"{}\" at {} with the description \"{}\".",
            product.name,
            price(product.price_cents),
            product.description
        );
        println!("   The form carries the change vector {version} (a hidden field, or the ETag).");
        version
        // The request's session ends here; Alice takes her time.
    };

    println!();
    println!("3. Meanwhile Bob raises the price and saves.");
    let mut bob = store.open_session();
    let mut product = bob
        .load::<Product>("products/chai")
        .await?
        .ok_or("the product exists")?;
    product.price_cents = 1950;
    bob.store(product)?;
    bob.save_changes().await?;
    let after_bob = bob
        .metadata_for::<Product>("products/chai")
        .await?
        .ok_or("Bob's save is stored")?;
    println!(
        "   Saved at {}: change vector {}, revision {}.",
        price(1950),
        after_bob.change_vector,
        after_bob.revision
    );

    println!();
    println!("4. Minutes later, Alice posts her edit: POST /products/chai.");
    let form = EditForm {
        id: "products/chai".into(),
        description: "Black tea with cardamom, cinnamon and ginger".into(),
        change_vector: form_version,
    };
    println!(
        "   She changed the description, based on version {}.",
        form.change_vector
    );
    // The handler knows only what the form says: it rebuilds the product
    // from the form and the version the page was rendered with.
    let mut post = store.open_session();
    let submitted = Product {
        id: form.id.clone(),
        name: "Chai".into(),
        price_cents: 1800,
        description: form.description.clone(),
    };
    post.store_with_change_vector(submitted, form.change_vector.clone())?;
    let conflict = match post.save_changes().await {
        Err(Error::Concurrency(error)) => error,
        Ok(()) => return Err("a stale edit must not be saved".into()),
        Err(other) => return Err(other.into()),
    };
    println!("   Refused: {conflict}.");
    for conflict in conflict.conflicts() {
        println!(
            "   - {} #{}: the form expected version {}, the database has {}.",
            conflict.type_name(),
            conflict.id(),
            conflict.expected(),
            conflict
                .actual()
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        );
    }
    println!("   Nothing was written: Bob's price is safe.");

    println!();
    println!("5. The app reloads the product and shows Alice what changed.");
    let mut retry = store.open_session();
    let mut current = retry
        .load::<Product>(&form.id)
        .await?
        .ok_or("the product exists")?;
    let current_version = retry
        .change_vector_for::<Product>(&form.id)
        .await?
        .ok_or("a loaded product has a version")?;
    println!(
        "   Now: \"{}\" at {}, \"{}\" (version {current_version}).",
        current.name,
        price(current.price_cents),
        current.description
    );
    println!(
        "   Alice's description is applied on top of Bob's price, and saved with the current version."
    );
    current.description = form.description;
    retry.store_with_change_vector(current, current_version)?;
    retry.save_changes().await?;
    let saved = retry
        .metadata_for::<Product>(&form.id)
        .await?
        .ok_or("the save is stored")?;
    println!(
        "   Saved: change vector {}, revision {}.",
        saved.change_vector, saved.revision
    );

    println!();
    let stored = store
        .open_session()
        .load::<Product>("products/chai")
        .await?
        .ok_or("the product exists")?;
    println!(
        "Finally: \"{}\" at {}, \"{}\". Both edits are kept; neither was lost.",
        stored.name,
        price(stored.price_cents),
        stored.description
    );
    if stored.price_cents != 1950 || !stored.description.contains("cardamom") {
        return Err("an edit was lost".into());
    }
    Ok(())
}

fn price(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}
