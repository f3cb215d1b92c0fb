//! The JSON bodies of `docs/protocol.md`: what a server writes is what a
//! client reads, through the same types.
//!
//! Documents travel as raw JSON text both ways ([`RawValue`]): what a
//! client serialized is what the server stores, and what the server stored
//! is what the client gets, spaces and number forms included.

use std::borrow::Cow;
use std::time::SystemTime;

use folio_core::{
    Batch, Change, ChangeKind, ChangeVector, ChangesPage, CollectionCount, Command, CommandKind,
    CommandResult, Entry, Error, Expectation, Metadata, Result, validate,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// The most commands one batch may hold.
pub const MAX_COMMANDS: usize = 10_000;

/// How deep a batch body nests around a document: the body, its
/// `commands` array and the command.
pub const ENVELOPE_DEPTH: usize = 3;

/// `POST /db/{db}/batch`: `{ "commands": [...] }`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    /// The commands, in order.
    #[serde(borrow)]
    pub commands: Vec<BatchCommand<'a>>,
}

/// One command of a batch: a plain struct rather than a tagged enum, so
/// the document stays raw JSON text, borrowed from the body it came in (or
/// from the command it is sent for). A command's `type_name` stays on the
/// client: the server does not take it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCommand<'a> {
    /// `put`, `delete` or `check`.
    pub op: Operation,
    /// The collection.
    #[serde(borrow)]
    pub collection: Cow<'a, str>,
    /// The document id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// A put's document.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub document: Option<&'a RawValue>,
    /// What the stored version must be (`any` when absent).
    #[serde(default)]
    pub expect: Cow<'a, Expectation>,
}

/// What a batch command does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Insert or replace the document.
    Put,
    /// Delete the document.
    Delete,
    /// Write nothing; only require the expectation.
    Check,
}

impl<'a> BatchCommand<'a> {
    /// The wire form of a command; refused when a put's document is not
    /// well-formed JSON.
    pub fn new(command: &'a Command) -> Result<Self> {
        let (op, document) = match &command.kind {
            CommandKind::Put { document } => {
                let raw = serde_json::from_str::<&RawValue>(document).map_err(|error| {
                    Error::InvalidInput(format!("a document must be well-formed JSON: {error}"))
                })?;
                (Operation::Put, Some(raw))
            }
            CommandKind::Delete => (Operation::Delete, None),
            CommandKind::Check => (Operation::Check, None),
        };
        Ok(BatchCommand {
            op,
            collection: Cow::Borrowed(&command.collection),
            id: Cow::Borrowed(&command.id),
            document,
            expect: Cow::Borrowed(&command.expect),
        })
    }

    /// The command this is (number `index` of its batch), its document
    /// nesting at most `max_nesting` deep.
    fn into_command(self, index: usize, max_nesting: usize) -> Result<Command> {
        let BatchCommand {
            op,
            collection,
            id,
            document,
            expect,
        } = self;
        let (collection, id, expect) = (
            collection.into_owned(),
            id.into_owned(),
            expect.into_owned(),
        );
        match (op, document) {
            (Operation::Put, Some(document)) => {
                if let Some(depth) = validate::deeper_than(document.get(), max_nesting) {
                    return Err(Error::InvalidInput(format!(
                        "command {index}: the document nests {depth} deep; \
                         at most {max_nesting} is allowed"
                    )));
                }
                Ok(Command::put(collection, id, document.get(), expect))
            }
            (Operation::Put, None) => Err(Error::InvalidInput(format!(
                "command {index}: a put needs a document"
            ))),
            (Operation::Delete | Operation::Check, Some(_)) => Err(Error::InvalidInput(format!(
                "command {index}: only a put carries a document"
            ))),
            (Operation::Delete, None) => Ok(Command::delete(collection, id, expect)),
            (Operation::Check, None) => Ok(Command::check(collection, id, expect)),
        }
    }
}

