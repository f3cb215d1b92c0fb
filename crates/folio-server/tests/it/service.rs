//! Service endpoints: the OpenAPI description and the metrics.

use axum::http::StatusCode;

use crate::common::Server;

#[tokio::test]
async fn openapi_describes_every_route_in_openapi_3_1() {
    let server = Server::new();
    let response = server.get("/openapi.json").await;
    let document = response.ok_json(StatusCode::OK);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1")),
        "{document}"
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/db", &["get"][..]),
        ("/db/{db}", &["put"]),
        ("/db/{db}/batch", &["post"]),
        ("/db/{db}/query", &["post"]),
        ("/db/{db}/collections", &["get"]),
        ("/db/{db}/docs/{collection}", &["get", "post"]),
        ("/db/{db}/docs/{collection}/get", &["post"]),
        (
            "/db/{db}/docs/{collection}/{id}",
            &["get", "put", "delete", "patch"],
        ),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        let described = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not described"));
        for method in methods {
            assert!(
                described.get(*method).is_some(),
                "{method} {path} is not described"
            );
        }
    }
    // The conditional-request statuses are part of the contract.
    let put = &paths["/db/{db}/docs/{collection}/{id}"]["put"]["responses"];
    for status in ["200", "201", "412", "428"] {
        assert!(put.get(status).is_some(), "PUT does not describe {status}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_conflicts() {
    let server = Server::new();
    server.create_db("shop").await;
    let uri = "/db/shop/docs/people/p1";
    server.put_json(uri, &[], r#"{"name":"Ada"}"#).await;
    let stale = server
        .put_json(uri, &[("if-match", "\"A:999-nope\"")], r#"{"name":"x"}"#)
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let _ = server.get("/db/shop/docs/people/nobody").await;
    let text = server.get("/metrics").await.text();
    assert!(
        text.contains(r#"folio_http_requests_total{method="PUT",route="/db/{db}/docs/{collection}/{id}",status="201"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"folio_http_requests_total{method="PUT",route="/db/{db}/docs/{collection}/{id}",status="412"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"folio_http_requests_total{method="GET",route="/db/{db}/docs/{collection}/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains("folio_conflicts_total 1"), "{text}");
    assert!(text.contains("folio_commit_seconds_count 2"), "{text}");
}

/// What the server refuses, the description refuses too: query filters and
/// ordering keys take no fields but their own.
#[tokio::test]
async fn openapi_closes_query_filters_and_orders_to_unknown_fields() {
    let server = Server::new();
    let document = server.get("/openapi.json").await.ok_json(StatusCode::OK);
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["OrderBody"]["additionalProperties"], false);
    let filters = schemas["FilterBody"]["oneOf"].as_array().expect("filters");
    assert!(filters.len() >= 10, "{filters:?}");
    for filter in filters {
        assert_eq!(filter["additionalProperties"], false, "{filter}");
    }
}
