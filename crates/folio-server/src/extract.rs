//! The handlers' typed arguments: the paths (with validated names), a role
//! the key must have in the path's database, the preconditions, query
//! strings and bodies within the limits. Each refusal is an [`ApiError`]
//! (a problem response), so a handler reads as what it does.
//!
//! Axum runs them in the order of the handler's arguments, which is the
//! order of the checks: the path (`400`), the key (`401`/`403`), the
//! preconditions and the query string (`400`), then the body: its media
//! type (`415`), its size and arrival (`413`, `408`), its text (`400`).

use std::collections::HashMap;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use folio_core::{Batch, BatchId, Command, EngineRef, Position, validate};
use folio_protocol::{Patch, Preconditions, headers, media};
use serde::de::DeserializeOwned;

use crate::auth::Role;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `/db/{db}`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DatabasePath {
    /// database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub db: String,
}

/// `/db/{db}/docs/{collection}`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollectionPath {
    /// database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub db: String,
    /// collection: 1 to 128 of A-Z, a-z, 0-9, _ and -
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub collection: String,
}

/// `/db/{db}/docs/{collection}/{id}`. The route
/// `/db/{db}/docs/{collection}/get` (reading many) is static and shadows
/// the document whose id is `get`; it serves that document's other
/// methods, so a path without `id` names `get`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DocumentPath {
    /// database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub db: String,
    /// collection: 1 to 128 of A-Z, a-z, 0-9, _ and -
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub collection: String,
    /// document id, percent-encoded: 1 to 512 bytes of UTF-8, no control characters
    #[param(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
    pub id: String,
}

/// The path parameters of a request, percent-decoded.
async fn parameters(parts: &mut Parts, state: &AppState) -> ApiResult<HashMap<String, String>> {
    let Path(parameters) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::BadRequest(format!("malformed path: {rejection}")))?;
    Ok(parameters)
}

fn take(parameters: &mut HashMap<String, String>, name: &str) -> ApiResult<String> {
    parameters
        .remove(name)
        .ok_or_else(|| ApiError::BadRequest(format!("no {name} in the path")))
}

impl FromRequestParts<AppState> for DatabasePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let mut parameters = parameters(parts, state).await?;
        let db = take(&mut parameters, "db")?;
        validate::database(&db)?;
        Ok(DatabasePath { db })
    }
}

impl FromRequestParts<AppState> for CollectionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let mut parameters = parameters(parts, state).await?;
        let path = CollectionPath {
            db: take(&mut parameters, "db")?,
            collection: take(&mut parameters, "collection")?,
        };
        validate::database(&path.db)?;
        validate::collection(&path.collection)?;
        Ok(path)
    }
}

impl FromRequestParts<AppState> for DocumentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let mut parameters = parameters(parts, state).await?;
        let path = DocumentPath {
            db: take(&mut parameters, "db")?,
            collection: take(&mut parameters, "collection")?,
            id: parameters.remove("id").unwrap_or_else(|| "get".to_owned()),
        };
        validate::database(&path.db)?;
        validate::collection(&path.collection)?;
        validate::id(&path.id)?;
        Ok(path)
    }
}

/// A path that names a database.
pub trait InDatabase {
    /// The database's name.
    fn db(&self) -> &str;
}

impl InDatabase for DatabasePath {
    fn db(&self) -> &str {
        &self.db
    }
}

impl InDatabase for CollectionPath {
    fn db(&self) -> &str {
        &self.db
    }
}

impl InDatabase for DocumentPath {
    fn db(&self) -> &str {
        &self.db
    }
}

/// The role a handler needs in the path's database.
pub trait Needs {
    /// That role.
    const ROLE: Role;
}

/// Reading.
#[derive(Debug)]
pub enum Reads {}
/// Writing documents.
#[derive(Debug)]
pub enum Writes {}
/// Creating, backing up and restoring databases.
#[derive(Debug)]
pub enum Administers {}

