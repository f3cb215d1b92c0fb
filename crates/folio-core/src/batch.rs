use serde::{Deserialize, Serialize};

use crate::{ChangeVector, Metadata};

/// What a write (or a read guard) requires of the stored document.
///
/// Serialized as in the HTTP batch protocol: `"any"`, `"missing"` or
/// `{ "change_vector": "…" }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// No check: last write wins.
    #[default]
    Any,
    /// The document must not exist.
    Missing,
    /// The document must exist with exactly this change vector.
    #[serde(untagged)]
    Version {
        /// The change vector the stored document must have.
        change_vector: ChangeVector,
    },
}

impl Expectation {
    /// `Expectation::Version` for `change_vector`.
    pub fn version(change_vector: impl Into<ChangeVector>) -> Self {
        Expectation::Version {
            change_vector: change_vector.into(),
        }
    }

    /// Whether a stored document whose current change vector is `actual`
    /// (`None` when it does not exist) satisfies this expectation.
    pub fn is_met_by(&self, actual: Option<&ChangeVector>) -> bool {
        match self {
            Expectation::Any => true,
            Expectation::Missing => actual.is_none(),
            Expectation::Version { change_vector } => actual == Some(change_vector),
        }
    }
}

/// Read by hand rather than derived: serde reads an untagged variant by
/// buffering the value and trying each variant in turn, and the failed
/// tries build error messages. Every command of an HTTP batch carries an
/// expectation; the derived reader was 1 % of the server's CPU.
impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ExpectationVisitor)
    }
}

struct ExpectationVisitor;

const EXPECTATION_WORDS: &[&str] = &["any", "missing"];

/// The one field of `{ "change_vector": "…" }`, read without allocating
/// (escaped or not); any other key is an error that names it.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ExpectationField {
    ChangeVector,
}

impl<'de> serde::de::Visitor<'de> for ExpectationVisitor {
    type Value = Expectation;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#""any", "missing" or { "change_vector": "…" }"#)
    }

    fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Expectation, E> {
        match word {
            "any" => Ok(Expectation::Any),
            "missing" => Ok(Expectation::Missing),
            other => Err(E::unknown_variant(other, EXPECTATION_WORDS)),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Expectation, A::Error> {
        let mut change_vector: Option<ChangeVector> = None;
        while let Some(ExpectationField::ChangeVector) = map.next_key()? {
            if change_vector.is_some() {
                return Err(serde::de::Error::duplicate_field("change_vector"));
            }
            change_vector = Some(map.next_value()?);
        }
        change_vector
            .map(|change_vector| Expectation::Version { change_vector })
            .ok_or_else(|| serde::de::Error::missing_field("change_vector"))
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::Any => f.write_str("any version"),
            Expectation::Missing => f.write_str("missing"),
            Expectation::Version { change_vector } => write!(f, "{change_vector}"),
        }
    }
}

/// What one command of a batch does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Insert or replace the document with this JSON object (text).
    Put {
        /// The document, a JSON object as text.
        document: String,
    },
    /// Delete the document (a no-op when it is missing and the expectation allows).
    Delete,
    /// Write nothing; only guard the batch with the expectation (read-set validation).
    Check,
}

/// One write or read guard of a [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The collection of the document.
    pub collection: String,
    /// The id of the document within its collection.
    pub id: String,
    /// What the stored document must be for the batch to commit.
    pub expect: Expectation,
    /// What the command does.
    pub kind: CommandKind,
    /// The name callers know the document by (a Rust type name), used in
    /// conflict messages; `None` reports the collection instead.
    pub type_name: Option<String>,
}

impl Command {
    /// A put of `document` (JSON object text) with `expect`.
    pub fn put(
        collection: impl Into<String>,
        id: impl Into<String>,
        document: impl Into<String>,
        expect: Expectation,
    ) -> Self {
        Command {
            collection: collection.into(),
            id: id.into(),
            expect,
            kind: CommandKind::Put {
                document: document.into(),
            },
            type_name: None,
        }
    }

    /// A delete with `expect`.
    pub fn delete(
        collection: impl Into<String>,
        id: impl Into<String>,
        expect: Expectation,
    ) -> Self {
        Command {
            collection: collection.into(),
            id: id.into(),
            expect,
            kind: CommandKind::Delete,
            type_name: None,
        }
    }

