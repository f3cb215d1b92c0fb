//! Hostile input through every part of a key and a query, on every engine:
//! ids, collection names, JSON paths, query values and document keys that
//! look like SQL (or path traversal, or wildcards) are either refused with
//! `Error::InvalidInput` before anything runs, or stored and matched
//! literally — never executed. Afterwards the tables are intact: every
//! canary document is there, unchanged.

use folio::{Batch, Command, Engine, Entry, Error, Expectation, Op, Query};
use serde_json::{Value, json};

use crate::harness::{Harness, Note, note_ids};

conformance!(
    hostile_ids_are_stored_and_found_literally,
    hostile_collection_names_are_refused_by_every_operation,
    hostile_json_paths_are_refused_before_any_sql,
    hostile_query_values_and_document_keys_are_literal,
);

/// Ids a careless engine would splice into SQL, a file name or a pattern.
fn hostile_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "x'; DROP TABLE documents; --",
        "' OR '1'='1",
        "\" OR \"\"=\"",
        "'); DELETE FROM documents WHERE ('1'='1",
        "1; UPDATE documents SET data = '{}'",
        "'||(SELECT group_concat(id) FROM documents)||'",
        "$$; DROP SCHEMA public CASCADE; $$",
        "E'\\x27'",
        "%",
        "_",
        "%_%",
        "*",
        "?1",
        "$1",
        ":id",
        "\\",
        "\\'",
        "../../etc/passwd",
        "..\\..\\windows",
        "/absolute/path",
        "people/1/../2",
        "  spaces  ",
        "ünïcödé ✓ 𝄞",
        "\u{2028}\u{2029}\u{feff}",
        "NULL",
        "null",
    ]
    .map(String::from)
    .to_vec();
    ids.push("'".repeat(folio_core::validate::MAX_ID_BYTES));
    ids
}

/// Documents every scenario must find intact at its end.
async fn plant_canaries(engine: &dyn Engine) -> Vec<Entry> {
    let commands = (0..3)
        .map(|n| {
            Command::put(
                "canaries",
                format!("canary{n}"),
                json!({ "n": n, "song": "tweet" }).to_string(),
                Expectation::Missing,
            )
        })
        .collect::<Vec<_>>();
    engine.commit(Batch::from(commands)).await.unwrap().unwrap();
    canaries(engine).await
}

async fn canaries(engine: &dyn Engine) -> Vec<Entry> {
    engine.scan("canaries", None, 100).await.unwrap()
}

