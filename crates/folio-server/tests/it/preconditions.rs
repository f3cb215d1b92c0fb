//! Conditional requests as RFC 9110 §13 has them, on every method, and
//! collections that require a precondition (`--require-precondition`) on
//! every write path: single documents, batches, the remote engine and
//! `folio import`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use folio::testing::{Wrapper, wrap};
use folio_core::{Batch, Command, CommandKind, EngineRef, Expectation};
use serde_json::json;

use crate::common::{Config, Resp, Server, quote};

const DOC: &str = "/db/shop/docs/people/p1";
const ACCOUNT: &str = "/db/shop/docs/accounts/a1";
const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";

async fn shop() -> Server {
    let server = Server::with(Config {
        require_precondition: vec!["shop/accounts".to_owned()],
        ..Config::default()
    });
    server.create_db("shop").await;
    server
}

/// An HTTP date `seconds` away from `time` (whole seconds).
fn http_date(time: SystemTime, seconds: i64) -> String {
    let whole = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let shifted = whole.checked_add_signed(seconds).expect("in range");
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(shifted))
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

#[track_caller]
fn failed(resp: &Resp) {
    resp.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
}

#[track_caller]
fn required(resp: &Resp) {
    resp.problem(StatusCode::PRECONDITION_REQUIRED, "precondition-required");
}

