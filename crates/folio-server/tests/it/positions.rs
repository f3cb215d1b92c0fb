//! `Folio-Position` and `Folio-After` (docs/protocol.md): every successful
//! write answers with a position, a replayed one too; every read accepts
//! one back and answers, also one of another kind of database (read from
//! the primary); a malformed position is `400` before anything is read.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::common::{Resp, Server, quote};

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

/// The position a write answered with (the embedded engine's form).
fn position(answer: &Resp) -> String {
    let position = answer
        .header("folio-position")
        .unwrap_or_else(|| panic!("a write answers Folio-Position: {answer:?}"))
        .to_owned();
    assert!(position.starts_with("etag:"), "{position}");
    position
}

#[tokio::test]
async fn every_write_answers_a_position() {
    let server = shop().await;
    let uri = "/db/shop/docs/people/p1";
    let created = server
        .put_json(uri, &[("idempotency-key", "k1")], r#"{"name":"Ann"}"#)
        .await;
    created.ok_json(StatusCode::CREATED);
    let first = position(&created);
    // A repeat answers with a position too.
    let again = server
        .put_json(uri, &[("idempotency-key", "k1")], r#"{"name":"Ann"}"#)
        .await;
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    position(&again);
    let version = quote(&server.change_vector(uri).await);
    let patched = server
        .patch(
            uri,
            "application/merge-patch+json",
            &[("if-match", version.as_str())],
            r#"{"age":36}"#,
        )
        .await;
    patched.ok_json(StatusCode::OK);
    assert_ne!(position(&patched), first, "a later write, a later position");
    let posted = server
        .post_json("/db/shop/docs/people", &[], r#"{"name":"Bo"}"#)
        .await;
    posted.ok_json(StatusCode::CREATED);
    position(&posted);
    let batch = server
        .post_json(
            "/db/shop/batch",
            &[],
            r#"{"commands":[{"op":"put","collection":"people","id":"p2","document":{"name":"Cy"},"expect":"missing"}]}"#,
        )
        .await;
    batch.ok_json(StatusCode::OK);
    position(&batch);
    let deleted = server.delete(uri, &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    position(&deleted);
    // A refused write has none.
    let refused = server
        .put_json(
            "/db/shop/docs/people/p2",
            &[("if-none-match", "*")],
            r#"{"name":"Dee"}"#,
        )
        .await;
    assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(refused.header("folio-position"), None);
}

#[tokio::test]
async fn every_read_takes_a_position_back_and_refuses_a_malformed_one() {
    let server = shop().await;
    let written = server
        .put_json("/db/shop/docs/people/p1", &[], r#"{"name":"Ann"}"#)
        .await;
    let after = position(&written);
    let query = r#"{"collection":"people"}"#;
    let get_many = r#"{"ids":["p1"]}"#;
    type Read<'a> = (Method, &'a str, &'a str);
    let reads: [Read<'_>; 6] = [
        (Method::GET, "/db/shop/docs/people/p1", ""),
        (Method::HEAD, "/db/shop/docs/people/p1", ""),
        (Method::GET, "/db/shop/docs/people", ""),
        (Method::GET, "/db/shop/collections", ""),
        (Method::POST, "/db/shop/docs/people/get", get_many),
        (Method::POST, "/db/shop/query", query),
    ];
    for (method, uri, body) in reads {
        let read = |headers: Vec<(&'static str, String)>| {
            let server = &server;
            let method = method.clone();
            async move {
                let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
                all.extend(headers.iter().map(|(name, value)| (*name, value.as_str())));
                let body = if body.is_empty() {
                    Body::empty()
                } else {
                    Body::from(body.to_owned())
                };
                server.send(method, uri, &all, body).await
            }
        };
        let answered = read(vec![("folio-after", after.clone())]).await;
        assert_eq!(
            answered.status,
            StatusCode::OK,
            "{method} {uri}: {answered:?}"
        );
        for foreign in ["lsn:0/16B3748", "elsewhere", "etag:x"] {
            let answered = read(vec![("folio-after", foreign.to_owned())]).await;
            assert_eq!(
                answered.status,
                StatusCode::OK,
                "{method} {uri} after {foreign}: {answered:?}"
            );
        }
        for bad in ["etag: 1", &"9".repeat(256)] {
            let refused = read(vec![("folio-after", bad.to_owned())]).await;
            assert_eq!(
                refused.status,
                StatusCode::BAD_REQUEST,
                "{method} {uri} after {bad}: {refused:?}"
            );
            if method != Method::HEAD {
                let problem = refused.problem(StatusCode::BAD_REQUEST, "bad-request");
                assert!(
                    problem["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("Folio-After"),
                    "the detail names the header: {problem}"
                );
            }
        }
    }
}
