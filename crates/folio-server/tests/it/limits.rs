//! What a server keeps within bounds: open connections (one more is
//! refused with a `503` that says why).

use std::time::Duration;

use folio_server::{AppState, Backend, Databases, Limits};

use crate::common::{Wire, options};

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
