//! Conflicts that help, over HTTP: every `409` and `412` lists its
//! conflicts in one shape, each with `current`, what is stored now
//! (`null` when nothing is), read where the write was refused.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

/// The one conflict of a problem body, after checking the top level.
#[track_caller]
fn only_conflict(problem: &Value) -> &Value {
    let conflicts = problem["conflicts"].as_array().expect("a conflicts array");
    assert_eq!(conflicts.len(), 1, "{problem}");
    &conflicts[0]
}

#[tokio::test]
async fn a_stale_if_match_is_412_with_what_is_stored_now() {
    let server = shop().await;
    let first = server
        .put_doc("shop", "people", "p1", r#"{"name":"Ann"}"#)
        .await;
    let stale = first["change_vector"].as_str().unwrap().to_owned();
    let second = server
        .put_doc("shop", "people", "p1", r#"{"name":"Ann Lee","age":3}"#)
        .await;
    let now = second["change_vector"].as_str().unwrap();

    let resp = server
        .put_json(DOC, &[("if-match", &quote(&stale))], r#"{"name":"Mine"}"#)
        .await;
    let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    assert_eq!(problem["actual"], now);
    let conflict = only_conflict(&problem);
    assert_eq!(conflict["collection"], "people");
    assert_eq!(conflict["id"], "p1");
    assert_eq!(conflict["expected"], json!({ "change_vector": stale }));
    assert_eq!(conflict["actual"], now);
    assert_eq!(
        conflict["current"]["document"],
        json!({ "name": "Ann Lee", "age": 3 })
    );
    assert_eq!(conflict["current"]["change_vector"], now);
    assert_eq!(conflict["current"]["revision"], 2);
    assert_eq!(
        conflict["current"]["last_modified"],
        second["last_modified"]
    );

    // The same for a delete, a JSON patch and a merge patch with that tag,
    // and for a GET whose If-Match fails.
    let stale_tag = quote(&stale);
    let headers = [("if-match", stale_tag.as_str())];
    let answers = [
        server.delete(DOC, &headers).await,
        server
            .patch(
                DOC,
                "application/json-patch+json",
                &headers,
                r#"[{"op":"replace","path":"/name","value":"x"}]"#,
            )
            .await,
        server
            .patch(
                DOC,
                "application/merge-patch+json",
                &headers,
                r#"{"name":"x"}"#,
            )
            .await,
        server
            .send(
                axum::http::Method::GET,
                DOC,
                &headers,
                axum::body::Body::empty(),
            )
            .await,
    ];
    for resp in answers {
        let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
        let conflict = only_conflict(&problem);
        assert_eq!(
            conflict["current"]["document"]["name"], "Ann Lee",
            "{problem}"
        );
        assert_eq!(conflict["current"]["revision"], 2);
    }
}

#[tokio::test]
async fn preconditions_the_server_judges_carry_what_is_stored_too() {
    let server = shop().await;
    server
        .put_doc("shop", "people", "p1", r#"{"name":"Ann"}"#)
        .await;
    // Two tags (judged against a read, not by the engine).
    let resp = server
        .put_json(
            DOC,
            &[("if-match", r#""A:1-nope", "A:2-nope""#)],
            r#"{"name":"Mine"}"#,
        )
        .await;
    let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    let conflict = only_conflict(&problem);
    assert_eq!(conflict["expected"], json!({ "change_vector": "A:1-nope" }));
    assert_eq!(conflict["current"]["document"], json!({ "name": "Ann" }));

    // If-None-Match: * on an existing document.
    let resp = server
        .put_json(DOC, &[("if-none-match", "*")], r#"{"name":"Mine"}"#)
        .await;
    let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    let conflict = only_conflict(&problem);
    assert_eq!(conflict["expected"], "missing");
    assert_eq!(conflict["current"]["document"], json!({ "name": "Ann" }));

    // If-Match on a missing document: nothing is stored.
    let resp = server
        .put_json(
            "/db/shop/docs/people/nobody",
            &[("if-match", "*")],
            r#"{"name":"Mine"}"#,
        )
        .await;
    let problem = resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    let conflict = only_conflict(&problem);
    assert_eq!(conflict["current"], Value::Null);
    assert_eq!(conflict["actual"], Value::Null);
}

#[tokio::test]
async fn a_refused_batch_is_409_with_each_conflicts_document() {
    let server = shop().await;
    let p1 = server
        .put_doc("shop", "people", "p1", r#"{"name":"Ann"}"#)
        .await;
    server
        .put_doc("shop", "people", "p1", r#"{"name":"Ann 2"}"#)
        .await;
    server
        .put_doc("shop", "people", "p2", r#"{"name":"Bob"}"#)
        .await;
    let batch = json!({ "commands": [
        { "op": "put", "collection": "people", "id": "p1", "document": { "name": "x" },
          "expect": { "change_vector": p1["change_vector"] } },
        { "op": "put", "collection": "people", "id": "p2", "document": { "name": "y" },
          "expect": "missing" },
        { "op": "delete", "collection": "people", "id": "p3",
          "expect": { "change_vector": p1["change_vector"] } },
    ]});
    let resp = server
        .post_json("/db/shop/batch", &[], &batch.to_string())
        .await;
    let problem = resp.problem(StatusCode::CONFLICT, "concurrency-conflict");
    let conflicts = problem["conflicts"].as_array().expect("conflicts");
    let found: Vec<(&str, &Value)> = conflicts
        .iter()
        .map(|conflict| (conflict["id"].as_str().unwrap(), &conflict["current"]))
        .collect();
    assert_eq!(found.len(), 3, "{problem}");
    assert_eq!(found[0].0, "p1");
    assert_eq!(found[0].1["document"], json!({ "name": "Ann 2" }));
    assert_eq!(found[0].1["revision"], 2);
    assert_eq!(found[1].0, "p2");
    assert_eq!(found[1].1["document"], json!({ "name": "Bob" }));
    assert_eq!(found[2], ("p3", &Value::Null));
}
