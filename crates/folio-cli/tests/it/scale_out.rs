//! Scale-out: three `folio serve` processes on one PostgreSQL (the test
//! harness's throwaway cluster), under concurrent conditional increments
//! through all three, lose no update.

use folio_postgres::testing::TestCluster;
use reqwest::{StatusCode, header};

use crate::process::{FolioServe, free_port};

async fn start_server(postgres: &str) -> FolioServe {
    FolioServe::start(free_port(), &["--postgres".as_ref(), postgres.as_ref()]).await
}

/// Reads the counter, adds one, writes it back with `If-Match`; again on 412.
async fn increment(client: &reqwest::Client, url: &str) -> u64 {
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 10_000, "an increment kept failing");
        let response = client.get(url).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()[header::ETAG]
            .to_str()
            .expect("ETag")
            .to_owned();
        let document: serde_json::Value = response.json().await.expect("JSON");
        let value = document["value"].as_u64().expect("a counter");
        let response = client
            .put(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::IF_MATCH, &etag)
            .body(serde_json::json!({ "value": value + 1 }).to_string())
            .send()
            .await
            .expect("PUT");
        match response.status() {
            StatusCode::OK => return attempts,
            StatusCode::PRECONDITION_FAILED => continue,
            other => panic!(
                "unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_on_one_postgres_lose_no_update() {
    const TASKS: usize = 12;
    const INCREMENTS: u64 = 10;
    let postgres = TestCluster::shared().url().to_owned();
    let servers = vec![
        start_server(&postgres).await,
        start_server(&postgres).await,
        start_server(&postgres).await,
    ];
    let client = reqwest::Client::new();
    let database = format!("scale{}", std::process::id());
    let created = client
        .put(format!("{}/db/{database}", servers[0].base()))
        .send()
        .await
        .expect("create database");
    assert_eq!(created.status(), StatusCode::CREATED);
    let counter = |server: &FolioServe| format!("{}/db/{database}/docs/counters/c1", server.base());
    let seeded = client
        .put(counter(&servers[0]))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_NONE_MATCH, "*")
        .body(r#"{"value":0}"#)
        .send()
        .await
        .expect("seed");
    assert_eq!(seeded.status(), StatusCode::CREATED);
    let seeded: serde_json::Value = seeded.json().await.expect("metadata");
    let expected = TASKS as u64 * INCREMENTS;

    // The changes feed of the first server sees every write, whichever
    // server made it, each once, in order (long polls; LISTEN/NOTIFY wakes
    // them).
    let feed = {
        let client = client.clone();
        let url = format!("{}/db/{database}/changes", servers[0].base());
        let mut since = seeded["etag"].as_u64().expect("an etag");
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            while revisions.len() < usize::try_from(expected).expect("small") {
                let page: serde_json::Value = client
                    .get(format!("{url}?since={since}&timeout=20"))
                    .header(header::ACCEPT, "application/json")
                    .send()
                    .await
                    .expect("a long poll")
                    .json()
                    .await
                    .expect("a page");
                for change in page["changes"].as_array().expect("changes") {
                    revisions.push(change["revision"].as_u64().expect("a revision"));
                }
                since = page["last_etag"].as_u64().expect("last_etag");
            }
            revisions
        })
    };

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            let url = counter(&servers[task % servers.len()]);
            tokio::spawn(async move {
                let mut attempts = 0;
                for _ in 0..INCREMENTS {
                    attempts += increment(&client, &url).await;
                }
                attempts
            })
        })
        .collect();
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await.expect("task");
    }

    let revisions = tokio::time::timeout(std::time::Duration::from_secs(60), feed)
        .await
        .expect("the feed sees every write")
        .expect("the feed task finishes");
    assert_eq!(
        revisions,
        (2..=expected + 1).collect::<Vec<_>>(),
        "one change per successful write, in order"
    );

    // Every server sees the same final state.
    for server in &servers {
        let response = client.get(counter(server)).send().await.expect("GET");
        let revision: u64 = response.headers()["folio-revision"]
            .to_str()
            .expect("revision")
            .parse()
            .expect("a number");
        let document: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(
            document["value"], expected,
            "an acknowledged increment was lost"
        );
        assert_eq!(revision, expected + 1, "one revision per successful write");
    }
    assert!(
        attempts >= expected,
        "every increment needed at least one attempt"
    );
}
