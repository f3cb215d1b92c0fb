//! Service endpoints: databases, health, metrics.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::validate;
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::batch::json;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `/db/{db}`.
#[derive(Deserialize)]
pub struct DatabasePath {
    db: String,
}

#[derive(Serialize)]
struct DatabaseList {
    databases: Vec<String>,
}

/// `GET /db`: the databases this key may read.
pub async fn list_databases(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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
pub async fn create_database(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<DatabasePath>, PathRejection>,
) -> ApiResult<Response> {
    let Path(path) =
        path.map_err(|rejection| ApiError::BadRequest(format!("malformed path: {rejection}")))?;
    validate::database(&path.db)?;
    state.authorize(&headers, &path.db, Role::Admin)?;
    let created = state.databases().create(&path.db).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &serde_json::json!({ "database": path.db })))
}

/// `GET /healthz` (no authentication).
pub async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Any route that does not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route: see /openapi.json".into())
}

/// A route that exists, with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
