//! `PATCH`: JSON merge patch (RFC 7396) and JSON patch (RFC 6902), under
//! the request's preconditions.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

async fn with_person() -> (Server, String) {
    let server = Server::new();
    server.create_db("shop").await;
    let metadata = server
        .put_doc(
            "shop",
            "people",
            "p1",
            r#"{"name":"Ada","age":36,"address":{"city":"London","zip":"N1"},"tags":["a"]}"#,
        )
        .await;
    let cv = quote(metadata["change_vector"].as_str().expect("cv"));
    (server, cv)
}

#[tokio::test]
async fn merge_patch_merges_removes_and_honours_if_match() {
    let (server, cv) = with_person().await;
    let resp = server
        .patch(
            DOC,
            MERGE,
            &[("if-match", &cv)],
            r#"{"age":37,"address":{"zip":null,"country":"UK"},"tags":["b","c"],"name":null}"#,
        )
        .await;
    let metadata = resp.ok_json(StatusCode::OK);
    assert_eq!(metadata["revision"], 2);
    assert_eq!(
        resp.header("etag"),
        Some(quote(metadata["change_vector"].as_str().expect("cv")).as_str())
    );
    assert_eq!(
        server.get(DOC).await.json(),
        json!({"age":37,"address":{"city":"London","country":"UK"},"tags":["b","c"]})
    );

    // The old version is stale now: 412 and nothing written.
    server
        .patch(DOC, MERGE, &[("if-match", &cv)], r#"{"age":99}"#)
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    assert_eq!(server.get(DOC).await.json()["age"], 37);

    // Without a precondition a patch applies to the current version.
    let resp = server.patch(DOC, MERGE, &[], r#"{"age":38}"#).await;
    assert_eq!(resp.ok_json(StatusCode::OK)["revision"], 3);
    assert_eq!(server.get(DOC).await.json()["age"], 38);

    // A merge patch that is not JSON.
    server
        .patch(DOC, MERGE, &[], r#"{"age":"#)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    // A merge patch that replaces the whole document with a non-object.
    server
        .patch(DOC, MERGE, &[], "[1]")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    assert_eq!(server.get(DOC).await.header("folio-revision"), Some("3"));
}

#[tokio::test]
async fn json_patch_applies_all_or_nothing() {
    let (server, cv) = with_person().await;
    let resp = server
        .patch(
            DOC,
            JSON_PATCH,
            &[("if-match", &cv)],
            r#"[
                {"op":"test","path":"/name","value":"Ada"},
                {"op":"replace","path":"/age","value":37},
                {"op":"add","path":"/tags/-","value":"b"},
                {"op":"remove","path":"/address/zip"},
                {"op":"copy","from":"/address/city","path":"/born"},
                {"op":"move","from":"/name","path":"/first_name"}
            ]"#,
        )
        .await;
    let metadata = resp.ok_json(StatusCode::OK);
    assert_eq!(metadata["revision"], 2);
    let expected = json!({"first_name":"Ada","age":37,"address":{"city":"London"},"tags":["a","b"],"born":"London"});
    assert_eq!(server.get(DOC).await.json(), expected);

    // A failing `test` op: 409 (the document is not as the client
    // expected) naming the path tested and the version patched, and the
    // ops before and after it are not written.
    let current = quote(metadata["change_vector"].as_str().expect("cv"));
    for preconditions in [&[("if-match", current.as_str())][..], &[]] {
        let problem = server
            .patch(
                DOC,
                JSON_PATCH,
                preconditions,
                r#"[
                    {"op":"replace","path":"/age","value":1000},
                    {"op":"test","path":"/first_name","value":"Grace"},
                    {"op":"replace","path":"/born","value":"nowhere"}
                ]"#,
            )
            .await
            .problem(StatusCode::CONFLICT, "patch-test-failed");
        assert_eq!(problem["failed_test"], "/first_name");
        assert_eq!(quote(problem["actual"].as_str().expect("actual")), current);
    }
    let after = server.get(DOC).await;
    assert_eq!(after.json(), expected);
    assert_eq!(after.header("etag"), Some(current.as_str()));
    assert_eq!(after.header("folio-revision"), Some("2"));

    // An op on a path that does not exist, a malformed patch, a patch that
    // leaves no object: 400, nothing written.
    for bad in [
        r#"[{"op":"remove","path":"/nothing/here"}]"#,
        r#"[{"op":"explode","path":"/age"}]"#,
        r#"{"op":"replace","path":"/age","value":1}"#,
        r#"[{"op":"replace","path":"","value":[1,2]}]"#,
    ] {
        server
            .patch(DOC, JSON_PATCH, &[], bad)
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    assert_eq!(server.get(DOC).await.header("folio-revision"), Some("2"));

    // A stale If-Match: 412.
    server
        .patch(
            DOC,
            JSON_PATCH,
            &[("if-match", &cv)],
            r#"[{"op":"replace","path":"/age","value":1}]"#,
        )
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    // If-None-Match: * on an existing document: 412.
    server
        .patch(
            DOC,
            JSON_PATCH,
            &[("if-none-match", "*")],
            r#"[{"op":"replace","path":"/age","value":1}]"#,
        )
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    assert_eq!(server.get(DOC).await.json(), expected);

    // If-Match: * on an existing document applies.
    let resp = server
        .patch(
            DOC,
            JSON_PATCH,
            &[("if-match", "*")],
            r#"[{"op":"replace","path":"/age","value":40}]"#,
        )
        .await;
    assert_eq!(resp.ok_json(StatusCode::OK)["revision"], 3);
    assert_eq!(server.get(DOC).await.json()["age"], 40);
}

#[tokio::test]
async fn patching_a_missing_document_is_404_and_creates_nothing() {
    let (server, _) = with_person().await;
    let missing = "/db/shop/docs/people/nobody";
    server
        .patch(missing, MERGE, &[], r#"{"a":1}"#)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .patch(
            missing,
            JSON_PATCH,
            &[],
            r#"[{"op":"add","path":"/a","value":1}]"#,
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .get(missing)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

/// A patch rewrites the whole document: numbers it does not touch come back
/// exactly as they were (found by fuzzing: without serde_json's
/// `float_roundtrip`, parsing and writing a float could move it by one
/// unit in the last place).
#[tokio::test]
async fn a_patch_leaves_untouched_numbers_exactly_as_they_were() {
    let server = Server::new();
    server.create_db("shop").await;
    let floats = [
        "4.4404444444444443e136",
        "0.1",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "9007199254740993",
    ];
    let document = format!(r#"{{"n":[{}],"v":1}}"#, floats.join(","));
    server.put_doc("shop", "nums", "n1", &document).await;
    let before: serde_json::Value = server.get("/db/shop/docs/nums/n1").await.json();
    for (media_type, patch) in [
        ("application/merge-patch+json", r#"{"v":2}"#),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/v","value":3}]"#,
        ),
    ] {
        let resp = server
            .patch("/db/shop/docs/nums/n1", media_type, &[], patch)
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
        let after: serde_json::Value = server.get("/db/shop/docs/nums/n1").await.json();
        assert_eq!(after["n"], before["n"], "{media_type}");
    }
}
