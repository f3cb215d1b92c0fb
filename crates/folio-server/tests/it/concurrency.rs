//! Concurrent writers over HTTP lose no update: conditional increments
//! retried on 412, and patches without a precondition, each applied to the
//! version it read. No sleeps: the tasks simply run at once.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, quote};

const WRITERS: u64 = 6;
const EACH: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_increments_lose_no_update() {
    let server = std::sync::Arc::new(Server::new());
    server.create_db("shop").await;
    let doc = "/db/shop/docs/counters/c1";
    server.put_doc("shop", "counters", "c1", r#"{"n":0}"#).await;

    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0u64;
            for _ in 0..EACH {
                loop {
                    let got = server.get(doc).await;
                    assert_eq!(got.status, StatusCode::OK, "{got:?}");
                    let etag = got.header("etag").expect("ETag").to_owned();
                    let n = got.json()["n"].as_u64().expect("n");
                    let body = json!({ "n": n + 1 }).to_string();
                    let put = server.put_json(doc, &[("if-match", &etag)], &body).await;
                    match put.status {
                        StatusCode::OK => break,
                        StatusCode::PRECONDITION_FAILED => refused += 1,
                        _ => panic!("{put:?}"),
                    }
                }
            }
            refused
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
    let got = server.get(doc).await;
    assert_eq!(got.json()["n"], WRITERS * EACH, "no increment lost");
    assert_eq!(
        got.header("folio-revision"),
        Some((WRITERS * EACH + 1).to_string().as_str()),
        "exactly one write per increment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_without_precondition_apply_to_the_current_version() {
    let server = std::sync::Arc::new(Server::new());
    server.create_db("shop").await;
    let doc = "/db/shop/docs/lists/l1";
    server
        .put_doc("shop", "lists", "l1", r#"{"items":[]}"#)
        .await;

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut applied = Vec::new();
            for i in 0..EACH {
                let item = format!("{writer}-{i}");
                let patch = json!([{ "op": "add", "path": "/items/-", "value": item }]);
                loop {
                    let resp = server
                        .patch(doc, "application/json-patch+json", &[], &patch.to_string())
                        .await;
                    match resp.status {
                        StatusCode::OK => {
                            applied.push(item);
                            break;
                        }
                        // Too much contention: the protocol's "try again".
                        StatusCode::SERVICE_UNAVAILABLE => {
                            resp.problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
                        }
                        _ => panic!("{resp:?}"),
                    }
                }
            }
            applied
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.expect("a writer"));
    }
    let got = server.get(doc).await;
    let mut items: Vec<String> = got.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v: &Value| v.as_str().expect("a string").to_owned())
        .collect();
    items.sort();
    applied.sort();
    assert_eq!(items, applied, "every acknowledged patch, exactly once");
    assert_eq!(items.len() as u64, WRITERS * EACH);
    // And the version headers moved with every patch.
    let etag = got.header("etag").expect("ETag").to_owned();
    assert_eq!(
        got.header("folio-revision"),
        Some((WRITERS * EACH + 1).to_string().as_str())
    );
    assert_eq!(etag, quote(&server.change_vector(doc).await));
}
