//! Revisions over HTTP: a collection's configuration (`GET`/`PUT
//! …/collections/{c}/config`, admin to change), a document's history
//! (`…/revisions`) and its kept versions (`…/revisions/{cv}`); hostile
//! requests are clear `400`/`404`s that change nothing.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Config, Server, quote, unquote};

const CONFIG: &str = "/db/shop/collections/people/config";
const HISTORY: &str = "/db/shop/docs/people/p1/revisions";

async fn shop() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    server
}

async fn configure(server: &Server, body: &str) -> crate::common::Resp {
    server.put_json(CONFIG, &[], body).await
}

#[tokio::test]
async fn a_configuration_is_read_replaced_and_refused_when_malformed() {
    let server = shop().await;
    let resp = server.get(CONFIG).await;
    assert_eq!(
        resp.ok_json(StatusCode::OK),
        json!({ "revisions": { "keep": 0 } })
    );
    let resp = configure(&server, r#"{ "revisions": { "keep": 100 } }"#).await;
    assert_eq!(
        resp.ok_json(StatusCode::OK),
        json!({ "revisions": { "keep": 100 } })
    );

    for bad in [
        r#"{ "revisions": { "keep": 10001 } }"#,
        r#"{ "revisions": { "keep": -1 } }"#,
        r#"{ "revisions": { "keep": 1.5 } }"#,
        r#"{ "revisions": { "keep": "100" } }"#,
        r#"{ "revision": { "keep": 1 } }"#,
        r#"{ "revisions": { "keep": 1, "max": 2 } }"#,
        r#"[]"#,
        r#"{ "revisions": "#,
    ] {
        let resp = configure(&server, bad).await;
        resp.problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    let resp = server
        .send(Method::PUT, CONFIG, &[("content-type", "text/plain")], "{}")
        .await;
    resp.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let resp = server
        .put_json("/db/shop/collections/bad%20name/config", &[], "{}")
        .await;
    resp.problem(StatusCode::BAD_REQUEST, "bad-request");
    // Nothing changed.
    let resp = server.get(CONFIG).await;
    assert_eq!(
        resp.ok_json(StatusCode::OK),
        json!({ "revisions": { "keep": 100 } })
    );
    // `{}` turns everything off.
    let resp = configure(&server, "{}").await;
    assert_eq!(
        resp.ok_json(StatusCode::OK),
        json!({ "revisions": { "keep": 0 } })
    );
}

#[tokio::test]
async fn only_an_admin_key_changes_a_configuration() {
    let server = Server::with(Config {
        keys: Some(
            r#"{ "keys": [
                { "key": "admin-key-0123456789", "roles": { "*": "admin" } },
                { "key": "shop-writer-0123456789", "roles": { "shop": "write" } }
            ] }"#,
        ),
        ..Config::default()
    });
    let admin = ("authorization", "Bearer admin-key-0123456789");
    let writer = ("authorization", "Bearer shop-writer-0123456789");
    let resp = server
        .send(Method::PUT, "/db/shop", &[admin], Body::empty())
        .await;
    assert_eq!(resp.status, StatusCode::CREATED);
    let body = r#"{ "revisions": { "keep": 5 } }"#;
    let resp = server.put_json(CONFIG, &[writer], body).await;
    resp.problem(StatusCode::FORBIDDEN, "forbidden");
    let resp = server.put_json(CONFIG, &[], body).await;
    resp.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = server
        .send(Method::GET, CONFIG, &[writer], Body::empty())
        .await;
    assert_eq!(resp.ok_json(StatusCode::OK)["revisions"]["keep"], 0);
    let resp = server.put_json(CONFIG, &[admin], body).await;
    assert_eq!(resp.ok_json(StatusCode::OK)["revisions"]["keep"], 5);
}

