//! `POST /db/{db}/query` and paging a collection by id.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;

/// 30 people: `p00`…`p29`, age = 20 + i, city Oslo for even i, Bergen
/// for odd i; every third has a `vip` flag.
async fn people() -> Server {
    let server = Server::new();
    server.create_db("shop").await;
    let commands: Vec<Value> = (0..30)
        .map(|i| {
            let mut document = json!({
                "name": format!("person {i}"),
                "age": 20 + i,
                "address": { "city": if i % 2 == 0 { "Oslo" } else { "Bergen" } },
            });
            if i % 3 == 0 {
                document["vip"] = json!(true);
            }
            json!({ "op": "put", "collection": "people", "id": format!("p{i:02}"), "document": document })
        })
        .collect();
    let body = json!({ "commands": commands }).to_string();
    server
        .post_json("/db/shop/batch", &[], &body)
        .await
        .ok_json(StatusCode::OK);
    // A document of another collection never shows.
    server
        .put_doc(
            "shop",
            "pets",
            "p00",
            r#"{"age":21,"address":{"city":"Oslo"}}"#,
        )
        .await;
    server
}

async fn query(server: &Server, query: Value) -> (Vec<String>, u64) {
    let body = server
        .post_json("/db/shop/query", &[], &query.to_string())
        .await
        .ok_json(StatusCode::OK);
    let ids = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|entry| {
            assert_eq!(entry["collection"], "people", "{entry}");
            for field in [
                "change_vector",
                "revision",
                "etag",
                "last_modified",
                "document",
            ] {
                assert!(entry.get(field).is_some(), "{field} in {entry}");
            }
            entry["id"].as_str().expect("id").to_owned()
        })
        .collect();
    (ids, body["total"].as_u64().expect("total"))
}

#[tokio::test]
async fn where_order_by_skip_take_and_total() {
    let server = people().await;

    // Oslo: p00, p02, …, p28 (15 people); by age descending: p28, p26, …
    let (ids, total) = query(
        &server,
        json!({
            "collection": "people",
            "where": [ { "path": "address.city", "op": "eq", "value": "Oslo" } ],
            "order_by": [ { "path": "age", "desc": true } ],
            "skip": 2,
            "take": 3,
        }),
    )
    .await;
    assert_eq!(ids, ["p24", "p22", "p20"]);
    assert_eq!(total, 15, "total counts every match, not the page");

    // Several conditions, ascending order.
    let (ids, total) = query(
        &server,
        json!({
            "collection": "people",
            "where": [
                { "path": "age", "op": "ge", "value": 30 },
                { "path": "age", "op": "lt", "value": 40 },
                { "path": "address.city", "op": "ne", "value": "Oslo" },
            ],
            "order_by": [ { "path": "age" } ],
        }),
    )
    .await;
    assert_eq!(ids, ["p11", "p13", "p15", "p17", "p19"]);
    assert_eq!(total, 5);

    // `in`, `exists`, `starts_with`.
    let (ids, _) = query(
        &server,
        json!({
            "collection": "people",
            "where": [ { "path": "age", "op": "in", "value": [20, 25, 49, 1000] } ],
            "order_by": [ { "path": "age" } ],
        }),
    )
    .await;
    assert_eq!(ids, ["p00", "p05", "p29"]);
    let (_, total) = query(
        &server,
        json!({ "collection": "people", "where": [ { "path": "vip", "op": "exists", "value": true } ] }),
    )
    .await;
    assert_eq!(total, 10);
    let (ids, total) = query(
        &server,
        json!({
            "collection": "people",
            "where": [ { "path": "name", "op": "starts_with", "value": "person 2" } ],
            "order_by": [ { "path": "age" } ],
        }),
    )
    .await;
    assert_eq!(total, 11, "person 2 and person 20…29");
    assert_eq!(ids.first().map(String::as_str), Some("p02"));

    // Skip past the end: no results, the total still counts.
    let (ids, total) = query(
        &server,
        json!({ "collection": "people", "skip": 100, "take": 10 }),
    )
    .await;
    assert!(ids.is_empty());
    assert_eq!(total, 30);

    // Type-strict equality: 20 is not "20".
    let (_, total) = query(
        &server,
        json!({ "collection": "people", "where": [ { "path": "age", "op": "eq", "value": "20" } ] }),
    )
    .await;
    assert_eq!(total, 0);
}

