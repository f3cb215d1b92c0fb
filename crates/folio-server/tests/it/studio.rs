//! The Studio's files: embedded, served with their content types and
//! validators, without a key; and every file of the committed build is one
//! of them.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::common::{Config, Server};

const KEYS: &str =
    r#"{ "keys": [ { "key": "admin-key-0123456789", "roles": { "*": "admin" } } ] }"#;

#[tokio::test]
async fn the_page_and_each_file_it_loads_are_served_with_their_content_type() {
    let server = Server::new();
    for path in ["/studio", "/studio/", "/studio/index.html"] {
        let page = server.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page.text().contains(r#"<div id="app">"#), "{page:?}");
        let policy = page.header("content-security-policy").expect("a CSP");
        assert!(policy.contains("script-src 'self'"), "{policy}");
    }
    let html = server.get("/studio").await.text();
    for (path, content_type) in [
        ("/studio/assets/studio.js", "text/javascript; charset=utf-8"),
        ("/studio/assets/studio.css", "text/css; charset=utf-8"),
        ("/studio/favicon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(path), "the page does not load {path}: {html}");
        let file = server.get(path).await;
        assert_eq!(file.status, StatusCode::OK, "{file:?}");
        assert_eq!(file.header("content-type"), Some(content_type), "{path}");
        assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
        assert!(!file.body.is_empty(), "{path} is empty");
    }
}

#[tokio::test]
async fn openapi_describes_the_studio() {
    let server = Server::new();
    let document = server.get("/openapi.json").await.json();
    assert!(
        document["paths"]["/studio"]["get"].is_object(),
        "{}",
        document["paths"]
    );
}

#[tokio::test]
async fn a_browser_revalidates_with_the_etag_and_gets_304() {
    let server = Server::new();
    let first = server.get("/studio/assets/studio.js").await;
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = server
        .send(
            Method::GET,
            "/studio/assets/studio.js",
            &[("if-none-match", etag.as_str())],
            Body::empty(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{again:?}");
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let other = server
        .send(
            Method::GET,
            "/studio/assets/studio.js",
            &[("if-none-match", "\"0000000000000000\"")],
            Body::empty(),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);

    let css = server.get("/studio/assets/studio.css").await;
    assert_ne!(
        css.header("etag"),
        Some(etag.as_str()),
        "each file its own ETag"
    );
}

#[tokio::test]
async fn the_files_need_no_key_but_the_api_still_does() {
    let server = Server::with(Config {
        keys: Some(KEYS),
        ..Config::default()
    });
    let created = server
        .send(
            Method::PUT,
            "/db/shop",
            &[("authorization", "Bearer admin-key-0123456789")],
            Body::empty(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    for path in ["/studio", "/studio/assets/studio.js"] {
        let resp = server.get(path).await;
        assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    }
    assert_eq!(server.get("/db").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unknown_file_is_a_404_problem_and_no_path_escapes_the_embedded_set() {
    let server = Server::new();
    for path in [
        "/studio/nothing.js",
        "/studio/assets/",
        "/studio/../Cargo.toml",
        "/studio/%2e%2e/src/lib.rs",
        "/studio/assets/../../Cargo.toml",
    ] {
        let resp = server.get(path).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{resp:?}"
        );
    }
    let head = server
        .send(Method::HEAD, "/studio", &[], Body::empty())
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

/// Every file that the front end's build wrote is embedded: a new file in
/// `studio/dist` (another chunk, an image) must be added to `studio.rs`.
#[test]
fn every_file_of_the_committed_build_is_embedded() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("studio/dist");
    let mut built = Vec::new();
    let mut pending = vec![dist.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("studio/dist is committed") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(&dist).expect("below dist");
                built.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    built.sort();
    let mut embedded: Vec<String> = folio_server::studio::asset_paths()
        .map(str::to_owned)
        .collect();
    embedded.sort();
    assert_eq!(built, embedded);
}

#[tokio::test]
async fn the_server_root_leads_a_browser_to_the_studio_with_or_without_keys() {
    for keys in [None, Some(KEYS)] {
        let server = Server::with(Config {
            keys,
            ..Config::default()
        });
        let root = server.get("/").await;
        assert_eq!(root.status, StatusCode::SEE_OTHER, "{root:?}");
        assert_eq!(root.header("location"), Some("/studio"), "{root:?}");
    }
}
