//! `GET /db/{db}/changes`: Server-Sent Events over a real socket (live
//! events, `Last-Event-ID` resume), the JSON long poll, bad input, and
//! event streams ending when the server shuts down.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use folio_server::router;
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{PROBLEMS, Server, plain_state};

/// A guard against hangs only.
const PATIENCE: Duration = Duration::from_secs(30);

const JSON: (&str, &str) = ("accept", "application/json");

#[tokio::test]
async fn long_poll_returns_the_changes_after_since_and_where_to_go_on() {
    let server = Server::new();
    server.create_db("feed").await;
    let p1 = server
        .put_doc("feed", "people", "p1", r#"{"name":"Ada"}"#)
        .await;
    server
        .put_doc("feed", "notes", "n1", r#"{"text":"x"}"#)
        .await;
    let deleted = server.delete("/db/feed/docs/people/p1", &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");

    let all = server
        .send(
            Method::GET,
            "/db/feed/changes?since=0&timeout=0",
            &[JSON],
            Body::empty(),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    assert_eq!(all.header("content-type"), Some("application/json"));
    let body = all.json();
    let changes = body["changes"].as_array().expect("changes");
    let summary: Vec<(&str, &str, &str, u64)> = changes
        .iter()
        .map(|change| {
            (
                change["kind"].as_str().unwrap(),
                change["collection"].as_str().unwrap(),
                change["id"].as_str().unwrap(),
                change["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("put", "people", "p1", 1),
            ("put", "notes", "n1", 1),
            ("delete", "people", "p1", 1),
        ]
    );
    assert_eq!(changes[0]["change_vector"], p1["change_vector"]);
    assert_eq!(changes[0]["etag"], p1["etag"]);
    let last = body["last_etag"].as_u64().expect("last_etag");
    assert_eq!(Some(last), changes[2]["etag"].as_u64());

    // One collection; the end of the page is still the last etag looked at.
    let notes = server
        .send(
            Method::GET,
            "/db/feed/changes?since=0&collection=notes&timeout=0",
            &[JSON],
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(notes["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(notes["last_etag"].as_u64(), Some(last));

    // Pages: limit=2 ends at the second change.
    let page = server
        .send(
            Method::GET,
            "/db/feed/changes?since=0&limit=2&timeout=0",
            &[JSON],
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["last_etag"], page["changes"][1]["etag"]);

    // Nothing newer, no wait: an empty page at the same place.
    let empty = server
        .send(
            Method::GET,
            &format!("/db/feed/changes?since={last}&timeout=0"),
            &[JSON],
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(
        empty,
        serde_json::json!({ "changes": [], "last_etag": last })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_waits_for_the_next_write() {
    let server = Server::new();
    server.create_db("feed").await;
    let first = server.put_doc("feed", "notes", "n1", "{}").await;
    let since = first["etag"].as_u64().expect("etag");
    let uri = format!("/db/feed/changes?since={since}&timeout=25");
    let mut poll = std::pin::pin!(crate::common::send(
        &server.app,
        Method::GET,
        &uri,
        &[JSON],
        Body::empty(),
    ));
    still_waiting(&mut poll).await;
    let second = server.put_doc("feed", "notes", "n2", "{}").await;
    let answer = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the long poll answers when the write commits");
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["changes"][0]["id"], "n2");
    assert_eq!(body["changes"][0]["etag"], second["etag"]);
}

/// Drives `poll`, a long poll with nothing to report, for a while, and
/// checks that it is waiting rather than answered.
async fn still_waiting(poll: &mut (impl Future<Output = crate::common::Resp> + Unpin)) {
    let early = tokio::time::timeout(Duration::from_millis(200), poll).await;
    assert!(early.is_err(), "a long poll with nothing newer waits");
}

#[tokio::test]
async fn bad_feed_requests_are_refused_with_a_problem() {
    let server = Server::new();
    server.create_db("feed").await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], StatusCode);
    let cases: &[Case<'_>] = &[
        ("/db/feed/changes?limit=0", &[JSON], StatusCode::BAD_REQUEST),
        (
            "/db/feed/changes?limit=1001",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?timeout=-1",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?timeout=301",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?since=minus",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?collection=a%20b",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?unknown=1",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes",
            &[JSON, ("last-event-id", "abc")],
            StatusCode::BAD_REQUEST,
        ),
        // A stream has no timeout.
        ("/db/feed/changes?timeout=5", &[], StatusCode::BAD_REQUEST),
        // Etags are at most 2^63-1: refused before a stream's 200 goes out.
        (
            "/db/feed/changes?since=9223372036854775808",
            &[],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?since=9223372036854775808",
            &[JSON],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes",
            &[("last-event-id", "9223372036854775808")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?timeout=0",
            &[("accept", "application/json"), ("last-event-id", "1e3")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/db/feed/changes?timeout=0",
            &[("accept", "application/json"), ("last-event-id", "")],
            StatusCode::BAD_REQUEST,
        ),
        ("/db/feed/changes?limit=0", &[], StatusCode::BAD_REQUEST),
        (
            "/db/nowhere/changes?timeout=0",
            &[JSON],
            StatusCode::NOT_FOUND,
        ),
        ("/db/BAD!/changes", &[JSON], StatusCode::BAD_REQUEST),
    ];
    for (uri, headers, status) in cases {
        let resp = server.send(Method::GET, uri, headers, Body::empty()).await;
        assert_eq!(resp.status, *status, "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{resp:?}"
        );
        let problem = resp.json();
        assert!(
            problem["type"].as_str().unwrap_or("").starts_with(PROBLEMS),
            "{problem}"
        );
    }
}

/// The events read so far from an SSE body, as (id, event, data).
#[derive(Default)]
struct Events {
    buffer: String,
    parsed: Vec<(String, String, Value)>,
}

impl Events {
    /// Adds bytes of the stream; parses the complete events.
    fn feed(&mut self, bytes: &[u8]) {
        self.buffer
            .push_str(std::str::from_utf8(bytes).expect("UTF-8 events"));
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim());
                }
            }
            // Comments (keep-alives) carry no data.
            if !data.is_empty() {
                let data = serde_json::from_str(&data).expect("data is JSON");
                self.parsed.push((id, event, data));
            }
        }
    }
}

/// Reads events from `response` until `count` were parsed in all.
async fn read_events(response: &mut reqwest::Response, events: &mut Events, count: usize) {
    tokio::time::timeout(PATIENCE, async {
        while events.parsed.len() < count {
            let chunk = response
                .chunk()
                .await
                .expect("the stream reads")
                .expect("the stream stays open");
            events.feed(&chunk);
        }
    })
    .await
    .expect("the events arrive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_sends_live_events_and_resumes_after_last_event_id() {
    let (_root, base) = serve_with("live").await;
    let client = reqwest::Client::new();
    let put = |id: &'static str| put_over_http(&client, &base, "live", "notes", id);
    put("a").await;
    put("b").await;

    let mut stream = client
        .get(format!("{base}/db/live/changes"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = Events::default();
    read_events(&mut stream, &mut events, 2).await;
    // A write while the stream is open arrives as it commits.
    let c = put("c").await;
    read_events(&mut stream, &mut events, 3).await;
    let seen: Vec<(&str, &str, &str)> = events
        .parsed
        .iter()
        .map(|(id, event, data)| (id.as_str(), event.as_str(), data["id"].as_str().unwrap()))
        .collect();
    assert_eq!(seen[0].1, "put");
    assert_eq!(
        seen.iter().map(|(_, _, id)| *id).collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        events.parsed[2].0,
        c["etag"].to_string(),
        "the event id is the etag"
    );
    drop(stream);

    // Reconnecting after "b" resumes with "c", even with an older `since`.
    let mut resumed = client
        .get(format!("{base}/db/live/changes?since=0"))
        .header("last-event-id", events.parsed[1].0.as_str())
        .send()
        .await
        .expect("the stream opens again");
    let mut again = Events::default();
    read_events(&mut resumed, &mut again, 1).await;
    assert_eq!(again.parsed[0].2["id"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_the_server_shuts_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = plain_state(&root.path().join("data"));
    let app = router(state.clone());
    let create = Request::builder()
        .method(Method::PUT)
        .uri("/db/bye")
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(
        app.clone()
            .oneshot(create)
            .await
            .expect("infallible")
            .status(),
        StatusCode::CREATED
    );
    let open = Request::builder()
        .uri("/db/bye/changes")
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a request");
    let response = app.oneshot(open).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    state.shut_down();
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = body.next().await {
            chunk.expect("the stream reads");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends once the server shuts down");
}

/// Puts `{"text":"hi"}` as `collection/id` in `db` of the server at `base`,
/// expecting success; the metadata it answers with.
async fn put_over_http(
    client: &reqwest::Client,
    base: &str,
    db: &str,
    collection: &str,
    id: &str,
) -> Value {
    let response = client
        .put(format!("{base}/db/{db}/docs/{collection}/{id}"))
        .header("content-type", "application/json")
        .body(r#"{"text":"hi"}"#)
        .send()
        .await
        .expect("a put");
    assert!(response.status().is_success(), "{response:?}");
    response.json::<Value>().await.expect("metadata")
}

/// A server on loopback over a new data directory with the database `db`:
/// the directory (kept while the test runs) and the base URL.
async fn serve_with(db: &str) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().expect("tempdir");
    let state = plain_state(&root.path().join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(folio_server::serve(listener, state));
    let created = reqwest::Client::new()
        .put(format!("{base}/db/{db}"))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    (root, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_filters_by_collection_names_deletes_and_reads_page_by_page() {
    let (_root, base) = serve_with("filtered").await;
    let client = reqwest::Client::new();
    let put = |collection, id| put_over_http(&client, &base, "filtered", collection, id);
    let a = put("notes", "a").await;
    put("people", "p").await;
    let b = put("notes", "b").await;
    let deleted = client
        .delete(format!("{base}/db/filtered/docs/notes/a"))
        .send()
        .await
        .expect("a delete");
    assert_eq!(deleted.status(), 204);
    put("people", "q").await;

    // One change per read of the engine: the stream goes on page by page.
    let mut stream = client
        .get(format!(
            "{base}/db/filtered/changes?collection=notes&limit=1"
        ))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let mut events = Events::default();
    read_events(&mut stream, &mut events, 3).await;
    let seen: Vec<(&str, &str)> = events
        .parsed
        .iter()
        .map(|(_, event, data)| (event.as_str(), data["id"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("put", "a"), ("put", "b"), ("delete", "a")]);
    let ids: Vec<u64> = events
        .parsed
        .iter()
        .map(|(id, _, _)| id.parse().expect("an etag"))
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(events.parsed[0].2["etag"], a["etag"]);
    assert_eq!(events.parsed[1].2["change_vector"], b["change_vector"]);
    let (_, _, delete) = &events.parsed[2];
    let mut fields: Vec<&str> = delete
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "change_vector",
            "collection",
            "etag",
            "id",
            "kind",
            "revision"
        ]
    );
    assert_eq!(delete["kind"], "delete");
    assert_eq!(delete["collection"], "notes");
    assert_eq!(
        delete["revision"], 1,
        "a delete names the revision it deleted"
    );
    assert_ne!(
        delete["change_vector"], a["change_vector"],
        "the delete's own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_when_the_server_shuts_down() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = plain_state(&root.path().join("data"));
    let app = router(state.clone());
    let created = crate::common::send(&app, Method::PUT, "/db/quiet", &[], Body::empty()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let mut poll = std::pin::pin!(crate::common::send(
        &app,
        Method::GET,
        "/db/quiet/changes?timeout=300",
        &[JSON],
        Body::empty(),
    ));
    still_waiting(&mut poll).await;
    state.shut_down();
    let answer = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll ends with the server, not after 300 s");
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["changes"], serde_json::json!([]));
    assert_eq!(body["last_etag"], 0);
}

#[tokio::test]
async fn the_long_poll_is_chosen_by_accept() {
    let server = Server::new();
    server.create_db("feed").await;
    server.put_doc("feed", "notes", "n1", "{}").await;
    let long_poll = |accept: &'static str| {
        let server = &server;
        async move {
            server
                .send(
                    Method::GET,
                    "/db/feed/changes?timeout=0",
                    &[("accept", accept)],
                    Body::empty(),
                )
                .await
        }
    };
    let page = long_poll("text/html, application/json;q=0.5").await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_eq!(page.header("content-type"), Some("application/json"));
    assert_eq!(page.json()["changes"][0]["id"], "n1");
    // `q=0`: not acceptable, so the event stream, which refuses `timeout`.
    let refused = long_poll("application/json;q=0").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("an event stream"),
        "{refused:?}"
    );
}
