use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ChangeVector, Expectation, StoredDocument};

/// Every error a Folio call returns.
///
/// Match on the variant to decide what to do next: a [`Error::Concurrency`]
/// is normal business (someone else changed a document first: reload and
/// retry, or ask the user), while [`Error::Engine`] means the storage or the
/// network failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more expectations of a batch failed; nothing was written.
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The input was refused before anything was written: a bad id,
    /// collection, JSON document or query.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The credentials were missing, unknown or not allowed to do this.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The storage or the network failed; the message says what and the
    /// source carries the native error.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The outcome of a batch could not be learned: it may have committed
    /// (whole) or not at all, and sending it again with its id did not
    /// settle which within the time allowed. Sending it again later with
    /// the same [`crate::Batch::id`] does: a committed batch answers with
    /// its recorded results.
    #[error(transparent)]
    InDoubt(#[from] InDoubt),
    /// A batch id that a committed batch with other commands already took
    /// (over HTTP, an `Idempotency-Key` reused for another request).
    #[error("batch id {0} was used by another batch; use a new id for each batch")]
    BatchIdReused(crate::BatchId),
}

/// The error of a batch whose outcome is unknown ([`Error::InDoubt`]).
#[derive(Debug)]
pub struct InDoubt {
    /// The batch's id, when it has one: send the batch again with it to
    /// learn the outcome.
    pub batch_id: Option<crate::BatchId>,
    /// What happened to the batch's commit.
    pub reason: String,
    /// The last failure met, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for InDoubt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.batch_id {
            Some(id) => write!(
                f,
                "the outcome of batch {id} is unknown: {}; it committed whole or not at all, \
                 and sending it again with the same batch id (Idempotency-Key) tells which",
                self.reason
            ),
            None => write!(
                f,
                "the outcome of this batch is unknown: {}; it committed whole or not at all \
                 (read the documents back to learn which)",
                self.reason
            ),
        }
    }
}

impl std::error::Error for InDoubt {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl InDoubt {
    /// The error of batch `batch_id`, in doubt because of `reason`.
    pub fn new(batch_id: Option<crate::BatchId>, reason: impl Into<String>) -> Self {
        InDoubt {
            batch_id,
            reason: reason.into(),
            source: None,
        }
    }

    /// The error with the last failure met as its source.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl Error {
    /// The conflicts, when this is a concurrency error.
    pub fn conflicts(&self) -> Option<&[Conflict]> {
        match self {
            Error::Concurrency(error) => Some(error.conflicts()),
            _ => None,
        }
    }

    /// Whether this is a concurrency error (a conflict, not a failure).
    pub fn is_concurrency(&self) -> bool {
        matches!(self, Error::Concurrency(_))
    }
}

/// What kind of storage or network failure an [`EngineError`] is, so that
/// callers can decide whether a retry may help without looking at native
/// codes.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineErrorKind {
    /// Reading or writing storage failed (an I/O error, a read-only file).
    Io,
    /// The disk (or the size the database may take) is full: nothing of the
    /// write was stored. Reads go on; writes succeed again once there is
    /// room.
    Full,
    /// The storage is busy or locked by someone else; retrying later may help.
    Busy,
    /// The stored data is damaged or not a Folio database.
    Corrupt,
    /// The stored data was written by a newer version of Folio, in a layout
    /// this one cannot read.
    Unsupported,
    /// A transaction was aborted by the database to keep it serializable
    /// (PostgreSQL `40001`/`40P01`); retrying the whole batch may help.
    SerializationFailure,
    /// A network connection failed or was refused.
    Network,
    /// The operation took longer than allowed.
    Timeout,
    /// The engine has shut down.
    Closed,
    /// Anything else.
    Other,
}

/// A storage or network failure, with the native error as its source.
#[derive(Debug)]
pub struct EngineError {
    kind: EngineErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl EngineError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: EngineErrorKind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the native error that caused this one.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> EngineErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage failure: {}", self.message)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as _)
    }
}

/// One violated expectation of a batch.
///
/// Serialized as in the HTTP problem body:
/// `{ "collection", "id", "expected", "actual", "current" }` (plus
/// `type_name` when known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    collection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    type_name: Option<String>,
    id: String,
    expected: Expectation,
    actual: Option<ChangeVector>,
    #[serde(default)]
    current: Option<StoredDocument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    overlaps: Vec<String>,
}

impl Conflict {
    /// A conflict on `collection`/`id`: `expected` was required, `actual` is
    /// stored (`None`: the document does not exist). It carries no
    /// document; engines report conflicts with [`Conflict::stored`].
    pub fn new(
        collection: impl Into<String>,
        id: impl Into<String>,
        expected: Expectation,
        actual: Option<ChangeVector>,
    ) -> Self {
        Conflict {
            collection: collection.into(),
            type_name: None,
            id: id.into(),
            expected,
            actual,
            current: None,
            overlaps: Vec::new(),
        }
    }

    /// A conflict on `collection`/`id`: `expected` was required and
    /// `current` is what is stored (`None`: the document does not exist),
    /// read in the transaction that refused the write.
    pub fn stored(
        collection: impl Into<String>,
        id: impl Into<String>,
        expected: Expectation,
        current: Option<StoredDocument>,
    ) -> Self {
        Conflict {
            actual: current.as_ref().map(|stored| stored.change_vector.clone()),
            current,
            ..Conflict::new(collection, id, expected, None)
        }
    }

