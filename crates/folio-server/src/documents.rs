//! The document endpoints: `GET`/`HEAD`/`PUT`/`PATCH`/`DELETE` of one
//! document, `POST` to a collection, paging a collection, reading many.
//!
//! Every write becomes one [`Command`] committed through `Engine::commit`;
//! its expectation comes from the request's preconditions
//! (`folio_protocol::conditional`).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::{
    Batch, Command, CommandResult, Committed, ConcurrencyError, Conflict, EngineRef, Entry,
    Expectation, Metadata, StoredDocument, generate_id,
};
use folio_protocol::{
    CollectionList, EntryBody, Evaluation, GetManyRequest, ListResponse, PatchFailure, PatchLimits,
    PreconditionFailure, Preconditions, Results, etag_header,
};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{
    Authorized, CollectionPath, Conditions, DatabasePath, DocumentPath, JsonDocument, JsonText,
    Params, PatchBody, Read, ReadFrom, Write, WriteKey, check_nesting,
};
use crate::responses::{BodyRefusals, DatabaseRefusals, DocumentRefusals, WriteRefusals};
use crate::state::AppState;

/// `Prefer` (RFC 7240) and `Preference-Applied`.
const PREFER: header::HeaderName = header::HeaderName::from_static("prefer");
const PREFERENCE_APPLIED: header::HeaderName =
    header::HeaderName::from_static("preference-applied");

/// How long a write that reads the document before it writes (to judge
/// its preconditions, or to patch it) keeps trying when the document
/// changes between its read and its write; then `503`.
const RETRY_FOR: Duration = Duration::from_secs(5);
/// The longest pause between two such tries (each pause is a random part
/// of a bound that doubles from 1 ms up to this).
const LONGEST_PAUSE: Duration = Duration::from_millis(64);

/// An entry as JSON: the metadata and the document as stored; a stored
/// document that is not JSON is a damaged database.
pub(crate) fn entry_body(entry: Entry) -> ApiResult<EntryBody> {
    EntryBody::new(entry).map_err(|error| {
        tracing::error!(%error, "a stored document is not valid JSON");
        ApiError::Internal(folio_core::EngineErrorKind::Corrupt)
    })
}

/// `ETag`, `Last-Modified`, `Folio-Revision`, `Folio-Etag` of a version.
pub(crate) fn version_headers(metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag_header(&metadata.change_vector));
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(metadata.last_modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    headers.insert("folio-revision", HeaderValue::from(metadata.revision));
    headers.insert("folio-etag", HeaderValue::from(metadata.etag));
    headers
}

/// A JSON response with `headers`.
pub(crate) fn json_response(
    status: StatusCode,
    headers: HeaderMap,
    body: &impl Serialize,
) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, headers, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What a write's answer says of its commit beyond its body: whether it
/// is the answer of a write that had committed under the request's
/// idempotency key, and the position a read sends back (`Folio-After`) to
/// see it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stamp {
    replayed: bool,
    position: Option<folio_core::Position>,
}

impl Stamp {
    /// The stamp of `committed`.
    pub(crate) fn of(committed: &Committed) -> Self {
        Stamp {
            replayed: committed.replayed,
            position: committed.position.clone(),
        }
    }

