//! `folio serve` short of file descriptors: it raises its soft limit to
//! the hard one at start, refuses connections beyond its limit, and once
//! the pressure of idle connections and new databases ends, a database
//! that existed before takes writes again.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::Wire;
use crate::process::{FolioServe, free_port};

/// A bound on waiting that a healthy run never reaches (not a timing
/// assertion).
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_serve_raises_its_descriptor_limit_to_the_hard_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let server = FolioServe::start_with_descriptors(
        free_port(),
        64,
        512,
        &[OsStr::new("--data"), data.as_os_str()],
    )
    .await;
    assert_eq!(server.descriptor_limits(), (512, 512));
}

/// The server's limit on descriptors, and its limit on connections. The
/// limit on open databases is set higher than these descriptors allow (an
/// embedded database holds about 10), so that they do run out: what is
/// tested is that running out stops nothing for good.
const DESCRIPTORS: u64 = 256;
const CONNECTIONS: usize = 100;
const OPEN_DATABASES: &str = "64";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_served_again_once_the_descriptor_pressure_ends() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let connections = CONNECTIONS.to_string();
    let server = FolioServe::start_with_descriptors(
        free_port(),
        DESCRIPTORS,
        DESCRIPTORS,
        &[
            OsStr::new("--data"),
            data.as_os_str(),
            OsStr::new("--max-connections"),
            OsStr::new(&connections),
            OsStr::new("--max-open-databases"),
            OsStr::new(OPEN_DATABASES),
        ],
    )
    .await;
    let address: SocketAddr = format!("127.0.0.1:{}", server.port)
        .parse()
        .expect("an address");
    // One connection for every request of the test, opened before the
    // pressure: a new one could not be accepted while descriptors are short.
    let mut client = Wire::connect(address).await;

    // A database from before, with a document, its changes feed held open
    // all along (so it stays open: a database in use is never closed to
    // make room).
    let created = client.send("PUT", "/db/before", "").await;
    assert_eq!(created.status, 201, "{created:?}");
    let put = client
        .send("PUT", "/db/before/docs/notes/n0", r#"{"n":0}"#)
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let (feed_read, mut feed_write) = TcpStream::connect(address)
        .await
        .expect("connected")
        .into_split();
    feed_write
        .write_all(b"GET /db/before/changes HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("sent");
    let mut feed = BufReader::new(feed_read);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, feed.read_line(&mut line))
        .await
        .expect("the feed answers")
        .expect("a status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");

    // Idle connections, until the server refuses one.
    let mut idle = Vec::new();
    let refusal = loop {
        assert!(
            idle.len() <= CONNECTIONS,
            "no refusal after {} connections",
            idle.len()
        );
        let mut connection = Wire::connect(address).await;
        let answer = connection.send("GET", "/healthz", "").await;
        match answer.status {
            200 => idle.push(connection),
            503 => break answer,
            other => panic!("connection {}: {other} {answer:?}", idle.len()),
        }
    };
    assert!(
        refusal.has("retry-after: 1") && refusal.has("connection: close"),
        "{refusal:?}"
    );
    let problem: serde_json::Value = serde_json::from_slice(&refusal.body).expect("a problem body");
    assert_eq!(
        problem["type"],
        "https://folio.dev/problems/connection-limit"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(&format!("limit of {CONNECTIONS}"))),
        "{problem}"
    );

    // New databases, until the server can open no more.
    let mut refused = None;
    for n in 0..200 {
        let answer = client.send("PUT", &format!("/db/pressure{n}"), "").await;
        if answer.status != 201 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the descriptors ran out before 200 databases");
    assert!(
        refused.status >= 500
            && refused
                .text()
                .contains("\"type\":\"https://folio.dev/problems/"),
        "short of descriptors, a creation fails: {refused:?} {}",
        refused.text()
    );
    // The descriptors that failed creation gave back are taken too: by
    // connections beyond the limit that say nothing (each is held until
    // its refusal's patience runs out).
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(address).await.expect("connected"));
    }
    // Writes while descriptors are short may fail; they must not stop the
    // database for good.
    for n in 1..=4 {
        client
            .send(
                "PUT",
                &format!("/db/before/docs/notes/n{n}"),
                &format!(r#"{{"n":{n}}}"#),
            )
            .await;
    }
    let short = server.open_descriptors();

    // The pressure ends: the idle connections go. The server learns of it
    // as it reads their ends: a bounded number of tries, not a timing.
    drop(idle);
    drop(silent);
    let mut last = None;
    for _ in 0..200 {
        let answer = client
            .send("PUT", "/db/before/docs/notes/after", r#"{"after":true}"#)
            .await;
        if answer.status < 300 {
            last = None;
            break;
        }
        last = Some(format!("{} {}", answer.status, answer.text()));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        last.is_none(),
        "the database from before takes writes again (descriptors: {short} when short, {} \
         now): {last:?}",
        server.open_descriptors()
    );
    for (id, expected) in [("n0", r#"{"n":0}"#), ("after", r#"{"after":true}"#)] {
        let read = client
            .send("GET", &format!("/db/before/docs/notes/{id}"), "")
            .await;
        assert_eq!(read.status, 200, "{id}: {read:?}");
        assert_eq!(read.text(), expected);
    }
    // And a new database can be created again.
    let created = client.send("PUT", "/db/after", "").await;
    assert_eq!(created.status, 201, "{created:?}");
    drop(feed);
}
