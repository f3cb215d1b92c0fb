//! The JSON bodies of docs/protocol.md that the remote engine sends and reads.
//!
//! Documents travel as raw JSON text both ways ([`RawValue`]): what the
//! session serialized is what the server stores, and what the server
//! stored is what [`Entry::document`] holds.

use std::time::SystemTime;

use folio_core::{
    ChangeVector, Command, CommandKind, CommandResult, Entry, Error, Expectation, Metadata, Result,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /db/{db}/batch`.
#[derive(Serialize)]
pub(crate) struct BatchRequest<'a> {
    pub(crate) commands: Vec<WireCommand<'a>>,
}

/// One command of a batch request (`type_name` stays on the client: the
/// server does not take it).
#[derive(Serialize)]
pub(crate) struct WireCommand<'a> {
    op: &'static str,
    collection: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<&'a RawValue>,
    expect: &'a Expectation,
}

impl<'a> WireCommand<'a> {
    /// The wire form of a (validated) command.
    pub(crate) fn new(command: &'a Command) -> Result<Self> {
        let (op, document) = match &command.kind {
            CommandKind::Put { document } => {
                let raw = serde_json::from_str::<&RawValue>(document).map_err(|error| {
                    Error::InvalidInput(format!("a document must be well-formed JSON: {error}"))
                })?;
                ("put", Some(raw))
            }
            CommandKind::Delete => ("delete", None),
            CommandKind::Check => ("check", None),
        };
        Ok(WireCommand {
            op,
            collection: &command.collection,
            id: &command.id,
            document,
            expect: &command.expect,
        })
    }
}

/// The answer to a committed batch.
#[derive(Deserialize)]
pub(crate) struct BatchResponse {
    pub(crate) results: Vec<WireResult>,
}

/// One result of a committed batch, as the server writes a
/// [`CommandResult`]: `{"result": "put" | "deleted" | "checked", …}`.
///
/// Read as one flat struct: serde reads an internally tagged enum by
/// buffering every field first, which a client pays on every save.
#[derive(Deserialize)]
pub(crate) struct WireResult {
    result: ResultKind,
    collection: String,
    id: String,
    #[serde(default)]
    change_vector: Option<ChangeVector>,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    etag: Option<u64>,
    #[serde(default, with = "optional_time")]
    last_modified: Option<SystemTime>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ResultKind {
    Put,
    Deleted,
    Checked,
}

impl WireResult {
    /// The result, or what it lacks.
    pub(crate) fn into_result(self) -> std::result::Result<CommandResult, String> {
        let WireResult {
            result,
            collection,
            id,
            change_vector,
            revision,
            etag,
            last_modified,
        } = self;
        Ok(match result {
            ResultKind::Put => match (change_vector, revision, etag, last_modified) {
                (Some(change_vector), Some(revision), Some(etag), Some(last_modified)) => {
                    CommandResult::Put(Metadata {
                        id,
                        collection,
                        change_vector,
                        revision,
                        etag,
                        last_modified,
                    })
                }
                _ => {
                    return Err(format!(
                        "the put of {collection} #{id} came back without its metadata"
                    ));
                }
            },
            ResultKind::Deleted => CommandResult::Deleted {
                collection,
                id,
                etag,
            },
            ResultKind::Checked => CommandResult::Checked { collection, id },
        })
    }
}

/// An optional RFC 3339 time.
mod optional_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        #[derive(Deserialize)]
        struct Time(#[serde(with = "folio_core::rfc3339")] SystemTime);
        Ok(Option::<Time>::deserialize(deserializer)?.map(|Time(time)| time))
    }
}

/// `POST /db/{db}/docs/{collection}/get`.
#[derive(Serialize)]
pub(crate) struct GetRequest<'a> {
    pub(crate) ids: &'a [String],
}

/// `{ "results": [...] }`.
#[derive(Deserialize)]
pub(crate) struct Results<T> {
    pub(crate) results: Vec<T>,
}

/// The answer to `POST /db/{db}/query`.
#[derive(Deserialize)]
pub(crate) struct QueryResponse {
    pub(crate) results: Vec<WireEntry>,
    pub(crate) total: u64,
}

/// The answer to `GET /db/{db}/collections`.
#[derive(Deserialize)]
pub(crate) struct CollectionsResponse {
    pub(crate) collections: Vec<folio_core::CollectionCount>,
}

/// The answer to `GET /db/{db}/docs/{collection}?after=&limit=`.
#[derive(Deserialize)]
pub(crate) struct ListResponse {
    pub(crate) items: Vec<WireEntry>,
    pub(crate) next: Option<String>,
}

/// An entry: `{ collection, id, change_vector, revision, etag,
/// last_modified, document }`, the document kept as the server sent it.
/// (The metadata's fields are listed rather than flattened: serde reads a
/// flattened struct by buffering every field first.)
#[derive(Deserialize)]
pub(crate) struct WireEntry {
    id: String,
    collection: String,
    change_vector: ChangeVector,
    revision: u64,
    etag: u64,
    #[serde(with = "folio_core::rfc3339")]
    last_modified: SystemTime,
    document: Box<RawValue>,
}

impl WireEntry {
    /// The collection and the id.
    pub(crate) fn key(&self) -> (&str, &str) {
        (&self.collection, &self.id)
    }

    /// The metadata, dropping the document.
    pub(crate) fn into_metadata(self) -> Metadata {
        self.split().0
    }

    fn split(self) -> (Metadata, Box<RawValue>) {
        let WireEntry {
            id,
            collection,
            change_vector,
            revision,
            etag,
            last_modified,
            document,
        } = self;
        let metadata = Metadata {
            id,
            collection,
            change_vector,
            revision,
            etag,
            last_modified,
        };
        (metadata, document)
    }
}

impl From<WireEntry> for Entry {
    fn from(entry: WireEntry) -> Self {
        let (metadata, document) = entry.split();
        let document: Box<str> = document.into();
        Entry {
            metadata,
            document: document.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use folio_core::{ChangeVector, time_from_millis};

    use super::*;

    #[test]
    fn commands_serialize_as_in_the_protocol() {
        let commands = [
            Command::put(
                "people",
                "p1",
                r#"{"name": "A", "tags":[1, 2]}"#,
                Expectation::version("A:42-Yk3q"),
            )
            .with_type_name("Person"),
            Command::put("people", "p2", r#"{"name":"B"}"#, Expectation::Missing),
            Command::delete("people", "p3", Expectation::Any),
            Command::check("people", "p4", Expectation::version("A:40-Yk3q")),
        ];
        let request = BatchRequest {
            commands: commands
                .iter()
                .map(WireCommand::new)
                .collect::<Result<_>>()
                .unwrap(),
        };
        // The document's text is sent as is, spaces included.
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"commands":[{"op":"put","collection":"people","id":"p1","document":{"name": "A", "tags":[1, 2]},"expect":{"change_vector":"A:42-Yk3q"}},{"op":"put","collection":"people","id":"p2","document":{"name":"B"},"expect":"missing"},{"op":"delete","collection":"people","id":"p3","expect":"any"},{"op":"check","collection":"people","id":"p4","expect":{"change_vector":"A:40-Yk3q"}}]}"#
        );
    }

    #[test]
    fn entries_keep_the_document_text() {
        let body = r#"{"results":[{"collection":"people","id":"p1","change_vector":"A:3-x","revision":2,"etag":3,"last_modified":"2023-11-14T22:13:20.123Z","document":{"name": "Ada",  "n":1.50}},null]}"#;
        let results: Results<Option<WireEntry>> = serde_json::from_str(body).unwrap();
        let mut results = results.results.into_iter();
        let entry = Entry::from(results.next().unwrap().unwrap());
        assert!(results.next().unwrap().is_none());
        assert_eq!(entry.document, r#"{"name": "Ada",  "n":1.50}"#);
        assert_eq!(
            entry.metadata,
            Metadata {
                id: "p1".into(),
                collection: "people".into(),
                change_vector: ChangeVector::from("A:3-x"),
                revision: 2,
                etag: 3,
                last_modified: time_from_millis(1_700_000_000_123),
            }
        );
    }

    #[test]
    fn command_results_read_as_the_server_writes_them() {
        let body = r#"{"results":[
            {"result":"put","id":"p1","collection":"people","change_vector":"A:5-x","revision":1,"etag":5,"last_modified":"2023-11-14T22:13:20.123Z"},
            {"result":"deleted","collection":"people","id":"p2","etag":6},
            {"result":"deleted","collection":"people","id":"p3","etag":null},
            {"result":"checked","collection":"people","id":"p4"}
        ]}"#;
        let response: BatchResponse = serde_json::from_str(body).unwrap();
        let results: Vec<CommandResult> = response
            .results
            .into_iter()
            .map(|result| result.into_result().unwrap())
            .collect();
        assert_eq!(
            results[0],
            CommandResult::Put(Metadata {
                id: "p1".into(),
                collection: "people".into(),
                change_vector: ChangeVector::from("A:5-x"),
                revision: 1,
                etag: 5,
                last_modified: time_from_millis(1_700_000_000_123),
            })
        );
        assert_eq!(
            results[1],
            CommandResult::Deleted {
                collection: "people".into(),
                id: "p2".into(),
                etag: Some(6)
            }
        );
        assert!(matches!(
            &results[2],
            CommandResult::Deleted { etag: None, .. }
        ));
        assert!(matches!(&results[3], CommandResult::Checked { .. }));
        // A put without its metadata is not a result.
        let body = r#"{"results":[{"result":"put","collection":"people","id":"p1","etag":5}]}"#;
        let response: BatchResponse = serde_json::from_str(body).unwrap();
        let refused = response.results.into_iter().next().unwrap().into_result();
        assert!(refused.unwrap_err().contains("people #p1"));
    }
}