/// A write of each kind to `uri` with `headers`: PUT, PATCH (both
/// formats), DELETE.
async fn every_write(server: &Server, uri: &str, headers: &[(&str, &str)]) -> Vec<Resp> {
    vec![
        server.put_json(uri, headers, r#"{"v":"put"}"#).await,
        server
            .patch(uri, MERGE_PATCH, headers, r#"{"v":"merge"}"#)
            .await,
        server
            .patch(
                uri,
                JSON_PATCH,
                headers,
                r#"[{"op":"replace","path":"/v","value":"json"}]"#,
            )
            .await,
        server.delete(uri, headers).await,
    ]
}

// ------------------------------------------------------ RFC 9110 §13.2.2

#[tokio::test]
async fn if_unmodified_since_guards_every_write_at_second_precision() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let (etag, modified, _) = version(&server, DOC).await;

    // Before the version's time: 412, nothing written.
    let before = http_date(modified, -1);
    for resp in every_write(&server, DOC, &[("if-unmodified-since", &before)]).await {
        failed(&resp);
    }
    assert_eq!(version(&server, DOC).await.0, etag);

    // Its Last-Modified itself (the version was written later within that
    // second: dates count whole seconds) and later: the write goes through.
    let at = http_date(modified, 0);
    let resp = server
        .put_json(DOC, &[("if-unmodified-since", &at)], r#"{"v":2}"#)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    let (_, modified, _) = version(&server, DOC).await;
    let later = http_date(modified, 60);
    let resp = server
        .patch(
            DOC,
            MERGE_PATCH,
            &[("if-unmodified-since", &later)],
            r#"{"w":3}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    let resp = server.delete(DOC, &[("if-unmodified-since", &later)]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{resp:?}");

    // A missing document has no modification date: the condition is
    // ignored and PUT creates.
    let resp = server
        .put_json(DOC, &[("if-unmodified-since", &before)], r#"{"v":4}"#)
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");

    // If-Match is evaluated instead of If-Unmodified-Since.
    let (etag, modified, _) = version(&server, DOC).await;
    let before = http_date(modified, -1);
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &etag), ("if-unmodified-since", &before)],
            r#"{"v":5}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");

    // Not an HTTP date: refused, not ignored.
    server
        .put_json(DOC, &[("if-unmodified-since", "yesterday")], r#"{"v":6}"#)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
}

#[tokio::test]
async fn if_none_match_is_evaluated_after_a_passing_if_match() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let (etag, _, revision) = version(&server, DOC).await;
    for none_match in [etag.as_str(), "*"] {
        let headers = [("if-match", etag.as_str()), ("if-none-match", none_match)];
        for resp in every_write(&server, DOC, &headers).await {
            failed(&resp);
        }
        // A GET answers 304 instead.
        let resp = server.send(Method::GET, DOC, &headers, Body::empty()).await;
        assert_eq!(resp.status, StatusCode::NOT_MODIFIED, "{resp:?}");
    }
    assert_eq!(version(&server, DOC).await.2, revision, "nothing written");
    let other = quote("A:1-someone-else");
    let resp = server
        .put_json(
            DOC,
            &[("if-match", &etag), ("if-none-match", &other)],
            r#"{"v":2}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

#[tokio::test]
async fn a_failing_if_match_is_412_on_get_head_and_post() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let (etag, modified, _) = version(&server, DOC).await;
    let stale = quote("A:1-stale");
    let before = http_date(modified, -1);
    for method in [Method::GET, Method::HEAD] {
        for headers in [
            &[("if-match", stale.as_str())][..],
            &[("if-match", &format!("W/{etag}"))],
            &[("if-unmodified-since", &before)],
        ] {
            let resp = server
                .send(method.clone(), DOC, headers, Body::empty())
                .await;
            assert_eq!(resp.status, StatusCode::PRECONDITION_FAILED, "{resp:?}");
        }
        let resp = server
            .send(method.clone(), DOC, &[("if-match", &etag)], Body::empty())
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
        // A missing document is 404 whatever the preconditions.
        let resp = server
            .send(
                method,
                "/db/shop/docs/people/nobody",
                &[("if-match", &stale)],
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{resp:?}");
    }

    // A collection has no entity tag: If-Match with one fails, as does
    // If-None-Match: * (the collection exists); nothing is created.
    let collection = "/db/shop/docs/people";
    for headers in [
        &[("if-match", stale.as_str())][..],
        &[("if-match", &etag)],
        &[("if-none-match", "*")],
    ] {
        failed(&server.post_json(collection, headers, r#"{"v":2}"#).await);
    }
    let listed = server.get(collection).await.json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    for headers in [
        &[("if-match", "*")][..],
        &[("if-none-match", stale.as_str())],
    ] {
        let resp = server.post_json(collection, headers, r#"{"v":3}"#).await;
        assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    }
    // No database: 404 whatever the preconditions.
    let resp = server
        .post_json("/db/nowhere/docs/people", &[("if-match", &stale)], "{}")
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{resp:?}");
}

#[tokio::test]
async fn if_modified_since_answers_304_when_not_modified() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    let (etag, modified, _) = version(&server, DOC).await;
    for method in [Method::GET, Method::HEAD] {
        for since in [http_date(modified, 0), http_date(modified, 3600)] {
            let resp = server
                .send(
                    method.clone(),
                    DOC,
                    &[("if-modified-since", &since)],
                    Body::empty(),
                )
                .await;
            assert_eq!(resp.status, StatusCode::NOT_MODIFIED, "{since}: {resp:?}");
            assert!(resp.body.is_empty());
            assert_eq!(resp.header("etag"), Some(etag.as_str()));
        }
        // Modified since: the document.
        let resp = server
            .send(
                method.clone(),
                DOC,
                &[("if-modified-since", &http_date(modified, -1))],
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
        // If-None-Match, when present, is evaluated instead.
        let resp = server
            .send(
                method.clone(),
                DOC,
                &[
                    ("if-modified-since", &http_date(modified, 3600)),
                    ("if-none-match", &quote("A:1-other")),
                ],
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
        // Not a date: ignored.
        let resp = server
            .send(
                method,
                DOC,
                &[("if-modified-since", "not a date")],
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    }
    // A write does not heed it.
    let resp = server
        .put_json(
            DOC,
            &[("if-modified-since", &http_date(modified, 3600))],
            r#"{"v":2}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

// ------------------------------------------------- guarded collections

/// In a guarded collection only an `If-Match` with the version read
/// changes a document: `If-Match: *`, `If-None-Match` with entity tags and
/// `If-Unmodified-Since` name no version (428), `If-None-Match: *` only
/// creates (412 on an existing document).
#[tokio::test]
async fn a_guarded_document_changes_only_with_the_version_read() {
    let server = shop().await;
    server.put_doc("shop", "accounts", "a1", r#"{"v":1}"#).await;
    let (etag, modified, revision) = version(&server, ACCOUNT).await;
    let other = quote("A:1-other");
    let later = http_date(modified, 3600);
    for headers in [
        &[][..],
        &[("if-match", "*")],
        &[("if-none-match", other.as_str())],
        &[("if-unmodified-since", &later)],
        &[("if-match", "*"), ("if-none-match", &other)],
    ] {
        for resp in every_write(&server, ACCOUNT, headers).await {
            required(&resp);
        }
    }
    for resp in every_write(&server, ACCOUNT, &[("if-none-match", "*")]).await {
        failed(&resp);
    }
    let after = version(&server, ACCOUNT).await;
    assert_eq!(
        (after.0, after.2),
        (etag.clone(), revision),
        "nothing written"
    );

    // Creating needs no version, with any of them.
    for (n, headers) in [
        &[][..],
        &[("if-none-match", "*")],
        &[("if-none-match", other.as_str())],
        &[("if-unmodified-since", &later)],
    ]
    .iter()
    .enumerate()
    {
        let resp = server
            .put_json(&format!("/db/shop/docs/accounts/new{n}"), headers, "{}")
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{headers:?}: {resp:?}");
    }
    // Deleting nothing needs none either.
    let resp = server.delete("/db/shop/docs/accounts/nobody", &[]).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{resp:?}");

    // The version read, with other conditions that hold: through.
    let resp = server
        .put_json(
            ACCOUNT,
            &[("if-match", &etag), ("if-unmodified-since", &later)],
            r#"{"v":2}"#,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
}

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

// ------------------------------------------------------------ contention

/// Makes the first `conflicts` commits of a put of `people/p1` expecting a
/// version conflict deterministically: just before each, it writes the
/// document itself.
struct Contended {
    inner: EngineRef,
    conflicts: usize,
    interfered: AtomicUsize,
}

#[async_trait::async_trait]
impl Wrapper for Contended {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(&self, batch: Batch) -> folio_core::CommitResult {
        let contended = batch.commands.iter().any(|command| {
            command.id == "p1"
                && matches!(command.kind, CommandKind::Put { .. })
                && matches!(command.expect, Expectation::Version { .. })
        });
        if contended && self.interfered.load(Ordering::SeqCst) < self.conflicts {
            let n = self.interfered.fetch_add(1, Ordering::SeqCst);
            let other = Command::put(
                "people",
                "p1",
                json!({ "other": n }).to_string(),
                Expectation::Any,
            );
            self.inner
                .commit(Batch::from(vec![other]))
                .await?
                .expect("an unconditional write");
        }
        self.inner.commit(batch).await
    }
}

/// A PATCH without `If-Match` re-reads and patches again each time the
/// document changed under it: losing a dozen races in a row is not a
/// failure (it used to be 503 after five).
#[tokio::test]
async fn a_patch_that_loses_many_races_still_applies() {
    let server = shop().await;
    server.put_doc("shop", "people", "p1", r#"{"v":1}"#).await;
    // The database the router serves, wrapped.
    let databases = server.state.databases();
    let contended = Arc::new(Contended {
        inner: databases.get("shop").await.expect("the database"),
        conflicts: 12,
        interfered: AtomicUsize::new(0),
    });
    databases
        .attach("shop", wrap(contended.clone()))
        .await
        .expect("attached");

    let resp = server
        .patch(DOC, MERGE_PATCH, &[], r#"{"patched":true}"#)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(contended.interfered.load(Ordering::SeqCst), 12);
    // The patch applied to the newest version.
    assert_eq!(
        server.get(DOC).await.json(),
        json!({"other": 11, "patched": true})
    );

    // So does a conditional PUT that must read first (If-Match: *).
    contended.interfered.store(0, Ordering::SeqCst);
    let resp = server
        .put_json(DOC, &[("if-match", "*")], r#"{"v":"put"}"#)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(server.get(DOC).await.json(), json!({"v":"put"}));
}

/// Writers racing for one document with PATCH (no `If-Match`): every
/// patch applies, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_of_one_document_all_apply() {
    let server = Arc::new(shop().await);
    server.put_doc("shop", "people", "p1", "{}").await;
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .patch(DOC, MERGE_PATCH, &[], &format!(r#"{{"w{n}":{n}}}"#))
                    .await
            })
        })
        .collect();
    for writer in writers {
        let resp = writer.await.expect("the writer finishes");
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    }
    let document = server.get(DOC).await.json();
    for n in 0..8 {
        assert_eq!(document[format!("w{n}")], n, "{document}");
    }
}
