//! The `folio` facade's `remote` feature: `DocumentStore::connect` and the
//! builder dispatch `http://` URLs to the remote engine, with the API key.

use folio::{ChangeVector, Document, DocumentStore, Error};
use folio_server::auth::Keys;
use folio_server::{AppState, Backend, Databases, Limits};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Document)]
#[folio(collection = "people", optimistic_concurrency)]
struct Person {
    id: String,
    name: String,
    #[folio(change_vector)]
    #[serde(skip)]
    change_vector: Option<ChangeVector>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_connects_by_url_with_the_api_key() {
    let data = tempfile::tempdir().unwrap();
    let databases = Databases::new(Backend::Embedded {
        dir: data.path().to_path_buf(),
        options: Default::default(),
    });
    databases.create("shop").await.unwrap();
    let keys = Keys::parse(
        r#"{ "keys": [ { "key": "writer-key-0123456789", "roles": { "shop": "write" } } ] }"#,
    )
    .unwrap();
    let router = folio_server::router(AppState::new(
        databases,
        Some(keys),
        Limits::default(),
        Vec::<String>::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/db/shop", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    match DocumentStore::connect(&url).await {
        Err(Error::Unauthorized(_)) => {}
        other => panic!("no key: expected unauthorized, got {other:?}"),
    }
    let store = DocumentStore::builder()
        .url(&url)
        .api_key("writer-key-0123456789")
        .document::<Person>(|d| d.index("name"))
        .open()
        .await
        .unwrap();
    let mut session = store.open_session();
    session
        .store(Person {
            id: "p1".into(),
            name: "Ada".into(),
            change_vector: None,
        })
        .unwrap();
    session.save_changes().await.unwrap();

    let mut first = store.open_session();
    let mut second = store.open_session();
    let mut by_first = first.load::<Person>("p1").await.unwrap().unwrap();
    let mut by_second = second.load::<Person>("p1").await.unwrap().unwrap();
    by_first.name = "Ada Lovelace".into();
    first.store(by_first).unwrap();
    first.save_changes().await.unwrap();
    by_second.name = "Ada King".into();
    second.store(by_second).unwrap();
    let error = second.save_changes().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Optimistic concurrency check failed for Person #p1"
    );

    let https = DocumentStore::connect("https://127.0.0.1:1/db/shop").await;
    assert!(matches!(https, Err(Error::InvalidInput(message)) if message.contains("TLS")));
    server.abort();
}
