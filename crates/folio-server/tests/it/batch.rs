//! `POST /db/{db}/batch`: read guards (`check`), `expect` omitted = any,
//! results in command order.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

#[tokio::test]
async fn a_stale_check_refuses_the_batch_and_the_put_beside_it() {
    let server = shop().await;
    let first = server.put_doc("shop", "people", "p4", r#"{"v":1}"#).await;
    let stale = first["change_vector"].clone();
    let current = server.put_doc("shop", "people", "p4", r#"{"v":2}"#).await;

    let batch = json!({ "commands": [
        { "op": "put", "collection": "people", "id": "p1", "document": {"name": "A"} },
        { "op": "check", "collection": "people", "id": "p4", "expect": { "change_vector": stale } },
    ] });
    let problem = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await
        .problem(StatusCode::CONFLICT, "concurrency-conflict");
    let conflicts = problem["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{problem}");
    assert_eq!(conflicts[0]["id"], "p4");
    assert_eq!(conflicts[0]["collection"], "people");
    assert_eq!(conflicts[0]["expected"], json!({ "change_vector": stale }));
    assert_eq!(conflicts[0]["actual"], current["change_vector"]);
    server
        .get("/db/shop/docs/people/p1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    // The check wrote nothing either.
    assert_eq!(
        server
            .get("/db/shop/docs/people/p4")
            .await
            .header("folio-revision"),
        Some("2")
    );

    // A check on a document that must be missing but exists, and one that
    // must exist but does not: both listed.
    let batch = json!({ "commands": [
        { "op": "check", "collection": "people", "id": "p4", "expect": "missing" },
        { "op": "check", "collection": "people", "id": "nobody", "expect": { "change_vector": current["change_vector"] } },
        { "op": "put", "collection": "people", "id": "p1", "document": {"name": "A"} },
    ] });
    let problem = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await
        .problem(StatusCode::CONFLICT, "concurrency-conflict");
    let conflicts = problem["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 2, "{problem}");
    let nobody = conflicts
        .iter()
        .find(|c| c["id"] == "nobody")
        .expect("nobody's conflict");
    assert!(nobody.get("actual").is_some_and(Value::is_null), "{nobody}");
    server
        .get("/db/shop/docs/people/p1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    // With a current check the batch applies.
    let batch = json!({ "commands": [
        { "op": "put", "collection": "people", "id": "p1", "document": {"name": "A"} },
        { "op": "check", "collection": "people", "id": "p4", "expect": { "change_vector": current["change_vector"] } },
        { "op": "check", "collection": "people", "id": "nobody", "expect": "missing" },
    ] });
    let body = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await
        .ok_json(StatusCode::OK);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{body}");
    assert_eq!(results[0]["id"], "p1");
    assert_eq!(results[1]["id"], "p4");
    assert_eq!(results[2]["id"], "nobody");
    assert_eq!(
        server.get("/db/shop/docs/people/p1").await.json(),
        json!({"name":"A"})
    );
    // Still revision 2: a check writes nothing.
    assert_eq!(
        server
            .get("/db/shop/docs/people/p4")
            .await
            .header("folio-revision"),
        Some("2")
    );
}

#[tokio::test]
async fn expect_omitted_means_any_and_results_are_entries_in_command_order() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    server.put_doc("shop", "people", "p3", r#"{"v":1}"#).await;

    let batch = json!({ "commands": [
        { "op": "put", "collection": "people", "id": "p2", "document": {"v": 1} },
        { "op": "put", "collection": "people", "id": "p1", "document": {"v": 2} },
        { "op": "delete", "collection": "people", "id": "p3" },
        { "op": "delete", "collection": "people", "id": "never-there" },
        { "op": "put", "collection": "pets", "id": "p1", "document": {"kind": "cat"}, "expect": "any" },
    ] });
    let body = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await
        .ok_json(StatusCode::OK);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{body}");
    let ids: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["collection"].as_str().expect("collection"),
                r["id"].as_str().expect("id"),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("people", "p2"),
            ("people", "p1"),
            ("people", "p3"),
            ("people", "never-there"),
            ("pets", "p1"),
        ]
    );
    // A put's result is an entry without the document.
    for (index, revision) in [(0, 1), (1, 2), (4, 1)] {
        let entry = &results[index];
        for field in ["change_vector", "revision", "etag", "last_modified"] {
            assert!(entry.get(field).is_some(), "{field} in {entry}");
        }
        assert!(entry.get("document").is_none(), "{entry}");
        assert_eq!(entry["revision"], revision, "{entry}");
    }
    // The etags of one batch increase in command order.
    assert!(results[0]["etag"].as_u64() < results[1]["etag"].as_u64());
    // The change vector a put reports is the ETag of the document.
    let etag = server.change_vector("/db/shop/docs/people/p1").await;
    assert_eq!(results[1]["change_vector"], etag.as_str());

    assert_eq!(
        server.get("/db/shop/docs/people/p1").await.json(),
        json!({"v":2})
    );
    server
        .get("/db/shop/docs/people/p3")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(
        server.get("/db/shop/docs/pets/p1").await.json(),
        json!({"kind":"cat"})
    );
}

#[tokio::test]
async fn malformed_batches_are_400_and_apply_nothing() {
    let server = shop().await;
    for bad in [
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"put","collection":"bad name","id":"x","document":{}}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"put","collection":"people","id":"x","document":[1]}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"explode","collection":"people","id":"x"}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"check","collection":"people","id":"x","expect":"sometimes"}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"put","collection":"people","id":"x"}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"delete","collection":"people","id":"x","document":{}}]}"#,
        r#"{"commands":[{"op":"put","collection":"people","id":"ok","document":{}},{"op":"put","collection":"people","id":"","document":{}}]}"#,
        r#"{"orders":[]}"#,
        r#"[]"#,
    ] {
        server
            .post_json("/db/shop/batch", &[], bad)
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    server
        .get("/db/shop/docs/people/ok")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}
