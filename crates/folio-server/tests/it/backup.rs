//! `GET /db/{db}/backup`, `POST /db/{db}/restore` and `GET /db/{db}/export`
//! over the protocol: a backup restores with every version and change
//! vector, on the embedded engine and on PostgreSQL; what a restore
//! refuses (and that it leaks no path); roles; an export's lines; a restore
//! body beyond the body limit and slower than the body deadline.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio_server::{AppState, Backend, Databases, Limits, router};

use crate::common::{Config, Server, quote, send};

const SQLITE: &str = "application/vnd.sqlite3";

/// A database `name` with documents in two collections, an update and a
/// delete; the change vector of people/p1.
async fn fill(server: &Server, name: &str) -> String {
    server.create_db(name).await;
    for n in 0..5 {
        server
            .put_doc(name, "people", &format!("p{n}"), &format!(r#"{{"n":{n}}}"#))
            .await;
        server
            .put_doc(
                name,
                "orders",
                &format!("o{n}"),
                &format!(r#"{{"total":{n}}}"#),
            )
            .await;
    }
    server
        .put_doc(name, "people", "p1", r#"{"n":1,"renamed":true}"#)
        .await;
    let deleted = server
        .delete(&format!("/db/{name}/docs/orders/o4"), &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server
        .change_vector(&format!("/db/{name}/docs/people/p1"))
        .await
}

async fn restore(server: &Server, name: &str, query: &str, backup: Vec<u8>) -> crate::common::Resp {
    server
        .send(
            Method::POST,
            &format!("/db/{name}/restore{query}"),
            &[("content-type", SQLITE)],
            backup,
        )
        .await
}

/// The files of the data directory whose names start with a dot: a
/// backup's or a restore's temporary files.
fn scratch_files(server: &Server) -> Vec<String> {
    std::fs::read_dir(&server.data)
        .map(|entries| {
            entries
                .map(|entry| {
                    entry
                        .expect("an entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .filter(|name| name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_with_every_version() {
    let server = Server::new();
    let held = fill(&server, "shop").await;
    let backup = server.get("/db/shop/backup").await;
    assert_eq!(backup.status, StatusCode::OK, "{backup:?}");
    assert_eq!(backup.header("content-type"), Some(SQLITE));
    assert_eq!(
        backup.header("content-length"),
        Some(backup.body.len().to_string().as_str())
    );
    assert!(backup.body.starts_with(b"SQLite format 3\0"));
    let database_id = backup
        .header("folio-database-id")
        .expect("an id")
        .to_owned();
    assert!(held.ends_with(&database_id), "{held} is of {database_id}");
    assert_eq!(backup.header("folio-last-etag"), Some("12"));
    assert!(
        scratch_files(&server).is_empty(),
        "{:?}",
        scratch_files(&server)
    );

    let restored = restore(&server, "copy", "", backup.body.clone()).await;
    let answer = restored.ok_json(StatusCode::CREATED);
    assert_eq!(answer["database"], "copy");
    assert_eq!(answer["database_id"], database_id.as_str());
    assert_eq!(answer["change_vectors"], "kept");
    assert_eq!(answer["documents"], 9);
    assert_eq!(answer["collections"], 2);
    assert_eq!(answer["tombstones"], 1);
    assert_eq!(answer["changes"], 12);
    assert_eq!(answer["last_etag"], 12);
    for path in ["people/p1", "people/p3", "orders/o0"] {
        let original = server.get(&format!("/db/shop/docs/{path}")).await;
        let copied = server.get(&format!("/db/copy/docs/{path}")).await;
        assert_eq!(copied.status, StatusCode::OK, "{copied:?}");
        assert_eq!(copied.body, original.body);
        for header in ["etag", "last-modified", "folio-revision", "folio-etag"] {
            assert_eq!(copied.header(header), original.header(header), "{header}");
        }
    }
    let gone = server.get("/db/copy/docs/orders/o4").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // A version a client held is current in the restored database; the
    // next write takes an etag after the backup's last.
    let written = server
        .put_json(
            "/db/copy/docs/people/p1",
            &[("if-match", &quote(&held))],
            r#"{"n":"new"}"#,
        )
        .await;
    assert_eq!(written.status, StatusCode::OK, "{written:?}");
    let etag = |written: &crate::common::Resp| {
        written
            .header("folio-etag")
            .and_then(|etag| etag.parse::<u64>().ok())
            .expect("an etag")
    };
    // Far beyond the backup's etags (the source may have issued the next).
    assert!(
        etag(&written) > 12 + folio_core::RESTORED_ETAG_GAP,
        "{written:?}"
    );
    assert_eq!(written.header("folio-revision"), Some("3"));
    // The source is untouched by writes to the copy.
    assert_eq!(held, server.change_vector("/db/shop/docs/people/p1").await);

    let renamed = restore(&server, "renamed", "?new_id=true", backup.body).await;
    let answer = renamed.ok_json(StatusCode::CREATED);
    assert_eq!(answer["change_vectors"], "new");
    assert_ne!(answer["database_id"], database_id.as_str());
    let stale = server
        .put_json(
            "/db/renamed/docs/people/p1",
            &[("if-match", &quote(&held))],
            r#"{"n":0}"#,
        )
        .await;
    stale.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    assert!(
        scratch_files(&server).is_empty(),
        "{:?}",
        scratch_files(&server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_what_it_cannot_use_and_leaks_no_path() {
    let server = Server::new();
    fill(&server, "shop").await;
    let backup = server.get("/db/shop/backup").await.body;

    for (body, detail) in [
        (Vec::new(), "empty"),
        (
            b"not a database at all, but long enough to be read".repeat(4),
            "not an SQLite",
        ),
        (backup[..backup.len() / 2].to_vec(), "damaged"),
    ] {
        let refused = restore(&server, "bad", "", body).await;
        let problem = refused.problem(StatusCode::BAD_REQUEST, "bad-request");
        let text = problem["detail"].as_str().expect("a detail");
        assert!(text.contains(detail), "{text}");
        assert!(
            !text.contains('/') && !text.contains(".restore-"),
            "a path leaks: {text}"
        );
    }
    assert_eq!(
        server.get("/db/bad/docs/people/p1").await.status,
        StatusCode::NOT_FOUND
    );

    let wrong_type = server
        .send(
            Method::POST,
            "/db/other/restore",
            &[("content-type", "application/json")],
            backup.clone(),
        )
        .await;
    wrong_type.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let unknown = restore(&server, "other", "?fresh=1", backup.clone()).await;
    unknown.problem(StatusCode::BAD_REQUEST, "bad-request");

    // A database that holds data is never replaced.
    server.put_doc("shop", "people", "p9", r#"{"n":9}"#).await;
    let taken = restore(&server, "shop", "", backup.clone()).await;
    taken.problem(StatusCode::CONFLICT, "database-exists");
    assert_eq!(
        server.get("/db/shop/docs/people/p9").await.status,
        StatusCode::OK
    );

    // An empty one in use (a changes feed open on it) is not replaced
    // either; once it is not in use, it is.
    server.create_db("empty").await;
    let feed = router_request(&server, "/db/empty/changes").await;
    let busy = restore(&server, "empty", "", backup.clone()).await;
    busy.problem(StatusCode::CONFLICT, "database-exists");
    drop(feed);
    let replaced = restore(&server, "empty", "", backup).await;
    replaced.ok_json(StatusCode::CREATED);
    assert_eq!(
        server.get("/db/empty/docs/people/p3").await.status,
        StatusCode::OK
    );
    assert!(
        scratch_files(&server).is_empty(),
        "{:?}",
        scratch_files(&server)
    );
}

/// Starts `GET uri` (an event stream) and returns the response without
/// reading its body: the stream holds the database's engine meanwhile.
async fn router_request(server: &Server, uri: &str) -> axum::response::Response {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a request");
    let response = server
        .app
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_restores_need_the_admin_role() {
    let server = Server::with(Config {
        keys: Some(
            r#"{ "keys": [
                { "key": "admin-key-0123456789", "roles": { "*": "admin" } },
                { "key": "reader-key-0123456789", "roles": { "*": "read" } }
            ] }"#,
        ),
        ..Config::default()
    });
    let admin = [("authorization", "Bearer admin-key-0123456789")];
    let reader = [("authorization", "Bearer reader-key-0123456789")];
    let created = server
        .send(Method::PUT, "/db/shop", &admin, Body::empty())
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let refused = server
        .send(Method::GET, "/db/shop/backup", &reader, Body::empty())
        .await;
    refused.problem(StatusCode::FORBIDDEN, "forbidden");
    let anonymous = server.get("/db/shop/backup").await;
    anonymous.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let backup = server
        .send(Method::GET, "/db/shop/backup", &admin, Body::empty())
        .await;
    assert_eq!(backup.status, StatusCode::OK);

    let mut as_reader = reader.to_vec();
    as_reader.push(("content-type", SQLITE));
    let refused = server
        .send(
            Method::POST,
            "/db/copy/restore",
            &as_reader,
            backup.body.clone(),
        )
        .await;
    refused.problem(StatusCode::FORBIDDEN, "forbidden");
    let mut as_admin = admin.to_vec();
    as_admin.push(("content-type", SQLITE));
    let restored = server
        .send(Method::POST, "/db/copy/restore", &as_admin, backup.body)
        .await;
    assert_eq!(restored.status, StatusCode::CREATED, "{restored:?}");

    let export = server
        .send(Method::GET, "/db/copy/export", &reader, Body::empty())
        .await;
    assert_eq!(export.status, StatusCode::OK, "{export:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_json_lines_of_entries() {
    let server = Server::new();
    fill(&server, "shop").await;
    let export = server.get("/db/shop/export").await;
    assert_eq!(export.status, StatusCode::OK, "{export:?}");
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(export.header("folio-last-etag"), Some("12"));
    let lines: Vec<serde_json::Value> = export
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let keys: Vec<String> = lines
        .iter()
        .map(|line| {
            format!(
                "{}/{}",
                line["collection"].as_str().unwrap(),
                line["id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            "orders/o0",
            "orders/o1",
            "orders/o2",
            "orders/o3",
            "people/p0",
            "people/p1",
            "people/p2",
            "people/p3",
            "people/p4"
        ]
    );
    let p1 = &lines[5];
    assert_eq!(p1["document"], serde_json::json!({"n": 1, "renamed": true}));
    assert_eq!(p1["revision"], 2);
    assert_eq!(p1["etag"], 11);
    assert_eq!(
        p1["change_vector"].as_str(),
        Some(
            server
                .change_vector("/db/shop/docs/people/p1")
                .await
                .as_str()
        )
    );
    assert!(p1["last_modified"].is_string());

    let people = server.get("/db/shop/export?collection=people").await;
    assert_eq!(people.text().lines().count(), 5);
    let bad = server.get("/db/shop/export?collection=no%20such").await;
    bad.problem(StatusCode::BAD_REQUEST, "bad-request");
    let missing = server.get("/db/nothing/export").await;
    missing.problem(StatusCode::NOT_FOUND, "not-found");
    let missing = server.get("/db/nothing/backup").await;
    missing.problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_body_may_exceed_the_body_limit_and_deadline() {
    // Limits far below a backup's size and the time its slow upload takes.
    let limits = Limits {
        max_body_bytes: 1024,
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = Server::with(Config {
        limits: Some(limits),
        ..Config::default()
    });
    fill(&server, "shop").await;
    let backup = server.get("/db/shop/backup").await.body;
    assert!(backup.len() > 4 * 1024);
    // Chunks a tenth of the deadline apart, for longer than the deadline.
    let chunks: Vec<Vec<u8>> = backup
        .chunks(backup.len() / 15 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    let body = Body::from_stream(futures_util::stream::unfold(
        chunks.into_iter(),
        |mut chunks| async move {
            let chunk = chunks.next()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((Ok::<_, std::io::Error>(chunk), chunks))
        },
    ));
    let restored = restore_body(&server, "slow", body).await;
    assert_eq!(restored.status, StatusCode::CREATED, "{restored:?}");
}

async fn restore_body(server: &Server, name: &str, body: Body) -> crate::common::Resp {
    server
        .send(
            Method::POST,
            &format!("/db/{name}/restore"),
            &[("content-type", SQLITE)],
            body,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restores_and_exports_on_postgres() {
    let url = folio_postgres::testing::TestCluster::shared()
        .url()
        .to_owned();
    let app = router(AppState::new(
        Databases::new(Backend::Postgres {
            url,
            options: folio_postgres::PgOptions::default(),
        }),
        None,
        Limits::default(),
        Vec::<String>::new(),
    ));
    let name = format!("bk{}", std::process::id());
    let copy = format!("{name}_copy");
    let created = send(
        &app,
        Method::PUT,
        &format!("/db/{name}"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    for n in 0..5 {
        let put = send(
            &app,
            Method::PUT,
            &format!("/db/{name}/docs/people/p{n}"),
            &[("content-type", "application/json")],
            format!(r#"{{"n":{n}}}"#),
        )
        .await;
        assert_eq!(put.status, StatusCode::CREATED);
    }
    let held = send(
        &app,
        Method::GET,
        &format!("/db/{name}/docs/people/p2"),
        &[],
        Body::empty(),
    )
    .await;
    let held = held.header("etag").expect("an ETag").to_owned();

    let backup = send(
        &app,
        Method::GET,
        &format!("/db/{name}/backup"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(backup.status, StatusCode::OK, "{backup:?}");
    assert_eq!(backup.header("folio-last-etag"), Some("5"));
    let restored = send(
        &app,
        Method::POST,
        &format!("/db/{copy}/restore"),
        &[("content-type", SQLITE)],
        backup.body.clone(),
    )
    .await;
    let answer = restored.ok_json(StatusCode::CREATED);
    assert_eq!(answer["documents"], 5);
    let again = send(
        &app,
        Method::POST,
        &format!("/db/{copy}/restore"),
        &[("content-type", SQLITE)],
        backup.body,
    )
    .await;
    again.problem(StatusCode::CONFLICT, "database-exists");

    let written = send(
        &app,
        Method::PUT,
        &format!("/db/{copy}/docs/people/p2"),
        &[("content-type", "application/json"), ("if-match", &held)],
        r#"{"n":"new"}"#,
    )
    .await;
    assert_eq!(written.status, StatusCode::OK, "{written:?}");
    let etag = written
        .header("folio-etag")
        .and_then(|etag| etag.parse::<u64>().ok())
        .expect("an etag");
    assert!(etag > 5 + folio_core::RESTORED_ETAG_GAP, "{written:?}");

    let export = send(
        &app,
        Method::GET,
        &format!("/db/{copy}/export"),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.text().lines().count(), 5);
}
