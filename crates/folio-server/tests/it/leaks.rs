//! No internals leak: problem bodies carry no SQL, no file paths, no Rust
//! source paths or backtraces, whatever failed — storage failures included.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio_server::Limits;
use serde_json::json;

use crate::common::{Config, Resp, Server, app_over, send};

/// Words and fragments that must never reach a client.
const INTERNALS: &[&str] = &[
    "select ",
    "insert ",
    "update ",
    "delete from",
    "create table",
    "sqlite",
    "rusqlite",
    "sqlstate",
    "/tmp",
    ".sqlite",
    ".lock",
    "/data",
    ".rs:",
    "src/",
    "panicked",
    "backtrace",
    "stack backtrace",
    "rust_begin_unwind",
    "os error",
    "errno",
    "folio_sqlite",
    "folio_core",
    "engineerror",
];

#[track_caller]
fn assert_no_internals(resp: &Resp, extra: &[&str]) {
    let body = resp.text().to_lowercase();
    for word in INTERNALS.iter().chain(extra) {
        assert!(
            !body.contains(&word.to_lowercase()),
            "the problem body leaks {word:?}: {resp:?}"
        );
    }
    for (name, value) in &resp.headers {
        let value = value.to_str().unwrap_or_default().to_lowercase();
        for word in extra {
            assert!(
                !value.contains(&word.to_lowercase()),
                "header {name} leaks {word:?}: {resp:?}"
            );
        }
    }
}

#[tokio::test]
async fn client_errors_leak_nothing() {
    let server = Server::with(Config {
        limits: Some(Limits {
            max_body_bytes: 4096,
            ..Limits::default()
        }),
        require_precondition: vec!["guarded".to_owned()],
        ..Config::default()
    });
    server.create_db("shop").await;
    let first = server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    server.put_doc("shop", "people", "p1", r#"{"v":2}"#).await;
    server.put_doc("shop", "guarded", "g1", r#"{"v":1}"#).await;
    let stale = format!("\"{}\"", first["change_vector"].as_str().expect("cv"));
    let dir = server.root.path().to_string_lossy().into_owned();
    let extra = [dir.as_str()];

    let responses = vec![
        server.put_json("/db/shop/docs/people/p1", &[], r#"{"v": "#).await,
        server
            .put_json("/db/shop/docs/people/p1", &[], r#"{"v": 1, "v"#)
            .await,
        server.put_json("/db/shop/docs/people/p1", &[], "[1]").await,
        server
            .get("/db/shop/docs/people/x'%3B%20DROP%20TABLE%20documents%3B%20--")
            .await,
        server.get("/db/shop/docs/peo'ple/p1").await,
        server.get("/db/..%2F..%2Fetc%2Fpasswd/docs/people/p1").await,
        server
            .post_json(
                "/db/shop/query",
                &[],
                r#"{"collection":"people","where":[{"path":"a') OR 1=1 --","op":"eq","value":1}]}"#,
            )
            .await,
        server
            .post_json(
                "/db/shop/query",
                &[],
                r#"{"collection":"people","order_by":[{"path":"x;y"}]}"#,
            )
            .await,
        server
            .post_json("/db/shop/batch", &[], r#"{"commands":[{"op":"drop"}]}"#)
            .await,
        server
            .post_json(
                "/db/shop/batch",
                &[],
                &json!({"commands":[{"op":"put","collection":"people","id":"p1","document":{},"expect":{"change_vector":"A:1-zzz"}}]}).to_string(),
            )
            .await,
        server
            .put_json("/db/shop/docs/people/p1", &[("if-match", &stale)], "{}")
            .await,
        server
            .put_json("/db/shop/docs/people/p1", &[("if-match", "bogus")], "{}")
            .await,
        server
            .put_json("/db/shop/docs/guarded/g1", &[], r#"{"v":2}"#)
            .await,
        server
            .put_json(
                "/db/shop/docs/people/p1",
                &[],
                &format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000)),
            )
            .await,
        server
            .send(Method::PUT, "/db/shop/docs/people/p1", &[], "{}")
            .await,
        server
            .patch(
                "/db/shop/docs/people/p1",
                "application/json-patch+json",
                &[],
                r#"[{"op":"test","path":"/v","value":3}]"#,
            )
            .await,
        server.get("/db/nowhere/docs/people/p1").await,
        server.get("/db/shop/docs/people/nobody").await,
        server.get("/nothing/here").await,
        server.send(Method::DELETE, "/db/shop/batch", &[], Body::empty()).await,
        server.get("/db/shop/docs/people?limit=banana").await,
    ];
    for resp in &responses {
        assert!(resp.status.is_client_error(), "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{resp:?}"
        );
        assert_no_internals(resp, &extra);
    }
}

/// The data directory is a regular file: the engine cannot create anything.
#[tokio::test]
async fn a_data_directory_that_is_a_file_fails_without_leaking() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::write(&data, b"not a directory").expect("a file");
    let app = app_over(&data, Config::default());
    let dir = root.path().to_string_lossy().into_owned();
    let extra = [dir.as_str()];

    let create = send(&app, Method::PUT, "/db/shop", &[], Body::empty()).await;
    assert!(create.status.is_server_error(), "{create:?}");
    let problem = create.problem(create.status, kind_of(create.status));
    assert_no_internals(&create, &extra);
    assert!(problem.get("conflicts").is_none());

    let list = send(&app, Method::GET, "/db", &[], Body::empty()).await;
    assert!(list.status.is_server_error(), "{list:?}");
    list.problem(list.status, kind_of(list.status));
    assert_no_internals(&list, &extra);
}

/// A database file that is not a database: opening it fails.
#[tokio::test]
async fn a_corrupt_database_file_fails_without_leaking() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("the data directory");
    std::fs::write(
        data.join("shop.sqlite"),
        "this is not a database file, SELECT * FROM nothing; ".repeat(200),
    )
    .expect("a file");
    let app = app_over(&data, Config::default());
    let dir = root.path().to_string_lossy().into_owned();
    let extra = [dir.as_str()];

    let requests = [
        (Method::GET, "/db/shop/docs/people/p1", ""),
        (Method::PUT, "/db/shop/docs/people/p1", r#"{"v":1}"#),
        (Method::POST, "/db/shop/query", r#"{"collection":"people"}"#),
        (
            Method::POST,
            "/db/shop/batch",
            r#"{"commands":[{"op":"put","collection":"people","id":"p1","document":{}}]}"#,
        ),
        (Method::PUT, "/db/shop", ""),
    ];
    for (method, uri, body) in requests {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        let resp = send(&app, method, uri, headers, body.to_owned()).await;
        assert!(resp.status.is_server_error(), "{resp:?}");
        // A file that is not a database is damage, said as such.
        resp.problem(StatusCode::INTERNAL_SERVER_ERROR, "damaged-database");
        assert_no_internals(&resp, &extra);
    }
}

fn kind_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "storage-failure",
    }
}