/// The canaries are unchanged, and a new write still works.
async fn assert_intact(engine: &dyn Engine, planted: &[Entry]) {
    assert_eq!(
        canaries(engine).await,
        planted,
        "the canaries are untouched"
    );
    let count = engine.count(&Query::new("canaries")).await.unwrap();
    assert_eq!(count, 3);
    let probe = Batch::from(vec![Command::put(
        "canaries",
        "probe",
        r#"{"alive":true}"#,
        Expectation::Missing,
    )]);
    engine.commit(probe).await.unwrap().unwrap();
    let delete = Batch::from(vec![Command::delete("canaries", "probe", Expectation::Any)]);
    engine.commit(delete).await.unwrap().unwrap();
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: folio::Result<T>, what: &str) {
    match result {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

async fn hostile_ids_are_stored_and_found_literally(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().as_ref();
    let planted = plant_canaries(engine).await;
    let ids = hostile_ids();

    // Through the session: each note's text is its own id.
    let mut session = store.open_session();
    for id in &ids {
        session.store(Note::new(id, id)).unwrap();
    }
    session.save_changes().await.unwrap();

    let mut reader = store.open_session();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let loaded = reader.load_many::<Note>(&refs).await.unwrap();
    for (id, note) in ids.iter().zip(&loaded) {
        let note = note.as_ref().unwrap_or_else(|| panic!("{id:?} is stored"));
        assert_eq!((&note.id, &note.text), (id, id));
    }
    // Every id once, and nothing else, in the collection.
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(note_ids(engine).await, expected);
    // Paging after a hostile id, and a query naming one, are literal too.
    for id in &ids {
        let after: Vec<String> = engine
            .scan("notes", Some(id), 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.metadata.id)
            .collect();
        let greater: Vec<&String> = expected.iter().filter(|other| *other > id).collect();
        assert_eq!(after.iter().collect::<Vec<_>>(), greater, "after {id:?}");
        let query = Query::new("notes")
            .filter("text", Op::Eq, id.as_str())
            .unwrap();
        let found = engine.query(&query).await.unwrap();
        assert_eq!(found.len(), 1, "exactly {id:?}");
        assert_eq!(&found[0].metadata.id, id);
    }
    // Version checks and deletes by hostile id touch that document only.
    let first = &ids[0];
    let stale = Batch::from(vec![Command::check(
        "notes",
        first.as_str(),
        Expectation::Missing,
    )]);
    assert!(engine.commit(stale).await.unwrap().is_err(), "a conflict");
    let delete = Batch::from(vec![Command::delete(
        "notes",
        first.as_str(),
        Expectation::Any,
    )]);
    engine.commit(delete).await.unwrap().unwrap();
    let left = engine.count(&Query::new("notes")).await.unwrap();
    assert_eq!(left, u64::try_from(ids.len() - 1).unwrap());

    // Ids that are not ids at all are refused.
    for bad in ["", "new\nline", "tab\there"] {
        let batch = Batch::from(vec![Command::put("notes", bad, "{}", Expectation::Any)]);
        assert_invalid(engine.commit(batch).await, &format!("put {bad:?}"));
        assert_invalid(
            engine.get("notes", &[bad.to_owned()]).await,
            &format!("get {bad:?}"),
        );
    }
    let too_long = "x".repeat(folio_core::validate::MAX_ID_BYTES + 1);
    assert_invalid(engine.get("notes", &[too_long]).await, "a long id");
    assert_intact(engine, &planted).await;
}

/// Collection names a careless engine would splice into SQL or a name.
const HOSTILE_COLLECTIONS: &[&str] = &[
    "notes; DROP TABLE documents",
    "notes' OR '1'='1",
    "notes\" --",
    "notes)--",
    "../notes",
    "notes/other",
    "notes.other",
    "notes other",
    "notes\0",
    "",
    "$1",
    "%",
    "nötes",
];

async fn hostile_collection_names_are_refused_by_every_operation(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().as_ref();
    let planted = plant_canaries(engine).await;
    let ids = vec!["n1".to_owned()];
    let path = folio::FieldPath::parse("text").unwrap();
    for collection in HOSTILE_COLLECTIONS {
        let what = |operation: &str| format!("{operation} in {collection:?}");
        let put = Batch::from(vec![Command::put(
            *collection,
            "n1",
            "{}",
            Expectation::Any,
        )]);
        assert_invalid(engine.commit(put).await, &what("put"));
        let delete = Batch::from(vec![Command::delete(*collection, "n1", Expectation::Any)]);
        assert_invalid(engine.commit(delete).await, &what("delete"));
        let check = Batch::from(vec![Command::check(*collection, "n1", Expectation::Any)]);
        assert_invalid(engine.commit(check).await, &what("check"));
        assert_invalid(engine.get(collection, &ids).await, &what("get"));
        assert_invalid(engine.metadata(collection, &ids).await, &what("metadata"));
        assert_invalid(engine.scan(collection, None, 10).await, &what("scan"));
        let query = Query::new(*collection);
        assert_invalid(engine.query(&query).await, &what("query"));
        assert_invalid(engine.count(&query).await, &what("count"));
        assert_invalid(engine.query_page(&query).await, &what("query_page"));
        assert_invalid(
            engine.ensure_index(collection, &path).await,
            &what("ensure_index"),
        );
        // A hostile command refuses its whole batch: the good put beside it
        // is not written.
        let mixed = Batch::from(vec![
            Command::put("notes", "beside", "{}", Expectation::Any),
            Command::put(*collection, "n1", "{}", Expectation::Any),
        ]);
        assert_invalid(engine.commit(mixed).await, &what("a batch with"));
        let beside = engine.get("notes", &["beside".to_owned()]).await.unwrap();
        assert_eq!(beside, [None]);
    }
    assert_intact(engine, &planted).await;
}

async fn hostile_json_paths_are_refused_before_any_sql(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().as_ref();
    let planted = plant_canaries(engine).await;
    let paths = [
        "n') OR 1=1 --",
        "n\" OR 1=1 --",
        "n'||(SELECT 1)||'",
        "$.n",
        "$[0]",
        "n[0]",
        "n->>'x'",
        "n#>>'{a}'",
        "n}",
        "{n}",
        "n,song",
        "n; DROP TABLE documents",
        "n\0",
        "n\n",
        "../n",
        "n..song",
        "*",
        "",
    ];
    for path in paths {
        // No FieldPath can be made of it, so no query can carry it...
        assert_invalid(folio::FieldPath::parse(path), path);
        assert_invalid(
            Query::new("canaries").filter(path, Op::Eq, 1),
            &format!("filter on {path:?}"),
        );
        assert_invalid(
            Query::new("canaries").order_by(path, false),
            &format!("order by {path:?}"),
        );
        // ...and the wire form (a query sent to a server) refuses it too.
        let wire = json!({
            "collection": "canaries",
            "where": [{ "path": path, "op": "eq", "value": 1 }],
        });
        assert!(
            serde_json::from_value::<Query>(wire).is_err(),
            "the query JSON with path {path:?} is refused"
        );
        let wire = json!({ "collection": "canaries", "order_by": [{ "path": path }] });
        assert!(serde_json::from_value::<Query>(wire).is_err());
    }
    assert_intact(engine, &planted).await;
}

async fn hostile_query_values_and_document_keys_are_literal(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().as_ref();
    let planted = plant_canaries(engine).await;
    // Values with SQL, LIKE and GLOB wildcards, regular-expression and
    // JSON-path syntax; keys that are not valid paths. Each document's `v`
    // is one value; `keys` has keys that a path could never name.
    let values = [
        "%",
        "_",
        "%%",
        "a%",
        "%a",
        "a_c",
        "*",
        "a*",
        "?",
        "[a-z]",
        ".*",
        "^a",
        "a$",
        "\\",
        "\\%",
        "'",
        "''",
        "\"",
        "'; DROP TABLE documents; --",
        "$.v",
        "{v}",
        "a",
        "abc",
        "A",
    ];
    let commands = values
        .iter()
        .enumerate()
        .map(|(n, value)| {
            let document = json!({
                "v": value,
                "list": [value],
                "keys": { "a'b": value, "$.v": 1, "x\"); --": [value], "": null, "ü ✓": {} },
            });
            Command::put(
                "values",
                format!("v{n:02}"),
                document.to_string(),
                Expectation::Missing,
            )
        })
        .collect::<Vec<_>>();
    engine.commit(Batch::from(commands)).await.unwrap().unwrap();

    let ids_of = async |op: Op, value: Value| -> Vec<String> {
        let query = Query::new("values").filter("v", op, value).unwrap();
        let mut ids: Vec<String> = engine
            .query(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.metadata.id)
            .collect();
        ids.sort();
        ids
    };
    let where_value = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        values
            .iter()
            .enumerate()
            .filter(|(_, value)| keep(value))
            .map(|(n, _)| format!("v{n:02}"))
            .collect()
    };
    for value in values {
        assert_eq!(
            ids_of(Op::Eq, json!(value)).await,
            where_value(&|v| v == value),
            "eq {value:?}"
        );
        assert_eq!(
            ids_of(Op::StartsWith, json!(value)).await,
            where_value(&|v| v.starts_with(value)),
            "starts_with {value:?}"
        );
        assert_eq!(
            ids_of(Op::Contains, json!(value)).await,
            where_value(&|v| v.contains(value)),
            "contains {value:?}"
        );
        assert_eq!(
            ids_of(Op::In, json!([value, "no such value"])).await,
            where_value(&|v| v == value),
            "in {value:?}"
        );
        assert_eq!(
            ids_of(Op::Ge, json!(value)).await,
            where_value(&|v| v >= value),
            "ge {value:?} (strings compare by code point)"
        );
        let query = Query::new("values")
            .filter("list", Op::Contains, value)
            .unwrap();
        assert_eq!(
            engine.query(&query).await.unwrap().len(),
            1,
            "list contains {value:?}"
        );
    }
    // U+0000 is refused everywhere (PostgreSQL cannot store it; the
    // embedded engine's text functions stop at it): in a document's values
    // or keys, and in a query value.
    // So is a number beyond a 64-bit float: no JSON parser reads it back.
    for document in [
        r#"{"v":"nul\u0000byte"}"#,
        r#"{"k\u0000":1}"#,
        r#"{"n":1e400}"#,
        r#"{"n":[-1E+309]}"#,
    ] {
        let put = Batch::from(vec![Command::put(
            "values",
            "nul",
            document,
            Expectation::Any,
        )]);
        assert_invalid(engine.commit(put).await, document);
    }
    for op in [Op::Eq, Op::StartsWith, Op::Contains, Op::Ge] {
        let query = Query::new("values").filter("v", op, "nul\0byte").unwrap();
        assert_invalid(engine.query(&query).await, &format!("{op:?} with U+0000"));
    }

    // The documents come back as stored, odd keys and all.
    let stored = engine.scan("values", None, 100).await.unwrap();
    assert_eq!(stored.len(), values.len());
    for (entry, value) in stored.iter().zip(values) {
        let document: Value = serde_json::from_str(&entry.document).unwrap();
        assert_eq!(document["keys"]["a'b"], json!(value));
        assert_eq!(document["keys"]["x\"); --"], json!([value]));
        assert_eq!(document["keys"][""], Value::Null);
        assert!(document["keys"]["ü ✓"].is_object());
    }
    assert_intact(engine, &planted).await;
}