    /// A read guard: the batch commits only if `expect` holds.
    pub fn check(
        collection: impl Into<String>,
        id: impl Into<String>,
        expect: Expectation,
    ) -> Self {
        Command {
            collection: collection.into(),
            id: id.into(),
            expect,
            kind: CommandKind::Check,
            type_name: None,
        }
    }

    /// Names the document's type for conflict messages.
    pub fn with_type_name(mut self, type_name: impl Into<String>) -> Self {
        self.type_name = Some(type_name.into());
        self
    }

    /// Checks the collection, the id and (for puts) that the document is a
    /// JSON object, so that an engine never sees malformed input.
    pub fn validate(&self) -> crate::Result<()> {
        crate::validate::collection(&self.collection)?;
        crate::validate::id(&self.id)?;
        if let CommandKind::Put { document } = &self.kind {
            crate::validate::document_text(document)?;
        }
        Ok(())
    }
}

/// The writes and read guards of one `save_changes`: all commit or none do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The commands, applied in order.
    pub commands: Vec<Command>,
    /// The batch's id, when it has one: an engine records the id of each
    /// batch it commits with its results, in the same transaction, and
    /// answers the same batch sent again with those results, writing
    /// nothing. A batch whose outcome was lost (a connection closed during
    /// `COMMIT`, a failover) is resolved by sending it again with its id.
    pub id: Option<BatchId>,
    /// What the id stands for, when not the commands themselves
    /// ([`Batch::fingerprint`]): a front end that builds the batch from a
    /// request, reading the document first, sets the request's digest, so
    /// that the same request sent again is known though the batch it
    /// builds then differs.
    pub digest: Option<[u8; 32]>,
}

/// The id of a batch (over HTTP, its `Idempotency-Key`): 1 to 255
/// printable ASCII characters (`!` to `~`). Engines keep the ids of
/// committed batches for a while (a day by default), with a fingerprint of
/// the batch: the same id with other commands is refused
/// ([`crate::Error::BatchIdReused`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(String);

impl BatchId {
    /// The most characters an id may have.
    pub const MAX_LEN: usize = 255;

