//! The version headers of GET, HEAD and PUT, and what their bodies hold.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio_core::Metadata;
use serde_json::json;

use crate::common::{Resp, Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";

/// Checks `resp`'s version headers against `metadata`.
#[track_caller]
fn assert_version_headers(resp: &Resp, metadata: &Metadata) {
    assert_eq!(
        resp.header("etag"),
        Some(quote(metadata.change_vector.as_str()).as_str()),
        "ETag: \"<change vector>\": {resp:?}"
    );
    assert_eq!(
        resp.header("folio-revision"),
        Some(metadata.revision.to_string().as_str()),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("folio-etag"),
        Some(metadata.etag.to_string().as_str()),
        "{resp:?}"
    );
    let last_modified = resp.header("last-modified").expect("Last-Modified");
    let parsed = httpdate::parse_http_date(last_modified)
        .unwrap_or_else(|e| panic!("Last-Modified {last_modified:?} is not an HTTP-date: {e}"));
    let seconds = |time: std::time::SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    };
    assert_eq!(
        seconds(parsed),
        seconds(metadata.last_modified),
        "Last-Modified is the version's time, to the second: {resp:?}"
    );
}

#[tokio::test]
async fn get_head_and_put_carry_the_version_headers() {
    let server = Server::new();
    server.create_db("shop").await;
    // Keys out of order, minified: stored as sent.
    let document = r#"{"zeta":1,"alpha":{"b":[1,2,{"c":null}],"a":"x y"},"n":1.5}"#;

    let put = server.put_json(DOC, &[], document).await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    let metadata: Metadata = serde_json::from_value(put.ok_json(StatusCode::CREATED))
        .expect("PUT's body is the metadata JSON");
    assert_eq!(metadata.id, "p1");
    assert_eq!(metadata.collection, "people");
    assert_eq!(metadata.revision, 1);
    let body = put.json();
    for field in [
        "id",
        "collection",
        "change_vector",
        "revision",
        "etag",
        "last_modified",
    ] {
        assert!(body.get(field).is_some(), "metadata has {field}: {body}");
    }
    assert!(
        body.get("document").is_none(),
        "PUT does not echo the document"
    );
    assert_version_headers(&put, &metadata);

    let get = server.get(DOC).await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert_eq!(get.text(), document, "the document exactly as stored");
    assert!(
        get.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{get:?}"
    );
    assert_version_headers(&get, &metadata);

    let head = server.send(Method::HEAD, DOC, &[], Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK, "{head:?}");
    assert!(head.body.is_empty(), "HEAD has no body: {head:?}");
    assert_version_headers(&head, &metadata);

    // An update moves every header on.
    let update = server.put_json(DOC, &[], r#"{"zeta":2}"#).await;
    let updated: Metadata =
        serde_json::from_value(update.ok_json(StatusCode::OK)).expect("metadata");
    assert_eq!(updated.revision, 2);
    assert!(updated.etag > metadata.etag);
    assert_ne!(updated.change_vector, metadata.change_vector);
    assert_version_headers(&update, &updated);
    let get = server.get(DOC).await;
    assert_version_headers(&get, &updated);
    assert_eq!(get.json(), json!({"zeta":2}));

    // The change vector of the ETag is what the listing, the query and a
    // read of many report.
    let listed = server.get("/db/shop/docs/people").await.json();
    assert_eq!(
        listed["items"][0]["change_vector"],
        updated.change_vector.as_str()
    );
    assert_eq!(listed["items"][0]["revision"], 2);
    assert_eq!(listed["items"][0]["etag"], updated.etag);
    let queried = server
        .post_json("/db/shop/query", &[], r#"{"collection":"people"}"#)
        .await
        .json();
    assert_eq!(
        queried["results"][0]["change_vector"],
        updated.change_vector.as_str()
    );
}

#[tokio::test]
async fn post_and_patch_carry_the_version_headers() {
    let server = Server::new();
    server.create_db("shop").await;
    let posted = server
        .post_json("/db/shop/docs/people", &[], r#"{"n":1}"#)
        .await;
    let metadata: Metadata =
        serde_json::from_value(posted.ok_json(StatusCode::CREATED)).expect("metadata");
    assert_version_headers(&posted, &metadata);
    let location = posted.header("location").expect("Location").to_owned();

    let patched = server
        .patch(&location, "application/merge-patch+json", &[], r#"{"m":2}"#)
        .await;
    let patched_metadata: Metadata =
        serde_json::from_value(patched.ok_json(StatusCode::OK)).expect("metadata");
    assert_eq!(patched_metadata.revision, 2);
    assert_version_headers(&patched, &patched_metadata);
    let get = server.get(&location).await;
    assert_version_headers(&get, &patched_metadata);
}

#[tokio::test]
async fn ids_are_percent_decoded_and_round_trip() {
    let server = Server::new();
    server.create_db("shop").await;
    // A slash, a space, a percent sign, non-ASCII.
    let encoded = "/db/shop/docs/people/orders%2F1%20%C3%A9%25";
    let put = server.put_json(encoded, &[], r#"{"n":1}"#).await;
    let metadata = put.ok_json(StatusCode::CREATED);
    assert_eq!(metadata["id"], "orders/1 é%");
    let get = server.get(encoded).await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    let listed = server.get("/db/shop/docs/people").await.json();
    assert_eq!(listed["items"][0]["id"], "orders/1 é%");
    // A 512-byte id is fine.
    let long = "y".repeat(512);
    let put = server
        .put_json(&format!("/db/shop/docs/people/{long}"), &[], "{}")
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
}

/// The static route that reads many (`…/{collection}/get`) does not hide the
/// document whose id is `get`.
#[tokio::test]
async fn a_document_named_get_is_a_document_like_any_other() {
    let server = Server::new();
    server.create_db("shop").await;
    let uri = "/db/shop/docs/people/get";
    let created = server.put_json(uri, &[], r#"{"name":"Get"}"#).await;
    created.ok_json(StatusCode::CREATED);
    let read = server.get(uri).await;
    assert_eq!(read.ok_json(StatusCode::OK), json!({ "name": "Get" }));
    let etag = read.header("etag").expect("ETag").to_owned();
    let stale = server
        .put_json(uri, &[("if-match", "\"A:1-nope\"")], r#"{"name":"x"}"#)
        .await;
    stale.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    let deleted = server.delete(uri, &[("if-match", &etag)]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(server.get(uri).await.status, StatusCode::NOT_FOUND);
    // Reading many still works on the same path with POST.
    let many = server.post_json(uri, &[], r#"{"ids":["get"]}"#).await;
    assert_eq!(many.ok_json(StatusCode::OK), json!({ "results": [null] }));
}
