//! Scale-out: three `folio serve` processes on one PostgreSQL (the test
//! harness's throwaway cluster), under concurrent conditional increments
//! through all three, lose no update.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use folio_postgres::testing::TestCluster;
use reqwest::{StatusCode, header};

/// A `folio serve` child process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

async fn start_server(postgres: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args([
            "serve",
            "--postgres",
            postgres,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("FOLIO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("folio serve starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    // Wait for readiness (not a timing assertion: a bound on a hang).
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{}/healthz", server.base)).send().await
            && response.status() == StatusCode::OK
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "folio serve on port {port} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        .put(format!("{}/db/{database}", servers[0].base))
        .send()
        .await
        .expect("create database");
    assert_eq!(created.status(), StatusCode::CREATED);
    let counter = |server: &Server| format!("{}/db/{database}/docs/counters/c1", server.base);
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
        let url = format!("{}/db/{database}/changes", servers[0].base);
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
