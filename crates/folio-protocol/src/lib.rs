//! Folio's HTTP protocol (`docs/protocol.md`) as Rust types, shared by
//! everything that speaks it: the server, the remote engine, the `folio`
//! command and the fuzz targets.
//!
//! * [`body`]: the JSON bodies of requests and answers (batches, entries,
//!   queries, listings, the changes feed, databases and collections);
//! * [`problem`]: the RFC 9457 problem body of every error answer, and its
//!   type URIs;
//! * [`conditional`]: the precondition headers (`If-Match`,
//!   `If-None-Match`, the date conditions) and how they judge a version;
//! * [`patch`]: the bodies of a `PATCH` and their application;
//! * [`media`]: the media types of the protocol;
//! * `openapi` (feature `openapi`): the request bodies' schemas, as
//!   `/openapi.json` describes them.
//!
//! Each type is defined once, here: a server writes and a client reads the
//! same one, so they cannot drift apart.

pub mod body;
pub mod conditional;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod patch;
pub mod problem;

pub use body::{
    BatchCommand, BatchRequest, BatchResponse, ChangeBody, ChangeVectors, ChangesPageBody,
    CollectionList, DatabaseCreated, DatabaseList, ENVELOPE_DEPTH, EntryBody, GetManyRequest,
    ListResponse, MAX_COMMANDS, Operation, QueryResponse, RestoreSummary, Results, parse_batch,
};
pub use conditional::{
    EntityTag, Evaluation, PreconditionFailure, Preconditions, Tags, etag_header,
};
pub use patch::{Patch, PatchFailure, PatchLimits};
pub use problem::Problem;

/// The header names of the protocol beyond HTTP's own (lowercase, as
/// HTTP/2 and `http::HeaderName` write them).
pub mod headers {
    /// A write's idempotency key (the batch id): a write sent again with
    /// the key of a write that committed gets that write's answer.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// `true` on the answer to a write whose key had committed: the answer
    /// is the first one's, and nothing was written again.
    pub const IDEMPOTENCY_REPLAYED: &str = "idempotency-replayed";
    /// On every successful write's answer: where the write left the
    /// database, an opaque token for `Folio-After`.
    pub const POSITION: &str = "folio-position";
    /// On a read: answer only from a state that includes the write whose
    /// answer carried this `Folio-Position` (and every write before it).
    pub const AFTER: &str = "folio-after";
    /// On a kept version (`…/revisions/{change_vector}`): when it was
    /// written, as RFC 3339 with milliseconds (`Last-Modified` counts whole
    /// seconds).
    pub const LAST_MODIFIED_PRECISE: &str = "folio-last-modified";
}

/// The media types of the protocol.
pub mod media {
    /// Documents, batches, queries and every other JSON body.
    pub const JSON: &str = "application/json";
    /// Error answers (RFC 9457).
    pub const PROBLEM: &str = "application/problem+json";
    /// A JSON merge patch (RFC 7396).
    pub const MERGE_PATCH: &str = "application/merge-patch+json";
    /// A JSON patch (RFC 6902).
    pub const JSON_PATCH: &str = "application/json-patch+json";
    /// A backup file: an embedded Folio database.
    pub const BACKUP: &str = "application/vnd.sqlite3";
    /// An export: JSON Lines of entries.
    pub const EXPORT: &str = "application/x-ndjson";
    /// The changes feed as Server-Sent Events.
    pub const EVENT_STREAM: &str = "text/event-stream";
}