impl Needs for Reads {
    const ROLE: Role = Role::Read;
}
impl Needs for Writes {
    const ROLE: Role = Role::Write;
}
impl Needs for Administers {
    const ROLE: Role = Role::Admin;
}

/// The path `P`, once the request's key holds the role `N` in its database
/// (`401` without a known key, `403` without the role; anyone, without
/// keys configured).
#[derive(Debug)]
pub struct Authorized<P, N>(pub P, pub PhantomData<N>);

/// A path the key may read.
pub type Read<P> = Authorized<P, Reads>;
/// A path the key may write.
pub type Write<P> = Authorized<P, Writes>;
/// A path the key administers.
pub type Admin<P> = Authorized<P, Administers>;

impl<P, N> FromRequestParts<AppState> for Authorized<P, N>
where
    P: FromRequestParts<AppState, Rejection = ApiError> + InDatabase + Send,
    N: Needs,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let path = P::from_request_parts(parts, state).await?;
        state.authorize(&parts.headers, path.db(), N::ROLE)?;
        Ok(Authorized(path, PhantomData))
    }
}

/// The request's preconditions (`400` when one is malformed).
#[derive(Debug)]
pub struct Conditions(pub Preconditions);

impl<S: Sync> FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        Ok(Conditions(Preconditions::from_headers(&parts.headers)?))
    }
}

/// A query string (`400` when it does not parse as `T`).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Query(params) =
            Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::BadRequest(format!("malformed query string: {rejection}"))
                })?;
        Ok(Params(params))
    }
}

/// An `application/json` body as text, within the size limit (not yet
/// parsed: each route parses it its own way).
#[derive(Debug)]
pub struct JsonText(pub String);

impl FromRequest<AppState> for JsonText {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Self> {
        require_content_type(request.headers(), &[media::JSON])?;
        let body = Bytes::from_request(request, state).await;
        Ok(JsonText(body_text(state, body)?))
    }
}

/// A document body: `application/json`, a JSON object within the limits
/// (`validate::document_text`).
#[derive(Debug)]
pub struct JsonDocument(pub String);

impl FromRequest<AppState> for JsonDocument {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Self> {
        let JsonText(text) = JsonText::from_request(request, state).await?;
        check_nesting(state, &text)?;
        validate::document_text(&text)?;
        Ok(JsonDocument(text))
    }
}

/// The body of a `PATCH`: a JSON merge patch (RFC 7396) or a JSON patch
/// (RFC 6902), by its media type, and its text.
#[derive(Debug)]
pub struct PatchBody(pub Patch, pub String);

impl FromRequest<AppState> for PatchBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Self> {
        let media_type =
            require_content_type(request.headers(), &[media::MERGE_PATCH, media::JSON_PATCH])?;
        let body = Bytes::from_request(request, state).await;
        let text = body_text(state, body)?;
        check_nesting(state, &text)?;
        // A repeated key in a patch would be read as its last value.
        validate::json_text(&text, "the patch")?;
        let patch = Patch::parse(&media_type, &text)?;
        Ok(PatchBody(patch, text))
    }
}

/// The idempotency key of a write: the request's `Idempotency-Key` (1 to
/// 255 of `!` to `~`, else `400`), or one of the server's own, so that the
/// engine can send the write again when its commit ends in doubt. The
/// write's batch carries it as its id, with a digest of the request
/// (method, path and body bytes) as what the id stands for: the same
/// request sent again is answered as the first was; another request under
/// a key that committed is `422`.
#[derive(Debug)]
pub struct WriteKey {
    id: BatchId,
    /// Whether the client sent it (only then can a write be a repeat).
    sent: bool,
    /// SHA-256 of the method and the path, the body still to come.
    digest: sha2::Sha256,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        use sha2::Digest;
        let (id, sent) = match parts.headers.get(headers::IDEMPOTENCY_KEY) {
            None => (BatchId::new(), false),
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    ApiError::BadRequest(
                        "Idempotency-Key holds printable ASCII characters only (`!` to `~`)".into(),
                    )
                })?;
                (BatchId::parse(text)?, true)
            }
        };
        let mut digest = sha2::Sha256::new();
        for part in [parts.method.as_str(), parts.uri.path()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        Ok(WriteKey { id, sent, digest })
    }
}

