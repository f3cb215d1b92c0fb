//! A real socket: `folio_server::serve` on `127.0.0.1:0`, raw HTTP/1.1 with
//! keep-alive; and `check_exposure`.

use std::net::SocketAddr;
use std::time::Duration;

use folio_server::check_exposure;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::common::plain_state;

/// A response read off the wire.
struct WireResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl WireResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (status line, headers, a `Content-Length` body).
async fn read_response(reader: &mut BufReader<OwnedReadHalf>, head: bool) -> WireResponse {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("a status line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{line:?}");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).await.expect("a header line");
        assert!(read > 0, "the connection closed inside the headers");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = WireResponse {
        status,
        headers,
        body: Vec::new(),
    };
    assert!(
        response.header("transfer-encoding").is_none(),
        "a buffered body has a length"
    );
    let length: usize = if head || status == 204 || status == 304 {
        0
    } else {
        response
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a Content-Length: {:?}", response.headers))
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("the body");
    response.body = body;
    response
}

fn request(method: &str, path: &str, extra: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for header in extra {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = plain_state(&root.path().join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    let server = tokio::spawn(folio_server::serve(listener, state));

    // A guard against hanging forever, not a timing assertion.
    let conversation = async {
        let stream = TcpStream::connect(address).await.expect("connected");
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);

        write
            .write_all(request("PUT", "/db/wire", &[], "").as_bytes())
            .await
            .expect("sent");
        let created = read_response(&mut reader, false).await;
        assert_eq!(created.status, 201);

        // Same connection: a document, then a conditional read of it.
        write
            .write_all(
                request(
                    "PUT",
                    "/db/wire/docs/notes/n1",
                    &["Content-Type: application/json"],
                    r#"{"text":"hello"}"#,
                )
                .as_bytes(),
            )
            .await
            .expect("sent");
        let put = read_response(&mut reader, false).await;
        assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
        let etag = put.header("etag").expect("an ETag").to_owned();
        let metadata: Value = serde_json::from_slice(&put.body).expect("metadata");
        assert_eq!(
            etag,
            format!("\"{}\"", metadata["change_vector"].as_str().expect("cv"))
        );

        write
            .write_all(request("GET", "/db/wire/docs/notes/n1", &[], "").as_bytes())
            .await
            .expect("sent");
        let got = read_response(&mut reader, false).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, br#"{"text":"hello"}"#);
        assert_eq!(got.header("etag"), Some(etag.as_str()));

        // Two requests pipelined in one write: two answers, in order.
        let if_none_match = format!("If-None-Match: {etag}");
        let pipelined = format!(
            "{}{}",
            request(
                "GET",
                "/db/wire/docs/notes/n1",
                &[if_none_match.as_str()],
                ""
            ),
            request(
                "PUT",
                "/db/wire/docs/notes/n1",
                &["Content-Type: application/json", "If-Match: \"stale\""],
                r#"{"text":"lost"}"#,
            ),
        );
        write.write_all(pipelined.as_bytes()).await.expect("sent");
        let not_modified = read_response(&mut reader, false).await;
        assert_eq!(not_modified.status, 304);
        let failed = read_response(&mut reader, false).await;
        assert_eq!(failed.status, 412);
        assert_eq!(
            failed.header("content-type"),
            Some("application/problem+json")
        );

        // And the connection is still open for one more.
        write
            .write_all(request("GET", "/healthz", &["Connection: close"], "").as_bytes())
            .await
            .expect("sent");
        let health = read_response(&mut reader, false).await;
        assert_eq!(health.status, 200);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty(), "nothing after the last response");
    };
    tokio::time::timeout(Duration::from_secs(60), conversation)
        .await
        .expect("the conversation finished");
    server.abort();
}

#[test]
fn exposure_beyond_loopback_needs_keys_or_insecure() {
    let address = |text: &str| text.parse::<SocketAddr>().expect("an address");
    for loopback in ["127.0.0.1:7070", "127.0.0.2:80", "[::1]:7070"] {
        assert!(
            check_exposure(&address(loopback), false, false).is_ok(),
            "{loopback}"
        );
    }
    for exposed in [
        "0.0.0.0:7070",
        "192.168.1.10:7070",
        "[::]:7070",
        "10.0.0.1:1",
    ] {
        let refused = check_exposure(&address(exposed), false, false);
        let message = refused.expect_err(exposed);
        assert!(message.contains("--insecure"), "{message}");
        assert!(message.contains("--keys"), "{message}");
        assert!(
            check_exposure(&address(exposed), true, false).is_ok(),
            "{exposed} with keys"
        );
        assert!(
            check_exposure(&address(exposed), false, true).is_ok(),
            "{exposed} insecure"
        );
        assert!(
            check_exposure(&address(exposed), true, true).is_ok(),
            "{exposed} both"
        );
    }
}