    /// Names the document's type for messages.
    pub fn with_type_name(mut self, type_name: Option<String>) -> Self {
        self.type_name = type_name;
        self
    }

    /// The collection of the document.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The Rust type name the session knows the document by, or the
    /// collection when the write did not come from a typed session.
    pub fn type_name(&self) -> &str {
        self.type_name.as_deref().unwrap_or(&self.collection)
    }

    /// The id of the document.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the batch required.
    pub fn expected(&self) -> &Expectation {
        &self.expected
    }

    /// The change vector stored now, or `None` when the document does not exist.
    pub fn actual(&self) -> Option<&ChangeVector> {
        self.actual.as_ref()
    }

    /// What is stored now (the document, its change vector, revision and
    /// modification time), read in the transaction that refused the
    /// write; `None` when the document does not exist (or the conflict
    /// was made by [`Conflict::new`], without it).
    pub fn current(&self) -> Option<&StoredDocument> {
        self.current.as_ref()
    }

    /// The same conflict, naming the values (JSON Pointers) a three-way
    /// merge found changed differently on both sides.
    pub fn with_overlaps(mut self, overlaps: Vec<String>) -> Self {
        self.overlaps = overlaps;
        self
    }

    /// The JSON Pointers of the values changed differently by the refused
    /// write and by the version stored now, when a merge was tried (`""`:
    /// the whole document, as when it was deleted); empty otherwise.
    pub fn overlaps(&self) -> &[String] {
        &self.overlaps
    }

    /// Takes what is stored now ([`Conflict::current`]).
    pub fn into_current(self) -> Option<StoredDocument> {
        self.current
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} (expected {}, found ",
            self.type_name(),
            self.id,
            self.expected
        )?;
        match &self.actual {
            Some(actual) => write!(f, "{actual})"),
            None => f.write_str("none)"),
        }
    }
}

/// A batch was refused because one or more expectations failed; nothing of
/// it was written. Lists every conflict of the batch, not only the first.
///
/// ```
/// use folio_core::{ConcurrencyError, Conflict, Expectation};
///
/// let error = ConcurrencyError::new(vec![
///     Conflict::new("people", "people/1", Expectation::version("A:1-x"), None)
///         .with_type_name(Some("Person".into())),
/// ]);
/// assert_eq!(error.to_string(), "Optimistic concurrency check failed for Person #people/1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyError {
    conflicts: Vec<Conflict>,
}

impl ConcurrencyError {
    /// An error listing `conflicts` (at least one).
    pub fn new(conflicts: Vec<Conflict>) -> Self {
        debug_assert!(
            !conflicts.is_empty(),
            "a concurrency error names its conflicts"
        );
        ConcurrencyError { conflicts }
    }

    /// Every conflict of the batch, in command order.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Takes the conflicts.
    pub fn into_conflicts(self) -> Vec<Conflict> {
        self.conflicts
    }
}

impl fmt::Display for ConcurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.conflicts.as_slice() {
            [only] => write!(
                f,
                "Optimistic concurrency check failed for {} #{}",
                only.type_name(),
                only.id
            ),
            conflicts => {
                write!(
                    f,
                    "Optimistic concurrency check failed for {} documents: ",
                    conflicts.len()
                )?;
                for (index, conflict) in conflicts.iter().enumerate() {
                    if index > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{conflict}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConcurrencyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_conflicts_are_all_named() {
        let error = ConcurrencyError::new(vec![
            Conflict::new(
                "people",
                "p1",
                Expectation::version("A:1-x"),
                Some("A:5-x".into()),
            ),
            Conflict::new("people", "p2", Expectation::Missing, Some("A:6-x".into()))
                .with_type_name(Some("Person".into())),
        ]);
        assert_eq!(
            error.to_string(),
            "Optimistic concurrency check failed for 2 documents: \
             people #p1 (expected A:1-x, found A:5-x); Person #p2 (expected missing, found A:6-x)"
        );
    }

    #[test]
    fn conflicts_serialize_as_in_the_protocol() {
        let conflict = Conflict::new("people", "p1", Expectation::version("A:42-x"), None);
        assert_eq!(
            serde_json::to_value(&conflict).unwrap(),
            serde_json::json!({
                "collection": "people",
                "id": "p1",
                "expected": { "change_vector": "A:42-x" },
                "actual": null,
                "current": null
            })
        );
    }

    #[test]
    fn a_conflict_carries_the_stored_document_as_json() {
        let stored = StoredDocument {
            document: r#"{"name":"Ann","age":3}"#.into(),
            change_vector: "A:57-x".into(),
            revision: 7,
            last_modified: crate::time_from_millis(1_700_000_000_000),
        };
        let conflict = Conflict::stored(
            "people",
            "p1",
            Expectation::version("A:42-x"),
            Some(stored.clone()),
        );
        assert_eq!(conflict.actual(), Some(&ChangeVector::from("A:57-x")));
        let json = serde_json::to_string(&conflict).unwrap();
        assert!(
            json.contains(r#""current":{"document":{"name":"Ann","age":3},"change_vector":"A:57-x","revision":7,"last_modified":"2023-11-14T22:13:20.000Z"}"#),
            "{json}"
        );
        let back: Conflict = serde_json::from_str(&json).unwrap();
        assert_eq!(back.current(), Some(&stored));
        // A body of a server that sends no `current`.
        let old: Conflict = serde_json::from_str(
            r#"{"collection":"people","id":"p1","expected":"missing","actual":"A:5-x"}"#,
        )
        .unwrap();
        assert_eq!(old.current(), None);
    }
}