    /// A new, unique id (a ULID: 26 characters, sortable by time).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        BatchId(crate::generate_id())
    }

    /// `text` as an id, or [`crate::Error::InvalidInput`] saying what is
    /// wrong with it.
    pub fn parse(text: &str) -> crate::Result<Self> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(crate::Error::InvalidInput(format!(
                "a batch id (Idempotency-Key) has 1 to {} characters, not {}",
                Self::MAX_LEN,
                text.len()
            )));
        }
        if let Some(bad) = text.chars().find(|c| !('!'..='~').contains(c)) {
            return Err(crate::Error::InvalidInput(format!(
                "a batch id (Idempotency-Key) holds printable ASCII characters only \
                 (`!` to `~`), not {bad:?}"
            )));
        }
        Ok(BatchId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BatchId {
    type Err = crate::Error;

    fn from_str(text: &str) -> crate::Result<Self> {
        BatchId::parse(text)
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// The batch with `id` ([`Batch::id`]).
    pub fn with_id(mut self, id: BatchId) -> Self {
        self.id = Some(id);
        self
    }

    /// The batch with `digest` standing for it ([`Batch::digest`]).
    pub fn with_digest(mut self, digest: [u8; 32]) -> Self {
        self.digest = Some(digest);
        self
    }

    /// What the batch's id is recorded with: its [`Batch::digest`] when it
    /// has one, else a digest of the commands (SHA-256 of every field of
    /// each, in order, each length-prefixed), which the same commands, and
    /// only they, have. Engines keep it with a committed batch's id to tell
    /// a batch sent again from another batch under the same id.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        if let Some(digest) = self.digest {
            return digest;
        }
        let mut digest = sha2::Sha256::new();
        let mut field = |bytes: &[u8]| {
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        for command in &self.commands {
            field(command.collection.as_bytes());
            field(command.id.as_bytes());
            match &command.expect {
                Expectation::Any => field(b"any"),
                Expectation::Missing => field(b"missing"),
                Expectation::Version { change_vector } => {
                    field(b"version");
                    field(change_vector.as_str().as_bytes());
                }
            }
            match &command.kind {
                CommandKind::Put { document } => {
                    field(b"put");
                    field(document.as_bytes());
                }
                CommandKind::Delete => field(b"delete"),
                CommandKind::Check => field(b"check"),
            }
        }
        digest.finalize().into()
    }

    /// Adds a command.
    pub fn push(&mut self, command: Command) -> &mut Self {
        self.commands.push(command);
        self
    }

    /// Whether the batch has no commands.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The number of commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Validates every command (see [`Command::validate`]) and that no two
    /// commands name the same document.
    ///
    /// A batch names each document at most once, so that every expectation
    /// of a batch is judged against the state committed before it, and the
    /// version a conflict reports is always a committed one (never a write
    /// of the refused batch itself, which is rolled back).
    pub fn validate(&self) -> crate::Result<()> {
        self.commands.iter().try_for_each(Command::validate)?;
        match self.repeated_document() {
            None => Ok(()),
            Some((first, again)) => {
                let command = &self.commands[again];
                Err(crate::Error::InvalidInput(format!(
                    "commands {first} and {again} both name {} #{}: a batch names each \
                     document at most once (send the final version of the document once)",
                    command.collection, command.id
                )))
            }
        }
    }

    /// The positions of the first two commands that name the same document.
    fn repeated_document(&self) -> Option<(usize, usize)> {
        let key = |index: usize| {
            let command = &self.commands[index];
            (command.collection.as_str(), command.id.as_str())
        };
        // Most batches are small: comparing every pair allocates nothing.
        if self.commands.len() <= 16 {
            return (1..self.commands.len()).find_map(|again| {
                (0..again)
                    .find(|&first| key(first) == key(again))
                    .map(|first| (first, again))
            });
        }
        let mut seen = std::collections::HashMap::with_capacity(self.commands.len());
        (0..self.commands.len())
            .find_map(|index| seen.insert(key(index), index).map(|first| (first, index)))
    }
}

impl From<Vec<Command>> for Batch {
    fn from(commands: Vec<Command>) -> Self {
        Batch {
            commands,
            id: None,
            digest: None,
        }
    }
}

/// What a committed batch came to: each command's result, in command
/// order, and whether the batch had committed before (its id was recorded)
/// so that these are the recorded results and nothing was written now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Each command's result, in command order.
    pub results: Vec<CommandResult>,
    /// Whether these are the recorded results of an earlier commit of the
    /// same batch ([`Batch::id`]): nothing was written this time.
    pub replayed: bool,
    /// Where the commit left the database: a read sent with it
    /// ([`crate::Reads::After`]) sees these writes. `None` from an engine
    /// that could not learn it (the session's reads then go to the
    /// primary).
    pub position: Option<crate::Position>,
}

impl Committed {
    /// Results of a batch committed now.
    pub fn new(results: Vec<CommandResult>) -> Self {
        Committed {
            results,
            replayed: false,
            position: None,
        }
    }

    /// The recorded results of a batch committed before.
    pub fn replayed(results: Vec<CommandResult>) -> Self {
        Committed {
            results,
            replayed: true,
            position: None,
        }
    }

    /// The same, with the position the commit left the database at.
    pub fn at(mut self, position: Option<crate::Position>) -> Self {
        self.position = position;
        self
    }

    /// The results, in command order.
    pub fn into_results(self) -> Vec<CommandResult> {
        self.results
    }
}

impl From<Vec<CommandResult>> for Committed {
    fn from(results: Vec<CommandResult>) -> Self {
        Committed::new(results)
    }
}

impl std::ops::Deref for Committed {
    type Target = Vec<CommandResult>;

    fn deref(&self) -> &Vec<CommandResult> {
        &self.results
    }
}

impl IntoIterator for Committed {
    type Item = CommandResult;
    type IntoIter = std::vec::IntoIter<CommandResult>;

    fn into_iter(self) -> Self::IntoIter {
        self.results.into_iter()
    }
}

impl<'a> IntoIterator for &'a Committed {
    type Item = &'a CommandResult;
    type IntoIter = std::slice::Iter<'a, CommandResult>;