impl utoipa::IntoParams for WriteKey {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![header_param(
            headers::IDEMPOTENCY_KEY,
            "the write's idempotency key: sent again with the key of a write that committed, the \
             write is answered as it was (Idempotency-Replayed: true) and not applied twice",
            BatchId::MAX_LEN,
        )]
    }
}

/// An optional header of 1 to `max_len` printable ASCII characters, as
/// OpenAPI describes it.
fn header_param(name: &str, description: &str, max_len: usize) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(max_len))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}

impl WriteKey {
    /// Whether the client sent the key: a write that may be a repeat.
    pub fn sent(&self) -> bool {
        self.sent
    }

    /// The key.
    pub fn id(&self) -> &BatchId {
        &self.id
    }

    /// What the key stands for: the method, the path and `body`.
    pub fn digest(&self, body: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        let mut digest = self.digest.clone();
        digest.update((body.len() as u64).to_le_bytes());
        digest.update(body);
        digest.finalize().into()
    }

    /// The batch of `commands` for the request whose body is `body`.
    pub fn batch(&self, commands: Vec<Command>, body: &[u8]) -> Batch {
        Batch::from(commands)
            .with_id(self.id.clone())
            .with_digest(self.digest(body))
    }
}

/// Where a read may be served from: after the write whose answer carried
/// the request's `Folio-After` position (a malformed one is `400`; one of
/// another kind of database reads from the primary), else any node,
/// standbys included ([`folio_core::Reads`]).
#[derive(Debug)]
pub struct ReadFrom(pub folio_core::Reads);

impl<S: Send + Sync> FromRequestParts<S> for ReadFrom {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        Ok(ReadFrom(match parts.headers.get(headers::AFTER) {
            None => folio_core::Reads::Any,
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    ApiError::BadRequest(
                        "Folio-After holds printable ASCII characters only (`!` to `~`)".into(),
                    )
                })?;
                folio_core::Reads::After(Position::new(text)?)
            }
        }))
    }
}

impl ReadFrom {
    /// `engine`'s handle for this read.
    pub fn engine(self, engine: EngineRef) -> ApiResult<EngineRef> {
        Ok(engine.reads(self.0)?)
    }
}

impl utoipa::IntoParams for ReadFrom {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![header_param(
            headers::AFTER,
            "a write's Folio-Position: the read is answered only from a state that includes that \
             write (without it, a standby's answer may not show the newest writes yet)",
            folio_core::MAX_POSITION,
        )]
    }
}

/// The request body as text, within the limits; 413 when too large.
fn body_text(state: &AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<String> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_)
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge(state.limits().max_body_bytes)
        }
        other => match crate::deadline::is_body_timeout(&other) {
            Some(timeout) => ApiError::RequestTimeout(timeout),
            None => ApiError::BadRequest(format!("the body could not be read: {other}")),
        },
    })?;
    if body.len() > state.limits().max_body_bytes {
        return Err(ApiError::PayloadTooLarge(state.limits().max_body_bytes));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

/// Checks a JSON body against the nesting limit (before parsing it).
pub(crate) fn check_nesting(state: &AppState, text: &str) -> ApiResult<()> {
    let limit = state.limits().max_nesting;
    match validate::deeper_than(text, limit) {
        Some(depth) => Err(ApiError::BadRequest(format!(
            "the JSON nests {depth} deep; at most {limit} is allowed"
        ))),
        None => Ok(()),
    }
}

/// 415 unless the body's media type is one of `accepted`; the media type.
pub(crate) fn require_content_type(headers: &HeaderMap, accepted: &[&str]) -> ApiResult<String> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match media_type {
        Some(media_type) if accepted.contains(&media_type.as_str()) => Ok(media_type),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "send the body as {} (got {})",
            accepted.join(" or "),
            other.as_deref().unwrap_or("no Content-Type")
        ))),
    }
}
