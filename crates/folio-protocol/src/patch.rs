//! The body of a `PATCH`: a JSON merge patch (RFC 7396) or a JSON patch
//! (RFC 6902), and its application to a stored document within the
//! server's limits.

use folio_core::{Error, Result, validate};

use crate::media;

/// The body of a `PATCH`.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch {
    /// `application/merge-patch+json`.
    Merge(serde_json::Value),
    /// `application/json-patch+json`.
    Json(json_patch::Patch),
}

/// The limits a patched document keeps within: those of a written one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchLimits {
    /// The most bytes the document may take (a request body's limit).
    pub max_bytes: usize,
    /// The deepest the document may nest.
    pub max_nesting: usize,
}

/// Why [`Patch::apply`] made no document.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchFailure {
    /// A JSON patch's `test` operation (number `operation`) did not hold
    /// at `path` (a JSON Pointer): the document is not as the client
    /// expected, a conflict (`409 patch-test-failed`).
    TestFailed {
        /// The index of the operation in the patch.
        operation: usize,
        /// Its path.
        path: String,
    },
    /// The patch does not apply, or its result is no valid document
    /// (`400`).
    Invalid(String),
    /// The result would be larger than the limit, in bytes (`413`).
    TooLarge(usize),
    /// The stored document is not JSON: the database is damaged (`500`).
    Damaged,
    /// Anything else (`500`).
    Internal(String),
}

impl From<Error> for PatchFailure {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(detail) => PatchFailure::Invalid(detail),
            other => PatchFailure::Internal(other.to_string()),
        }
    }
}

impl Patch {
    /// Parses a body of `media_type` (either patch media type);
    /// [`Error::InvalidInput`] when it is not one.
    pub fn parse(media_type: &str, text: &str) -> Result<Patch> {
        if media_type == media::JSON_PATCH {
            serde_json::from_str(text)
                .map(Patch::Json)
                .map_err(|error| {
                    Error::InvalidInput(format!("not a JSON patch (RFC 6902): {error}"))
                })
        } else {
            serde_json::from_str(text)
                .map(Patch::Merge)
                .map_err(|error| Error::InvalidInput(format!("the patch is not JSON: {error}")))
        }
    }

    /// Applies the patch to `document` (a stored document's JSON text) and
    /// returns the new document's text, a valid document. A JSON patch's
    /// failing `test` operation is [`PatchFailure::TestFailed`]; a patch
    /// that does not apply, or whose result is not a JSON object, nests
    /// deeper than `limits` allow or is otherwise no valid document
    /// (`validate::document_text`) is [`PatchFailure::Invalid`]; a result
    /// larger than `limits` allow is [`PatchFailure::TooLarge`].
    ///
    /// A JSON patch's `copy` doubles a document with each operation, so the
    /// size and depth are bounded as each operation applies, not only at
    /// the end: thirty copies of the root would otherwise need terabytes.
    pub fn apply(&self, document: &str, limits: PatchLimits) -> Result<String, PatchFailure> {
        // Stored documents nest at most `validate::MAX_NESTING` deep.
        let mut value: serde_json::Value =
            validate::read_value(document).map_err(|_| PatchFailure::Damaged)?;
        match self {
            Patch::Merge(patch) => json_patch::merge(&mut value, patch),
            Patch::Json(patch) => {
                let mut bound = Growth {
                    bytes: document.len(),
                    depth: validate::nesting_depth(document),
                    limits,
                };
                for (index, operation) in patch.0.iter().enumerate() {
                    bound.admit(&value, operation)?;
                    json_patch::patch_unsafe(&mut value, std::slice::from_ref(operation)).map_err(
                        |error| match error.kind {
                            json_patch::PatchErrorKind::TestFailed => PatchFailure::TestFailed {
                                operation: index,
                                path: error.path.to_string(),
                            },
                            _ => PatchFailure::Invalid(format!(
                                "operation {index} of the patch does not apply: {error}"
                            )),
                        },
                    )?;
                }
            }
        }
        if !value.is_object() {
            return Err(PatchFailure::Invalid(
                "the patched document is not a JSON object".into(),
            ));
        }
        let patched = serde_json::to_string(&value)
            .map_err(|error| PatchFailure::Internal(error.to_string()))?;
        if patched.len() > limits.max_bytes {
            return Err(PatchFailure::TooLarge(limits.max_bytes));
        }
        if let Some(depth) = validate::deeper_than(&patched, limits.max_nesting) {
            return Err(PatchFailure::Invalid(format!(
                "the patched document nests {depth} deep; at most {} is allowed",
                limits.max_nesting
            )));
        }
        // What a patch adds is checked as a written document would be.
        validate::document_text(&patched)?;
        Ok(patched)
    }
}

