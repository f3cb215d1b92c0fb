//! The checks behind Folio's fuzz targets, one function per input boundary.
//!
//! Each takes the fuzzer's bytes, feeds them to the real parser or
//! validator (and, where the input is accepted, to a real in-memory
//! embedded engine), and asserts properties that must hold for every
//! input: no panic, a refused input never reaches storage, an accepted
//! one round-trips through its wire form unchanged. `fuzz_targets/*.rs`
//! wrap them for libFuzzer (`scripts/fuzz` runs them, on stable Rust).

use std::sync::OnceLock;

use folio_core::{Batch, Command, CommandKind, Engine, Error, Expectation, FieldPath, Query};
use folio_protocol::{
    BatchCommand, BatchRequest, EntityTag, Patch, PatchLimits, Preconditions, Tags, parse_batch,
};
use folio_sqlite::{SqliteEngine, SqliteOptions};
use serde_json::{Value, json};

/// The in-memory engine every target shares, with a few seeded documents,
/// and the runtime its reads need.
fn engine() -> &'static (tokio::runtime::Runtime, SqliteEngine) {
    static ENGINE: OnceLock<(tokio::runtime::Runtime, SqliteEngine)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = SqliteEngine::in_memory(SqliteOptions {
            cache_bytes: 1 << 20,
            ..SqliteOptions::default()
        })
        .expect("an in-memory engine");
        let people = [
            json!({"name": "Ada", "age": 36, "tags": ["vip"], "a": {"b": 1}}),
            json!({"name": "alan", "age": "41", "tags": "vip", "a": {"b": "1"}}),
            json!({"name": null, "age": 28.5, "tags": [], "a": null}),
            json!({"age": true, "tags": [1, true, "x"], "a": {"b": [1, 2]}}),
            json!({"name": "x' OR '1'='1", "age": -1, "a": {}}),
        ];
        let commands = people
            .iter()
            .enumerate()
            .map(|(n, doc)| {
                Command::put("people", format!("p{n}"), doc.to_string(), Expectation::Any)
            })
            .collect::<Vec<_>>();
        runtime
            .block_on(engine.commit(Batch::from(commands)))
            .expect("the seed commits")
            .expect("no conflict");
        (runtime, engine)
    })
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The query JSON (`POST /db/{db}/query`): parse, validate, run on SQLite.
///
/// * what parses serializes back to an equal query;
/// * a query that fails validation is refused by the engine with
///   `InvalidInput` (before any SQL);
/// * a valid query compiles to SQL that runs: no storage error, results
///   only from its collection, as many as `count`, `skip` and `take` allow.
pub fn query(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(mut query) = serde_json::from_str::<Query>(text) else {
        return;
    };
    let wire = serde_json::to_string(&query).expect("a query serializes");
    let again: Query = serde_json::from_str(&wire).expect("a serialized query parses");
    assert_eq!(again, query, "the wire form round-trips: {wire}");

    query.take = Some(query.take.unwrap_or(100).min(100));
    let (runtime, engine) = engine();
    let results = runtime.block_on(engine.query(&query));
    let count = runtime.block_on(engine.count(&query));
    if query.validate().is_err() {
        assert!(
            matches!(results, Err(Error::InvalidInput(_))),
            "an invalid query is refused: {query:?} -> {results:?}"
        );
        assert!(matches!(count, Err(Error::InvalidInput(_))));
        return;
    }
    let entries =
        results.unwrap_or_else(|error| panic!("a valid query runs: {query:?}: {error:?}"));
    let count = count.unwrap_or_else(|error| panic!("a valid query counts: {query:?}: {error:?}"));
    let expected = count
        .saturating_sub(query.skip)
        .min(query.take.unwrap_or(u64::MAX));
    assert_eq!(entries.len() as u64, expected, "{query:?}");
    let mut ids: Vec<&str> = entries
        .iter()
        .map(|entry| entry.metadata.id.as_str())
        .collect();
    assert!(
        entries
            .iter()
            .all(|entry| entry.metadata.collection == query.collection)
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "no document twice");
}