    fn into_iter(self) -> Self::IntoIter {
        self.results.iter()
    }
}

impl PartialEq<Vec<CommandResult>> for Committed {
    fn eq(&self, other: &Vec<CommandResult>) -> bool {
        self.results == *other
    }
}

/// The outcome of one command of a committed batch, in command order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandResult {
    /// The put was applied; the document now has this metadata.
    Put(Metadata),
    /// The delete was applied.
    Deleted {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
        /// The etag the delete took, or `None` when there was nothing to delete.
        etag: Option<u64>,
    },
    /// The read guard held.
    Checked {
        /// The collection.
        collection: String,
        /// The id.
        id: String,
    },
}

/// One command's result as an engine records it with a committed batch's
/// id ([`record_results`]): its kind (`k`: 0 put, 1 delete, 2 check), key
/// (`c`, `i`), etag (`e`) and revision (`r`). The change vector and the
/// time follow from the etag and when the batch committed; short names,
/// since a record is written with every batch. The PostgreSQL engine
/// writes the same JSON in SQL for a one-command batch.
#[derive(Serialize, Deserialize)]
struct Recorded<'a> {
    k: u8,
    #[serde(borrow)]
    c: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    i: std::borrow::Cow<'a, str>,
    e: Option<u64>,
    r: Option<u64>,
}

const RECORDED_PUT: u8 = 0;
const RECORDED_DELETE: u8 = 1;
const RECORDED_CHECK: u8 = 2;

/// The results of a committed batch as its record holds them: a JSON array
/// of each result's kind, key, etag and revision.
pub fn record_results(results: &[CommandResult]) -> String {
    let recorded: Vec<Recorded<'_>> = results
        .iter()
        .map(|result| match result {
            CommandResult::Put(metadata) => Recorded {
                k: RECORDED_PUT,
                c: metadata.collection.as_str().into(),
                i: metadata.id.as_str().into(),
                e: Some(metadata.etag),
                r: Some(metadata.revision),
            },
            CommandResult::Deleted {
                collection,
                id,
                etag,
            } => Recorded {
                k: RECORDED_DELETE,
                c: collection.as_str().into(),
                i: id.as_str().into(),
                e: *etag,
                r: None,
            },
            CommandResult::Checked { collection, id } => Recorded {
                k: RECORDED_CHECK,
                c: collection.as_str().into(),
                i: id.as_str().into(),
                e: None,
                r: None,
            },
        })
        .collect();
    serde_json::to_string(&recorded).unwrap_or_default()
}

