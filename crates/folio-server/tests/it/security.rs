//! Hostile clients: slow-loris connections (a head or a body trickled a
//! byte at a time), oversized and deeply nested bodies on every route, a
//! JSON patch that multiplies a document, ids that try SQL or path
//! traversal in the URL; and a property test that no problem body, for any
//! bad request, carries SQL, file paths or stack traces.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio_server::{AppState, Backend, Databases, Limits};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Config, Server, options};

// ---- slow clients ----------------------------------------------------------------

/// `folio_server::serve` on a loopback port with one-second timeouts, over
/// a data directory holding the database `shop`.
async fn start_serving() -> (SocketAddr, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("tempdir");
    let databases = Databases::new(Backend::Embedded {
        dir: root.path().join("data"),
        options: options(),
    });
    databases.create("shop").await.expect("the database");
    let state = AppState::new(
        databases,
        None,
        Limits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        Vec::<String>::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(folio_server::serve(listener, state));
    (address, root)
}

/// How a trickling client's connection ended.
#[derive(Debug)]
struct Trickled {
    /// Bytes of `request` sent before the server closed the connection.
    sent: usize,
    /// Everything the server sent.
    received: Vec<u8>,
}

/// Sends `prefix` at once, then `trickle` one byte every 100 ms, until the
/// server closes the connection (or 30 s pass: a guard against hanging,
/// after which the test fails).
async fn trickle(address: SocketAddr, prefix: &str, trickle: &str) -> Trickled {
    let stream = TcpStream::connect(address).await.expect("connected");
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        // A reset also ends the connection.
        let _ = read.read_to_end(&mut received).await;
        received
    });
    write.write_all(prefix.as_bytes()).await.expect("sent");
    let mut sent = prefix.len();
    for byte in trickle.bytes().cycle().take(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if reader.is_finished() || write.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
    }
    let received = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the server closed the connection within 30 s")
        .expect("the reader");
    Trickled { sent, received }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_disconnected() {
    let (address, _root) = start_serving().await;
    let slow = tokio::spawn(trickle(
        address,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n",
        "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    ));
    // A connection that never sends anything is closed too.
    let silent = tokio::spawn(trickle(address, "", ""));
    // Meanwhile the server serves others.
    let mut quick = TcpStream::connect(address).await.expect("connected");
    quick
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("sent");
    let mut answer = String::new();
    quick.read_to_string(&mut answer).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let slow = slow.await.expect("the slow client");
    assert!(
        slow.sent < 300,
        "disconnected while still sending: {slow:?}"
    );
    assert!(
        !String::from_utf8_lossy(&slow.received).contains("200 OK"),
        "the trickled request was never served: {slow:?}"
    );
    let silent = silent.await.expect("the silent client");
    assert!(silent.received.is_empty(), "{silent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_body_gets_408_and_is_disconnected() {
    let (address, _root) = start_serving().await;
    let body = r#"{"text":"this body arrives one byte at a time, far too slowly"}"#;
    let head = format!(
        "PUT /db/shop/docs/notes/slow HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let slow = trickle(address, &head, body).await;
    assert!(slow.sent < head.len() + body.len(), "{slow:?}");
    let answer = String::from_utf8_lossy(&slow.received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("request-timeout"), "{answer}");

    // Nothing was written.
    let mut check = TcpStream::connect(address).await.expect("connected");
    check
        .write_all(
            b"GET /db/shop/docs/notes/slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("sent");
    let mut answer = String::new();
    check.read_to_string(&mut answer).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

// ---- large and deep bodies ---------------------------------------------------------

const DOC: &str = "/db/shop/docs/people/p1";

/// Every route that takes a JSON body: method, URI, content type, and the
/// body wrapping `inner` (a JSON value) where the route expects one.
fn body_routes(inner: &str) -> Vec<(Method, &'static str, &'static str, String)> {
    let json = "application/json";
    vec![
        (Method::PUT, DOC, json, format!(r#"{{"a":{inner}}}"#)),
        (
            Method::POST,
            "/db/shop/docs/people",
            json,
            format!(r#"{{"a":{inner}}}"#),
        ),
        (
            Method::PATCH,
            DOC,
            "application/merge-patch+json",
            format!(r#"{{"a":{inner}}}"#),
        ),
        (
            Method::PATCH,
            DOC,
            "application/json-patch+json",
            format!(r#"[{{"op":"add","path":"/a","value":{inner}}}]"#),
        ),
        (
            Method::POST,
            "/db/shop/batch",
            json,
            format!(
                r#"{{"commands":[{{"op":"put","collection":"people","id":"p2","document":{{"a":{inner}}}}}]}}"#
            ),
        ),
        (
            Method::POST,
            "/db/shop/query",
            json,
            format!(
                r#"{{"collection":"people","where":[{{"path":"a","op":"eq","value":{inner}}}]}}"#
            ),
        ),
        (
            Method::POST,
            "/db/shop/docs/people/get",
            json,
            format!(r#"{{"ids":{inner}}}"#),
        ),
    ]
}

#[tokio::test]
async fn oversized_bodies_are_413_on_every_route() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_body_bytes: 4096,
            ..Limits::default()
        }),
        ..Config::default()
    });
    server.create_db("shop").await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let large = format!("[\"{}\"]", "x".repeat(5000));
    for (method, uri, content_type, body) in body_routes(&large) {
        let resp = server
            .send(method, uri, &[("content-type", content_type)], body)
            .await;
        resp.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    }
    assert_eq!(server.get(DOC).await.json(), serde_json::json!({"v": 1}));
}

#[tokio::test]
async fn deeply_nested_bodies_are_400_on_every_route() {
    let server = Server::new();
    server.create_db("shop").await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    // Far past serde_json's own recursion limit, within the body limit.
    for depth in [129, 10_000, 1_000_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for (method, uri, content_type, body) in body_routes(&deep) {
            let resp = server
                .send(method.clone(), uri, &[("content-type", content_type)], body)
                .await;
            resp.problem(StatusCode::BAD_REQUEST, "bad-request");
        }
        // Unclosed, too.
        let open = "[".repeat(depth);
        for (method, uri, content_type, body) in body_routes(&open) {
            let resp = server
                .send(method, uri, &[("content-type", content_type)], body)
                .await;
            resp.problem(StatusCode::BAD_REQUEST, "bad-request");
        }
    }
    // The deepest document allowed is stored, read and patched (serde_json
    // alone stops one level short of it: that was a 500 on PATCH).
    let deepest = format!(
        r#"{{"a":{}1{}}}"#,
        "[".repeat(folio_core::validate::MAX_NESTING - 1),
        "]".repeat(folio_core::validate::MAX_NESTING - 1)
    );
    let resp = server.put_json(DOC, &[], &deepest).await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(server.get(DOC).await.text(), deepest);
    let resp = server
        .patch(DOC, "application/merge-patch+json", &[], r#"{"b":2}"#)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    // One level more, inside the innermost array, is too deep.
    let innermost = format!("/a{}", "/0".repeat(folio_core::validate::MAX_NESTING - 2));
    let resp = server
        .patch(
            DOC,
            "application/json-patch+json",
            &[],
            &format!(r#"[{{"op":"add","path":"{innermost}/-","value":[]}}]"#),
        )
        .await;
    resp.problem(StatusCode::BAD_REQUEST, "bad-request");

    // Brackets inside strings are text, not nesting.
    let text = format!(r#"{{"a":"{}"}}"#, "[{".repeat(10_000));
    let resp = server.put_json(DOC, &[], &text).await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(server.get(DOC).await.text(), text);
}

#[tokio::test]
async fn a_json_patch_cannot_multiply_a_document_past_the_limits() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_body_bytes: 64 << 10,
            ..Limits::default()
        }),
        ..Config::default()
    });
    server.create_db("shop").await;
    let original = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    server.put_doc("shop", "people", "p1", &original).await;
    // Each copy of the root doubles the document: 2^40 kB without a bound.
    let copies: Vec<String> = (0..40)
        .map(|n| format!(r#"{{"op":"copy","from":"","path":"/c{n}"}}"#))
        .collect();
    let patch = format!("[{}]", copies.join(","));
    let resp = server
        .patch(DOC, "application/json-patch+json", &[], &patch)
        .await;
    resp.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    // Moving a value deeper, again and again, is bounded in depth.
    let moves: Vec<String> = (0..200)
        .map(|n| {
            format!(
                r#"{{"op":"add","path":"{}/d","value":{{}}}}"#,
                "/d".repeat(n)
            )
        })
        .collect();
    let patch = format!("[{}]", moves.join(","));
    let resp = server
        .patch(DOC, "application/json-patch+json", &[], &patch)
        .await;
    resp.problem(StatusCode::BAD_REQUEST, "bad-request");
    // A few copies within the limits apply.
    let patch =
        r#"[{"op":"copy","from":"/pad","path":"/pad2"},{"op":"copy","from":"","path":"/all"}]"#;
    let resp = server
        .patch(DOC, "application/json-patch+json", &[], patch)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    let stored = server.get(DOC).await.json();
    assert_eq!(stored["all"]["pad2"], stored["pad"]);
}

// ---- ids in the URL ----------------------------------------------------------------

#[tokio::test]
async fn ids_in_the_url_are_taken_literally() {
    let server = Server::new();
    server.create_db("shop").await;
    let before = file_names(&server.data);
    let ids = [
        (
            "x'%3B%20DROP%20TABLE%20documents%3B%20--",
            "x'; DROP TABLE documents; --",
        ),
        ("'%20OR%20'1'%3D'1", "' OR '1'='1"),
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("%2e%2e", ".."),
        ("%25", "%"),
        ("_", "_"),
        ("a%5Cb", "a\\b"),
        ("%C3%BC%E2%9C%93", "ü✓"),
    ];
    for (encoded, id) in ids {
        let uri = format!("/db/shop/docs/people/{encoded}");
        let body = serde_json::json!({ "id": id }).to_string();
        let resp = server.put_json(&uri, &[], &body).await;
        assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
        assert_eq!(resp.json()["id"], id, "{resp:?}");
        assert_eq!(server.get(&uri).await.json()["id"], id);
    }
    let listed = server.get("/db/shop/docs/people").await.json();
    let mut listed: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("an id"))
        .collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(|(_, id)| *id).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    // Control characters are no id; nothing new on disk but the database.
    for bad in ["a%00b", "a%0Ab", "a%7F"] {
        let resp = server
            .put_json(&format!("/db/shop/docs/people/{bad}"), &[], "{}")
            .await;
        resp.problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    assert_eq!(file_names(&server.data), before);
}

/// The names of the files in `dir` (the database, its log and lock).
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the data directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.ends_with("-wal") && !name.ends_with("-shm"))
        .collect();
    names.sort();
    names
}

// ---- problem bodies ------------------------------------------------------------------

/// What must never reach a client unless the client sent it: SQL, file
/// paths, Rust internals, stack traces.
const INTERNALS: &[&str] = &[
    "select ",
    "insert into",
    "update documents",
    "delete from",
    "create table",
    "create index",
    "sqlite",
    "sqlstate",
    "syntax error",
    "/tmp",
    "/root",
    "/home",
    ".sqlite",
    ".lock",
    ".rs:",
    "src/",
    "panicked",
    "backtrace",
    "rust_begin_unwind",
    "os error",
    "errno",
    "folio_",
    "engineerror",
    "thread '",
];

/// Builds hostile requests from random parts.
fn hostile_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        ".{0,24}",
        "[\\PC]{0,12}",
        Just("..".to_owned()),
        Just("'; DROP TABLE documents; --".to_owned()),
        Just("%00".to_owned()),
        Just("%2F..%2F".to_owned()),
        Just("{{[[".to_owned()),
        Just("\\u0000".to_owned()),
        "[0-9]{1,20}",
    ]
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct BadRequest {
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn bad_request() -> impl Strategy<Value = BadRequest> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
    ];
    let route = prop_oneof![
        Just("/db/{db}"),
        Just("/db/{db}/docs/{c}/{id}"),
        Just("/db/{db}/docs/{c}"),
        Just("/db/{db}/docs/{c}/get"),
        Just("/db/{db}/batch"),
        Just("/db/{db}/query"),
        Just("/{db}/{c}"),
    ];
    let content_type = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/merge-patch+json".to_owned()),
        Just("application/json-patch+json".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,20}",
    ];
    let precondition = prop_oneof![
        Just(None),
        "[ -~]{0,30}".prop_map(|value| Some(("if-match".to_owned(), value))),
        "[ -~]{0,30}".prop_map(|value| Some(("if-none-match".to_owned(), value))),
    ];
    let body = prop_oneof![
        hostile_part(),
        Just(r#"{"commands":[{"op":"put","collection":"c","id":"x","document":[]}]}"#.to_owned()),
        hostile_part().prop_map(|part| format!(r#"{{"collection":"{part}","where":[]}}"#)),
        hostile_part().prop_map(|part| format!(
            r#"{{"collection":"people","where":[{{"path":"{part}","op":"eq","value":1}}]}}"#
        )),
        hostile_part().prop_map(|part| format!(r#"[{{"op":"copy","from":"{part}","path":"/x"}}]"#)),
        hostile_part().prop_map(|part| format!(r#"{{"ids":["{part}"]}}"#)),
    ];
    (
        method,
        route,
        prop_oneof![hostile_part(), Just("shop".to_owned())],
        prop_oneof![hostile_part(), Just("people".to_owned())],
        prop_oneof![hostile_part(), Just("p1".to_owned())],
        content_type,
        precondition,
        body,
    )
        .prop_map(
            |(method, route, db, collection, id, content_type, precondition, body)| {
                let uri = route
                    .replace("{db}", &percent_encode(&db))
                    .replace("{c}", &percent_encode(&collection))
                    .replace("{id}", &percent_encode(&id));
                let mut headers = vec![("content-type".to_owned(), content_type)];
                headers.extend(precondition);
                BadRequest {
                    method,
                    uri,
                    headers,
                    body,
                }
            },
        )
}

/// Whatever is wrong with a request, the answer is a problem body of the
/// documented shape, never a 500, and it holds no internals the request did
/// not itself contain. One server answers every case (as one would).
#[test]
fn problem_bodies_leak_nothing() {
    let server = Server::new();
    let data = server.root.path().to_string_lossy().to_lowercase();
    problems_leak_nothing(&server.app, &[&data]);
}

/// The same on the PostgreSQL engine, whose errors carry SQL states, SQL
/// text and the server's address, none of which may reach a client.
#[test]
fn problem_bodies_leak_nothing_on_postgres() {
    let url = folio_postgres::testing::TestCluster::shared()
        .url()
        .to_owned();
    let app = folio_server::router(AppState::new(
        Databases::new(Backend::Postgres {
            url: url.clone(),
            options: folio_postgres::PgOptions::default(),
        }),
        None,
        Limits::default(),
        Vec::<String>::new(),
    ));
    let lower = url.to_lowercase();
    let host = lower
        .split_once('@')
        .map_or(lower.as_str(), |(_, host)| host)
        .to_owned();
    problems_leak_nothing(&app, &[&lower, &host, "postgres://"]);
}

/// Runs the random bad requests of [`bad_request`] against `app` (database
/// `shop` with `people/p1` in it), checking every answer; `private` are
/// words of this server's set-up that no answer may carry either.
fn problems_leak_nothing(app: &axum::Router, private: &[&str]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let created = crate::common::send(app, Method::PUT, "/db/shop", &[], Body::empty()).await;
        assert!(created.status.is_success(), "{created:?}");
        let put = crate::common::send(
            app,
            Method::PUT,
            "/db/shop/docs/people/p1",
            &[("content-type", "application/json")],
            r#"{"v":1}"#,
        )
        .await;
        assert!(put.status.is_success(), "{put:?}");
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&bad_request(), |request| {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .filter(|(_, value)| axum::http::HeaderValue::from_str(value).is_ok())
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let resp = runtime.block_on(crate::common::send(
            app,
            request.method.clone(),
            &request.uri,
            &headers,
            Body::from(request.body.clone()),
        ));
        prop_assert!(!resp.status.is_server_error(), "{:?}", resp);
        if resp.status.is_client_error() && request.method != Method::HEAD {
            prop_assert_eq!(
                resp.header("content-type"),
                Some("application/problem+json")
            );
            let problem = resp.json();
            prop_assert_eq!(
                problem["status"].as_u64(),
                Some(u64::from(resp.status.as_u16()))
            );
            prop_assert!(
                problem["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(crate::common::PROBLEMS))
            );
            let sent =
                format!("{} {:?} {}", request.uri, request.headers, request.body).to_lowercase();
            let body = resp.text().to_lowercase();
            for word in INTERNALS.iter().chain(private) {
                prop_assert!(
                    !body.contains(word) || sent.contains(word),
                    "the problem body leaks {:?}: {:?}",
                    word,
                    resp
                );
            }
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
