//! `Idempotency-Key` on every write (docs/protocol.md): a request that
//! repeats the key of a write that committed gets the first answer again,
//! with `Idempotency-Replayed: true`, and writes nothing, even when its
//! preconditions no longer hold; the key with another method, path or body
//! is `422`; a refused write records nothing; a malformed key is `400`.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Server, quote};

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

const KEY: (&str, &str) = ("idempotency-key", "order-7f3a");

/// The revision stored now.
async fn revision(server: &Server, uri: &str) -> String {
    server
        .get(uri)
        .await
        .header("folio-revision")
        .expect("a revision")
        .to_owned()
}

#[tokio::test]
async fn a_repeated_put_gets_the_first_answer_and_writes_nothing() {
    let server = shop().await;
    let uri = "/db/shop/docs/people/p1";
    let first = server.put_json(uri, &[KEY], r#"{"name":"Ann"}"#).await;
    let created = first.ok_json(StatusCode::CREATED);
    assert_eq!(first.header("idempotency-replayed"), None);
    let again = server.put_json(uri, &[KEY], r#"{"name":"Ann"}"#).await;
    assert_eq!(
        again.ok_json(StatusCode::CREATED),
        created,
        "the same answer"
    );
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(revision(&server, uri).await, "1", "written once");

    // Conditional on the version it replaced: sent again after it
    // committed, its If-Match no longer holds, and the answer is the same.
    let version = quote(created["change_vector"].as_str().unwrap());
    let update = [
        ("if-match", version.as_str()),
        ("idempotency-key", "order-7f3b"),
    ];
    let updated = server.put_json(uri, &update, r#"{"name":"Ann B"}"#).await;
    let updated_body = updated.ok_json(StatusCode::OK);
    let again = server.put_json(uri, &update, r#"{"name":"Ann B"}"#).await;
    assert_eq!(again.ok_json(StatusCode::OK), updated_body);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(revision(&server, uri).await, "2");

    // A precondition judged by reading first (If-Unmodified-Since): the
    // repeat is answered before the document it changed is judged.
    let since = updated.header("last-modified").unwrap().to_owned();
    let read_first = [
        ("if-unmodified-since", since.as_str()),
        ("idempotency-key", "order-7f3c"),
    ];
    let third = server
        .put_json(uri, &read_first, r#"{"name":"Ann C"}"#)
        .await;
    let third_body = third.ok_json(StatusCode::OK);
    let again = server
        .put_json(uri, &read_first, r#"{"name":"Ann C"}"#)
        .await;
    assert_eq!(again.ok_json(StatusCode::OK), third_body);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(revision(&server, uri).await, "3");
}

#[tokio::test]
async fn a_repeated_post_names_the_document_the_first_created() {
    let server = shop().await;
    let first = server
        .post_json("/db/shop/docs/orders", &[KEY], r#"{"total":3}"#)
        .await;
    let created = first.ok_json(StatusCode::CREATED);
    let again = server
        .post_json("/db/shop/docs/orders", &[KEY], r#"{"total":3}"#)
        .await;
    assert_eq!(again.ok_json(StatusCode::CREATED), created);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    let list = server
        .get("/db/shop/docs/orders")
        .await
        .ok_json(StatusCode::OK);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn repeated_deletes_patches_and_batches_are_answered_as_the_first() {
    let server = shop().await;
    let uri = "/db/shop/docs/stock/s1";
    server
        .put_doc("shop", "stock", "s1", r#"{"count":10}"#)
        .await;

    // A patch applied twice would take 2; repeated, it is applied once.
    let patch = r#"[{"op":"replace","path":"/count","value":9}]"#;
    let key = [("idempotency-key", "take-one")];
    let first = server
        .patch(uri, "application/json-patch+json", &key, patch)
        .await;
    let patched = first.ok_json(StatusCode::OK);
    server
        .put_doc("shop", "stock", "s1", r#"{"count":20}"#)
        .await;
    let again = server
        .patch(uri, "application/json-patch+json", &key, patch)
        .await;
    assert_eq!(again.ok_json(StatusCode::OK), patched);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(
        server.get(uri).await.json(),
        json!({"count": 20}),
        "the repeat wrote nothing"
    );

    let batch = json!({ "commands": [
        { "op": "put", "collection": "stock", "id": "s2", "document": {"count": 1}, "expect": "missing" },
    ] })
    .to_string();
    let key = [("idempotency-key", "batch-1")];
    let first = server.post_json("/db/shop/batch", &key, &batch).await;
    let results = first.ok_json(StatusCode::OK);
    let again = server.post_json("/db/shop/batch", &key, &batch).await;
    assert_eq!(again.ok_json(StatusCode::OK), results, "not a conflict");
    assert_eq!(again.header("idempotency-replayed"), Some("true"));

    let key = [("idempotency-key", "gone-1")];
    assert_eq!(
        server.delete(uri, &key).await.status,
        StatusCode::NO_CONTENT
    );
    server
        .put_doc("shop", "stock", "s1", r#"{"count":1}"#)
        .await;
    let again = server.delete(uri, &key).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(
        server.get(uri).await.status,
        StatusCode::OK,
        "not deleted again"
    );
}

#[tokio::test]
async fn a_key_with_another_request_is_refused_and_a_refusal_records_nothing() {
    let server = shop().await;
    let uri = "/db/shop/docs/people/p1";
    server
        .put_json(uri, &[KEY], r#"{"name":"Ann"}"#)
        .await
        .ok_json(StatusCode::CREATED);
    for (method_path, response) in [
        (
            "another body",
            server.put_json(uri, &[KEY], r#"{"name":"Bob"}"#).await,
        ),
        (
            "another path",
            server
                .put_json("/db/shop/docs/people/p2", &[KEY], r#"{"name":"Ann"}"#)
                .await,
        ),
        ("another method", server.delete(uri, &[KEY]).await),
    ] {
        let problem = response.problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
        assert_eq!(
            problem["idempotency_key"], KEY.1,
            "{method_path}: {problem}"
        );
    }
    assert_eq!(
        server.get("/db/shop/docs/people/p2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get(uri).await.json(), json!({"name": "Ann"}));

    // Refused (412): nothing recorded, the key may be sent again once the
    // precondition holds.
    let key = ("idempotency-key", "retry-me");
    let stale = [("if-match", "\"A:999-nope\""), key];
    server
        .put_json(uri, &stale, r#"{"name":"Cy"}"#)
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    let current = quote(&server.change_vector(uri).await);
    let fresh = [("if-match", current.as_str()), key];
    let done = server.put_json(uri, &fresh, r#"{"name":"Cy"}"#).await;
    done.ok_json(StatusCode::OK);
    assert_eq!(done.header("idempotency-replayed"), None);
}

#[tokio::test]
async fn a_malformed_key_is_refused_before_anything_is_written() {
    let server = shop().await;
    let long = "k".repeat(256);
    for bad in ["", "with space", "tab\there", long.as_str()] {
        let response = server
            .send(
                axum::http::Method::PUT,
                "/db/shop/docs/people/p1",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", bad),
                ],
                r#"{"name":"Ann"}"#.to_owned(),
            )
            .await;
        response.problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    assert_eq!(
        server.get("/db/shop/docs/people/p1").await.status,
        StatusCode::NOT_FOUND
    );
}