    /// `response` with `Idempotency-Replayed: true` when replayed, and
    /// `Folio-Position`.
    pub(crate) fn on(&self, mut response: Response) -> Response {
        if self.replayed {
            response.headers_mut().insert(
                folio_protocol::headers::IDEMPOTENCY_REPLAYED,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(position) = &self.position
            && let Ok(value) = HeaderValue::from_str(position.as_str())
        {
            response
                .headers_mut()
                .insert(folio_protocol::headers::POSITION, value);
        }
        response
    }
}

/// Commits a batch, counting latency and conflicts.
pub(crate) async fn commit(
    state: &AppState,
    engine: &EngineRef,
    batch: Batch,
) -> ApiResult<Result<Committed, folio_core::ConcurrencyError>> {
    let started = Instant::now();
    let verdict = engine.commit(batch).await;
    state.metrics().commit(started.elapsed());
    let verdict = verdict?;
    if let Err(conflict) = &verdict {
        state.metrics().conflicts(conflict.conflicts().len());
    }
    Ok(verdict)
}

/// The tries of a write that reads before it writes: as many as fit in
/// [`RETRY_FOR`], with jittered, doubling pauses between them, so that a
/// handful of writers racing for one document all get through.
struct Retry {
    deadline: Instant,
    pause: Duration,
}

impl Retry {
    fn new() -> Self {
        Retry {
            deadline: Instant::now() + RETRY_FOR,
            pause: Duration::from_millis(1),
        }
    }

    /// Waits before the next try; `503` once the time is up.
    async fn again(&mut self) -> ApiResult<()> {
        let random = getrandom::u64().unwrap_or(u64::from(std::process::id()));
        let bound = u64::try_from(self.pause.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let pause = Duration::from_micros(random % bound);
        if Instant::now() + pause >= self.deadline {
            return Err(ApiError::Unavailable(folio_core::EngineErrorKind::Busy));
        }
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Ok(())
    }
}

async fn current_entry(engine: &EngineRef, collection: &str, id: &str) -> ApiResult<Option<Entry>> {
    let mut entries = engine.get(collection, &[id.to_owned()]).await?;
    Ok(entries.pop().flatten())
}

/// A `412` for the document at `path`: `failure`, with what is stored now
/// (`current`, as read to judge the preconditions) as its conflict.
fn refused(
    path: &DocumentPath,
    preconditions: &Preconditions,
    failure: PreconditionFailure,
    current: Option<Entry>,
) -> ApiError {
    let conflict = Conflict::stored(
        path.collection.clone(),
        path.id.clone(),
        preconditions.expected(),
        current.map(StoredDocument::from),
    );
    ApiError::PreconditionFailed(failure.with_conflict(conflict))
}

/// The one result of a one-command batch, and its stamp.
fn only(committed: Committed) -> ApiResult<(CommandResult, Stamp)> {
    let stamp = Stamp::of(&committed);
    match <[CommandResult; 1]>::try_from(committed.into_results()) {
        Ok([result]) => Ok((result, stamp)),
        Err(_) => Err(ApiError::Internal(folio_core::EngineErrorKind::Other)),
    }
}

/// The answer of a write that committed under the request's key (and
/// body) before, if one did: a write that reads first learns it before
/// judging its preconditions against a document it may have changed
/// itself. An empty batch with the key asks the engine.
async fn committed_before(
    engine: &EngineRef,
    key: &WriteKey,
    body: &[u8],
) -> ApiResult<Option<(CommandResult, Stamp)>> {
    if !key.sent() {
        return Ok(None);
    }
    match engine.commit(key.batch(Vec::new(), body)).await? {
        Ok(committed) if committed.replayed => only(committed).map(Some),
        _ => Ok(None),
    }
}

/// Writes one document (a put or a delete) under the request's
/// preconditions, and in a collection that requires them (`guarded`),
/// only as far as they allow:
///
/// * one strong `If-Match` tag, or `If-None-Match: *` alone, is the
///   write's expectation (no read);
/// * no precondition: an unconditional write, or in a guarded collection
///   one that may only create (a document exists: `428`);
/// * otherwise the document's metadata is read, the preconditions judged
///   against it (`412`, or `428` in a guarded collection when they name no
///   version and the document exists), and the write expects what was
///   read; if the document changed in between, all of it again.
///
/// Every try is one batch with the request's key (`key`, for the body
/// `body`): a repeat of a write that committed is answered as it was
/// (its stamp says replayed), without judging its preconditions again.
async fn write_document(
    state: &AppState,
    engine: &EngineRef,
    path: &DocumentPath,
    preconditions: &Preconditions,
    (key, body): (&WriteKey, &[u8]),
    command: impl Fn(Expectation) -> Command,
) -> ApiResult<(CommandResult, Stamp)> {
    let guarded = state.requires_precondition(&path.db, &path.collection);
    let batch = |expect| key.batch(vec![command(expect)], body);
    if let Some(expect) = preconditions.without_reading() {
        return match commit(state, engine, batch(expect)).await? {
            Ok(committed) => only(committed),
            Err(refusal) => {
                let conflict = refusal.into_conflicts().swap_remove(0);
                Err(ApiError::PreconditionFailed(
                    preconditions
                        .refused(conflict.actual())
                        .with_conflict(conflict),
                ))
            }
        };
    }
    if preconditions.is_empty() {
        let expect = if guarded {
            Expectation::Missing
        } else {
            Expectation::Any
        };
        return match commit(state, engine, batch(expect)).await? {
            Ok(committed) => only(committed),
            // Only the guarded write expects anything: the document exists.
            Err(_) => Err(precondition_required(&path.collection)),
        };
    }
    if let Some(answer) = committed_before(engine, key, body).await? {
        return Ok(answer);
    }
    let mut retry = Retry::new();
    loop {
        let current = current_entry(engine, &path.collection, &path.id).await?;
        let metadata = current.as_ref().map(|entry| &entry.metadata);
        if let Evaluation::Failed(failure) = preconditions.evaluate(metadata, false) {
            return Err(refused(path, preconditions, failure, current));
        }
        if guarded && current.is_some() && !preconditions.names_version() {
            return Err(precondition_required(&path.collection));
        }
        let expect = current.map_or(Expectation::Missing, |current| {
            Expectation::version(current.metadata.change_vector)
        });
        if let Ok(committed) = commit(state, engine, batch(expect)).await? {
            return only(committed);
        }
        // Changed since the read: judge the preconditions again.
        retry.again().await?;
    }
}

/// `GET` and `HEAD /db/{db}/docs/{collection}/{id}`.
#[utoipa::path(get, path = "/db/{db}/docs/{collection}/{id}", tag = "documents", params(DocumentPath, ReadFrom), responses((status = 200, description = "the document as stored; ETag is its change vector", content_type = "application/json"), (status = 304, description = "If-None-Match matched, or (without If-None-Match) not modified since If-Modified-Since"), DocumentRefusals, (status = 412, description = "If-Match or If-Unmodified-Since failed", content_type = "application/problem+json")))]
pub async fn get_document(
    State(state): State<AppState>,
    Authorized(path, _): Read<DocumentPath>,
    read_from: ReadFrom,
    Conditions(preconditions): Conditions,
) -> ApiResult<Response> {
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    // A missing document is 404 whatever the preconditions (RFC 9110
    // §13.2.1: they apply only where the answer would be 2xx or 412).
    let entry = engine
        .get(&path.collection, std::slice::from_ref(&path.id))
        .await?
        .pop()
        .flatten()
        .ok_or_else(|| {
            ApiError::NotFound(format!("no document {} #{}", path.collection, path.id))
        })?;
    let response_headers = version_headers(&entry.metadata);
    match preconditions.evaluate(Some(&entry.metadata), true) {
        Evaluation::Proceed => {}
        Evaluation::NotModified => {
            return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
        }
        Evaluation::Failed(failure) => {
            return Err(refused(&path, &preconditions, failure, Some(entry)));
        }
    }
    let mut response = (StatusCode::OK, response_headers, entry.document).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `PUT /db/{db}/docs/{collection}/{id}`.
#[utoipa::path(put, path = "/db/{db}/docs/{collection}/{id}", tag = "documents", params(DocumentPath, WriteKey), request_body(content = Object, content_type = "application/json", description = "the document, a JSON object"), responses((status = 200, description = "updated; the new metadata", body = Object), (status = 201, description = "created; the metadata", body = Object), (status = 409, description = "Prefer: merge with If-Match: a value was changed both by the request and since its version (overlaps), or the document was deleted since", content_type = "application/problem+json"), (status = 412, description = "If-Match, If-Unmodified-Since or If-None-Match failed (with Prefer: merge, when the collection does not keep the If-Match version)", content_type = "application/problem+json"), (status = 413, description = "body too large", content_type = "application/problem+json"), (status = 415, description = "not application/json", content_type = "application/problem+json"), (status = 428, description = "this collection requires If-Match with the version read to change a document", content_type = "application/problem+json"), DocumentRefusals, (status = 503, description = "the document kept changing while the preconditions were judged; try again", content_type = "application/problem+json"), WriteRefusals))]
pub async fn put_document(
    State(state): State<AppState>,
    Authorized(path, _): Write<DocumentPath>,
    Conditions(preconditions): Conditions,
    key: WriteKey,
    request_headers: HeaderMap,
    JsonDocument(document): JsonDocument,
) -> ApiResult<Response> {
    let engine = state.databases().get(&path.db).await?;
    if prefers_merge(&request_headers)
        && let Some(Expectation::Version { change_vector }) = preconditions.without_reading()
    {
        return merge_put(&state, &engine, &path, &key, document, change_vector).await;
    }
    let put = |expect| {
        Command::put(
            path.collection.clone(),
            path.id.clone(),
            document.clone(),
            expect,
        )
    };
    let (result, stamp) = write_document(
        &state,
        &engine,
        &path,
        &preconditions,
        (&key, document.as_bytes()),
        put,
    )
    .await?;
    put_answer(result, stamp, HeaderMap::new())
}

/// The answer to a `PUT` that wrote: `201` when it created the document,
/// else `200`, with its version headers (and `extra` ones) and metadata.
fn put_answer(result: CommandResult, stamp: Stamp, extra: HeaderMap) -> ApiResult<Response> {
    let CommandResult::Put(metadata) = result else {
        return Err(ApiError::Internal(folio_core::EngineErrorKind::Other));
    };
    let status = if metadata.revision == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response_headers = version_headers(&metadata);
    response_headers.extend(extra);
    Ok(stamp.on(json_response(status, response_headers, &metadata)))
}

/// Whether the request says `Prefer: merge` (RFC 7240; other preferences
/// are ignored).
fn prefers_merge(request_headers: &HeaderMap) -> bool {
    request_headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            preference
                .split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("merge"))
        })
}

/// `PUT` with `If-Match: "<base>"` and `Prefer: merge`: written as is when
/// `base` is current; otherwise merged three ways with the version stored
/// now (base: the kept version `base`, from the collection's revisions;
/// mine: the request's document) and written conditional on it, again
/// while it keeps changing (`503` when it does not stop). `200` with
/// `Preference-Applied: merge` when merged; `409` naming the overlaps when
/// both sides changed a value (`[""]` when the document was deleted);
/// `412` as without the preference when `base` is not kept.
async fn merge_put(
    state: &AppState,
    engine: &EngineRef,
    path: &DocumentPath,
    key: &WriteKey,
    mine: String,
    base: folio_core::ChangeVector,
) -> ApiResult<Response> {
    let mut document = mine.clone();
    let mut expect = Expectation::version(base.clone());
    let mut merged = false;
    // Base and mine stay what they are through the rounds: read and
    // parsed at the first refusal, once.
    let mut sides: Option<(serde_json::Value, serde_json::Value)> = None;
    let mut retry = Retry::new();
    loop {
        let command = Command::put(
            path.collection.clone(),
            path.id.clone(),
            document.clone(),
            expect.clone(),
        );
        let refusal = match commit(state, engine, key.batch(vec![command], mine.as_bytes())).await?
        {
            Ok(committed) => {
                let (result, stamp) = only(committed)?;
                let mut applied = HeaderMap::new();
                if merged {
                    applied.insert(PREFERENCE_APPLIED, HeaderValue::from_static("merge"));
                }
                return put_answer(result, stamp, applied);
            }
            Err(refusal) => refusal,
        };
        let conflict = refusal.into_conflicts().swap_remove(0);
        let parse = |json: &str| {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|_| ApiError::Internal(folio_core::EngineErrorKind::Corrupt))
        };
        let (base_value, mine_value) = match &sides {
            Some(sides) => sides,
            None => {
                let kept = engine.revision(&path.collection, &path.id, &base).await?;
                let Some(kept) = kept else {
                    let failure = PreconditionFailure {
                        detail: "If-Match: the document has changed since that version, which the \
                         collection does not keep (its revisions), so it cannot be merged"
                            .into(),
                        actual: conflict.actual().map(ToString::to_string),
                        conflict: None,
                    };
                    return Err(ApiError::PreconditionFailed(
                        failure.with_conflict(conflict),
                    ));
                };
                let mine_value = serde_json::from_str(&mine)
                    .map_err(|error| ApiError::BadRequest(error.to_string()))?;
                sides.insert((parse(&kept.document)?, mine_value))
            }
        };
        let Some(theirs) = conflict.current() else {
            return Err(ApiError::Conflict(ConcurrencyError::new(vec![
                conflict.with_overlaps(vec![String::new()]),
            ])));
        };
        match folio_core::merge(base_value, &parse(&theirs.document)?, mine_value) {
            Ok(value) => {
                document = value.to_string();
                expect = Expectation::version(theirs.change_vector.clone());
                merged = true;
            }
            Err(overlaps) => {
                return Err(ApiError::Conflict(ConcurrencyError::new(vec![
                    conflict.with_overlaps(overlaps),
                ])));
            }
        }
        // Theirs may move again before the merge is written: then merge
        // again, for a bounded time.
        retry.again().await?;
    }
}