/// The results [`record_results`] recorded for a batch committed at
/// `committed_at` (milliseconds since the epoch), each put's change vector
/// made from its etag by `change_vector`; `None` when the record is not
/// one (damaged).
pub fn recorded_results(
    record: &str,
    committed_at: i64,
    change_vector: impl Fn(u64) -> ChangeVector,
) -> Option<Vec<CommandResult>> {
    let recorded: Vec<Recorded<'_>> = serde_json::from_str(record).ok()?;
    recorded
        .into_iter()
        .map(|result| {
            let (collection, id) = (result.c.into_owned(), result.i.into_owned());
            Some(match (result.k, result.e, result.r) {
                (RECORDED_PUT, Some(etag), Some(revision)) => CommandResult::Put(Metadata {
                    change_vector: change_vector(etag),
                    id,
                    collection,
                    revision,
                    etag,
                    last_modified: crate::time_from_millis(committed_at),
                }),
                (RECORDED_DELETE, etag, _) => CommandResult::Deleted {
                    collection,
                    id,
                    etag,
                },
                (RECORDED_CHECK, _, _) => CommandResult::Checked { collection, id },
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_serialize_as_in_the_protocol() {
        assert_eq!(
            serde_json::to_string(&Expectation::Any).unwrap(),
            r#""any""#
        );
        assert_eq!(
            serde_json::to_string(&Expectation::Missing).unwrap(),
            r#""missing""#
        );
        assert_eq!(
            serde_json::to_string(&Expectation::version("A:1-x")).unwrap(),
            r#"{"change_vector":"A:1-x"}"#
        );
        let parsed: Expectation = serde_json::from_str(r#"{"change_vector":"A:7-y"}"#).unwrap();
        assert_eq!(parsed, Expectation::version("A:7-y"));
        let parsed: Expectation = serde_json::from_str(r#""missing""#).unwrap();
        assert_eq!(parsed, Expectation::Missing);
        assert!(serde_json::from_str::<Expectation>(r#""sometimes""#).is_err());
    }

    #[test]
    fn malformed_expectations_are_refused_with_what_is_wrong() {
        let refused = |json: &str| {
            serde_json::from_str::<Expectation>(json)
                .expect_err(json)
                .to_string()
        };
        assert!(refused(r#""sometimes""#).contains("unknown variant `sometimes`"));
        assert!(refused(r#"{}"#).contains("missing field `change_vector`"));
        assert!(refused(r#"{"changevector":"A:1-x"}"#).contains("unknown field `changevector`"));
        assert!(
            refused(r#"{"change_vector":"A:1-x","change_vector":"A:2-x"}"#)
                .contains("duplicate field `change_vector`")
        );
        assert!(refused(r#"{"change_vector":7}"#).contains("invalid type"));
        for other in ["null", "7", "[]", "true"] {
            assert!(refused(other).contains(r#""any", "missing" or"#), "{other}");
        }
        // An escaped key is still the key.
        let parsed: Expectation =
            serde_json::from_str(r#"{"change\u005fvector":"A:3-x"}"#).unwrap();
        assert_eq!(parsed, Expectation::version("A:3-x"));
    }

    #[test]
    fn a_batch_names_each_document_once() {
        let put = |collection: &str, id: &str| Command::put(collection, id, "{}", Expectation::Any);
        let fine = Batch::from(vec![
            put("people", "p1"),
            put("notes", "p1"),
            Command::check("people", "p2", Expectation::Missing),
        ]);
        assert!(fine.validate().is_ok());
        for size in [2, 16, 17, 40] {
            let mut commands: Vec<Command> = (0..size - 1)
                .map(|n| put("people", &format!("p{n}")))
                .collect();
            commands.push(Command::delete("people", "p0", Expectation::Any));
            let error = Batch::from(commands)
                .validate()
                .expect_err("p0 is named twice");
            assert!(
                matches!(&error, crate::Error::InvalidInput(detail)
                    if detail.contains(&format!("commands 0 and {} both name people #p0", size - 1))),
                "{size} commands: {error}"
            );
        }
        let guard_and_write = Batch::from(vec![
            Command::check("people", "p1", Expectation::Missing),
            put("people", "p1"),
        ]);
        assert!(guard_and_write.validate().is_err());
    }

    #[test]
    fn expectations_judge_the_stored_version() {
        let stored = ChangeVector::from("A:2-x");
        assert!(Expectation::Any.is_met_by(None));
        assert!(Expectation::Any.is_met_by(Some(&stored)));
        assert!(Expectation::Missing.is_met_by(None));
        assert!(!Expectation::Missing.is_met_by(Some(&stored)));
        assert!(Expectation::version("A:2-x").is_met_by(Some(&stored)));
        assert!(!Expectation::version("A:1-x").is_met_by(Some(&stored)));
        assert!(!Expectation::version("A:2-x").is_met_by(None));
    }

    #[test]
    fn recorded_results_come_back_as_they_were_answered() {
        let database = crate::DatabaseId::generate();
        let change_vector = |etag| ChangeVector::new(etag, &database);
        let now = 1_765_000_000_123;
        let results = vec![
            CommandResult::Put(Metadata {
                change_vector: change_vector(7),
                id: "p\"1".into(),
                collection: "people".into(),
                revision: 3,
                etag: 7,
                last_modified: crate::time_from_millis(now),
            }),
            CommandResult::Deleted {
                collection: "people".into(),
                id: "p2".into(),
                etag: None,
            },
            CommandResult::Checked {
                collection: "notes".into(),
                id: "n1".into(),
            },
        ];
        let record = record_results(&results);
        assert_eq!(recorded_results(&record, now, change_vector), Some(results));
        assert_eq!(recorded_results("[{\"k\":9}]", now, change_vector), None);
        assert_eq!(recorded_results("not json", now, change_vector), None);
    }
}
