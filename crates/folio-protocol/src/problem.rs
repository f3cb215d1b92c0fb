//! The body of every error answer: an RFC 9457 problem
//! (`application/problem+json`), whose `type` URI names the kind of
//! failure and whose extension members carry what a client acts on.

use folio_core::Conflict;
use serde::{Deserialize, Deserializer, Serialize};

/// The base of every problem `type` URI; the kind follows it
/// (`…/precondition-failed`).
pub const TYPE_BASE: &str = "https://folio.dev/problems/";

/// The `type` URI of a problem kind (`concurrency-conflict`,
/// `precondition-failed`, …; `docs/protocol.md` lists them).
pub fn type_uri(kind: &str) -> String {
    format!("{TYPE_BASE}{kind}")
}

/// A problem body. A server writes every field it has; a client reads
/// whatever is there (every field may be missing from a foreign server).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// The kind, as a URI: [`TYPE_BASE`] and the kind's name.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The kind, in words.
    #[serde(default)]
    pub title: String,
    /// The status code.
    #[serde(default)]
    pub status: u16,
    /// What happened to this request, in words.
    #[serde(default)]
    pub detail: String,
    /// `409 concurrency-conflict`: every failed expectation of the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<Conflict>>,
    /// `412 precondition-failed`, `409 patch-test-failed`: the document's
    /// current change vector (`Some(None)`, written `null`: it does not
    /// exist).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub actual: Option<Option<String>>,
    /// `409 patch-test-failed`: the JSON Pointer the failed `test`
    /// operation tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_test: Option<String>,
}

impl Problem {
    /// The kind's name: the `type` URI after [`TYPE_BASE`] (`None` for a
    /// problem of another server).
    pub fn kind_name(&self) -> Option<&str> {
        self.kind.strip_prefix(TYPE_BASE)
    }
}

/// A member that is present, `null` included (`Some(None)`); an absent one
/// is left to `default` (`None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actual_tells_a_missing_document_from_an_absent_member() {
        let missing = Problem {
            kind: type_uri("precondition-failed"),
            title: "Precondition failed".into(),
            status: 412,
            detail: "If-Match: the document does not exist".into(),
            actual: Some(None),
            ..Problem::default()
        };
        let wire = serde_json::to_string(&missing).unwrap();
        assert_eq!(
            wire,
            r#"{"type":"https://folio.dev/problems/precondition-failed","title":"Precondition failed","status":412,"detail":"If-Match: the document does not exist","actual":null}"#
        );
        let read: Problem = serde_json::from_str(&wire).unwrap();
        assert_eq!(read, missing);
        assert_eq!(read.kind_name(), Some("precondition-failed"));
        let absent: Problem = serde_json::from_str(r#"{"title":"Not Found"}"#).unwrap();
        assert_eq!(absent.actual, None);
        assert_eq!(absent.kind_name(), None);
    }
}
