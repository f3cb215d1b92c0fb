//! Collection configurations and document histories: `GET`/`PUT
//! /db/{db}/collections/{collection}/config` and `GET
//! /db/{db}/docs/{collection}/{id}/revisions[/{change_vector}]`.

use axum::extract::State;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::{ChangeVector, CollectionConfig, MAX_REVISIONS_PAGE, validate};
use folio_protocol::headers;
use serde::Deserialize;

use crate::documents::{json_response, version_headers};
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    Admin, Authorized, CollectionPath, DocumentPath, InDatabase, JsonText, Params, Read, ReadFrom,
};
use crate::responses::{BodyRefusals, DatabaseRefusals, DocumentRefusals};
use crate::state::AppState;

/// How many revisions a page holds when the request does not say.
const DEFAULT_TAKE: u32 = 50;

/// `GET /db/{db}/collections/{collection}/config`.
#[utoipa::path(get, path = "/db/{db}/collections/{collection}/config", tag = "collections", params(CollectionPath), responses((status = 200, description = "the collection's configuration", body = folio_protocol::openapi::CollectionConfigBody), DatabaseRefusals))]
pub async fn get_config(
    State(state): State<AppState>,
    Authorized(path, _): Read<CollectionPath>,
) -> ApiResult<Response> {
    let engine = state.databases().get(&path.db).await?;
    let config = engine.configuration(&path.collection).await?;
    Ok(json_response(StatusCode::OK, Default::default(), &config))
}

/// `PUT /db/{db}/collections/{collection}/config` (admin): replaces the
/// collection's configuration; the writes after it follow it.
#[utoipa::path(put, path = "/db/{db}/collections/{collection}/config", tag = "collections", params(CollectionPath), request_body(content = folio_protocol::openapi::CollectionConfigBody, content_type = "application/json", description = "members absent are off"), responses((status = 200, description = "replaced; the configuration", body = folio_protocol::openapi::CollectionConfigBody), BodyRefusals, DatabaseRefusals))]
pub async fn put_config(
    State(state): State<AppState>,
    Authorized(path, _): Admin<CollectionPath>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let config = CollectionConfig::from_json(&body)?;
    let engine = state.databases().get(&path.db).await?;
    engine.configure(&path.collection, &config).await?;
    Ok(json_response(StatusCode::OK, Default::default(), &config))
}

/// The query string of a history.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevisionsParams {
    /// how many of the newest to skip (default 0)
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    start: Option<i64>,
    /// 1 to 1000, default 50
    #[param(minimum = 1, maximum = 1000)]
    take: Option<u32>,
}

/// `GET /db/{db}/docs/{collection}/{id}/revisions?start=&take=`: the kept
/// versions, newest first, the current one included (a deleted
/// document's too), and how many are kept.
#[utoipa::path(get, path = "/db/{db}/docs/{collection}/{id}/revisions", tag = "documents", params(DocumentPath, ReadFrom, RevisionsParams), responses((status = 200, description = "{ items: [{ change_vector, revision, etag, last_modified, deleted }], total }, newest first", body = Object), DocumentRefusals))]
pub async fn list_revisions(
    State(state): State<AppState>,
    Authorized(path, _): Read<DocumentPath>,
    read_from: ReadFrom,
    Params(params): Params<RevisionsParams>,
) -> ApiResult<Response> {
    let take = params.take.unwrap_or(DEFAULT_TAKE);
    if take == 0 || take > MAX_REVISIONS_PAGE {
        return Err(ApiError::BadRequest(format!(
            "take must be between 1 and {MAX_REVISIONS_PAGE}"
        )));
    }
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    let start = u64::try_from(params.start.unwrap_or(0))
        .map_err(|_| ApiError::BadRequest("start must be 0 or more".into()))?;
    let page = engine
        .revisions(&path.collection, &path.id, start, take)
        .await?;
    Ok(json_response(StatusCode::OK, Default::default(), &page))
}

/// `/db/{db}/docs/{collection}/{id}/revisions/{change_vector}`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RevisionPath {
    /// database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub db: String,
    /// collection: 1 to 128 of A-Z, a-z, 0-9, _ and -
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub collection: String,
    /// document id, percent-encoded: 1 to 512 bytes of UTF-8, no control characters
    #[param(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
    pub id: String,
    /// the kept version's change vector, as its ETag names it (unquoted)
    #[param(pattern = "^[!-~]{1,255}$")]
    pub change_vector: String,
}

impl FromRequestParts<AppState> for RevisionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Path((db, collection, id, change_vector)) =
            Path::<(String, String, String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::BadRequest(format!("malformed path: {rejection}"))
                })?;
        validate::database(&db)?;
        validate::collection(&collection)?;
        validate::id(&id)?;
        if change_vector.is_empty()
            || change_vector.len() > 255
            || !change_vector.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(ApiError::BadRequest(
                "a change vector is 1 to 255 visible ASCII characters".into(),
            ));
        }
        Ok(RevisionPath {
            db,
            collection,
            id,
            change_vector,
        })
    }
}

impl InDatabase for RevisionPath {
    fn db(&self) -> &str {
        &self.db
    }
}

/// `GET /db/{db}/docs/{collection}/{id}/revisions/{change_vector}`: that
/// kept version's document, its version in `ETag`, `Folio-Revision`,
/// `Folio-Etag`, `Last-Modified` and `Folio-Last-Modified`; `404` when it
/// is not kept (or is the document's deletion).
#[utoipa::path(get, path = "/db/{db}/docs/{collection}/{id}/revisions/{change_vector}", tag = "documents", params(RevisionPath, ReadFrom), responses((status = 200, description = "the kept version's document; ETag is its change vector", content_type = "application/json"), DocumentRefusals))]
pub async fn get_revision(
    State(state): State<AppState>,
    Authorized(path, _): Read<RevisionPath>,
    read_from: ReadFrom,
) -> ApiResult<Response> {
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    let change_vector = ChangeVector::from(path.change_vector.as_str());
    let entry = engine
        .revision(&path.collection, &path.id, &change_vector)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{} #{} keeps no version {}",
                path.collection, path.id, path.change_vector
            ))
        })?;
    let mut response = (
        StatusCode::OK,
        version_headers(&entry.metadata),
        entry.document,
    )
        .into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(time) = HeaderValue::from_str(
        &humantime::format_rfc3339_millis(entry.metadata.last_modified).to_string(),
    ) {
        response_headers.insert(headers::LAST_MODIFIED_PRECISE, time);
    }
    Ok(response)
}