fn precondition_required(collection: &str) -> ApiError {
    ApiError::PreconditionRequired(format!(
        "documents of {collection} may only be changed with If-Match and the change vector \
         you read (If-Match: *, If-None-Match with entity tags and If-Unmodified-Since name \
         no version); without one a write may only create"
    ))
}

/// `POST /db/{db}/docs/{collection}`: a new document with a generated id.
#[utoipa::path(post, path = "/db/{db}/docs/{collection}", tag = "documents", params(CollectionPath, WriteKey), request_body(content = Object, content_type = "application/json"), responses((status = 201, description = "created with a generated id; Location names it", body = Object), (status = 412, description = "If-Match with an entity tag (a collection has none), or If-None-Match: *", content_type = "application/problem+json"), (status = 415, description = "not application/json", content_type = "application/problem+json"), DocumentRefusals, (status = 413, description = "body too large", content_type = "application/problem+json"), WriteRefusals))]
pub async fn post_document(
    State(state): State<AppState>,
    Authorized(path, _): Write<CollectionPath>,
    Conditions(preconditions): Conditions,
    key: WriteKey,
    JsonDocument(document): JsonDocument,
) -> ApiResult<Response> {
    let engine = state.databases().get(&path.db).await?;
    if let Evaluation::Failed(failure) = preconditions.evaluate_collection() {
        return Err(ApiError::PreconditionFailed(failure));
    }
    // A repeat is answered with the document the first request created
    // (the batch's id stands for the request, not for this new id).
    let command = Command::put(
        path.collection.clone(),
        generate_id(),
        document.clone(),
        Expectation::Missing,
    );
    let committed = commit(
        &state,
        &engine,
        key.batch(vec![command], document.as_bytes()),
    )
    .await?
    .map_err(ApiError::Conflict)?;
    let (result, stamp) = only(committed)?;
    let CommandResult::Put(metadata) = result else {
        return Err(ApiError::Internal(folio_core::EngineErrorKind::Other));
    };
    let mut response_headers = version_headers(&metadata);
    let location = format!(
        "/db/{}/docs/{}/{}",
        path.db,
        path.collection,
        percent_encoding::utf8_percent_encode(&metadata.id, percent_encoding::NON_ALPHANUMERIC)
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response_headers.insert(header::LOCATION, location);
    }
    Ok(stamp.on(json_response(
        StatusCode::CREATED,
        response_headers,
        &metadata,
    )))
}