#[tokio::test]
async fn a_history_lists_kept_versions_and_serves_each() {
    let server = shop().await;
    configure(&server, r#"{ "revisions": { "keep": 3 } }"#).await;
    let mut versions = Vec::new();
    for name in ["one", "two", "three", "four"] {
        let written = server
            .put_doc("shop", "people", "p1", &json!({ "name": name }).to_string())
            .await;
        versions.push(written["change_vector"].as_str().unwrap().to_owned());
    }
    let resp = server.get(HISTORY).await;
    let page = resp.ok_json(StatusCode::OK);
    assert_eq!(page["total"], 3);
    let listed: Vec<(&str, u64, bool)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["change_vector"].as_str().unwrap(),
                item["revision"].as_u64().unwrap(),
                item["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (versions[3].as_str(), 4, false),
            (versions[2].as_str(), 3, false),
            (versions[1].as_str(), 2, false)
        ]
    );
    let resp = server.get(&format!("{HISTORY}?start=1&take=1")).await;
    let page = resp.ok_json(StatusCode::OK);
    assert_eq!(page["items"][0]["change_vector"], versions[2].as_str());
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // A kept version: its document, its version in the headers.
    let resp = server.get(&format!("{HISTORY}/{}", versions[1])).await;
    assert_eq!(resp.ok_json(StatusCode::OK), json!({ "name": "two" }));
    assert_eq!(unquote(resp.header("etag").unwrap()), versions[1]);
    assert_eq!(resp.header("folio-revision"), Some("2"));
    assert!(resp.header("folio-last-modified").unwrap().ends_with('Z'));
    assert!(resp.header("last-modified").is_some());

    // The deletion is listed; it has no document. The history stays.
    let resp = server
        .delete(
            "/db/shop/docs/people/p1",
            &[("if-match", &quote(&versions[3]))],
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let page = server.get(HISTORY).await.ok_json(StatusCode::OK);
    assert_eq!(page["items"][0]["deleted"], true);
    assert_eq!(page["total"], 3);
    let deletion = page["items"][0]["change_vector"].as_str().unwrap();
    server
        .get(&format!("{HISTORY}/{deletion}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let resp = server.get(&format!("{HISTORY}/{}", versions[3])).await;
    assert_eq!(resp.ok_json(StatusCode::OK), json!({ "name": "four" }));
}

#[tokio::test]
async fn hostile_history_requests_are_clear_refusals() {
    let server = shop().await;
    configure(&server, r#"{ "revisions": { "keep": 3 } }"#).await;
    server
        .put_doc("shop", "people", "p1", r#"{"name":"one"}"#)
        .await;
    for query in [
        "take=0",
        "take=1001",
        "take=99999999999",
        "take=abc",
        "start=-1",
        "start=1e3",
        "start=99999999999999999999999",
        "start=9223372036854775808",
    ] {
        server
            .get(&format!("{HISTORY}?{query}"))
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    // Far past the end: an empty page.
    let page = server
        .get(&format!("{HISTORY}?start=9223372036854775807&take=1000"))
        .await
        .ok_json(StatusCode::OK);
    assert_eq!(page, json!({ "items": [], "total": 1 }));
    // Unknown, foreign and malformed change vectors.
    for unknown in ["A:999999-nope", "A:1-Zz", "nonsense", "A:-1-x"] {
        server
            .get(&format!("{HISTORY}/{unknown}"))
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    for malformed in ["A%201-x", "%00", &"x".repeat(300)] {
        server
            .get(&format!("{HISTORY}/{malformed}"))
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    // A document never written has an empty history; a database that
    // does not exist is 404.
    let page = server
        .get("/db/shop/docs/people/nobody/revisions")
        .await
        .ok_json(StatusCode::OK);
    assert_eq!(page, json!({ "items": [], "total": 0 }));
    server
        .get("/db/nowhere/docs/people/p1/revisions")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    // The document and its history are as they were.
    let page: Value = server.get(HISTORY).await.ok_json(StatusCode::OK);
    assert_eq!(page["total"], 1);
}
