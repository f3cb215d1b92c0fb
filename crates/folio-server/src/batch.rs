//! `POST /db/{db}/batch` (the session's `save_changes` over HTTP) and
//! `POST /db/{db}/query`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use folio_core::{CommandKind, Expectation, Query};
use folio_protocol::{BatchResponse, QueryResponse, parse_batch};
use serde::Serialize;

use crate::documents::{Stamp, commit, entry_body, json_response};
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    Authorized, DatabasePath, JsonText, Read, ReadFrom, Write, WriteKey, check_nesting,
};
use crate::responses::{BodyRefusals, DocumentRefusals, WriteRefusals};
use crate::state::AppState;

/// The most results one query page may hold (and the default page).
const MAX_TAKE: u64 = 1000;
const DEFAULT_TAKE: u64 = 100;

/// `POST /db/{db}/batch`: every command checked and applied atomically;
/// 409 with every conflict, nothing applied, when any expectation fails.
#[utoipa::path(post, path = "/db/{db}/batch", tag = "batch", params(DatabasePath, WriteKey), request_body(content = folio_protocol::openapi::BatchBody, content_type = "application/json", description = "{ commands: [{ op: put|delete|check, collection, id, document?, expect? }] }"), responses((status = 200, description = "{ results: [...] } in command order", body = Object), (status = 409, description = "expectations failed: every conflict listed, nothing applied", content_type = "application/problem+json"), (status = 428, description = "a command with no expected version would change a document of a collection that requires one; nothing applied", content_type = "application/problem+json"), DocumentRefusals, BodyRefusals, WriteRefusals))]
pub async fn batch(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Write<DatabasePath>,
    key: WriteKey,
    JsonText(text): JsonText,
) -> ApiResult<Response> {
    let mut commands = parse_batch(&text, state.limits().max_nesting)?;
    // In a collection that requires preconditions, a write that names no
    // version may only create: it is sent expecting no document.
    let mut guarded = Vec::new();
    for command in &mut commands {
        let writes = !matches!(command.kind, CommandKind::Check);
        if writes
            && command.expect == Expectation::Any
            && state.requires_precondition(&db, &command.collection)
        {
            command.expect = Expectation::Missing;
            guarded.push((command.collection.clone(), command.id.clone()));
        }
    }
    let engine = state.databases().get(&db).await?;
    match commit(&state, &engine, key.batch(commands, text.as_bytes())).await? {
        Ok(committed) => {
            let stamp = Stamp::of(&committed);
            let results = committed.into_results();
            Ok(stamp.on(json(StatusCode::OK, &BatchResponse { results })))
        }
        Err(conflict) => {
            // A batch names each document once: a conflict of a guarded
            // write is that document existing.
            let required: Vec<String> = conflict
                .conflicts()
                .iter()
                .filter(|conflict| {
                    guarded.iter().any(|(collection, id)| {
                        conflict.collection() == collection && conflict.id() == id
                    })
                })
                .map(|conflict| format!("{} #{}", conflict.collection(), conflict.id()))
                .collect();
            if required.is_empty() {
                return Err(ApiError::Conflict(conflict));
            }
            Err(ApiError::PreconditionRequired(format!(
                "nothing was written: {} exist{} in a collection that requires a precondition to \
                 change a document; send the change vector you read as the command's expect",
                required.join(", "),
                if required.len() == 1 { "s" } else { "" }
            )))
        }
    }
}

/// `POST /db/{db}/query`.
#[utoipa::path(post, path = "/db/{db}/query", tag = "query", params(DatabasePath, ReadFrom), request_body(content = folio_protocol::openapi::QueryBody, content_type = "application/json", description = "{ collection, where, order_by, skip, take }"), responses((status = 200, description = "{ results: [Entry], total }", body = Object), DocumentRefusals, BodyRefusals))]
pub async fn query(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Read<DatabasePath>,
    read_from: ReadFrom,
    JsonText(text): JsonText,
) -> ApiResult<Response> {
    check_nesting(&state, &text)?;
    let mut query: Query = serde_json::from_str(&text)
        .map_err(|error| ApiError::BadRequest(format!("malformed query: {error}")))?;
    let take = query.take.unwrap_or(DEFAULT_TAKE);
    if take > MAX_TAKE {
        return Err(ApiError::BadRequest(format!("take is at most {MAX_TAKE}")));
    }
    query.take = Some(take);
    query.validate()?;
    let engine = read_from.engine(state.databases().get(&db).await?)?;
    let page = engine.query_page(&query).await?;
    let results = page
        .entries
        .into_iter()
        .map(entry_body)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json(
        StatusCode::OK,
        &QueryResponse {
            results,
            total: page.total,
        },
    ))
}

/// A JSON response with no extra headers.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    json_response(status, HeaderMap::new(), body)
}