/// Parses a batch request body into commands, validated as a batch
/// (`Batch::validate`): each document nests at most `max_nesting` deep,
/// counted from the document itself, so that whatever a PUT takes can be
/// batched; the body as a whole at most [`ENVELOPE_DEPTH`] more. Every
/// refusal is [`Error::InvalidInput`].
pub fn parse_batch(text: &str, max_nesting: usize) -> Result<Vec<Command>> {
    if let Some(depth) = validate::deeper_than(text, max_nesting + ENVELOPE_DEPTH) {
        return Err(Error::InvalidInput(format!(
            "the batch nests {depth} deep: at most {max_nesting} deep in its documents, {} in all",
            max_nesting + ENVELOPE_DEPTH
        )));
    }
    let request: BatchRequest<'_> = serde_json::from_str(text)
        .map_err(|error| Error::InvalidInput(format!("malformed batch: {error}")))?;
    if request.commands.len() > MAX_COMMANDS {
        return Err(Error::InvalidInput(format!(
            "at most {MAX_COMMANDS} commands per batch"
        )));
    }
    let commands = request
        .commands
        .into_iter()
        .enumerate()
        .map(|(index, command)| command.into_command(index, max_nesting))
        .collect::<Result<Vec<_>>>()?;
    let batch = Batch::from(commands);
    batch.validate()?;
    Ok(batch.commands)
}

/// The answer to a committed batch: `{ "results": [...] }` in command
/// order, each `{"result": "put" | "deleted" | "checked", …}`.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct BatchResponse {
    /// One result per command.
    pub results: Vec<CommandResult>,
}

impl<'de> Deserialize<'de> for BatchResponse {
    /// Read through one flat struct per result: serde reads an internally
    /// tagged enum by buffering every field first, which a client would pay
    /// on every save. A put without its metadata is refused.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            results: Vec<FlatResult>,
        }
        let Flat { results } = Flat::deserialize(deserializer)?;
        let results = results
            .into_iter()
            .map(FlatResult::into_result)
            .collect::<std::result::Result<_, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(BatchResponse { results })
    }
}

