use serde::{Serialize, de::DeserializeOwned};

use crate::ChangeVector;

/// A Rust type stored as a document in one collection.
///
/// Derive it with `#[derive(Document)]` rather than implementing it by hand:
///
/// ```
/// use folio::{ChangeVector, Document};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Document)]
/// #[folio(collection = "people", optimistic_concurrency)]
/// struct Person {
///     #[folio(id)]
///     id: String,
///     name: String,
///     #[folio(change_vector)]
///     #[serde(skip)]
///     change_vector: Option<ChangeVector>,
///     #[folio(revision)]
///     #[serde(skip)]
///     revision: u64,
/// }
///
/// assert_eq!(Person::COLLECTION, "people");
/// assert_eq!(Person::TYPE_NAME, "Person");
/// assert_eq!(Person::OPTIMISTIC_CONCURRENCY, Some(true));
/// ```
///
/// Attributes of the derive:
///
/// * on the type: `collection = "name"` (default: the snake_case plural of
///   the type name, `OrderLine` → `order_lines`), `optimistic_concurrency`
///   (or `optimistic_concurrency = false`) to opt the type in or out,
///   `revisions = N` to keep the last N versions of each document;
/// * on fields: `id` (a `String`; a field named `id` is used when no field
///   has the attribute), `change_vector` (an `Option<ChangeVector>`, which
///   must be `#[serde(skip)]`), `revision` (a `u64`, `#[serde(skip)]`).
///   Both are filled on load, query and after save, and never persisted.
pub trait Document: Serialize + DeserializeOwned + Send + 'static {
    /// The collection documents of this type live in.
    const COLLECTION: &'static str;

    /// The type's name, used in conflict messages.
    const TYPE_NAME: &'static str;

    /// The type's own concurrency setting (`None`: not set; the store's
    /// configuration and default decide).
    const OPTIMISTIC_CONCURRENCY: Option<bool> = None;

    /// The versions of each document the type's collection keeps
    /// (`#[folio(revisions = N)]`; `None`: not set, the collection's own
    /// configuration stands). A store sets it on the collection before its
    /// first save of the type (the builder's
    /// [`crate::DocumentConfig::revisions`] overrides it).
    const REVISIONS: Option<u32> = None;

    /// The document's id (empty: not assigned yet).
    fn id(&self) -> &str;

    /// Sets the document's id (the session does this for generated ids and
    /// after loading).
    fn set_id(&mut self, id: String);

    /// The change vector carried by the document itself, when the type has
    /// a change-vector field and it is set. A set change vector is always
    /// checked on save.
    fn change_vector(&self) -> Option<&ChangeVector> {
        None
    }

    /// Fills the change-vector field, if the type has one.
    fn set_change_vector(&mut self, change_vector: Option<ChangeVector>) {
        let _ = change_vector;
    }

    /// Fills the revision field, if the type has one.
    fn set_revision(&mut self, revision: u64) {
        let _ = revision;
    }
}

/// `json`, stored as `T` under `id` at `version` (change vector and
/// revision), as `T` with its id and version fields filled.
pub(crate) fn decode<T: Document>(
    id: &str,
    json: &str,
    version: Option<(&ChangeVector, u64)>,
) -> crate::Result<T> {
    let mut document: T = serde_json::from_str(json).map_err(|error| {
        crate::Error::InvalidInput(format!(
            "the stored document {} #{id} is not a valid {}: {error}",
            T::COLLECTION,
            T::TYPE_NAME
        ))
    })?;
    document.set_id(id.to_owned());
    document.set_change_vector(version.map(|(change_vector, _)| change_vector.clone()));
    document.set_revision(version.map_or(0, |(_, revision)| revision));
    Ok(document)
}

/// Typed access to what a refused write found stored
/// ([`crate::Conflict::current`]).
///
/// ```
/// use folio::{ConflictExt, Document, DocumentStore, Error};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Document)]
/// #[folio(collection = "people")]
/// struct Person { id: String, name: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let store = DocumentStore::in_memory().await?;
/// let mut first = store.open_session();
/// first.store(Person { id: "p1".into(), name: "Ann".into() })?;
/// first.save_changes().await?;
///
/// let mut second = store.open_session();
/// second.store_new(Person { id: "p1".into(), name: "Bob".into() })?;
/// let Err(Error::Concurrency(refused)) = second.save_changes().await else { panic!() };
/// let stored: Person = refused.conflicts()[0].current_as()?.expect("it exists");
/// assert_eq!(stored.name, "Ann");
/// # Ok(())
/// # }
/// ```
pub trait ConflictExt {
    /// What is stored now as `T` (its id and version fields filled), or
    /// `None` when the document does not exist.
    fn current_as<T: Document>(&self) -> crate::Result<Option<T>>;
}

impl ConflictExt for crate::Conflict {
    fn current_as<T: Document>(&self) -> crate::Result<Option<T>> {
        self.current()
            .map(|stored| {
                decode::<T>(
                    self.id(),
                    &stored.document,
                    Some((&stored.change_vector, stored.revision)),
                )
            })
            .transpose()
    }
}
