//! `#[derive(Document)]` for Folio.
//!
//! Use it through the `folio` crate, which re-exports it beside the
//! `Document` trait of the same name; the generated code refers to
//! `::folio::Document` and `::folio::__private::ChangeVector`, so `folio`
//! must be a dependency of the crate that derives.
//!
//! ```text
//! use folio::{ChangeVector, Document};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Document)]
//! #[folio(collection = "people", optimistic_concurrency)]
//! struct Person {
//!     #[folio(id)]
//!     id: String,
//!     name: String,
//!     #[folio(change_vector)]
//!     #[serde(skip)]
//!     change_vector: Option<ChangeVector>,
//!     #[folio(revision)]
//!     #[serde(skip)]
//!     revision: u64,
//! }
//! ```
//!
//! # Attributes on the type
//!
//! * `#[folio(collection = "name")]`: the collection the documents live in
//!   (`Document::COLLECTION`), checked at compile time: 1 to 128 characters
//!   of `A-Z a-z 0-9 _ -`. Without it the collection is the snake_case
//!   plural of the type name: `Person` → `persons`, `OrderLine` →
//!   `order_lines`, `Address` → `addresses`, `Category` → `categories`
//!   (regular English rules only).
//! * `#[folio(optimistic_concurrency)]` or
//!   `#[folio(optimistic_concurrency = true | false)]`: the type's own
//!   concurrency setting (`Document::OPTIMISTIC_CONCURRENCY` is `Some(..)`);
//!   without it the constant keeps its default, `None`, and the store
//!   decides.
//!
//! `Document::TYPE_NAME` is the type's name as written (`"Person"`).
//!
//! # Attributes on fields
//!
//! * `#[folio(id)]`: the document id, a `String`. Without it a field named
//!   `id` is the id; a struct with neither does not compile.
//! * `#[folio(change_vector)]`: an `Option<ChangeVector>` that the session
//!   fills on load, query and save, and checks on save when it is set.
//! * `#[folio(revision)]`: a `u64` that the session fills the same way.
//!
//! The change-vector and revision fields are metadata, never part of the
//! stored JSON: they must be `#[serde(skip)]` (or `skip_serializing` with
//! `skip_deserializing` or `default`). Each kind of field may appear at most
//! once. The types are checked by their last path segments (`String`,
//! `Option<…ChangeVector>`, `u64`), so a type alias for them is refused.
//!
//! # Generic types
//!
//! The impl keeps the type's own generics and bounds and adds none. The
//! trait needs `Self: Serialize + DeserializeOwned + Send + 'static`, so
//! declare what the type parameters need on the type itself, and tell serde
//! not to add its own bounds beside them (`T: Deserialize<'de>` next to
//! `T: DeserializeOwned` is ambiguous to the compiler):
//!
//! ```text
//! #[derive(Serialize, Deserialize, Document)]
//! #[serde(bound = "")]
//! struct Envelope<T>
//! where
//!     T: Serialize + DeserializeOwned + Send + 'static,
//! {
//!     id: String,
//!     payload: T,
//! }
//! ```
//!
//! Lifetime parameters are refused: documents are owned.
//!
//! # Errors
//!
//! Enums, unions, tuple structs and unit structs are refused, as are
//! unknown keys, duplicate roles and fields of the wrong type; every error
//! points at the offending token, and one expansion reports all it finds.

mod attrs;
mod expand;
mod naming;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `folio::Document` for a struct with named fields.
///
/// See the [crate documentation](crate) for the `#[folio(...)]` attributes.
#[proc_macro_derive(Document, attributes(folio))]
pub fn derive_document(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