/// One result of a batch as it is read.
#[derive(Deserialize)]
struct FlatResult {
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

impl FlatResult {
    fn into_result(self) -> std::result::Result<CommandResult, String> {
        let FlatResult {
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

/// An entry: `{ id, collection, change_vector, revision, etag,
/// last_modified, document }`, the document as stored. (The metadata's
/// fields are listed rather than flattened: serde reads a flattened struct
/// by buffering every field first.)
#[derive(Serialize, Deserialize, Debug)]
pub struct EntryBody {
    /// The document id.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// The version's change vector.
    pub change_vector: ChangeVector,
    /// The document's revision.
    pub revision: u64,
    /// The etag the version's write took.
    pub etag: u64,
    /// When the version was committed.
    #[serde(with = "folio_core::rfc3339")]
    pub last_modified: SystemTime,
    /// The document, as stored.
    pub document: Box<RawValue>,
}

impl EntryBody {
    /// The body of a stored entry; an error when its document is not JSON
    /// (a damaged database).
    pub fn new(entry: Entry) -> serde_json::Result<Self> {
        let document = RawValue::from_string(entry.document)?;
        let Metadata {
            id,
            collection,
            change_vector,
            revision,
            etag,
            last_modified,
        } = entry.metadata;
        Ok(EntryBody {
            id,
            collection,
            change_vector,
            revision,
            etag,
            last_modified,
            document,
        })
    }

    /// The collection and the id.
    pub fn key(&self) -> (&str, &str) {
        (&self.collection, &self.id)
    }

    /// The metadata, dropping the document.
    pub fn into_metadata(self) -> Metadata {
        self.split().0
    }

    fn split(self) -> (Metadata, Box<RawValue>) {
        let EntryBody {
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

impl From<EntryBody> for Entry {
    fn from(body: EntryBody) -> Self {
        let (metadata, document) = body.split();
        let document: Box<str> = document.into();
        Entry {
            metadata,
            document: document.into(),
        }
    }
}

/// `{ "results": [...] }`: the answer to reading many documents
/// (`POST /db/{db}/docs/{collection}/get`, `null` for a missing one).
#[derive(Serialize, Deserialize)]
pub struct Results<T> {
    /// In the order asked for.
    pub results: Vec<T>,
}

/// `POST /db/{db}/docs/{collection}/get`: `{ "ids": [...] }`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetManyRequest<'a> {
    /// The ids to read.
    pub ids: Cow<'a, [String]>,
}

/// The answer to `POST /db/{db}/query`.
#[derive(Serialize, Deserialize)]
pub struct QueryResponse {
    /// The page of matching entries.
    pub results: Vec<EntryBody>,
    /// How many entries match in all.
    pub total: u64,
}

/// The answer to `GET /db/{db}/docs/{collection}?after=&limit=`.
#[derive(Serialize, Deserialize)]
pub struct ListResponse {
    /// The page, in id order.
    pub items: Vec<EntryBody>,
    /// The id to list after for the next page; `null` on the last.
    pub next: Option<String>,
}

/// The answer to `GET /db/{db}/collections`.
#[derive(Serialize, Deserialize)]
pub struct CollectionList {
    /// The collections that hold documents, in order of name.
    pub collections: Vec<CollectionCount>,
}

/// The answer to `GET /db`.
#[derive(Serialize, Deserialize)]
pub struct DatabaseList {
    /// The databases the key may read, in order of name.
    pub databases: Vec<String>,
}

/// The answer to `PUT /db/{db}` (`201` created, `200` it existed).
#[derive(Serialize, Deserialize)]
pub struct DatabaseCreated {
    /// The database's name.
    pub database: String,
}

/// The answer to `POST /db/{db}/restore` (`201`).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The new database.
    pub database: String,
    /// Its id: the part of every change vector after the etag.
    pub database_id: String,
    /// Whether the change vectors clients hold still name its versions.
    pub change_vectors: ChangeVectors,
    /// The last etag the backup holds: where changes-feed readers resume.
    pub last_etag: u64,
    /// How many documents it holds.
    pub documents: u64,
    /// How many collections.
    pub collections: u64,
    /// How many tombstones (deletes the feed still reports).
    pub tombstones: u64,
    /// How many changes the feed holds.
    pub changes: u64,
    /// How many indexes.
    pub indexes: u64,
}

/// Whose database id a restored database has.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeVectors {
    /// The source's: the change vectors clients hold stay valid.
    Kept,
    /// One of its own: no change vector of the source matches.
    New,
}

/// One change of the feed: an SSE event's `data`, and an item of a long
/// poll's `changes`.
#[derive(Serialize, Deserialize)]
pub struct ChangeBody<'a> {
    /// `put` or `delete`.
    pub kind: ChangeKind,
    /// The collection.
    pub collection: Cow<'a, str>,
    /// The document id.
    pub id: Cow<'a, str>,
    /// The change vector the write produced.
    pub change_vector: Cow<'a, str>,
    /// The revision after a put; for a delete, that of the version deleted.
    pub revision: u64,
    /// The etag the write took.
    pub etag: u64,
}

impl<'a> From<&'a Change> for ChangeBody<'a> {
    fn from(change: &'a Change) -> Self {
        ChangeBody {
            kind: change.kind,
            collection: Cow::Borrowed(&change.collection),
            id: Cow::Borrowed(&change.id),
            change_vector: Cow::Borrowed(change.change_vector.as_str()),
            revision: change.revision,
            etag: change.etag,
        }
    }
}

impl From<ChangeBody<'_>> for Change {
    fn from(body: ChangeBody<'_>) -> Self {
        Change {
            etag: body.etag,
            kind: body.kind,
            collection: body.collection.into_owned(),
            id: body.id.into_owned(),
            change_vector: ChangeVector::from(body.change_vector.into_owned()),
            revision: body.revision,
        }
    }
}

/// A long poll of the changes feed: `{ "changes": [...], "last_etag" }`.
#[derive(Serialize, Deserialize)]
pub struct ChangesPageBody<'a> {
    /// The changes, in etag order.
    pub changes: Vec<ChangeBody<'a>>,
    /// Where the next page starts.
    pub last_etag: u64,
}

