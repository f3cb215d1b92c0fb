//! Three-way merge over HTTP: `PUT` with `If-Match` and `Prefer: merge` on
//! a collection that keeps revisions, and the shared merge cases.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";

async fn shop(keep: u32) -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    let config = json!({ "revisions": { "keep": keep } }).to_string();
    let resp = server
        .put_json("/db/shop/collections/people/config", &[], &config)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    server
}

async fn put(server: &Server, document: &Value) -> String {
    server
        .put_doc("shop", "people", "p1", &document.to_string())
        .await["change_vector"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_shared_case_merges_over_http_as_it_says() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../../../folio-core/tests/merge_cases.json")).unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let server = shop(10).await;
        let base = put(&server, &case["base"]).await;
        let theirs = put(&server, &case["theirs"]).await;
        let resp = server
            .put_json(
                DOC,
                &[("if-match", &quote(&base)), ("prefer", "merge")],
                &case["mine"].to_string(),
            )
            .await;
        match (case.get("merged"), case.get("overlaps")) {
            (Some(merged), None) => {
                let stored = server.get(DOC).await.ok_json(StatusCode::OK);
                assert_eq!(&stored, merged, "{name}: {resp:?}");
                assert_eq!(resp.status, StatusCode::OK, "{name}");
                assert_eq!(resp.header("preference-applied"), Some("merge"), "{name}");
                assert_ne!(base, theirs);
            }
            (None, Some(overlaps)) => {
                let problem = resp.problem(StatusCode::CONFLICT, "concurrency-conflict");
                assert_eq!(&problem["conflicts"][0]["overlaps"], overlaps, "{name}");
                assert_eq!(
                    problem["conflicts"][0]["current"]["document"],
                    case["theirs"]
                );
                // Nothing written.
                let stored = server.get(DOC).await.ok_json(StatusCode::OK);
                assert_eq!(stored, case["theirs"], "{name}");
            }
            _ => panic!("{name}: a case has merged or overlaps"),
        }
    }
}

#[tokio::test]
async fn a_merge_is_said_applied_and_each_refusal_is_clear() {
    let server = shop(10).await;
    let base = put(&server, &json!({ "name": "Ann", "city": "Oslo" })).await;
    // Current: written as is, no merge said.
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &quote(&base)), ("prefer", "merge")],
            r#"{"name":"Ann","city":"Bergen"}"#,
        )
        .await;
    let written = resp.ok_json(StatusCode::OK);
    assert_eq!(resp.header("preference-applied"), None);
    // Stale: merged with what is stored, conditional on it.
    let resp = server
        .put_json(
            DOC,
            &[
                ("if-match", &quote(&base)),
                ("prefer", "respond-async, merge"),
            ],
            r#"{"name":"Anne","city":"Oslo"}"#,
        )
        .await;
    let merged = resp.ok_json(StatusCode::OK);
    assert_eq!(resp.header("preference-applied"), Some("merge"));
    assert_eq!(merged["revision"], 3);
    assert_ne!(merged["change_vector"], written["change_vector"]);
    let stored = server.get(DOC).await.ok_json(StatusCode::OK);
    assert_eq!(stored, json!({ "name": "Anne", "city": "Bergen" }));

    // Without the preference: 412 as always.
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &quote(&base))],
            r#"{"name":"X","city":"Oslo"}"#,
        )
        .await;
    resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");

    // Deleted since: the whole document overlaps.
    let now = server.change_vector(DOC).await;
    let resp = server.delete(DOC, &[("if-match", &quote(&now))]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &quote(&base)), ("prefer", "merge")],
            r#"{"name":"Y","city":"Oslo"}"#,
        )
        .await;
    let problem = resp.problem(StatusCode::CONFLICT, "concurrency-conflict");
    assert_eq!(problem["conflicts"][0]["overlaps"], json!([""]));
    assert_eq!(problem["conflicts"][0]["current"], Value::Null);
    assert_eq!(server.get(DOC).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_base_the_collection_does_not_keep_is_412() {
    // Revisions off: no base to merge from.
    let server = shop(0).await;
    let base = put(&server, &json!({ "name": "Ann" })).await;
    put(&server, &json!({ "name": "Ann", "city": "Bergen" })).await;
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &quote(&base)), ("prefer", "merge")],
            r#"{"name":"Anne"}"#,
        )
        .await;
    let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    assert_eq!(
        problem["conflicts"][0]["current"]["document"],
        json!({ "name": "Ann", "city": "Bergen" })
    );
    let stored = server.get(DOC).await.ok_json(StatusCode::OK);
    assert_eq!(stored, json!({ "name": "Ann", "city": "Bergen" }));
}
