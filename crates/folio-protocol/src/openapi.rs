//! The request bodies as `/openapi.json` describes them. The handlers parse
//! the bodies themselves (`batch::parse_batch`, `folio_core::Query`, …);
//! these types only tell clients, and OpenAPI-driven fuzzers, exactly what
//! those parsers accept: the alphabets of names, the operators and the
//! operands each takes, and no unknown fields.

#![allow(dead_code)] // Read by utoipa's derive, never constructed.

use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};

/// `POST /db/{db}/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// In order; every expectation holds or nothing is applied.
    #[schema(max_items = 10000)]
    commands: Vec<BatchCommandBody>,
}

/// One command of a batch.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BatchCommandBody {
    /// Insert or replace a document.
    Put(PutCommand),
    /// Delete a document, or only require its expectation.
    Other(OtherCommand),
}

/// `put`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PutOp {
    /// Insert or replace a document.
    Put,
}

/// The commands without a document.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtherOp {
    /// Delete a document.
    Delete,
    /// Write nothing; only require the expectation.
    Check,
}

/// A put.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCommand {
    /// `put`.
    op: PutOp,
    /// The collection.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    collection: String,
    /// The document id.
    #[schema(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
    id: String,
    /// The document: a JSON object, at most 128 levels deep, no U+0000.
    #[schema(value_type = Object)]
    document: serde_json::Value,
    /// What the stored document must be (default `any`; not null).
    #[serde(default)]
    #[schema(nullable = false)]
    expect: Option<ExpectBody>,
}

/// A delete or a check.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtherCommand {
    /// `delete` or `check`.
    op: OtherOp,
    /// The collection.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    collection: String,
    /// The document id.
    #[schema(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
    id: String,
    /// What the stored document must be (default `any`; not null).
    #[serde(default)]
    #[schema(nullable = false)]
    expect: Option<ExpectBody>,
}

/// An expectation: `"any"`, `"missing"`, or `{ "change_vector": "…" }`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExpectBody {
    /// `any` or `missing`.
    Word(ExpectWord),
    /// Exactly this version.
    Version(ExpectVersion),
}

/// `{ "change_vector": "…" }`: exactly this version (no other field).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectVersion {
    /// The change vector.
    change_vector: String,
}

/// The expectations that are words.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExpectWord {
    /// Whatever is stored, or nothing.
    Any,
    /// Nothing is stored.
    Missing,
}

/// `POST /db/{db}/query`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// The collection.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    collection: String,
    /// Conditions, all of which must hold (at most 100; the `in`
    /// operands together hold at most 10,000 values).
    #[serde(default, rename = "where")]
    #[schema(max_items = 100)]
    filters: Vec<FilterBody>,
    /// Ordering keys, most significant first (at most 32).
    #[serde(default)]
    #[schema(max_items = 32)]
    order_by: Vec<OrderBody>,
    /// How many results to skip.
    #[serde(default)]
    #[schema(minimum = 0)]
    skip: u64,
    /// How many results to return (default 100).
    #[schema(minimum = 0, maximum = 1000)]
    take: Option<u64>,
}

/// One condition: an operator and the operand it takes (no other field).
#[derive(Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterBody {
    /// Equal (`null` matches a null or absent field).
    Eq {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A string, number, boolean or null (absent: null).
        #[serde(default)]
        #[schema(schema_with = scalar, required = false)]
        value: serde_json::Value,
    },
    /// Not equal.
    Ne {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A string, number, boolean or null (absent: null).
        #[serde(default)]
        #[schema(schema_with = scalar, required = false)]
        value: serde_json::Value,
    },
    /// Less than.
    Lt {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A number or a string.
        #[schema(schema_with = number_or_string)]
        value: serde_json::Value,
    },
    /// Less than or equal.
    Le {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A number or a string.
        #[schema(schema_with = number_or_string)]
        value: serde_json::Value,
    },
    /// Greater than.
    Gt {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A number or a string.
        #[schema(schema_with = number_or_string)]
        value: serde_json::Value,
    },
    /// Greater than or equal.
    Ge {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A number or a string.
        #[schema(schema_with = number_or_string)]
        value: serde_json::Value,
    },
    /// Equal to one of the values.
    In {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// Strings, numbers or booleans (at most 1000).
        #[schema(schema_with = values)]
        value: serde_json::Value,
    },
    /// An array holding the value, or a string holding the (string) value.
    Contains {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A string, number or boolean.
        #[schema(schema_with = value)]
        value: serde_json::Value,
    },
    /// A string starting with the value.
    StartsWith {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// A string.
        value: String,
    },
    /// The field is present (`true`) or absent (`false`).
    Exists {
        /// The field.
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
        path: String,
        /// Present or absent.
        value: bool,
    },
}

/// One ordering key (no other field).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    /// The field.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,15}$")]
    path: String,
    /// Descending.
    #[serde(default)]
    desc: bool,
}

/// `PUT /db/{db}/collections/{collection}/config`, and its answer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfigBody {
    /// Revisions (absent: off).
    revisions: Option<RevisionsConfigBody>,
}

/// How many versions of each document the collection keeps.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionsConfigBody {
    /// 0 (off) to 10000.
    #[schema(minimum = 0, maximum = 10000)]
    keep: u32,
}

/// The answer to `GET /db/{db}/collections`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionsBody {
    /// The collections that hold documents, in order of name.
    collections: Vec<CollectionBody>,
}

/// A collection that holds documents.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionBody {
    /// The collection's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    name: String,
    /// How many documents it holds.
    #[schema(minimum = 1)]
    documents: u64,
}

/// `POST /db/{db}/docs/{collection}/get`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetManyBody {
    /// The ids, at most 1000.
    #[schema(max_items = 1000, inline)]
    ids: Vec<IdBody>,
}

/// A document id.
#[derive(Deserialize, ToSchema)]
#[schema(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
pub struct IdBody(String);

/// A backup: an embedded Folio database file (SQLite), as
/// `GET /db/{db}/backup` writes it.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BackupFileBody(Vec<u8>);

fn of(kind: &Type) -> RefOr<Schema> {
    let builder = ObjectBuilder::new().schema_type(kind.clone());
    let builder = match kind {
        // JSON numbers within what a 64-bit float holds.
        Type::Number => builder.format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Double,
        ))),
        _ => builder,
    };
    RefOr::T(Schema::Object(builder.build()))
}

fn one_of(kinds: &[Type]) -> Schema {
    let mut one_of = OneOfBuilder::new();
    for kind in kinds {
        one_of = one_of.item(of(kind));
    }
    Schema::OneOf(one_of.build())
}

/// A string, number, boolean or null.
fn scalar() -> Schema {
    one_of(&[Type::String, Type::Number, Type::Boolean, Type::Null])
}

/// A string, number or boolean.
fn value() -> Schema {
    one_of(&[Type::String, Type::Number, Type::Boolean])
}

/// A number or a string.
fn number_or_string() -> Schema {
    one_of(&[Type::String, Type::Number])
}

/// An array of strings, numbers or booleans.
fn values() -> Schema {
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(RefOr::T(value()))
            .max_items(Some(folio_core::Query::MAX_IN_VALUES))
            .build(),
    )
}
