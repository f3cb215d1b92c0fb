//! `folio export` and `folio import` (the client, in process, against a
//! server on a real socket): whatever a PUT takes is exported and imported
//! unchanged — at the nesting limit, with any field names, generated at
//! random — and a file naming one document on several lines imports, the
//! last line winning.

use std::path::Path;

use folio_cli::client::Client;
use folio_core::validate::read_value;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::plain_state;

/// A server on `127.0.0.1:0` over `dir` with the databases `shop` and
/// `copy`; its base URL (it lives as long as the test's runtime).
async fn start(dir: &Path) -> String {
    let state = plain_state(dir);
    for database in ["shop", "copy"] {
        state
            .databases()
            .create(database)
            .await
            .expect("a database");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(folio_server::serve(listener, state));
    format!("http://{address}")
}

fn client(server: &str, database: &str) -> Client {
    Client::new(server, database, None).expect("a client")
}

/// PUTs `document` (text) as `collection/id` into `database`.
async fn put(server: &str, database: &str, collection: &str, id: &str, document: &str) {
    let response = reqwest::Client::new()
        .put(format!("{server}/db/{database}/docs/{collection}/{id}"))
        .header("content-type", "application/json")
        .body(document.to_owned())
        .send()
        .await
        .expect("the server answers");
    assert!(
        response.status().is_success(),
        "PUT {collection}/{id}: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
}

/// The stored text of `collection/id` in `database` (GET's body).
async fn stored(server: &str, database: &str, collection: &str, id: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("{server}/db/{database}/docs/{collection}/{id}"))
        .send()
        .await
        .expect("the server answers");
    match response.status().as_u16() {
        200 => Some(response.text().await.expect("a body")),
        404 => None,
        status => panic!("GET {collection}/{id}: {status}"),
    }
}

/// The revision of `collection/id` in `database`.
async fn revision(server: &str, database: &str, collection: &str, id: &str) -> u64 {
    let response = reqwest::Client::new()
        .get(format!("{server}/db/{database}/docs/{collection}/{id}"))
        .send()
        .await
        .expect("the server answers");
    response
        .headers()
        .get("folio-revision")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Folio-Revision header")
}

/// Exports `collection` of `shop` into `file`, then imports `file` into
/// `copy` (in batches of `batch_size`).
async fn export_and_import(server: &str, collection: &str, file: &Path, batch_size: usize) {
    let mut exported = Vec::new();
    client(server, "shop")
        .export(Some(collection), &mut exported)
        .await
        .expect("the export succeeds");
    std::fs::write(file, &exported).expect("the export is written");
    client(server, "copy")
        .import(file, None, batch_size, false)
        .await
        .unwrap_or_else(|failure| panic!("the import succeeds: {failure:?}"));
}

/// A document nesting `depth` deep: objects and arrays in turn.
fn nested(depth: usize) -> String {
    let mut text = String::from("{\"leaf\":true}");
    for level in (1..depth).rev() {
        text = if level % 2 == 1 {
            format!("{{\"a\":{text}}}")
        } else {
            format!("[1,{text}]")
        };
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_keeps_every_document_a_put_takes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(&dir.path().join("data")).await;
    let limit = folio_core::validate::MAX_NESTING;
    let mut documents: Vec<(String, String)> = (limit - 3..=limit)
        .map(|depth| {
            let document = nested(depth);
            assert_eq!(folio_core::validate::nesting_depth(&document), depth);
            (format!("deep{depth}"), document)
        })
        .collect();
    documents.extend(
        [
            // Field names of the export format, inside a document.
            r#"{"document":{"inner":1},"id":"other","collection":"elsewhere"}"#,
            r#"{"document":{"document":{"document":null}}}"#,
            r#"{ "spaced" : [ 1 , 2 ] , "n" : 1.50 , "e" : 1E3 , "z" : -0 }"#,
            r#"{"text":"\u00e9\ud83d\ude00 \"quoted\" \\ \/ \n","✓":"✓"}"#,
            "{}",
        ]
        .iter()
        .enumerate()
        .map(|(n, document)| (format!("plain{n}"), (*document).to_owned())),
    );
    for (id, document) in &documents {
        put(&server, "shop", "things", id, document).await;
    }
    export_and_import(&server, "things", &dir.path().join("things.jsonl"), 1000).await;
    for (id, _) in &documents {
        let original = stored(&server, "shop", "things", id).await;
        assert!(original.is_some(), "{id} was stored");
        assert_eq!(
            stored(&server, "copy", "things", id).await,
            original,
            "{id} came through unchanged"
        );
    }

    // Plain documents with --collection, whatever their fields: each line
    // is stored whole.
    let lines = [
        r#"{"id":"d1","document":{"inner":1}}"#,
        r#"{"collection":"c","id":"d2","document":{"x":[1]}}"#,
        r#"{"id":"d3","document":"text","extra":{"id":"not this one"}}"#,
    ];
    let file = dir.path().join("plain.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("written");
    let imported = client(&server, "copy")
        .import(&file, Some("plain"), 1000, false)
        .await
        .expect("the import succeeds");
    assert_eq!(imported, 3);
    for (n, line) in lines.iter().enumerate() {
        let id = format!("d{}", n + 1);
        put(&server, "shop", "plain", &id, line).await;
        let stored_text = stored(&server, "copy", "plain", &id).await;
        assert_eq!(
            stored_text,
            stored(&server, "shop", "plain", &id).await,
            "{id} is the whole line, as a PUT of it stores it"
        );
        let value: Value = serde_json::from_str(&stored_text.expect("stored")).expect("JSON");
        assert_eq!(value, serde_json::from_str::<Value>(line).expect("JSON"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_a_document_named_on_several_lines_keeps_the_last() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(&dir.path().join("data")).await;
    // 60 lines over 7 documents: a repeat inside a batch, in the batch
    // before it (in flight), and several batches apart.
    let lines: Vec<String> = (0..60)
        .map(|n| {
            json!({"collection": "items", "id": format!("r{}", n % 7), "document": {"n": n}})
                .to_string()
        })
        .collect();
    let file = dir.path().join("repeated.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("written");
    for (round, batch_size) in [1000, 10, 3, 1].into_iter().enumerate() {
        let imported = client(&server, "copy")
            .import(&file, None, batch_size, false)
            .await
            .unwrap_or_else(|failure| panic!("batches of {batch_size}: {failure:?}"));
        assert_eq!(imported, 60, "batches of {batch_size}");
        for id in 0..7 {
            let last = (0..60).rev().find(|n| n % 7 == id).expect("a last line");
            let document = stored(&server, "copy", "items", &format!("r{id}"))
                .await
                .expect("stored");
            assert_eq!(
                serde_json::from_str::<Value>(&document).expect("JSON"),
                json!({"n": last}),
                "batches of {batch_size}: r{id} is its last line"
            );
            // Every line was one write, none lost.
            let lines_naming = (0..60).filter(|n| n % 7 == id).count() as u64;
            assert_eq!(
                revision(&server, "copy", "items", &format!("r{id}")).await,
                lines_naming * (round as u64 + 1),
                "batches of {batch_size}: r{id}"
            );
        }
    }
}

/// A JSON value for documents: scalars (every kind of number and string),
/// arrays and objects, whose keys include the export format's own.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("document".to_owned()),
        Just("collection".to_owned()),
        "[a-z]{1,3}",
        any::<String>().prop_filter("no U+0000", |key| !key.contains('\0')),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        any::<String>()
            .prop_filter("no U+0000", |text| !text.contains('\0'))
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A key of a document, often one of the export format's.
fn top_level_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("document".to_owned()),
        Just("collection".to_owned()),
        "[a-z]{1,8}",
    ]
}

/// A document: an object of generated values, then wrapped in up to
/// `wrap` more levels, within the nesting limit.
fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((top_level_key(), json_value()), 0..6),
        0..folio_core::validate::MAX_NESTING,
    )
        .prop_map(|(entries, wrap)| {
            let mut value = Value::Object(entries.into_iter().collect());
            let room = folio_core::validate::MAX_NESTING
                - folio_core::validate::nesting_depth(&value.to_string());
            for level in 0..wrap.min(room) {
                value = if level % 2 == 0 {
                    Value::Array(vec![value])
                } else {
                    json!({ "w": value })
                };
            }
            match value {
                Value::Object(_) => value.to_string(),
                other => json!({ "w": other }).to_string(),
            }
        })
        .prop_filter("within the nesting limit", |text| {
            folio_core::validate::nesting_depth(text) <= folio_core::validate::MAX_NESTING
        })
}

/// Generated documents are exported and imported unchanged, and imported
/// unchanged as plain documents.
#[test]
fn generated_documents_survive_export_and_import() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = runtime.block_on(start(&dir.path().join("data")));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let outcome = runner.run(&prop::collection::vec(document(), 1..5), |documents| {
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let collection = format!("generated{case}");
        runtime.block_on(async {
            for (n, document) in documents.iter().enumerate() {
                put(&server, "shop", &collection, &format!("g{n}"), document).await;
            }
            export_and_import(
                &server,
                &collection,
                &dir.path().join(format!("{collection}.jsonl")),
                2,
            )
            .await;
            let plain: Vec<String> = documents
                .iter()
                .enumerate()
                .map(|(n, document)| {
                    let mut value: serde_json::Map<String, Value> =
                        read_value(document).expect("an object");
                    value.insert("id".to_owned(), json!(format!("g{n}")));
                    Value::Object(value).to_string()
                })
                .collect();
            let file = dir.path().join(format!("{collection}-plain.jsonl"));
            std::fs::write(&file, plain.join("\n")).expect("written");
            client(&server, "copy")
                .import(&file, Some(&format!("{collection}-plain")), 2, false)
                .await
                .expect("the plain import succeeds");
            for (n, line) in plain.iter().enumerate() {
                let id = format!("g{n}");
                let original = stored(&server, "shop", &collection, &id).await;
                prop_assert!(original.is_some());
                prop_assert_eq!(stored(&server, "copy", &collection, &id).await, original);
                let imported = stored(&server, "copy", &format!("{collection}-plain"), &id)
                    .await
                    .expect("imported");
                prop_assert_eq!(
                    read_value::<Value>(&imported).expect("JSON"),
                    read_value::<Value>(line).expect("JSON")
                );
            }
            Ok(())
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
