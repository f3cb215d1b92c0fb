//! The auth matrix: `Authorization: Bearer <key>`, a role per database.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{Config, Resp, Server};

const KEYS: &str = r#"{ "keys": [
    { "key": "admin-key-0123456789", "roles": { "*": "admin" } },
    { "key": "shop-writer-0123456789", "roles": { "shop": "write" } },
    { "key": "shop-reader-0123456789", "roles": { "shop": "read" } },
    { "key": "other-writer-0123456789", "roles": { "other": "write" } },
    { "key": "reads-all-writes-shop-0", "roles": { "shop": "write", "*": "read" } }
] }"#;

const ADMIN: &str = "Bearer admin-key-0123456789";
const WRITER: &str = "Bearer shop-writer-0123456789";
const READER: &str = "Bearer shop-reader-0123456789";
const OTHER: &str = "Bearer other-writer-0123456789";
const READS_ALL: &str = "Bearer reads-all-writes-shop-0";

const DOC: &str = "/db/shop/docs/people/p1";

async fn secured() -> Server {
    let server = Server::with(Config {
        keys: Some(KEYS),
        ..Config::default()
    });
    for db in ["shop", "other", "third"] {
        let resp = server
            .send(
                Method::PUT,
                &format!("/db/{db}"),
                &[("authorization", ADMIN)],
                Body::empty(),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "admin creates {db}: {resp:?}"
        );
    }
    let resp = server
        .put_json(DOC, &[("authorization", WRITER)], r#"{"name":"A"}"#)
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    server
}

#[track_caller]
fn unauthorized(resp: &Resp) {
    resp.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: Bearer: {resp:?}"
    );
}

#[track_caller]
fn forbidden(resp: &Resp) {
    resp.problem(StatusCode::FORBIDDEN, "forbidden");
}