/// `DELETE /db/{db}/docs/{collection}/{id}`.
#[utoipa::path(delete, path = "/db/{db}/docs/{collection}/{id}", tag = "documents", params(DocumentPath, WriteKey), responses((status = 204, description = "deleted, or there was nothing to delete"), (status = 412, description = "If-Match, If-Unmodified-Since or If-None-Match failed", content_type = "application/problem+json"), (status = 428, description = "this collection requires If-Match with the version read to delete a document", content_type = "application/problem+json"), (status = 503, description = "the document kept changing while the preconditions were judged; try again", content_type = "application/problem+json"), DocumentRefusals, WriteRefusals))]
pub async fn delete_document(
    State(state): State<AppState>,
    Authorized(path, _): Write<DocumentPath>,
    Conditions(preconditions): Conditions,
    key: WriteKey,
) -> ApiResult<Response> {
    let engine = state.databases().get(&path.db).await?;
    let delete = |expect| Command::delete(path.collection.clone(), path.id.clone(), expect);
    let (_, stamp) =
        write_document(&state, &engine, &path, &preconditions, (&key, &[]), delete).await?;
    Ok(stamp.on(StatusCode::NO_CONTENT.into_response()))
}

/// `PATCH /db/{db}/docs/{collection}/{id}`: a JSON merge patch (RFC 7396)
/// or a JSON patch (RFC 6902), applied to the current version and written
/// only if that version is still current.
#[utoipa::path(patch, path = "/db/{db}/docs/{collection}/{id}", tag = "documents", params(DocumentPath, WriteKey), request_body(content = Object, content_type = "application/merge-patch+json", description = "a JSON merge patch (RFC 7396), or a JSON patch (RFC 6902) as application/json-patch+json"), responses((status = 200, description = "patched; the new metadata", body = Object), (status = 409, description = "a test operation of the JSON patch failed", content_type = "application/problem+json"), (status = 412, description = "If-Match, If-Unmodified-Since or If-None-Match failed", content_type = "application/problem+json"), (status = 415, description = "not a patch media type", content_type = "application/problem+json"), (status = 428, description = "this collection requires If-Match with the version read to change a document", content_type = "application/problem+json"), (status = 503, description = "the document kept changing while it was patched; try again", content_type = "application/problem+json"), DocumentRefusals, (status = 413, description = "body too large", content_type = "application/problem+json"), WriteRefusals))]
pub async fn patch_document(
    State(state): State<AppState>,
    Authorized(path, _): Write<DocumentPath>,
    Conditions(preconditions): Conditions,
    key: WriteKey,
    PatchBody(patch, text): PatchBody,
) -> ApiResult<Response> {
    let engine = state.databases().get(&path.db).await?;
    let guarded = state.requires_precondition(&path.db, &path.collection);
    let patched_response = |(result, stamp): (CommandResult, Stamp)| {
        let CommandResult::Put(metadata) = result else {
            return Err(ApiError::Internal(folio_core::EngineErrorKind::Other));
        };
        Ok(stamp.on(json_response(
            StatusCode::OK,
            version_headers(&metadata),
            &metadata,
        )))
    };
    // A repeat of a patch that committed: its answer, not a second patch.
    if let Some(answer) = committed_before(&engine, &key, text.as_bytes()).await? {
        return patched_response(answer);
    }
    let mut retry = Retry::new();
    loop {
        // A missing document is 404 whatever the preconditions: there is
        // nothing to patch (RFC 9110 §13.2.1).
        let entry = engine
            .get(&path.collection, std::slice::from_ref(&path.id))
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| {
                ApiError::NotFound(format!("no document {} #{}", path.collection, path.id))
            })?;
        if let Evaluation::Failed(failure) = preconditions.evaluate(Some(&entry.metadata), false) {
            return Err(refused(&path, &preconditions, failure, Some(entry)));
        }
        if guarded && !preconditions.names_version() {
            return Err(precondition_required(&path.collection));
        }
        let current = entry.metadata.change_vector;
        let limits = PatchLimits {
            max_bytes: state.limits().max_body_bytes,
            max_nesting: state.limits().max_nesting,
        };
        let patched = patch
            .apply(&entry.document, limits)
            .map_err(|error| match error {
                PatchFailure::Invalid(detail) => ApiError::BadRequest(detail),
                PatchFailure::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
                PatchFailure::Damaged => ApiError::Internal(folio_core::EngineErrorKind::Corrupt),
                PatchFailure::Internal(error) => {
                    tracing::error!(%error, "a patch could not be applied");
                    ApiError::Internal(folio_core::EngineErrorKind::Other)
                }
                PatchFailure::TestFailed { operation, path } => ApiError::PatchTestFailed {
                    detail: format!(
                        "operation {operation} of the JSON patch tests {path}, which does not hold \
                         for the version {current}; read the document again"
                    ),
                    failed_test: path,
                    actual: current.to_string(),
                },
            })?;
        // Written only if the version patched is still current.
        let command = Command::put(
            path.collection.clone(),
            path.id.clone(),
            patched,
            Expectation::version(current),
        );
        let batch = key.batch(vec![command], text.as_bytes());
        if let Ok(committed) = commit(&state, &engine, batch).await? {
            return patched_response(only(committed)?);
        }
        // Changed between the read and the write: judge the preconditions
        // again, and patch the newer version.
        retry.again().await?;
    }
}

