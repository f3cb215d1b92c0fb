//! Every status code of docs/protocol.md, each error with its problem body.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio_server::Limits;
use serde_json::{Value, json};

use crate::common::{Config, Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

// ---------------------------------------------------------------- 200

#[tokio::test]
async fn ok_for_get_update_batch_query_list_and_get_many() {
    let server = shop().await;
    let created = server.put_json(DOC, &[], r#"{"name":"A","age":30}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");

    let got = server.get(DOC).await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(got.json(), json!({"name":"A","age":30}));

    let updated = server.put_json(DOC, &[], r#"{"name":"B","age":31}"#).await;
    let metadata = updated.ok_json(StatusCode::OK);
    assert_eq!(metadata["revision"], 2);

    let batch = server
        .post_json(
            "/db/shop/batch",
            &[],
            r#"{"commands":[{"op":"put","collection":"people","id":"p2","document":{"name":"C","age":5}}]}"#,
        )
        .await;
    let results = batch.ok_json(StatusCode::OK);
    assert_eq!(results["results"].as_array().map(Vec::len), Some(1));

    let query = server
        .post_json("/db/shop/query", &[], r#"{"collection":"people"}"#)
        .await;
    let page = query.ok_json(StatusCode::OK);
    assert_eq!(page["total"], 2);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(2));

    let list = server.get("/db/shop/docs/people").await;
    let listing = list.ok_json(StatusCode::OK);
    let ids: Vec<&str> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["p1", "p2"]);
    assert_eq!(listing["next"], Value::Null);

    let many = server
        .post_json(
            "/db/shop/docs/people/get",
            &[],
            r#"{"ids":["p2","nobody","p1"]}"#,
        )
        .await;
    let results = many.ok_json(StatusCode::OK)["results"].clone();
    assert_eq!(results[0]["id"], "p2");
    assert_eq!(results[0]["collection"], "people");
    assert_eq!(results[0]["document"], json!({"name":"C","age":5}));
    assert_eq!(results[1], Value::Null);
    assert_eq!(results[2]["id"], "p1");
    assert_eq!(results[2]["revision"], 2);
    assert_eq!(results[2]["document"], json!({"name":"B","age":31}));
}

// ---------------------------------------------------------------- 201

#[tokio::test]
async fn created_for_put_post_and_database_creation() {
    let server = Server::new();
    let created = server
        .send(Method::PUT, "/db/shop", &[], Body::empty())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let again = server
        .send(Method::PUT, "/db/shop", &[], Body::empty())
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "an existing database: {again:?}"
    );

    let put = server.put_json(DOC, &[], r#"{"name":"A"}"#).await;
    let metadata = put.ok_json(StatusCode::CREATED);
    assert_eq!(metadata["revision"], 1);

    let posted = server
        .post_json("/db/shop/docs/people", &[], r#"{"name":"generated"}"#)
        .await;
    let metadata = posted.ok_json(StatusCode::CREATED);
    let location = posted.header("location").expect("a Location").to_owned();
    let id = metadata["id"].as_str().expect("an id");
    assert!(!id.is_empty());
    assert!(
        location.starts_with("/db/shop/docs/people/"),
        "{location:?}"
    );
    let fetched = server.get(&location).await;
    assert_eq!(fetched.status, StatusCode::OK, "{fetched:?}");
    assert_eq!(fetched.json(), json!({"name":"generated"}));
    assert_eq!(
        fetched.header("etag"),
        Some(quote(metadata["change_vector"].as_str().expect("a cv")).as_str())
    );

    // Generated ids are distinct (and time-sortable: a later one sorts after).
    let second = server
        .post_json("/db/shop/docs/people", &[], r#"{"name":"later"}"#)
        .await
        .ok_json(StatusCode::CREATED);
    let second_id = second["id"].as_str().expect("an id");
    assert!(second_id > id, "{second_id:?} after {id:?}");
}

// ---------------------------------------------------------------- 204

#[tokio::test]
async fn no_content_for_delete_and_for_deleting_a_missing_document() {
    let server = shop().await;
    server
        .put_doc("shop", "people", "p1", r#"{"name":"A"}"#)
        .await;
    let deleted = server.delete(DOC, &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert!(deleted.body.is_empty());
    server
        .get(DOC)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    let again = server.delete(DOC, &[]).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{again:?}");
    let never = server.delete("/db/shop/docs/people/never", &[]).await;
    assert_eq!(never.status, StatusCode::NO_CONTENT, "{never:?}");
}

// ---------------------------------------------------------------- 304

#[tokio::test]
async fn not_modified_when_if_none_match_matches() {
    let server = shop().await;
    let metadata = server
        .put_doc("shop", "people", "p1", r#"{"name":"A"}"#)
        .await;
    let cv = metadata["change_vector"].as_str().expect("a cv").to_owned();

    for matching in [
        quote(&cv),
        "*".to_owned(),
        format!("\"A:0-nothing\", {}", quote(&cv)),
        format!("W/{}", quote(&cv)),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let resp = server
                .send(method, DOC, &[("if-none-match", &matching)], Body::empty())
                .await;
            assert_eq!(
                resp.status,
                StatusCode::NOT_MODIFIED,
                "{matching}: {resp:?}"
            );
            assert!(resp.body.is_empty(), "a 304 has no body: {resp:?}");
            assert_eq!(
                resp.header("etag"),
                Some(quote(&cv).as_str()),
                "a 304 names the current version: {resp:?}"
            );
        }
    }

    let stale = server
        .send(
            Method::GET,
            DOC,
            &[("if-none-match", "\"A:0-nothing\"")],
            Body::empty(),
        )
        .await;
    assert_eq!(stale.status, StatusCode::OK, "{stale:?}");
    assert_eq!(stale.json(), json!({"name":"A"}));

    // After an update the old tag no longer matches.
    server
        .put_doc("shop", "people", "p1", r#"{"name":"B"}"#)
        .await;
    let changed = server
        .send(
            Method::GET,
            DOC,
            &[("if-none-match", &quote(&cv))],
            Body::empty(),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    assert_eq!(changed.json(), json!({"name":"B"}));
}

// ---------------------------------------------------------------- 400

#[tokio::test]
async fn bad_request_for_malformed_input() {
    let server = shop().await;
    server
        .put_doc("shop", "people", "p1", r#"{"name":"A"}"#)
        .await;
    let bad = |resp: crate::common::Resp| {
        resp.problem(StatusCode::BAD_REQUEST, "bad-request");
    };

    // An id with a control character, percent-encoded.
    bad(server.get("/db/shop/docs/people/a%01b").await);
    bad(server
        .put_json("/db/shop/docs/people/a%0Ab", &[], "{}")
        .await);
    bad(server.delete("/db/shop/docs/people/a%7Fb", &[]).await);
    // An id longer than 512 bytes.
    let long = "x".repeat(513);
    bad(server.get(&format!("/db/shop/docs/people/{long}")).await);
    // Bad collections.
    bad(server.get("/db/shop/docs/peo.ple/p1").await);
    bad(server.get("/db/shop/docs/peo%20ple/p1").await);
    bad(server.put_json("/db/shop/docs/a%2Fb/p1", &[], "{}").await);
    bad(server
        .get(&format!("/db/shop/docs/{}", "c".repeat(129)))
        .await);
    // Bad database names.
    bad(server.get("/db/Shop/docs/people/p1").await);
    bad(server.get("/db/_shop/docs/people/p1").await);
    bad(server
        .send(Method::PUT, "/db/sh.op", &[], Body::empty())
        .await);
    bad(server
        .post_json("/db/sh%20op/batch", &[], r#"{"commands":[]}"#)
        .await);
    // Malformed JSON, a document that is not an object, too deep.
    bad(server.put_json(DOC, &[], r#"{"name": "#).await);
    bad(server.put_json(DOC, &[], "[1,2,3]").await);
    bad(server.put_json(DOC, &[], r#""text""#).await);
    bad(server.put_json(DOC, &[], "").await);
    bad(server.post_json("/db/shop/docs/people", &[], "42").await);
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    bad(server.put_json(DOC, &[], &deep).await);
    bad(server
        .post_json("/db/shop/batch", &[], "{\"commands\":")
        .await);
    // A bad query path, a bad operator, a malformed query.
    bad(server
        .post_json(
            "/db/shop/query",
            &[],
            r#"{"collection":"people","where":[{"path":"a..b","op":"eq","value":1}]}"#,
        )
        .await);
    bad(server
        .post_json(
            "/db/shop/query",
            &[],
            r#"{"collection":"people","where":[{"path":"a b","op":"eq","value":1}]}"#,
        )
        .await);
    bad(server
        .post_json(
            "/db/shop/query",
            &[],
            r#"{"collection":"people","order_by":[{"path":"$.x"}]}"#,
        )
        .await);
    bad(server
        .post_json(
            "/db/shop/query",
            &[],
            r#"{"collection":"people","where":[{"path":"a","op":"like","value":1}]}"#,
        )
        .await);
    // Malformed preconditions.
    bad(server
        .put_json(DOC, &[("if-match", "not-quoted")], r#"{"name":"B"}"#)
        .await);
    bad(server.delete(DOC, &[("if-match", "\"open")]).await);
    bad(server
        .send(
            Method::GET,
            DOC,
            &[("if-none-match", "\"a\" \"b\"")],
            Body::empty(),
        )
        .await);
    // Nothing of it was written.
    assert_eq!(server.get(DOC).await.json(), json!({"name":"A"}));
}

/// A key repeated in one object (I-JSON, RFC 7493) is refused on every
/// path that stores a document, naming the key and its object; nothing is
/// written.
#[tokio::test]
async fn bad_request_for_a_repeated_key_on_every_write_path() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let refused = |resp: crate::common::Resp, key: &str, object: &str| {
        let problem = resp.problem(StatusCode::BAD_REQUEST, "bad-request");
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(
            detail.contains(&format!(
                "the key \"{key}\" twice in the object at {object}"
            )),
            "{detail}"
        );
    };
    let repeated = r#"{"v":2,"address":{"city":"Oslo","city":"Bergen"}}"#;
    refused(
        server.put_json(DOC, &[], repeated).await,
        "city",
        "/address",
    );
    refused(
        server
            .put_json("/db/shop/docs/people/p2", &[], repeated)
            .await,
        "city",
        "/address",
    );
    refused(
        server
            .post_json("/db/shop/docs/people", &[], repeated)
            .await,
        "city",
        "/address",
    );
    // Escaped, the same key.
    refused(
        server.put_json(DOC, &[], r#"{"v":2,"\u0076":3}"#).await,
        "v",
        "the top level",
    );
    let batch = format!(
        r#"{{"commands":[{{"op":"put","collection":"people","id":"p3","document":{{"ok":1}}}},{{"op":"put","collection":"people","id":"p2","document":{repeated}}}]}}"#
    );
    refused(
        server.post_json("/db/shop/batch", &[], &batch).await,
        "city",
        "/address",
    );
    // Patch bodies: a merge patch, and a value a JSON patch adds.
    refused(
        server
            .patch(DOC, "application/merge-patch+json", &[], r#"{"v":2,"v":3}"#)
            .await,
        "v",
        "the top level",
    );
    refused(
        server
            .patch(
                DOC,
                "application/json-patch+json",
                &[],
                r#"[{"op":"add","path":"/a","value":{"b":1,"b":2}}]"#,
            )
            .await,
        "b",
        "/0/value",
    );
    assert_eq!(server.get(DOC).await.json(), json!({"v":1}));
    for id in ["p2", "p3"] {
        server
            .get(&format!("/db/shop/docs/people/{id}"))
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    let listed = server.get("/db/shop/docs/people").await.json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[tokio::test]
async fn bad_request_for_json_nested_deeper_than_a_configured_limit() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_nesting: 4,
            ..Limits::default()
        }),
        ..Config::default()
    });
    server.create_db("shop").await;
    let four = r#"{"a":{"b":[{"c":1}]}}"#;
    let five = r#"{"a":{"b":[{"c":[1]}]}}"#;
    let ok = server.put_json(DOC, &[], four).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    server
        .put_json(DOC, &[], five)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    // Brackets inside strings do not count.
    let in_string = r#"{"a":{"b":[{"c":"[[[[[[[[{{{{{"}]}}"#;
    let ok = server.put_json(DOC, &[], in_string).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    // The limit holds for the documents of a batch too, counted from the
    // document (the batch around it does not count).
    let batch = |document: &str| {
        format!(
            r#"{{"commands":[{{"op":"put","collection":"people","id":"p2","document":{document}}}]}}"#
        )
    };
    server
        .post_json("/db/shop/batch", &[], &batch(five))
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    server
        .get("/db/shop/docs/people/p2")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .post_json("/db/shop/batch", &[], &batch(four))
        .await
        .ok_json(StatusCode::OK);
    assert_eq!(
        server.get("/db/shop/docs/people/p2").await.text(),
        four,
        "what a PUT takes, a batch takes"
    );
}

// ---------------------------------------------------------------- 404

#[tokio::test]
async fn not_found_for_missing_documents_databases_and_routes() {
    let server = shop().await;
    server
        .get(DOC)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let head = server.send(Method::HEAD, DOC, &[], Body::empty()).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND, "{head:?}");
    assert!(head.body.is_empty(), "HEAD has no body: {head:?}");
    server
        .get("/db/nowhere/docs/people/p1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .put_json("/db/nowhere/docs/people/p1", &[], "{}")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .post_json("/db/nowhere/batch", &[], r#"{"commands":[]}"#)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .post_json("/db/nowhere/query", &[], r#"{"collection":"people"}"#)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .get("/no/such/route")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .get("/db/shop/documents/people/p1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    // A missing database is not created by looking for it.
    assert!(!server.data.join("nowhere.sqlite").exists());
    // Patching a missing document.
    server
        .patch(DOC, "application/merge-patch+json", &[], r#"{"a":1}"#)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

// ---------------------------------------------------------------- 405

#[tokio::test]
async fn method_not_allowed_on_existing_routes() {
    let server = shop().await;
    for (method, uri) in [
        (Method::DELETE, "/db/shop/batch"),
        (Method::GET, "/db/shop/batch"),
        (Method::PUT, "/db/shop/query"),
        (Method::POST, DOC),
        (Method::DELETE, "/db/shop/docs/people"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/db/shop"),
    ] {
        let resp = server
            .send(method, uri, &[("content-type", "application/json")], "{}")
            .await;
        resp.problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
        // RFC 9110 §15.5.6: a 405 names the methods the route takes.
        assert!(
            resp.header("allow").is_some_and(|allow| !allow.is_empty()),
            "Allow: {resp:?}"
        );
    }
}

// ---------------------------------------------------------------- 409

#[tokio::test]
async fn conflict_lists_every_stale_command_and_applies_nothing() {
    let server = shop().await;
    let p1 = server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let p2 = server.put_doc("shop", "people", "p2", r#"{"v":1}"#).await;
    let old_p1 = p1["change_vector"].as_str().expect("cv").to_owned();
    let old_p2 = p2["change_vector"].as_str().expect("cv").to_owned();
    let new_p1 = server.put_doc("shop", "people", "p1", r#"{"v":2}"#).await;
    let new_p2 = server.put_doc("shop", "people", "p2", r#"{"v":2}"#).await;

    let batch = json!({ "commands": [
        { "op": "put", "collection": "people", "id": "fresh", "document": {"v": 0}, "expect": "missing" },
        { "op": "put", "collection": "people", "id": "p1", "document": {"v": 3}, "expect": { "change_vector": old_p1 } },
        { "op": "delete", "collection": "people", "id": "p2", "expect": { "change_vector": old_p2 } },
        { "op": "put", "collection": "people", "id": "ghost", "document": {"v": 3}, "expect": { "change_vector": old_p1 } },
        { "op": "put", "collection": "people", "id": "p1-copy", "document": {"v": 3} },
    ] });
    let resp = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await;
    let problem = resp.problem(StatusCode::CONFLICT, "concurrency-conflict");
    let conflicts = problem["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 3, "every conflict: {problem}");
    let by_id = |id: &str| {
        conflicts
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("a conflict for {id}: {problem}"))
    };
    let c1 = by_id("p1");
    assert_eq!(c1["collection"], "people");
    assert_eq!(c1["expected"], json!({ "change_vector": old_p1 }));
    assert_eq!(c1["actual"], new_p1["change_vector"]);
    let c2 = by_id("p2");
    assert_eq!(c2["expected"], json!({ "change_vector": old_p2 }));
    assert_eq!(c2["actual"], new_p2["change_vector"]);
    let ghost = by_id("ghost");
    assert!(
        ghost.get("actual").is_some_and(Value::is_null),
        "actual: null for a missing document: {ghost}"
    );

    // Nothing applied.
    assert_eq!(
        server.get("/db/shop/docs/people/p1").await.json(),
        json!({"v":2})
    );
    assert_eq!(
        server.get("/db/shop/docs/people/p2").await.json(),
        json!({"v":2})
    );
    for never in ["fresh", "ghost", "p1-copy"] {
        server
            .get(&format!("/db/shop/docs/people/{never}"))
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    // A conflict on an expected absence names the existing version.
    let resp = server
        .post_json(
            "/db/shop/batch",
            &[],
            r#"{"commands":[{"op":"put","collection":"people","id":"p1","document":{},"expect":"missing"}]}"#,
        )
        .await;
    let problem = resp.problem(StatusCode::CONFLICT, "concurrency-conflict");
    assert_eq!(problem["conflicts"][0]["expected"], "missing");
    assert_eq!(problem["conflicts"][0]["actual"], new_p1["change_vector"]);
}

// ---------------------------------------------------------------- 412

#[tokio::test]
async fn precondition_failed_for_stale_or_contradicted_preconditions() {
    let server = shop().await;
    let first = server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let stale = quote(first["change_vector"].as_str().expect("cv"));
    server.put_doc("shop", "people", "p1", r#"{"v":2}"#).await;
    let failed = |resp: crate::common::Resp| {
        resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    };

    // PUT with a stale If-Match.
    failed(
        server
            .put_json(DOC, &[("if-match", &stale)], r#"{"v":3}"#)
            .await,
    );
    // A weak tag never matches If-Match (strong comparison), even the current one.
    let current = quote(&server.change_vector(DOC).await);
    failed(
        server
            .put_json(DOC, &[("if-match", &format!("W/{current}"))], r#"{"v":3}"#)
            .await,
    );
    // If-None-Match: * on an existing document.
    failed(
        server
            .put_json(DOC, &[("if-none-match", "*")], r#"{"v":3}"#)
            .await,
    );
    // If-Match: * on a missing document.
    failed(
        server
            .put_json(
                "/db/shop/docs/people/nobody",
                &[("if-match", "*")],
                r#"{"v":3}"#,
            )
            .await,
    );
    // If-Match with a version on a missing document.
    failed(
        server
            .put_json(
                "/db/shop/docs/people/nobody",
                &[("if-match", &current)],
                r#"{"v":3}"#,
            )
            .await,
    );
    // DELETE with a stale If-Match, and on a missing document.
    failed(server.delete(DOC, &[("if-match", &stale)]).await);
    failed(
        server
            .delete("/db/shop/docs/people/nobody", &[("if-match", &current)])
            .await,
    );
    // PATCH with a stale If-Match (both patch formats).
    failed(
        server
            .patch(
                DOC,
                "application/merge-patch+json",
                &[("if-match", &stale)],
                r#"{"v":3}"#,
            )
            .await,
    );
    failed(
        server
            .patch(
                DOC,
                "application/json-patch+json",
                &[("if-match", &stale)],
                r#"[{"op":"replace","path":"/v","value":3}]"#,
            )
            .await,
    );

    // Nothing changed, nothing created.
    let after = server.get(DOC).await;
    assert_eq!(after.json(), json!({"v":2}));
    assert_eq!(after.header("etag"), Some(current.as_str()));
    assert_eq!(after.header("folio-revision"), Some("2"));
    server
        .get("/db/shop/docs/people/nobody")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    // And the same preconditions succeed when they hold.
    let ok = server
        .put_json(DOC, &[("if-match", &current)], r#"{"v":3}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let ok = server
        .put_json(DOC, &[("if-match", "*")], r#"{"v":4}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let ok = server
        .put_json(
            "/db/shop/docs/people/new",
            &[("if-none-match", "*")],
            r#"{"v":1}"#,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    let current = quote(&server.change_vector(DOC).await);
    let list = format!("\"A:0-nothing\", {current}");
    let ok = server.delete(DOC, &[("if-match", &list)]).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{ok:?}");
}

// ---------------------------------------------------------------- 413

#[tokio::test]
async fn payload_too_large_over_the_configured_limit() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        }),
        ..Config::default()
    });
    server.create_db("shop").await;
    let small = format!(r#"{{"pad":"{}"}}"#, "x".repeat(900));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    let ok = server.put_json(DOC, &[], &small).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");

    let too_large = |resp: crate::common::Resp| {
        resp.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    };
    too_large(server.put_json(DOC, &[], &big).await);
    too_large(server.post_json("/db/shop/docs/people", &[], &big).await);
    let batch = format!(
        r#"{{"commands":[{{"op":"put","collection":"people","id":"p2","document":{big}}}]}}"#
    );
    too_large(server.post_json("/db/shop/batch", &[], &batch).await);
    too_large(
        server
            .patch(DOC, "application/merge-patch+json", &[], &big)
            .await,
    );
    // Without a Content-Length (a streamed body) as well.
    let chunks: Vec<Result<String, std::io::Error>> = (0..8).map(|_| Ok("x".repeat(300))).collect();
    let streamed = Body::from_stream(futures_util::stream::iter(chunks));
    too_large(
        server
            .send(
                Method::PUT,
                DOC,
                &[("content-type", "application/json")],
                streamed,
            )
            .await,
    );
    assert_eq!(server.get(DOC).await.json()["pad"], "x".repeat(900));
}

// ---------------------------------------------------------------- 415

#[tokio::test]
async fn unsupported_media_type_without_the_right_content_type() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let unsupported = |resp: crate::common::Resp| {
        resp.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    };
    unsupported(server.send(Method::PUT, DOC, &[], r#"{"v":2}"#).await);
    unsupported(
        server
            .send(
                Method::PUT,
                DOC,
                &[("content-type", "text/plain")],
                r#"{"v":2}"#,
            )
            .await,
    );
    unsupported(
        server
            .send(
                Method::POST,
                "/db/shop/docs/people",
                &[("content-type", "application/x-www-form-urlencoded")],
                "v=2",
            )
            .await,
    );
    unsupported(
        server
            .send(Method::POST, "/db/shop/batch", &[], r#"{"commands":[]}"#)
            .await,
    );
    unsupported(
        server
            .patch(DOC, "application/json", &[], r#"{"v":2}"#)
            .await,
    );
    unsupported(server.send(Method::PATCH, DOC, &[], r#"{"v":2}"#).await);
    assert_eq!(server.get(DOC).await.json(), json!({"v":1}));
    // Parameters of the media type are fine.
    let ok = server.put_json(DOC, &[], r#"{"v":3}"#).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let ok = server
        .send(
            Method::PUT,
            DOC,
            &[("content-type", "application/json; charset=utf-8")],
            r#"{"v":4}"#,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}

// ---------------------------------------------------------------- 428

#[tokio::test]
async fn precondition_required_in_a_guarded_collection() {
    let server = Server::with(Config {
        require_precondition: vec!["shop/accounts".to_owned(), "ledger".to_owned()],
        ..Config::default()
    });
    server.create_db("shop").await;
    let account = "/db/shop/docs/accounts/a1";

    // Creating needs no precondition.
    let created = server.put_json(account, &[], r#"{"balance":10}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let cv = quote(created.json()["change_vector"].as_str().expect("cv"));

    let required = |resp: crate::common::Resp| {
        resp.problem(StatusCode::PRECONDITION_REQUIRED, "precondition-required");
    };
    required(server.put_json(account, &[], r#"{"balance":0}"#).await);
    required(server.delete(account, &[]).await);
    required(
        server
            .patch(
                account,
                "application/merge-patch+json",
                &[],
                r#"{"balance":0}"#,
            )
            .await,
    );
    required(
        server
            .patch(
                account,
                "application/json-patch+json",
                &[],
                r#"[{"op":"replace","path":"/balance","value":0}]"#,
            )
            .await,
    );
    let still = server.get(account).await;
    assert_eq!(still.json(), json!({"balance":10}));
    assert_eq!(still.header("etag"), Some(cv.as_str()));

    // With If-Match it goes through.
    let updated = server
        .put_json(account, &[("if-match", &cv)], r#"{"balance":20}"#)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let cv = quote(updated.json()["change_vector"].as_str().expect("cv"));
    let patched = server
        .patch(
            account,
            "application/merge-patch+json",
            &[("if-match", &cv)],
            r#"{"balance":30}"#,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
    let cv = quote(patched.json()["change_vector"].as_str().expect("cv"));
    let deleted = server.delete(account, &[("if-match", &cv)]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");

    // A collection guarded in every database.
    server.create_db("other").await;
    let entry = "/db/other/docs/ledger/l1";
    server.put_doc("other", "ledger", "l1", r#"{"n":1}"#).await;
    required(server.put_json(entry, &[], r#"{"n":2}"#).await);
    // Collections not configured are not guarded.
    server
        .put_doc("other", "accounts", "a1", r#"{"n":1}"#)
        .await;
    let ok = server
        .put_json("/db/other/docs/accounts/a1", &[], r#"{"n":2}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}
