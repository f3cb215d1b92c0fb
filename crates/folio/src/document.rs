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
///   (or `optimistic_concurrency = false`) to opt the type in or out;
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
