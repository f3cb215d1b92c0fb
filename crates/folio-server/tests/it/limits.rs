//! What a server keeps within bounds: open databases (idle ones closed,
//! least recently used first, and reopened on use with their data), how
//! many databases exist, and open connections (one more is refused with a
//! `503` that says why).

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use folio_server::{AppState, Backend, DatabaseLimits, Databases, Limits, router};
use futures_util::StreamExt;
use tower::ServiceExt;

use crate::common::{Resp, Wire, options, send};

/// A bound on waiting that a healthy run never reaches (not a timing
/// assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// A server over `data` (no keys) with these database limits.
fn limited(data: &Path, limits: DatabaseLimits) -> (AppState, axum::Router) {
    let state = AppState::new(
        Databases::with_limits(
            Backend::Embedded {
                dir: data.to_owned(),
                options: options(),
            },
            limits,
        ),
        None,
        Limits::default(),
        Vec::<String>::new(),
    );
    let app = router(state.clone());
    (state, app)
}

async fn request(app: &axum::Router, method: Method, uri: &str, body: &str) -> Resp {
    send(
        app,
        method,
        uri,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// Creates `db` and writes `notes/n1` = `{"db": db}` in it.
async fn create_with_a_note(app: &axum::Router, db: &str) {
    let created = request(app, Method::PUT, &format!("/db/{db}"), "").await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let put = request(
        app,
        Method::PUT,
        &format!("/db/{db}/docs/notes/n1"),
        &format!(r#"{{"db":"{db}"}}"#),
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
}

/// Whether the engine of the embedded database `db` is open: it holds the
/// lock on `db.sqlite.lock` until it is closed, threads and files and all.
fn is_open(data: &Path, db: &str) -> bool {
    let lock = std::fs::File::open(data.join(format!("{db}.sqlite.lock"))).expect("a lock file");
    match lock.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(error)) => panic!("locking {db}: {error}"),
    }
}

/// The value of the metric `name` in `/metrics`.
async fn metric(app: &axum::Router, name: &str) -> u64 {
    let text = request(app, Method::GET, "/metrics", "").await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// Opens the changes feed of `db` as an event stream, and holds it.
async fn hold_feed(app: &axum::Router, db: &str) -> Body {
    let open = Request::builder()
        .uri(format!("/db/{db}/changes"))
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(open).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_databases_beyond_the_open_limit_are_closed_and_reopen_with_their_data() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (state, app) = limited(
        &data,
        DatabaseLimits {
            max_open: 2,
            ..DatabaseLimits::default()
        },
    );
    for db in ["a", "b", "c", "d", "e"] {
        create_with_a_note(&app, db).await;
        assert!(state.databases().open_count().await <= 2);
    }
    // The two used last are open; the others were closed.
    assert_eq!(state.databases().open_count().await, 2);
    assert_eq!(metric(&app, "folio_databases_open").await, 2);
    assert_eq!(metric(&app, "folio_databases_closed_total").await, 3);
    for (db, open) in [
        ("a", false),
        ("b", false),
        ("c", false),
        ("d", true),
        ("e", true),
    ] {
        assert_eq!(is_open(&data, db), open, "{db}");
    }
    // A closed database opens again on use, with its data, closing the
    // least recently used one ("d": "e" was used after it).
    let read = request(&app, Method::GET, "/db/a/docs/notes/n1", "").await;
    assert_eq!(read.json(), serde_json::json!({ "db": "a" }), "{read:?}");
    assert!(is_open(&data, "a") && is_open(&data, "e") && !is_open(&data, "d"));
    assert_eq!(state.databases().open_count().await, 2);
    // And takes writes.
    let put = request(&app, Method::PUT, "/db/b/docs/notes/n2", "{}").await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    assert!(is_open(&data, "a") && is_open(&data, "b") && !is_open(&data, "e"));
    // Every database is still listed.
    let listed = request(&app, Method::GET, "/db", "").await.json();
    assert_eq!(
        listed,
        serde_json::json!({ "databases": ["a", "b", "c", "d", "e"] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_use_is_not_closed_and_when_all_are_in_use_opening_another_is_503() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (state, app) = limited(
        &data,
        DatabaseLimits {
            max_open: 2,
            ..DatabaseLimits::default()
        },
    );
    create_with_a_note(&app, "a").await;
    // "a" is used least recently from now on, but its feed holds it.
    let feed_a = hold_feed(&app, "a").await;
    create_with_a_note(&app, "b").await;
    create_with_a_note(&app, "c").await;
    assert!(is_open(&data, "a"), "in use: not closed");
    assert!(!is_open(&data, "b"), "idle: closed instead");
    assert!(is_open(&data, "c"));

    // Both open databases in use: no other can open now.
    let feed_c = hold_feed(&app, "c").await;
    let refused = request(&app, Method::GET, "/db/b/docs/notes/n1", "").await;
    let problem = refused.problem(StatusCode::SERVICE_UNAVAILABLE, "open-database-limit");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("--max-open-databases")),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    let refused = request(&app, Method::PUT, "/db/new", "").await;
    refused.problem(StatusCode::SERVICE_UNAVAILABLE, "open-database-limit");
    assert!(!data.join("new.sqlite").exists(), "nothing was created");

    // Once a feed ends, its database is idle again.
    drop(feed_c);
    let read = request(&app, Method::GET, "/db/b/docs/notes/n1", "").await;
    assert_eq!(read.json(), serde_json::json!({ "db": "b" }), "{read:?}");
    assert!(is_open(&data, "a") && is_open(&data, "b") && !is_open(&data, "c"));
    assert_eq!(state.databases().open_count().await, 2);

    // The feed held all along still reads what is written.
    let put = request(&app, Method::PUT, "/db/a/docs/notes/n2", "{}").await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    let mut events = feed_a.into_data_stream();
    let mut seen = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !seen.contains("\"n2\"") {
            let chunk = events.next().await.expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
        }
    })
    .await
    .expect("the event of n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_more_databases_than_allowed_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (_state, app) = limited(
        &data,
        DatabaseLimits {
            max_databases: 2,
            ..DatabaseLimits::default()
        },
    );
    create_with_a_note(&app, "a").await;
    create_with_a_note(&app, "b").await;
    let refused = request(&app, Method::PUT, "/db/c", "").await;
    let problem = refused.problem(StatusCode::FORBIDDEN, "database-limit");
    assert!(
        problem["detail"].as_str().is_some_and(
            |detail| detail.contains("2 databases") && detail.contains("--max-databases")
        ),
        "{refused:?}"
    );
    assert!(!data.join("c.sqlite").exists());
    // A restore makes a database too: refused alike, before its upload.
    let backup = request(&app, Method::GET, "/db/a/backup", "").await;
    assert_eq!(backup.status, StatusCode::OK, "{backup:?}");
    let restored = send(
        &app,
        Method::POST,
        "/db/c/restore",
        &[("content-type", "application/vnd.sqlite3")],
        backup.body.clone(),
    )
    .await;
    restored.problem(StatusCode::FORBIDDEN, "database-limit");
    assert!(!data.join("c.sqlite").exists());
    // Those that exist are still served, and "creating" them again is fine.
    let again = request(&app, Method::PUT, "/db/a", "").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let listed = request(&app, Method::GET, "/db", "").await.json();
    assert_eq!(listed, serde_json::json!({ "databases": ["a", "b"] }));
    // Concurrent creations cannot both take the last place.
    let root = tempfile::tempdir().expect("tempdir");
    let (_state, app) = limited(
        &root.path().join("data"),
        DatabaseLimits {
            max_databases: 3,
            ..DatabaseLimits::default()
        },
    );
    let uris: Vec<String> = (0..8).map(|n| format!("/db/race{n}")).collect();
    let creations =
        futures_util::future::join_all(uris.iter().map(|uri| request(&app, Method::PUT, uri, "")))
            .await;
    let created = creations
        .iter()
        .filter(|resp| resp.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{creations:?}");
}

#[test]
fn postgres_databases_beyond_the_open_limit_are_closed_and_reopen_with_their_data() {
    let url = folio_postgres::testing::TestCluster::shared()
        .url()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let state = AppState::new(
            Databases::with_limits(
                Backend::Postgres {
                    url,
                    options: folio_postgres::PgOptions::default(),
                },
                DatabaseLimits {
                    max_open: 1,
                    ..DatabaseLimits::default()
                },
            ),
            None,
            Limits::default(),
            Vec::<String>::new(),
        );
        let app = router(state.clone());
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|db| format!("limits{db}{}", std::process::id()))
            .collect();
        for db in &names {
            create_with_a_note(&app, db).await;
            assert_eq!(state.databases().open_count().await, 1);
        }
        assert_eq!(state.databases().closed_count(), 2);
        for db in &names {
            let read = request(&app, Method::GET, &format!("/db/{db}/docs/notes/n1"), "").await;
            assert_eq!(read.json(), serde_json::json!({ "db": db }), "{read:?}");
            assert_eq!(state.databases().open_count().await, 1);
        }
    });
}

// ---- connections -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_is_refused_with_503_and_closed() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = AppState::new(
        Databases::new(Backend::Embedded {
            dir: root.path().join("data"),
            options: options(),
        }),
        None,
        Limits {
            max_connections: 3,
            ..Limits::default()
        },
        Vec::<String>::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(folio_server::serve(listener, state));

    // Three connections, each served (and then idle, kept alive).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut connection = Wire::connect(address).await;
        assert_eq!(connection.send("GET", "/healthz", "").await.status, 200);
        held.push(connection);
    }
    // A fourth is told why, and closed.
    let mut refused = Wire::connect(address).await;
    let answer = refused.send("GET", "/healthz", "").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    for header in [
        "content-type: application/problem+json",
        "retry-after: 1",
        "connection: close",
    ] {
        assert!(answer.has(header), "{header} in {answer:?}");
    }
    let problem: serde_json::Value = serde_json::from_slice(&answer.body).expect("a problem");
    assert_eq!(
        problem["type"], "https://folio.dev/problems/connection-limit",
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("limit of 3 open connections")),
        "{problem}"
    );
    assert!(refused.rest().await.is_empty(), "nothing after the refusal");

    // The connections held are still served.
    for connection in &mut held {
        assert_eq!(connection.send("GET", "/healthz", "").await.status, 200);
    }
    // Once one is closed, a new connection is served again (the server
    // learns of the close when it reads the end of the stream: a bounded
    // number of tries, not a timing).
    drop(held.pop());
    let mut served = false;
    for _ in 0..500 {
        let status = Wire::connect(address)
            .await
            .send("GET", "/healthz", "")
            .await
            .status;
        if status == 200 {
            served = true;
            break;
        }
        assert_eq!(status, 503);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "a freed place is taken again");
}