#[tokio::test]
async fn paging_visits_every_document_once_in_id_order() {
    let server = Server::new();
    server.create_db("shop").await;
    // 250 documents, written in an order that is not the id order.
    let mut numbers: Vec<u32> = (0..250).collect();
    numbers.sort_by_key(|n| (n * 97) % 251);
    let commands: Vec<Value> = numbers
        .iter()
        .map(|n| json!({ "op": "put", "collection": "items", "id": format!("item-{n:03}"), "document": { "n": n } }))
        .collect();
    server
        .post_json(
            "/db/shop/batch",
            &[],
            &json!({ "commands": commands }).to_string(),
        )
        .await
        .ok_json(StatusCode::OK);
    server.put_doc("shop", "other", "item-000", "{}").await;

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = match &after {
            Some(after) => format!("/db/shop/docs/items?after={after}&limit=100"),
            None => "/db/shop/docs/items?limit=100".to_owned(),
        };
        let page = server.get(&uri).await.ok_json(StatusCode::OK);
        let items = page["items"].as_array().expect("items");
        pages.push(items.len());
        for item in items {
            assert_eq!(item["collection"], "items", "{item}");
            let id = item["id"].as_str().expect("id").to_owned();
            let n: u32 = id["item-".len()..].parse().expect("a number");
            assert_eq!(item["document"], json!({ "n": n }), "{item}");
            for field in ["change_vector", "revision", "etag", "last_modified"] {
                assert!(item.get(field).is_some(), "{field} in {item}");
            }
            seen.push(id);
        }
        match &page["next"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(Some(next), seen.last(), "next is the last id of the page");
                after = Some(next.clone());
            }
            other => panic!("next must be an id or null: {other}"),
        }
        assert!(pages.len() <= 3, "three pages at most: {pages:?}");
    }
    assert_eq!(pages, [100, 100, 50]);
    assert_eq!(seen.len(), 250);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 250, "each document exactly once");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in id order");
    assert_eq!(seen.first().map(String::as_str), Some("item-000"));
    assert_eq!(seen.last().map(String::as_str), Some("item-249"));

    // Paging after an id that does not exist starts after where it would be.
    let page = server
        .get("/db/shop/docs/items?after=item-099x&limit=2")
        .await
        .ok_json(StatusCode::OK);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["item-100", "item-101"]);
    assert_eq!(page["next"], "item-101");

    // An exactly full last page has no next.
    let page = server
        .get("/db/shop/docs/items?after=item-239&limit=10")
        .await
        .ok_json(StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(page["next"], Value::Null);

    // A bad limit is a 400.
    for bad in ["limit=0", "limit=-1", "limit=ten"] {
        server
            .get(&format!("/db/shop/docs/items?{bad}"))
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
}

#[tokio::test]
async fn paging_with_ids_that_need_percent_encoding() {
    let server = Server::new();
    server.create_db("shop").await;
    let ids = ["a b", "a&b", "a/b", "a=b", "a+b", "é"];
    for id in ids {
        let encoded: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let resp = server
            .put_json(&format!("/db/shop/docs/things/{encoded}"), &[], "{}")
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = match &after {
            Some(after) => {
                let encoded: String = after.bytes().map(|b| format!("%{b:02X}")).collect();
                format!("/db/shop/docs/things?limit=2&after={encoded}")
            }
            None => "/db/shop/docs/things?limit=2".to_owned(),
        };
        let page = server.get(&uri).await.ok_json(StatusCode::OK);
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= ids.len(), "{seen:?}");
    }
    let mut expected: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

/// The largest queries are served; past each limit, 400 naming it (a
/// query SQLite or PostgreSQL cannot run was a 500).
#[tokio::test]
async fn queries_past_a_size_limit_are_400_naming_it() {
    let server = people().await;
    let ages = |count: usize| (0..count).map(|n| json!(n)).collect::<Vec<_>>();
    let ins = |filters: usize, each: usize| {
        (0..filters)
            .map(|_| json!({"path": "age", "op": "in", "value": ages(each)}))
            .collect::<Vec<_>>()
    };
    let ne = |count: usize| {
        (0..count)
            .map(|n| json!({"path": "age", "op": "ne", "value": -(n as i64) - 1}))
            .collect::<Vec<_>>()
    };
    let keys = |count: usize| {
        (0..count)
            .map(|n| json!({"path": format!("k{n}")}))
            .collect::<Vec<_>>()
    };
    for (largest, past, limit) in [
        (
            json!({"where": ins(1, 1000)}),
            json!({"where": ins(1, 1001)}),
            "at most 1000 values",
        ),
        (
            json!({"where": ne(100)}),
            json!({"where": ne(101)}),
            "at most 100 filters",
        ),
        (
            json!({"where": ins(10, 1000)}),
            json!({ "where": ins(10, 1000).into_iter().chain(ins(1, 1)).collect::<Vec<_>>() }),
            "at most 10000 values together",
        ),
        (
            json!({"order_by": keys(32)}),
            json!({"order_by": keys(33)}),
            "at most 32 ordering keys",
        ),
    ] {
        let with_collection = |mut body: Value| {
            body["collection"] = json!("people");
            body.to_string()
        };
        let answer = server
            .post_json("/db/shop/query", &[], &with_collection(largest))
            .await
            .ok_json(StatusCode::OK);
        assert_eq!(answer["total"], 30, "{limit}");
        let problem = server
            .post_json("/db/shop/query", &[], &with_collection(past))
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(limit)),
            "{problem}"
        );
    }
}