/// The query string of a collection listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// list ids after this one (a document id)
    #[param(pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,512}$")]
    after: Option<String>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The most entries a listing returns in one page.
const MAX_PAGE: usize = 1000;

/// `GET /db/{db}/collections`: the collections that hold documents, in
/// order of name, each with how many (one snapshot).
#[utoipa::path(get, path = "/db/{db}/collections", tag = "documents", params(DatabasePath, ReadFrom), responses((status = 200, description = "{ collections: [{ name, documents }] }", body = folio_protocol::openapi::CollectionsBody), DatabaseRefusals))]
pub async fn list_collections(
    State(state): State<AppState>,
    Authorized(path, _): Read<DatabasePath>,
    read_from: ReadFrom,
) -> ApiResult<Response> {
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    let collections = engine.collections().await?;
    Ok(json_response(
        StatusCode::OK,
        HeaderMap::new(),
        &CollectionList { collections },
    ))
}

/// `GET /db/{db}/docs/{collection}?after={id}&limit={n}`: stable paging by id.
#[utoipa::path(get, path = "/db/{db}/docs/{collection}", tag = "documents", params(CollectionPath, ReadFrom, ListParams), responses((status = 200, description = "{ items: [Entry], next: id or null }", body = Object), DocumentRefusals))]
pub async fn list_documents(
    State(state): State<AppState>,
    Authorized(path, _): Read<CollectionPath>,
    read_from: ReadFrom,
    Params(params): Params<ListParams>,
) -> ApiResult<Response> {
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    let entries = engine
        .scan(&path.collection, params.after.as_deref(), limit + 1)
        .await?;
    let more = entries.len() > limit;
    let items = entries
        .into_iter()
        .take(limit)
        .map(entry_body)
        .collect::<ApiResult<Vec<_>>>()?;
    let next = more
        .then(|| items.last().map(|item| item.id.clone()))
        .flatten();
    Ok(json_response(
        StatusCode::OK,
        HeaderMap::new(),
        &ListResponse { items, next },
    ))
}

