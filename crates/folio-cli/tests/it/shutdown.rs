//! Graceful shutdown: `folio serve` on the embedded engine, stopped with
//! SIGTERM in the middle of a stream of writes, exits cleanly, and every
//! write it acknowledged is there when it starts again on the same data.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;

use crate::process::{FolioServe, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let args = ["--data".as_ref(), dir.path().as_os_str()];
    let mut server = FolioServe::start(port, &args).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .put(format!("{base}/db/shop"))
            .send()
            .await
            .expect("create")
            .status(),
        StatusCode::CREATED
    );

    // Writers keep going until the server stops answering; each records the
    // ids the server acknowledged.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let client = client.clone();
            let base = base.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..100_000 {
                    let id = format!("w{writer}-{n}");
                    let response = client
                        .put(format!("{base}/db/shop/docs/notes/{id}"))
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"n":{n}}}"#))
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == StatusCode::CREATED => {
                            mine.push(id);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        // Refused or cut off by the shutdown: not acknowledged.
                        _ => break,
                    }
                }
                mine
            })
        })
        .collect();

    // Stop the server once writes are flowing.
    while acknowledged.load(Ordering::SeqCst) < 200 {
        tokio::task::yield_now().await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let exit = server.child.wait().expect("the server exits");
    assert!(
        exit.success(),
        "a graceful shutdown exits cleanly, got {exit}"
    );

    // Start again on the same data: every acknowledged write is there.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = FolioServe::start(port, &args).await;
    let mut missing = Vec::new();
    for chunk in written.chunks(500) {
        let response = client
            .post(format!("{base}/db/shop/docs/notes/get"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "ids": chunk }).to_string())
            .send()
            .await
            .expect("get many");
        let body: serde_json::Value = response.json().await.expect("JSON");
        for (id, entry) in chunk
            .iter()
            .zip(body["results"].as_array().expect("results"))
        {
            if entry.is_null() {
                missing.push(id.clone());
            }
        }
    }
    drop(server);
    assert!(written.len() >= 200);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}