/// Every kind of request to `db`, each with `authorization` (if any).
async fn every_request(server: &Server, db: &str, authorization: Option<&str>) -> Vec<Resp> {
    let auth: Vec<(&str, &str)> = authorization
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    let doc = format!("/db/{db}/docs/people/p1");
    let mut with_json = auth.clone();
    with_json.push(("content-type", "application/json"));
    let mut with_merge = auth.clone();
    with_merge.push(("content-type", "application/merge-patch+json"));
    vec![
        server.send(Method::GET, &doc, &auth, Body::empty()).await,
        server.send(Method::HEAD, &doc, &auth, Body::empty()).await,
        server
            .send(Method::PUT, &doc, &with_json, r#"{"name":"X"}"#)
            .await,
        server
            .send(Method::PATCH, &doc, &with_merge, r#"{"name":"X"}"#)
            .await,
        server
            .send(Method::DELETE, &doc, &auth, Body::empty())
            .await,
        server
            .send(
                Method::POST,
                &format!("/db/{db}/docs/people"),
                &with_json,
                r#"{"name":"X"}"#,
            )
            .await,
        server
            .send(
                Method::GET,
                &format!("/db/{db}/docs/people"),
                &auth,
                Body::empty(),
            )
            .await,
        server
            .send(
                Method::POST,
                &format!("/db/{db}/docs/people/get"),
                &with_json,
                r#"{"ids":["p1"]}"#,
            )
            .await,
        server
            .send(
                Method::POST,
                &format!("/db/{db}/query"),
                &with_json,
                r#"{"collection":"people"}"#,
            )
            .await,
        server
            .send(
                Method::POST,
                &format!("/db/{db}/batch"),
                &with_json,
                r#"{"commands":[{"op":"put","collection":"people","id":"p9","document":{}}]}"#,
            )
            .await,
        server
            .send(Method::PUT, &format!("/db/{db}"), &auth, Body::empty())
            .await,
        server.send(Method::GET, "/db", &auth, Body::empty()).await,
        server
            .send(
                Method::GET,
                &format!("/db/{db}/changes?timeout=0"),
                &with_accept_json(&auth),
                Body::empty(),
            )
            .await,
    ]
}

/// `headers` with `Accept: application/json` (the changes feed's long poll).
fn with_accept_json<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = headers.to_vec();
    headers.push(("accept", "application/json"));
    headers
}

#[tokio::test]
async fn no_key_or_an_unknown_key_is_401_everywhere() {
    let server = secured().await;
    for authorization in [
        None,
        Some("Bearer not-a-key-at-all-0000"),
        Some("Bearer admin-key-012345678"),
        Some("Bearer admin-key-01234567890"),
        Some("Basic YWRtaW46YWRtaW4="),
        Some("admin-key-0123456789"),
        Some("Bearer "),
    ] {
        for resp in every_request(&server, "shop", authorization).await {
            if resp.method == Method::HEAD {
                assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{resp:?}");
                assert!(resp.body.is_empty());
            } else {
                unauthorized(&resp);
            }
        }
        // A database that does not exist: 401 as well (existence is not told).
        let resp = server
            .send(
                Method::GET,
                "/db/nowhere/docs/people/p1",
                &authorization
                    .map(|a| vec![("authorization", a)])
                    .unwrap_or_default(),
                Body::empty(),
            )
            .await;
        unauthorized(&resp);
    }
    // Nothing was written.
    let resp = server
        .send(
            Method::GET,
            DOC,
            &[("authorization", READER)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.json(), json!({"name":"A"}));
}

#[tokio::test]
async fn a_read_key_reads_and_may_not_write() {
    let server = secured().await;
    let responses = every_request(&server, "shop", Some(READER)).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status.as_u16()).collect();
    // GET, HEAD, list, get-many, query and the changes feed are reads.
    for index in [0, 1, 6, 7, 8, 12] {
        assert_eq!(
            responses[index].status,
            StatusCode::OK,
            "{:?}",
            responses[index]
        );
    }
    // PUT, PATCH, DELETE, POST, batch and database creation are not.
    for index in [2, 3, 4, 5, 9, 10] {
        forbidden(&responses[index]);
    }
    assert_eq!(responses[11].status, StatusCode::OK, "{statuses:?}");
    let resp = server
        .send(
            Method::GET,
            DOC,
            &[("authorization", READER)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.json(), json!({"name":"A"}));
    assert_eq!(resp.header("folio-revision"), Some("1"));
    let resp = server
        .send(
            Method::GET,
            "/db/shop/docs/people/p9",
            &[("authorization", READER)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{resp:?}");
}

#[tokio::test]
async fn a_key_for_another_database_is_403() {
    let server = secured().await;
    let responses = every_request(&server, "shop", Some(OTHER)).await;
    for resp in responses[..11].iter().chain(&responses[12..]) {
        if resp.method == Method::HEAD {
            assert_eq!(resp.status, StatusCode::FORBIDDEN, "{resp:?}");
        } else {
            forbidden(resp);
        }
    }
    // And a database that does not exist is 403 too, not 404.
    let resp = server
        .send(
            Method::GET,
            "/db/nowhere/docs/people/p1",
            &[("authorization", OTHER)],
            Body::empty(),
        )
        .await;
    forbidden(&resp);
    // In its own database it writes.
    let resp = server
        .put_json(
            "/db/other/docs/people/p1",
            &[("authorization", OTHER)],
            r#"{"name":"O"}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
}

#[tokio::test]
async fn a_write_key_writes_but_does_not_create_databases() {
    let server = secured().await;
    let responses = every_request(&server, "shop", Some(WRITER)).await;
    for resp in responses[..10].iter().chain(&responses[11..]) {
        assert!(resp.status.is_success(), "{resp:?}");
    }
    forbidden(&responses[10]);
    let resp = server
        .send(
            Method::PUT,
            "/db/newdb",
            &[("authorization", WRITER)],
            Body::empty(),
        )
        .await;
    forbidden(&resp);
    assert!(!server.data.join("newdb.sqlite").exists());

    let resp = server
        .send(
            Method::PUT,
            "/db/newdb",
            &[("authorization", ADMIN)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    let resp = server
        .send(
            Method::PUT,
            "/db/newdb",
            &[("authorization", ADMIN)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

#[tokio::test]
async fn only_liveness_and_the_studio_need_no_key() {
    let server = secured().await;
    for open in ["/healthz", "/studio", "/studio/"] {
        let resp = server.get(open).await;
        assert_eq!(resp.status, StatusCode::OK, "{open}: {resp:?}");
    }
    for (service, with_key) in [
        ("/metrics", "text/plain"),
        ("/openapi.json", "application/json"),
    ] {
        unauthorized(&server.get(service).await);
        let resp = server
            .send(
                Method::GET,
                service,
                &[("authorization", "Bearer not-a-key-at-all-0000")],
                Body::empty(),
            )
            .await;
        unauthorized(&resp);
        // Any known key reads it, whatever its databases and role.
        for key in [READER, OTHER] {
            let resp = server
                .send(
                    Method::GET,
                    service,
                    &[("authorization", key)],
                    Body::empty(),
                )
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{service}: {resp:?}");
            assert!(
                resp.header("content-type")
                    .unwrap_or("")
                    .starts_with(with_key),
                "{resp:?}"
            );
        }
    }
    // The event stream of the feed, not only its long poll, needs a key.
    unauthorized(&server.get("/db/shop/changes").await);
    // The list of collections: a key with a role in the database.
    unauthorized(&server.get("/db/shop/collections").await);
    for (key, status) in [(READER, StatusCode::OK), (OTHER, StatusCode::FORBIDDEN)] {
        let resp = server
            .send(
                Method::GET,
                "/db/shop/collections",
                &[("authorization", key)],
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, status, "{resp:?}");
    }
}

#[tokio::test]
async fn healthz_needs_no_key_and_the_database_list_is_filtered() {
    let server = secured().await;
    let resp = server.get("/healthz").await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");

    let list = |authorization: &'static str| {
        let server = &server;
        async move {
            let resp = server
                .send(
                    Method::GET,
                    "/db",
                    &[("authorization", authorization)],
                    Body::empty(),
                )
                .await;
            let body = resp.ok_json(StatusCode::OK);
            let mut names: Vec<String> = body["databases"]
                .as_array()
                .expect("databases")
                .iter()
                .map(|n| n.as_str().expect("a name").to_owned())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(list(ADMIN).await, ["other", "shop", "third"]);
    assert_eq!(list(READER).await, ["shop"]);
    assert_eq!(list(WRITER).await, ["shop"]);
    assert_eq!(list(OTHER).await, ["other"]);
    assert_eq!(list(READS_ALL).await, ["other", "shop", "third"]);
    unauthorized(&server.get("/db").await);

    // `*: read` with `shop: write`: writes shop, only reads the others.
    let resp = server
        .put_json(
            "/db/shop/docs/people/p2",
            &[("authorization", READS_ALL)],
            "{}",
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    let resp = server
        .put_json(
            "/db/third/docs/people/p2",
            &[("authorization", READS_ALL)],
            "{}",
        )
        .await;
    forbidden(&resp);
    let resp = server
        .send(
            Method::GET,
            "/db/third/docs/people",
            &[("authorization", READS_ALL)],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

#[test]
fn keys_files_are_checked() {
    use folio_server::auth::Keys;
    assert!(Keys::parse(KEYS).is_ok());
    // Too short a key, an unknown role, an unknown field, not JSON.
    for bad in [
        r#"{"keys":[{"key":"short","roles":{"*":"read"}}]}"#,
        r#"{"keys":[{"key":"long-enough-key-0123","roles":{"*":"owner"}}]}"#,
        r#"{"keys":[{"key":"long-enough-key-0123","roles":{"*":"read"},"note":1}]}"#,
        "keys: []",
    ] {
        assert!(Keys::parse(bad).is_err(), "{bad} must be refused");
    }
}

/// With keys configured and no database yet, the list still needs a key:
/// an empty list must not be an answer to a request without one.
#[tokio::test]
async fn the_database_list_needs_a_key_even_when_there_is_nothing_to_list() {
    let server = Server::with(Config {
        keys: Some(KEYS),
        ..Config::default()
    });
    unauthorized(&server.get("/db").await);
    unauthorized(
        &server
            .send(
                Method::GET,
                "/db",
                &[("authorization", "Bearer nobody-knows-me-0123")],
                Body::empty(),
            )
            .await,
    );
    let resp = server
        .send(
            Method::GET,
            "/db",
            &[("authorization", READER)],
            Body::empty(),
        )
        .await;
    assert_eq!(
        resp.ok_json(StatusCode::OK)["databases"],
        serde_json::json!([])
    );
}