/// The most ids one read of many may name.
const MAX_IDS: usize = 1000;

/// `POST /db/{db}/docs/{collection}/get` `{ "ids": [...] }`.
#[utoipa::path(post, path = "/db/{db}/docs/{collection}/get", tag = "documents", params(CollectionPath, ReadFrom), request_body(content = folio_protocol::openapi::GetManyBody, content_type = "application/json", description = "{ ids: [string] }"), responses((status = 200, description = "{ results: [Entry or null] } in the order of ids", body = Object), DocumentRefusals, BodyRefusals))]
pub async fn get_many(
    State(state): State<AppState>,
    Authorized(path, _): Read<CollectionPath>,
    read_from: ReadFrom,
    JsonText(text): JsonText,
) -> ApiResult<Response> {
    check_nesting(&state, &text)?;
    let request: GetManyRequest<'_> = serde_json::from_str(&text)
        .map_err(|error| ApiError::BadRequest(format!("expected {{\"ids\": [...]}}: {error}")))?;
    if request.ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} ids per request"
        )));
    }
    let engine = read_from.engine(state.databases().get(&path.db).await?)?;
    let results = engine
        .get(&path.collection, &request.ids)
        .await?
        .into_iter()
        .map(|entry| entry.map(entry_body).transpose())
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json_response(
        StatusCode::OK,
        HeaderMap::new(),
        &Results { results },
    ))
}
