//! What is judged before a route: the host a request names (DNS
//! rebinding: without keys only loopback names are served) and the body
//! size it announces (refused before the body is read, without a
//! `100 Continue`). In-process, and over a real socket.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Version};
use folio_server::{AppState, Limits, router};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::common::{Config, Server, plain_state};

/// A bound on waiting for an answer that a healthy run never reaches (not
/// a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

const KEYS: &str =
    r#"{ "keys": [ { "key": "admin-key-0123456789", "roles": { "*": "admin" } } ] }"#;

// ---- the host -------------------------------------------------------------------

#[tokio::test]
async fn without_keys_loopback_names_and_addresses_are_served() {
    let server = Server::new();
    for host in [
        "localhost",
        "localhost:7070",
        "LocalHost.",
        "studio.localhost:7070",
        "127.0.0.1",
        "127.0.0.1:7070",
        "[::1]",
        "[::1]:7070",
        // Any address: an address cannot be re-pointed.
        "192.168.1.20:7070",
        "[fe80::1]:80",
    ] {
        let resp = server
            .send(Method::GET, "/db", &[("host", host)], Body::empty())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "Host {host}: {resp:?}");
    }
}

#[tokio::test]
async fn without_keys_other_names_are_misdirected_and_change_nothing() {
    let server = Server::new();
    server.create_db("shop").await;
    for host in [
        "evil.example",
        "evil.example:7070",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "folio",
    ] {
        for (method, uri, body) in [
            (Method::GET, "/db", ""),
            (Method::GET, "/db/shop/docs/notes/n1", ""),
            (Method::PUT, "/db/shop/docs/notes/n1", r#"{"stolen":true}"#),
            (Method::PUT, "/db/rebound", ""),
        ] {
            let resp = server
                .send(
                    method,
                    uri,
                    &[
                        ("host", host),
                        ("content-type", "application/json"),
                        // A page may set these; they never count.
                        ("x-forwarded-host", "localhost"),
                        ("forwarded", "host=localhost"),
                    ],
                    body,
                )
                .await;
            let problem = resp.problem(StatusCode::MISDIRECTED_REQUEST, "misdirected-request");
            let detail = problem["detail"].as_str().expect("a detail");
            assert!(
                detail.contains("--allow-host") && detail.contains("--keys"),
                "the problem says what to do: {detail}"
            );
        }
    }
    server
        .get("/db/shop/docs/notes/n1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .get("/db/rebound/docs/notes/n1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn an_absolute_target_names_the_host_and_the_host_header_does_not_count() {
    let server = Server::new();
    let resp = server
        .send(
            Method::GET,
            "http://evil.example/db",
            &[("host", "localhost")],
            Body::empty(),
        )
        .await;
    resp.problem(StatusCode::MISDIRECTED_REQUEST, "misdirected-request");
    let resp = server
        .send(
            Method::GET,
            "http://localhost:7070/db",
            &[("host", "evil.example")],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

#[tokio::test]
async fn names_the_operator_allows_are_served_too() {
    let server = Server::with(Config {
        allowed_hosts: vec!["Folio.Internal".into(), "db.example.".into()],
        ..Config::default()
    });
    for host in [
        "folio.internal",
        "FOLIO.INTERNAL:7070",
        "folio.internal.",
        "db.example",
    ] {
        let resp = server
            .send(Method::GET, "/db", &[("host", host)], Body::empty())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "Host {host}: {resp:?}");
    }
    for host in ["other.internal", "sub.folio.internal"] {
        server
            .send(Method::GET, "/db", &[("host", host)], Body::empty())
            .await
            .problem(StatusCode::MISDIRECTED_REQUEST, "misdirected-request");
    }
}

#[tokio::test]
async fn with_keys_any_name_is_served() {
    let server = Server::with(Config {
        keys: Some(KEYS),
        ..Config::default()
    });
    let resp = server
        .send(
            Method::GET,
            "/db",
            &[
                ("host", "folio.example.com"),
                ("authorization", "Bearer admin-key-0123456789"),
            ],
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    // Still no answer without a key.
    server
        .send(
            Method::GET,
            "/db",
            &[("host", "folio.example.com")],
            Body::empty(),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Sends `request` to `app` in-process; its status.
async fn status_of(app: &axum::Router, request: Request<Body>) -> StatusCode {
    app.clone()
        .oneshot(request)
        .await
        .expect("infallible")
        .status()
}

#[tokio::test]
async fn an_http_1_1_request_names_exactly_one_valid_host() {
    let root = tempfile::tempdir().expect("tempdir");
    for keys in [None, Some(KEYS)] {
        let state = AppState::new(
            folio_server::Databases::new(folio_server::Backend::Embedded {
                dir: root.path().join("data"),
                options: crate::common::options(),
            }),
            keys.map(|text| folio_server::auth::Keys::parse(text).expect("keys")),
            Limits::default(),
            Vec::<String>::new(),
        );
        let app = router(state);
        let missing = Request::get("/healthz")
            .body(Body::empty())
            .expect("a request");
        assert_eq!(status_of(&app, missing).await, StatusCode::BAD_REQUEST);
        let twice = Request::get("/healthz")
            .header("host", "localhost")
            .header("host", "127.0.0.1")
            .body(Body::empty())
            .expect("a request");
        assert_eq!(status_of(&app, twice).await, StatusCode::BAD_REQUEST);
        // HTTP/1.0 has no Host to check, and no browser sends it so.
        let old = Request::get("/healthz")
            .version(Version::HTTP_10)
            .body(Body::empty())
            .expect("a request");
        assert_eq!(status_of(&app, old).await, StatusCode::OK);
    }
    let server = Server::new();
    for host in ["localhost:70a", "[::1", "[evil.example]", ":7070", ""] {
        server
            .send(Method::GET, "/db", &[("host", host)], Body::empty())
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
}

// ---- the announced body size -----------------------------------------------------

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_it_is_read() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        }),
        ..Config::default()
    });
    server.create_db("shop").await;
    // A body that never arrives: only a refusal that does not read it
    // can answer.
    for (method, uri) in [
        (Method::PUT, "/db/shop/docs/notes/n1"),
        (Method::POST, "/db/shop/batch"),
        (Method::POST, "/db/shop/query"),
        (Method::PATCH, "/db/shop/docs/notes/n1"),
    ] {
        let body = Body::from_stream(futures_util::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >());
        let resp = tokio::time::timeout(
            PATIENCE,
            server.send(
                method.clone(),
                uri,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "1000000000000"),
                ],
                body,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {uri} was answered without its body"));
        let problem = resp.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("1024")),
            "{resp:?}"
        );
        assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    }
    // At the limit, the body is read as before.
    let document = format!(r#"{{"text":"{}"}}"#, "x".repeat(1000));
    let resp = server
        .put_json("/db/shop/docs/notes/n1", &[], &document)
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
}

// ---- over a socket ---------------------------------------------------------------

/// `folio_server::serve` on a loopback port over `state`.
async fn serve(state: AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(folio_server::serve(listener, state));
    address
}

/// Sends `head` on a new connection and reads the first answer's status
/// line and headers (nothing of a body).
async fn first_answer(address: SocketAddr, head: &str) -> (String, Vec<String>) {
    let stream = TcpStream::connect(address).await.expect("connected");
    let (read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.expect("sent");
    let mut reader = BufReader::new(read);
    tokio::time::timeout(PATIENCE, async {
        let mut status = String::new();
        reader.read_line(&mut status).await.expect("a status line");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("a header line");
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            headers.push(line.to_ascii_lowercase());
        }
        (status.trim_end().to_owned(), headers)
    })
    .await
    .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_socket_an_expected_body_over_the_limit_gets_413_and_no_100_continue() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = plain_state(&root.path().join("data"));
    state.databases().create("shop").await.expect("created");
    let address = serve(state).await;
    let (status, headers) = first_answer(
        address,
        "PUT /db/shop/docs/notes/n1 HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nExpect: 100-continue\r\n\
         Content-Length: 1000000000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{headers:?}");
    assert!(
        headers.iter().any(|h| h == "connection: close"),
        "{headers:?}"
    );
    // Without the expectation, the answer comes before the body is sent too.
    let (status, _) = first_answer(
        address,
        "PUT /db/shop/docs/notes/n1 HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 17000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // A body within the limit is still asked for and served.
    let stream = TcpStream::connect(address).await.expect("connected");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(
            b"PUT /db/shop/docs/notes/n1 HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nExpect: 100-continue\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("sent");
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .expect("an answer")
        .expect("a line");
    assert_eq!(line.trim_end(), "HTTP/1.1 100 Continue");
    write.write_all(b"{}").await.expect("sent");
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, reader.read_to_string(&mut rest))
        .await
        .expect("an answer")
        .expect("the rest");
    assert!(rest.contains("HTTP/1.1 201 Created"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_socket_only_loopback_hosts_are_served_without_keys() {
    let root = tempfile::tempdir().expect("tempdir");
    let address = serve(plain_state(&root.path().join("data"))).await;
    let port = address.port();
    for (host, expected) in [
        (format!("127.0.0.1:{port}"), "HTTP/1.1 200 OK"),
        (format!("localhost:{port}"), "HTTP/1.1 200 OK"),
        (
            format!("rebound.example:{port}"),
            "HTTP/1.1 421 Misdirected Request",
        ),
    ] {
        let (status, headers) = first_answer(
            address,
            &format!("GET /db HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, expected, "Host {host}: {headers:?}");
    }
    let (status, _) = first_answer(address, "GET /db HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "no Host");
}