/// The batch JSON (`POST /db/{db}/batch`): parse, then commit.
///
/// * a parsed batch, written back in the protocol's form, parses to the
///   same commands;
/// * every parsed command is valid, so the engine never answers
///   `InvalidInput` (or a storage error): it commits or reports conflicts;
/// * a refused body never reaches storage (nothing to commit).
pub fn batch(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(commands) = parse_batch(text, folio_core::validate::MAX_NESTING) else {
        return;
    };
    // Written back as the remote engine sends a batch.
    let request = BatchRequest {
        commands: commands
            .iter()
            .map(BatchCommand::new)
            .collect::<Result<_, _>>()
            .expect("a parsed command has a wire form"),
    };
    let wire = serde_json::to_string(&request).expect("a batch serializes");
    let again = parse_batch(&wire, folio_core::validate::MAX_NESTING)
        .unwrap_or_else(|error| panic!("a written batch parses: {wire}: {error:?}"));
    // Documents travel as raw text: equal as JSON, not byte for byte.
    let as_json = |commands: &[Command]| commands.iter().map(wire_command).collect::<Vec<_>>();
    assert_eq!(
        as_json(&again),
        as_json(&commands),
        "the wire form round-trips: {wire}"
    );

    let (runtime, engine) = engine();
    let batch = Batch::from(commands.clone());
    match runtime.block_on(engine.commit(batch)) {
        Ok(Ok(_)) => {
            // Keep the shared database small for long runs.
            let deletes = commands
                .iter()
                .filter(|command| matches!(command.kind, CommandKind::Put { .. }))
                .map(|command| {
                    Command::delete(
                        command.collection.as_str(),
                        command.id.as_str(),
                        Expectation::Any,
                    )
                })
                .collect::<Vec<_>>();
            runtime
                .block_on(engine.commit(Batch::from(deletes)))
                .expect("deletes commit")
                .expect("no conflict with Any");
        }
        Ok(Err(_conflicts)) => {}
        Err(error) => panic!("a parsed batch commits or conflicts: {error:?}"),
    }
}

fn wire_command(command: &Command) -> Value {
    let mut wire = json!({
        "collection": command.collection,
        "id": command.id,
        "expect": command.expect,
    });
    let (op, document) = match &command.kind {
        CommandKind::Put { document } => (
            "put",
            Some(
                folio_core::validate::read_value::<Value>(document)
                    .expect("a parsed document is JSON"),
            ),
        ),
        CommandKind::Delete => ("delete", None),
        CommandKind::Check => ("check", None),
    };
    wire["op"] = json!(op);
    if let Some(document) = document {
        wire["document"] = document;
    }
    wire
}

/// `If-Match` / `If-None-Match`: the first byte picks the header, the rest
/// is its value.
///
/// * what parses, written back as a list of entity tags, parses equal;
/// * a parsed tag holds no quote, space or control character;
/// * judging the preconditions against any version never panics, and a
///   single strong tag is exactly the version it names.
pub fn preconditions(data: &[u8]) {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    let name = if which % 2 == 0 {
        http::header::IF_MATCH
    } else {
        http::header::IF_NONE_MATCH
    };
    let Ok(header) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    headers.insert(name, header);
    let Ok(preconditions) = Preconditions::from_headers(&headers) else {
        return;
    };
    let tags = preconditions
        .if_match
        .as_ref()
        .or(preconditions.if_none_match.as_ref())
        .expect("one header was given");
    if let Tags::List(list) = tags {
        assert!(!list.is_empty());
        for EntityTag { value, .. } in list {
            assert!(
                value.bytes().all(|b| b > 0x20 && b != b'"' && b != 0x7f),
                "a tag holds only visible characters: {value:?}"
            );
        }
        let written = list
            .iter()
            .map(|tag| format!("{}\"{}\"", if tag.weak { "W/" } else { "" }, tag.value))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(Tags::parse(&written).as_ref(), Ok(tags), "{written}");
    }
    let current = folio_core::Metadata {
        id: "p1".into(),
        collection: "people".into(),
        change_vector: folio_core::ChangeVector::from("A:1-AAAAAAAAAAAAAAAAAAAAAA"),
        revision: 1,
        etag: 1,
        last_modified: std::time::SystemTime::UNIX_EPOCH,
    };
    for read in [false, true] {
        let _ = preconditions.evaluate(Some(&current), read);
        let _ = preconditions.evaluate(None, read);
    }
    let _ = preconditions.evaluate_collection();
    match preconditions.without_reading() {
        Some(Expectation::Version { change_vector }) => {
            let Some(Tags::List(list)) = &preconditions.if_match else {
                panic!("a single version comes from If-Match");
            };
            assert_eq!(change_vector.as_str(), list[0].value);
            assert!(preconditions.names_version());
        }
        Some(Expectation::Missing) => {
            assert_eq!(preconditions.if_none_match, Some(Tags::Any));
            assert!(!preconditions.names_version());
        }
        Some(Expectation::Any) => panic!("a precondition always expects something"),
        None => {}
    }
}