/// Upper bounds of a document's size and depth while a JSON patch applies.
struct Growth {
    bytes: usize,
    depth: usize,
    limits: PatchLimits,
}

impl Growth {
    /// Raises the bounds by what `operation` may add to `document`; an error
    /// once they pass the limits. Values added from the patch itself are
    /// bounded by the body; only `copy` multiplies, and `copy` and `move`
    /// may deepen.
    fn admit(
        &mut self,
        document: &serde_json::Value,
        operation: &json_patch::PatchOperation,
    ) -> Result<(), PatchFailure> {
        use json_patch::PatchOperation;
        let depth = |value: &serde_json::Value| validate::nesting_depth(&value.to_string());
        match operation {
            PatchOperation::Add(add) => {
                self.depth = self.depth.max(add.path.count() + depth(&add.value));
            }
            PatchOperation::Replace(replace) => {
                self.depth = self.depth.max(replace.path.count() + depth(&replace.value));
            }
            PatchOperation::Move(moved) => {
                self.depth += moved.path.count().saturating_sub(moved.from.count());
            }
            PatchOperation::Copy(copy) => {
                if let Some(source) = document.pointer(copy.from.as_str()) {
                    let room = self.limits.max_bytes.saturating_sub(self.bytes);
                    let mut counter = Counter { bytes: 0, room };
                    if serde_json::to_writer(&mut counter, source).is_err() {
                        return Err(PatchFailure::TooLarge(self.limits.max_bytes));
                    }
                    self.bytes += counter.bytes;
                    let source_depth = self.depth.saturating_sub(copy.from.count());
                    self.depth = self.depth.max(copy.path.count() + source_depth);
                }
            }
            PatchOperation::Remove(_) | PatchOperation::Test(_) => {}
        }
        if self.depth > self.limits.max_nesting {
            return Err(PatchFailure::Invalid(format!(
                "the patched document would nest deeper than {}",
                self.limits.max_nesting
            )));
        }
        Ok(())
    }
}

/// Counts the bytes written to it; fails past `room`.
struct Counter {
    bytes: usize,
    room: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes > self.room {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PatchLimits = PatchLimits {
        max_bytes: 1 << 20,
        max_nesting: 8,
    };

    #[test]
    fn patches_apply_and_refuse_with_the_failure_a_client_is_told() {
        let merge = Patch::parse(media::MERGE_PATCH, r#"{"name":"Ada","gone":null}"#).unwrap();
        assert_eq!(
            merge.apply(r#"{"name":"A","gone":1,"n":2}"#, LIMITS),
            Ok(r#"{"n":2,"name":"Ada"}"#.to_owned())
        );
        let test = Patch::parse(
            media::JSON_PATCH,
            r#"[{"op":"test","path":"/n","value":3},{"op":"remove","path":"/n"}]"#,
        )
        .unwrap();
        assert_eq!(
            test.apply(r#"{"n":2}"#, LIMITS),
            Err(PatchFailure::TestFailed {
                operation: 0,
                path: "/n".into()
            })
        );
        let replace_root = Patch::parse(
            media::JSON_PATCH,
            r#"[{"op":"replace","path":"","value":1}]"#,
        )
        .unwrap();
        assert!(matches!(
            replace_root.apply("{}", LIMITS),
            Err(PatchFailure::Invalid(_))
        ));
        assert_eq!(merge.apply("{not json", LIMITS), Err(PatchFailure::Damaged));
        // Each copy is bounded as it applies, not only the result.
        let copies = (0..10)
            .map(|n| format!(r#"{{"op":"copy","from":"/x","path":"/y{n}"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let copying = Patch::parse(media::JSON_PATCH, &format!("[{copies}]")).unwrap();
        let small = PatchLimits {
            max_bytes: 64,
            max_nesting: 8,
        };
        assert_eq!(
            copying.apply(r#"{"x":"0123456789"}"#, small),
            Err(PatchFailure::TooLarge(64))
        );
        assert!(Patch::parse(media::JSON_PATCH, r#"{"op":"add"}"#).is_err());
    }
}
