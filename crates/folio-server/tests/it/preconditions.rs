//! Collections that require a precondition (`--require-precondition`) on
//! every write path: batches, the remote engine and `folio import`.

use std::time::SystemTime;

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Config, Server};

const ACCOUNT: &str = "/db/shop/docs/accounts/a1";

async fn shop() -> Server {
    let server = Server::with(Config {
        require_precondition: vec!["shop/accounts".to_owned()],
        ..Config::default()
    });
    server.create_db("shop").await;
    server
}

/// The version of `uri` now: its `ETag` (quoted), `Last-Modified` and revision.
async fn version(server: &Server, uri: &str) -> (String, SystemTime, String) {
    let resp = server.get(uri).await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    let last_modified = httpdate::parse_http_date(resp.header("last-modified").expect("a date"))
        .expect("an HTTP date");
    (
        resp.header("etag").expect("an ETag").to_owned(),
        last_modified,
        resp.header("folio-revision")
            .expect("a revision")
            .to_owned(),
    )
}

// ------------------------------------------------- guarded collections

#[tokio::test]
async fn a_batch_without_versions_changes_no_guarded_document() {
    let server = shop().await;
    server.put_doc("shop", "accounts", "a1", r#"{"v":1}"#).await;
    server.put_doc("shop", "accounts", "a2", r#"{"v":1}"#).await;
    let (etag, _, revision) = version(&server, ACCOUNT).await;
    let batch = |commands: serde_json::Value| json!({ "commands": commands }).to_string();

    for commands in [
        json!([{"op":"put","collection":"accounts","id":"a1","document":{"v":2}}]),
        json!([{"op":"put","collection":"accounts","id":"a1","document":{"v":2},"expect":"any"}]),
        json!([{"op":"delete","collection":"accounts","id":"a1"}]),
        // Beside writes that would go through alone, and a stale one.
        json!([
            {"op":"put","collection":"people","id":"p9","document":{"v":1}},
            {"op":"put","collection":"accounts","id":"new","document":{"v":1}},
            {"op":"delete","collection":"accounts","id":"a1","expect":"any"},
            {"op":"put","collection":"accounts","id":"a2","document":{"v":2},"expect":{"change_vector":"A:1-stale"}},
        ]),
    ] {
        let resp = server
            .post_json("/db/shop/batch", &[], &batch(commands.clone()))
            .await;
        let problem = resp.problem(StatusCode::PRECONDITION_REQUIRED, "precondition-required");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("accounts #a1")),
            "{commands}: {problem}"
        );
    }
    let after = version(&server, ACCOUNT).await;
    assert_eq!(
        (after.0, after.2),
        (etag.clone(), revision),
        "nothing written"
    );
    for nothing in ["/db/shop/docs/people/p9", "/db/shop/docs/accounts/new"] {
        assert_eq!(server.get(nothing).await.status, StatusCode::NOT_FOUND);
    }

    // A stale version alone is a conflict as ever.
    let stale = json!([{"op":"put","collection":"accounts","id":"a2","document":{"v":2},"expect":{"change_vector":"A:1-stale"}}]);
    server
        .post_json("/db/shop/batch", &[], &batch(stale))
        .await
        .problem(StatusCode::CONFLICT, "concurrency-conflict");

    // Creating, deleting nothing, checks, other collections and the
    // version read: through.
    let cv = etag.trim_matches('"');
    let fine = json!([
        {"op":"put","collection":"accounts","id":"new","document":{"v":1}},
        {"op":"delete","collection":"accounts","id":"nobody"},
        {"op":"check","collection":"accounts","id":"a2"},
        {"op":"put","collection":"people","id":"p9","document":{"v":1}},
        {"op":"put","collection":"accounts","id":"a1","document":{"v":2},"expect":{"change_vector":cv}},
    ]);
    let resp = server.post_json("/db/shop/batch", &[], &batch(fine)).await;
    resp.ok_json(StatusCode::OK);
    assert_eq!(server.get(ACCOUNT).await.json(), json!({"v":2}));
}

/// Through the remote engine (a session over HTTP) and `folio import`,
/// the two clients that write by batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_engine_and_import_honour_a_guarded_collection() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = folio_server::AppState::new(
        folio_server::Databases::new(folio_server::Backend::Embedded {
            dir: root.path().join("data"),
            options: crate::common::options(),
        }),
        None,
        folio_server::Limits::default(),
        vec!["shop/accounts".to_owned()],
    );
    state.databases().create("shop").await.expect("a database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(folio_server::serve(listener, state));

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, folio::Document)]
    #[folio(collection = "accounts")]
    struct Account {
        #[folio(id)]
        id: String,
        balance: i64,
    }
    let store = folio::DocumentStore::connect(&format!("http://{address}/db/shop"))
        .await
        .expect("the remote store");
    let mut session = store.open_session();
    session
        .store(Account {
            id: "a1".into(),
            balance: 10,
        })
        .unwrap();
    session
        .save_changes()
        .await
        .expect("creating needs no version");

    // Checks are off for the type: the session sends no version.
    let mut session = store.open_session();
    session
        .store(Account {
            id: "a1".into(),
            balance: 0,
        })
        .unwrap();
    let refused = session.save_changes().await;
    assert!(
        matches!(&refused, Err(folio::Error::InvalidInput(detail)) if detail.contains("accounts #a1")),
        "{refused:?}"
    );
    let mut session = store.open_session();
    session.delete::<Account>("a1").unwrap();
    assert!(session.save_changes().await.is_err());
    let stored = store.open_session().load::<Account>("a1").await.unwrap();
    assert_eq!(stored.map(|account| account.balance), Some(10));

    // With the version read, it goes through.
    let mut session = store.open_session();
    session.advanced().set_use_optimistic_concurrency(true);
    let mut account = session
        .load::<Account>("a1")
        .await
        .unwrap()
        .expect("stored");
    account.balance = 20;
    session.store(account).unwrap();
    session
        .save_changes()
        .await
        .expect("the version read is sent");

    // folio import writes without versions: new documents only.
    let client = folio_server::client::Client::new(&format!("http://{address}"), "shop", None)
        .expect("a client");
    let file = root.path().join("accounts.jsonl");
    std::fs::write(
        &file,
        "{\"collection\":\"accounts\",\"id\":\"a2\",\"document\":{\"balance\":5}}\n",
    )
    .expect("written");
    assert_eq!(
        client
            .import(&file, None, 10, false)
            .await
            .expect("a new document"),
        1
    );
    std::fs::write(
        &file,
        "{\"collection\":\"accounts\",\"id\":\"a1\",\"document\":{\"balance\":0}}\n",
    )
    .expect("written");
    let refused = client.import(&file, None, 10, false).await;
    let failure = refused.expect_err("an existing guarded document is not overwritten");
    assert_eq!(failure.exit_code(), 4, "{failure:?}");
    let stored = store.open_session().load::<Account>("a1").await.unwrap();
    assert_eq!(stored.map(|account| account.balance), Some(20));
}
