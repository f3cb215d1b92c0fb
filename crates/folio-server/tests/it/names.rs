//! Database names that try to leave the data directory: 400, and no file
//! created anywhere but the data directory.

use std::collections::BTreeSet;
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::common::Server;

/// The names of the entries of `dir`, recursively, relative to `dir`.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("readable") {
            let entry = entry.expect("an entry");
            let path = entry.path();
            names.insert(
                path.strip_prefix(dir)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().expect("a type").is_dir() {
                stack.push(path);
            }
        }
    }
    names
}

#[tokio::test]
async fn traversal_through_a_database_name_is_400_and_touches_nothing() {
    let server = Server::new();
    server.create_db("shop").await;
    let root = server.root.path();
    let before = tree(root);
    assert!(before.contains("data"), "{before:?}");
    assert!(before.contains("data/shop.sqlite"), "{before:?}");

    let names = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".",
        "a%2Fb",
        "..%2Fescaped",
        "..%2F..%2Fescaped",
        "%2e%2e%2f%2e%2e%2fescaped",
        "..%5Cescaped",
        "%2Ftmp%2Fescaped",
        "a.b",
        "escaped.sqlite",
        ".hidden",
        "Shop",
        "SHOP",
        "-shop",
        "_shop",
        "shop%00",
        "sh%C3%B6p",
        "shop%20x",
        "%20",
        &"a".repeat(64),
    ];
    for name in names {
        let requests = [
            (Method::PUT, format!("/db/{name}"), ""),
            (Method::GET, format!("/db/{name}/docs/people/p1"), ""),
            (Method::PUT, format!("/db/{name}/docs/people/p1"), "{}"),
            (Method::POST, format!("/db/{name}/docs/people"), "{}"),
            (Method::GET, format!("/db/{name}/docs/people"), ""),
            (
                Method::POST,
                format!("/db/{name}/batch"),
                r#"{"commands":[{"op":"put","collection":"c","id":"x","document":{}}]}"#,
            ),
            (
                Method::POST,
                format!("/db/{name}/query"),
                r#"{"collection":"c"}"#,
            ),
        ];
        for (method, uri, body) in requests {
            let headers: &[(&str, &str)] = if body.is_empty() {
                &[]
            } else {
                &[("content-type", "application/json")]
            };
            let resp = server.send(method, &uri, headers, body.to_owned()).await;
            resp.problem(StatusCode::BAD_REQUEST, "bad-request");
        }
    }
    // The longest valid name is fine.
    let longest = "a".repeat(63);
    let resp = server
        .send(Method::PUT, &format!("/db/{longest}"), &[], Body::empty())
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");

    // Nothing outside the data directory, only database files inside it.
    let after = tree(root);
    let outside: Vec<&String> = after
        .iter()
        .filter(|name| *name != "data" && !name.starts_with("data/"))
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the data directory: {outside:?}"
    );
    for name in &after {
        let Some(file) = name.strip_prefix("data/") else {
            continue;
        };
        let stem = file.split('.').next().unwrap_or_default();
        assert!(
            stem == "shop" || stem == longest,
            "only the databases created: {file:?}"
        );
        let suffix = &file[stem.len()..];
        assert!(
            suffix.starts_with(".sqlite") || suffix.ends_with(".lock"),
            "only database and lock files: {file:?}"
        );
    }
    // The parent of the data directory's root: no `escaped` anywhere near.
    let parent = root.parent().expect("a parent");
    for escaped in ["escaped", "escaped.sqlite", "escaped.sqlite.lock"] {
        assert!(!parent.join(escaped).exists(), "{escaped} in {parent:?}");
    }
}