impl From<ChangesPageBody<'_>> for ChangesPage {
    fn from(body: ChangesPageBody<'_>) -> Self {
        ChangesPage {
            changes: body.changes.into_iter().map(Change::from).collect(),
            last_etag: body.last_etag,
        }
    }
}

#[cfg(test)]
mod tests {
    use folio_core::time_from_millis;

    use super::*;

    #[test]
    fn commands_serialize_as_in_the_protocol_and_parse_back() {
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
                .map(BatchCommand::new)
                .collect::<Result<_>>()
                .unwrap(),
        };
        // The document's text is sent as is, spaces included.
        let wire = serde_json::to_string(&request).unwrap();
        assert_eq!(
            wire,
            r#"{"commands":[{"op":"put","collection":"people","id":"p1","document":{"name": "A", "tags":[1, 2]},"expect":{"change_vector":"A:42-Yk3q"}},{"op":"put","collection":"people","id":"p2","document":{"name":"B"},"expect":"missing"},{"op":"delete","collection":"people","id":"p3","expect":"any"},{"op":"check","collection":"people","id":"p4","expect":{"change_vector":"A:40-Yk3q"}}]}"#
        );
        let parsed = parse_batch(&wire, validate::MAX_NESTING).unwrap();
        let sent: Vec<Command> = commands
            .into_iter()
            .map(|mut command| {
                command.type_name = None;
                command
            })
            .collect();
        assert_eq!(parsed, sent);
    }

    #[test]
    fn malformed_batches_are_invalid_input_naming_the_command() {
        for (body, says) in [
            (
                r#"{"commands":[{"op":"put","collection":"c","id":"a"}]}"#,
                "command 0: a put needs a document",
            ),
            (
                r#"{"commands":[{"op":"delete","collection":"c","id":"a","document":{}}]}"#,
                "command 0: only a put carries a document",
            ),
            (r#"{"commands":[],"extra":1}"#, "malformed batch"),
            (
                r#"{"commands":[{"op":"put","collection":"c","id":"a","document":{"a":{"b":{"c":{"d":1}}}}}]}"#,
                "the batch nests 7 deep",
            ),
        ] {
            match parse_batch(body, 3) {
                Err(Error::InvalidInput(detail)) => {
                    assert!(detail.contains(says), "{body}: {detail}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_keep_the_document_text_both_ways() {
        let body = r#"{"results":[{"id":"p1","collection":"people","change_vector":"A:3-x","revision":2,"etag":3,"last_modified":"2023-11-14T22:13:20.123Z","document":{"name": "Ada",  "n":1.50}},null]}"#;
        let results: Results<Option<EntryBody>> = serde_json::from_str(body).unwrap();
        assert_eq!(serde_json::to_string(&results).unwrap(), body);
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
        // A stored document that is not JSON has no body.
        let mut damaged = entry.clone();
        damaged.document = "{not json".into();
        assert!(EntryBody::new(damaged).is_err());
        let again = EntryBody::new(entry.clone()).unwrap();
        assert_eq!(Entry::from(again), entry);
    }

    #[test]
    fn command_results_read_as_the_server_writes_them() {
        let results = vec![
            CommandResult::Put(Metadata {
                id: "p1".into(),
                collection: "people".into(),
                change_vector: ChangeVector::from("A:5-x"),
                revision: 1,
                etag: 5,
                last_modified: time_from_millis(1_700_000_000_123),
            }),
            CommandResult::Deleted {
                collection: "people".into(),
                id: "p2".into(),
                etag: Some(6),
            },
            CommandResult::Deleted {
                collection: "people".into(),
                id: "p3".into(),
                etag: None,
            },
            CommandResult::Checked {
                collection: "people".into(),
                id: "p4".into(),
            },
        ];
        let response = BatchResponse { results };
        let wire = serde_json::to_string(&response).unwrap();
        assert!(
            wire.starts_with(r#"{"results":[{"result":"put","#),
            "{wire}"
        );
        let read: BatchResponse = serde_json::from_str(&wire).unwrap();
        assert_eq!(read, response);
        // A put without its metadata is not a result.
        let body = r#"{"results":[{"result":"put","collection":"people","id":"p1","etag":5}]}"#;
        let refused = serde_json::from_str::<BatchResponse>(body).unwrap_err();
        assert!(refused.to_string().contains("people #p1"), "{refused}");
    }

    #[test]
    fn changes_read_as_the_server_writes_them() {
        let change = Change {
            etag: 7,
            kind: ChangeKind::Delete,
            collection: "people".into(),
            id: "p1".into(),
            change_vector: ChangeVector::from("A:7-x"),
            revision: 3,
        };
        let page = ChangesPageBody {
            changes: vec![ChangeBody::from(&change)],
            last_etag: 9,
        };
        let wire = serde_json::to_string(&page).unwrap();
        assert_eq!(
            wire,
            r#"{"changes":[{"kind":"delete","collection":"people","id":"p1","change_vector":"A:7-x","revision":3,"etag":7}],"last_etag":9}"#
        );
        let read: ChangesPageBody<'_> = serde_json::from_str(&wire).unwrap();
        assert_eq!(
            ChangesPage::from(read),
            ChangesPage {
                changes: vec![change],
                last_etag: 9
            }
        );
    }
}

/// The server's parsing of batches, as `docs/protocol.md` shows them.
#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_the_protocol_example() {
        let commands = parse_batch(
            r#"{ "commands": [
              { "op": "put",    "collection": "people", "id": "p1", "document": { "name": "A" }, "expect": { "change_vector": "A:42-Yk3q" } },
              { "op": "put",    "collection": "people", "id": "p2", "document": { "name": "B" }, "expect": "missing" },
              { "op": "delete", "collection": "people", "id": "p3", "expect": "any" },
              { "op": "check",  "collection": "people", "id": "p4", "expect": { "change_vector": "A:40-Yk3q" } }
            ] }"#,
            validate::MAX_NESTING,
        )
        .unwrap();
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[0].expect, Expectation::version("A:42-Yk3q"));
        assert_eq!(commands[1].expect, Expectation::Missing);
    }

    #[test]
    fn refuses_bad_batches() {
        for bad in [
            r#"{"commands":[{"op":"put","collection":"bad name","id":"x","document":{}}]}"#,
            r#"{"commands":[{"op":"put","collection":"c","id":"x","document":[1]}]}"#,
            r#"{"commands":[{"op":"explode","collection":"c","id":"x"}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":"sometimes"}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":{"change_vector":"A:1-x","extra":1}}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":{}}]}"#,
            r#"{"orders":[]}"#,
            r#"{"commands":[{"op":"put","collection":"c","id":"x","document":{}},{"op":"check","collection":"c","id":"x"}]}"#,
        ] {
            assert!(
                parse_batch(bad, validate::MAX_NESTING).is_err(),
                "{bad} must be refused"
            );
        }
    }

    /// The envelope does not count against a document's depth: what PUT
    /// takes can be batched, and no more.
    #[test]
    fn documents_nest_as_deep_as_a_put_allows() {
        let nested = |depth: usize| {
            format!(
                "{}{{}}{}",
                "{\"a\":".repeat(depth - 1),
                "}".repeat(depth - 1)
            )
        };
        let batch = |document: &str| {
            format!(
                r#"{{"commands":[{{"op":"put","collection":"c","id":"x","document":{document},"expect":{{"change_vector":"A:1-x"}}}}]}}"#
            )
        };
        for limit in [1, 4, validate::MAX_NESTING] {
            let commands = parse_batch(&batch(&nested(limit)), limit).unwrap();
            assert_eq!(commands.len(), 1);
            let refused = parse_batch(&batch(&nested(limit + 1)), limit);
            assert!(
                matches!(&refused, Err(Error::InvalidInput(detail)) if detail.contains(&format!("at most {limit} ")) ),
                "{refused:?}"
            );
        }
        assert!(parse_batch(&batch(&nested(100_000)), validate::MAX_NESTING).is_err());
    }
}
