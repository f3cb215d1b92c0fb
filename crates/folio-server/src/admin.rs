//! Service endpoints: databases, health, metrics.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_protocol::{DatabaseCreated, DatabaseList};

use crate::batch::json;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Authorized, DatabasePath};
use crate::state::AppState;

/// `GET /db`: the databases this key may read.
#[utoipa::path(get, path = "/db", tag = "databases", responses((status = 200, description = "{ databases: [name] } the key may read", body = Object), (status = 401, description = "no or unknown API key", content_type = "application/problem+json")))]
pub async fn list_databases(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // A missing or unknown key is refused even when there is nothing to
    // list (nothing may be learned without a key).
    state.authenticate(&headers)?;
    let mut databases = Vec::new();
    for name in state.databases().list().await? {
        if state.may_read(&headers, &name)? {
            databases.push(name);
        }
    }
    Ok(json(StatusCode::OK, &DatabaseList { databases }))
}

/// `PUT /db/{db}` (admin): creates the database; 201 when created, 200
/// when it existed.
#[utoipa::path(put, path = "/db/{db}", tag = "databases", params(DatabasePath), responses((status = 201, description = "created", body = Object), (status = 200, description = "existed already", body = Object), (status = 400, description = "malformed input", content_type = "application/problem+json"), (status = 401, description = "no or unknown API key", content_type = "application/problem+json"), (status = 403, description = "the key may not do this, or the server holds as many databases as it may (database-limit)", content_type = "application/problem+json"), (status = 404, description = "no such database or document", content_type = "application/problem+json")))]
pub async fn create_database(
    State(state): State<AppState>,
    Authorized(path, _): Admin<DatabasePath>,
) -> ApiResult<Response> {
    let created = state.databases().create(&path.db).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &DatabaseCreated { database: path.db }))
}

/// `GET /healthz` (no authentication): `200 {"status":"ok"}`, or `503`
/// with what keeps the server from serving (a data directory it cannot
/// write, databases that take no writes). Database names are told only
/// when the server has no keys; with keys, only how many.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "the server is up: { status: ok }", body = Object), (status = 503, description = "something keeps it from serving: { status: failing, problems: [{ database?, problem }] }", body = Object)))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let mut problems = state.databases().problems().await;
    if problems.is_empty() {
        return json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    if state.has_keys() {
        for problem in &mut problems {
            problem.database = None;
        }
    }
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "status": "failing", "problems": problems }),
    )
}

/// `GET /metrics`: Prometheus text. With keys configured, any valid key
/// may read it (a scraper sends one as a bearer token); only `/healthz` and
/// the Studio's files need none.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"), (status = 401, description = "keys are configured and the request has no known key", content_type = "application/problem+json")))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    state.authenticate(&headers)?;
    let mut text = state.metrics().render();
    state.databases().render_metrics(&mut text).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// The OpenAPI 3.1 description of every route, generated from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Folio",
        description = "Optimistic concurrency over plain HTTP: ETag, If-Match, If-None-Match, 412, 428 (docs/protocol.md). On every route: an HTTP/1.1 request without exactly one Host is 400; without API keys configured, a Host other than localhost, a name under .localhost, an IP address or a name the operator allows is 421 (misdirected-request, against DNS rebinding); a Content-Length over the body limit is 413 before the body is read (no 100 Continue) and the connection is closed; a connection beyond the server's limit is answered 503 (connection-limit, Retry-After) and closed; a database that cannot be opened because every open one is in use is 503 (open-database-limit, Retry-After)."
    ),
    paths(
        crate::documents::get_document,
        crate::documents::put_document,
        crate::documents::post_document,
        crate::documents::delete_document,
        crate::documents::patch_document,
        crate::documents::list_documents,
        crate::documents::list_collections,
        crate::documents::get_many,
        crate::revisions::get_config,
        crate::revisions::put_config,
        crate::revisions::list_revisions,
        crate::revisions::get_revision,
        crate::batch::batch,
        crate::batch::query,
        crate::changes::changes,
        crate::backup::backup,
        crate::backup::restore,
        crate::backup::export,
        list_databases,
        create_database,
        healthz,
        metrics,
        openapi,
        crate::studio::page,
    ),
    modifiers(&ClosedFilters)
)]
pub struct ApiDoc;

/// Marks each kind of query filter as taking no field but its own
/// (`additionalProperties: false`), as the server parses them. utoipa
/// carries serde's `deny_unknown_fields` into structs, but not into the
/// variants of an internally tagged enum (`FilterBody`).
struct ClosedFilters;

impl utoipa::Modify for ClosedFilters {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(RefOr::T(Schema::OneOf(filters))) = document
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("FilterBody"))
        else {
            return;
        };
        for filter in &mut filters.items {
            if let RefOr::T(Schema::Object(object)) = filter {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// `GET /openapi.json`. With keys configured, any valid key may read it.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "this document", body = Object), (status = 401, description = "keys are configured and the request has no known key", content_type = "application/problem+json")))]
pub async fn openapi(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    state.authenticate(&headers)?;
    Ok(openapi_document())
}

/// The OpenAPI document as a response.
fn openapi_document() -> Response {
    use utoipa::OpenApi as _;
    match ApiDoc::openapi().to_json() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => ApiError::Internal(folio_core::EngineErrorKind::Other).into_response(),
    }
}

/// Any route that does not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route: see /openapi.json".into())
}

/// A route that exists, with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