/// Ids, collection and database names, field paths.
///
/// * a valid database name is a safe file name (no separator, no dot, no
///   leading dash) and a valid collection name a plain identifier;
/// * a valid id survives percent-encoding in a URL, and a put and a get
///   through the engine: it comes back byte for byte;
/// * a refused id or collection never reaches storage: the engine refuses
///   it too, with `InvalidInput`;
/// * a valid field path is its segments joined by dots.
pub fn names(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if folio_core::validate::database(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= folio_core::validate::MAX_DATABASE_LEN);
        assert!(!text.contains(['/', '\\', '.', '\0']) && !text.starts_with(['-', '_']));
        assert_eq!(text, text.to_ascii_lowercase());
    }
    let collection_ok = folio_core::validate::collection(text).is_ok();
    if collection_ok {
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }
    if let Ok(path) = FieldPath::parse(text) {
        assert_eq!(path.segments().join("."), text);
        assert!(
            path.segments()
                .iter()
                .all(|segment| folio_core::validate::collection(segment).is_ok())
        );
    }

    let (runtime, engine) = engine();
    let id_ok = folio_core::validate::id(text).is_ok();
    let put = Batch::from(vec![Command::put(
        "names",
        text,
        r#"{"n":1}"#,
        Expectation::Any,
    )]);
    let committed = runtime.block_on(engine.commit(put));
    if !id_ok {
        assert!(
            matches!(committed, Err(Error::InvalidInput(_))),
            "a refused id is refused by the engine: {text:?} -> {committed:?}"
        );
        return;
    }
    assert!(!text.chars().any(char::is_control));
    let encoded =
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string();
    let decoded = percent_encoding::percent_decode_str(&encoded)
        .decode_utf8()
        .expect("UTF-8");
    assert_eq!(decoded, text, "the id survives a URL");
    committed
        .expect("a valid id commits")
        .expect("no conflict with Any");
    let got = runtime
        .block_on(engine.get("names", &[text.to_owned()]))
        .expect("a valid id reads");
    let entry = got[0].as_ref().expect("the put is stored");
    assert_eq!(entry.metadata.id, text);
    let delete = Batch::from(vec![Command::delete("names", text, Expectation::Any)]);
    runtime
        .block_on(engine.commit(delete))
        .expect("a valid id deletes")
        .expect("no conflict");
    if collection_ok {
        let scan = runtime.block_on(engine.scan(text, None, 1));
        assert!(scan.is_ok(), "a valid collection scans: {scan:?}");
    } else {
        let scan = runtime.block_on(engine.scan(text, None, 1));
        assert!(matches!(scan, Err(Error::InvalidInput(_))), "{scan:?}");
    }
}

/// JSON patch application (`PATCH`): the first byte picks the media type,
/// then the stored document and the patch, separated by a newline.
///
/// * applying never panics, however the patch multiplies or deepens;
/// * a result is a valid document within the limits, equal to what the
///   reference implementation (`json_patch::patch` / `merge`) makes.
pub fn patch(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Some(text) = text(rest) else { return };
    let Some((document, body)) = text.split_once('\n') else {
        return;
    };
    if folio_core::validate::document_text(document).is_err() {
        return;
    }
    let media_type = if which % 2 == 0 {
        "application/json-patch+json"
    } else {
        "application/merge-patch+json"
    };
    let limits = PatchLimits {
        max_bytes: 64 << 10,
        max_nesting: 32,
    };
    if folio_core::validate::nesting_depth(body) > limits.max_nesting {
        return; // the server refuses such a body before parsing it
    }
    let Ok(patch) = Patch::parse(media_type, body) else {
        return;
    };
    let Ok(patched) = patch.apply(document, limits) else {
        return;
    };
    folio_core::validate::document_text(&patched)
        .unwrap_or_else(|error| panic!("a patched document is valid: {patched}: {error:?}"));
    assert!(patched.len() <= limits.max_bytes);
    assert!(folio_core::validate::nesting_depth(&patched) <= limits.max_nesting);
    let mut reference: Value =
        folio_core::validate::read_value(document).expect("a valid document");
    match &patch {
        Patch::Merge(merge) => json_patch::merge(&mut reference, merge),
        Patch::Json(operations) => json_patch::patch(&mut reference, operations)
            .expect("what applies step by step applies at once"),
    }
    let ours: Value = folio_core::validate::read_value(&patched).expect("JSON");
    assert_eq!(ours, reference);
}
