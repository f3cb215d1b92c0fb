//! The body of every error answer: an RFC 9457 problem
//! (`application/problem+json`), whose `type` URI names the kind of
//! failure and whose extension members carry what a client acts on.

use folio_core::Conflict;
use serde::de::DeserializeOwned;
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
/// whatever is there: a member that is missing, `null` or of another type
/// (a foreign server's, a proxy's) reads as absent rather than failing the
/// whole body, so that the members that are there still count.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// The kind, as a URI: [`TYPE_BASE`] and the kind's name.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient"
    )]
    pub kind: String,
    /// The kind, in words.
    #[serde(default, deserialize_with = "lenient")]
    pub title: String,
    /// The status code.
    #[serde(default, deserialize_with = "lenient")]
    pub status: u16,
    /// What happened to this request, in words.
    #[serde(default, deserialize_with = "lenient")]
    pub detail: String,
    /// `409 concurrency-conflict`: every failed expectation of the batch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub failed_test: Option<String>,
    /// `in-doubt` and `idempotency-key-reused`: the write's idempotency key
    /// (the server's own when the request had none): sending the write
    /// again with it learns the outcome.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub idempotency_key: Option<String>,
}

impl Problem {
    /// The kind's name: the `type` URI after [`TYPE_BASE`] (`None` for a
    /// problem of another server).
    pub fn kind_name(&self) -> Option<&str> {
        self.kind.strip_prefix(TYPE_BASE)
    }
}

/// A member read as `T`, or `T`'s default when it is of another shape.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    // Read as text, not as a `Value`: documents inside (a conflict's
    // `current`) keep the order of their keys.
    let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    Ok(serde_json::from_str(raw.get()).unwrap_or_default())
}

/// `actual`: a present member, `null` included (`Some(None)`); an absent
/// one is left to `default` (`None`), one of another shape too.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Some(None),
        serde_json::Value::String(actual) => Some(Some(actual)),
        _ => None,
    })
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

    /// A foreign or odd body loses only the members it has wrong: the
    /// conflicts of a 409 still count when its title is `null`.
    #[test]
    fn members_of_another_shape_read_as_absent() {
        let odd: Problem = serde_json::from_str(
            r#"{"type":null,"title":null,"status":"409","detail":7,"actual":3,
                "conflicts":[{"collection":"people","id":"p1","expected":{"change_vector":"A:1-x"},"actual":"A:2-x"}]}"#,
        )
        .unwrap();
        assert_eq!(odd.kind, "");
        assert_eq!(odd.title, "");
        assert_eq!(odd.status, 0);
        assert_eq!(odd.detail, "");
        assert_eq!(odd.actual, None);
        assert_eq!(odd.conflicts.map(|conflicts| conflicts.len()), Some(1));
    }
}
