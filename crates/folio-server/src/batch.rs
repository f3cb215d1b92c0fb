//! `POST /db/{db}/batch` (the session's `save_changes` over HTTP) and
//! `POST /db/{db}/query`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use folio_core::{Batch, Command, CommandKind, CommandResult, Expectation, Query, validate};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::Role;
use crate::documents::{
    EntryBody, body_text, check_nesting, commit, json_response, require_content_type,
};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The most commands one batch may hold.
const MAX_COMMANDS: usize = 10_000;
/// The most results one query page may hold (and the default page).
const MAX_TAKE: u64 = 1000;
const DEFAULT_TAKE: u64 = 100;

/// `/db/{db}`.
#[derive(Deserialize)]
pub struct DatabasePath {
    db: String,
}

pub(crate) fn database_path(path: Result<Path<DatabasePath>, PathRejection>) -> ApiResult<String> {
    let Path(path) =
        path.map_err(|rejection| ApiError::BadRequest(format!("malformed path: {rejection}")))?;
    validate::database(&path.db)?;
    Ok(path.db)
}

/// One command of a batch request (a plain struct rather than a tagged
/// enum, so the document stays raw JSON text, exactly as sent, borrowed
/// from the request body until the command takes its copy).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommand<'a> {
    op: Operation,
    collection: String,
    id: String,
    #[serde(default, borrow)]
    document: Option<&'a RawValue>,
    #[serde(default)]
    expect: Expectation,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Operation {
    Put,
    Delete,
    Check,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    commands: Vec<BatchCommand<'a>>,
}

#[derive(Serialize)]
struct BatchResponse {
    results: Vec<CommandResult>,
}

/// How deep a batch body nests around a document: the body, its
/// `commands` array and the command.
pub const ENVELOPE_DEPTH: usize = 3;

/// Parses a batch request body into commands, validated as a batch
/// (`Batch::validate`): each document nests at most `max_nesting` deep,
/// counted from the document itself, so that whatever a PUT takes can be
/// batched; the body as a whole at most [`ENVELOPE_DEPTH`] more.
pub fn parse_batch(text: &str, max_nesting: usize) -> ApiResult<Vec<Command>> {
    if let Some(depth) = validate::deeper_than(text, max_nesting + ENVELOPE_DEPTH) {
        return Err(ApiError::BadRequest(format!(
            "the batch nests {depth} deep: at most {max_nesting} deep in its documents, {} in all",
            max_nesting + ENVELOPE_DEPTH
        )));
    }
    let request: BatchRequest<'_> = serde_json::from_str(text)
        .map_err(|error| ApiError::BadRequest(format!("malformed batch: {error}")))?;
    if request.commands.len() > MAX_COMMANDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_COMMANDS} commands per batch"
        )));
    }
    let commands: Vec<Command> = request
        .commands
        .into_iter()
        .enumerate()
        .map(|(index, command)| {
            let BatchCommand {
                op,
                collection,
                id,
                document,
                expect,
            } = command;
            match (op, document) {
                (Operation::Put, Some(document)) => {
                    if let Some(depth) = validate::deeper_than(document.get(), max_nesting) {
                        return Err(ApiError::BadRequest(format!(
                            "command {index}: the document nests {depth} deep; \
                             at most {max_nesting} is allowed"
                        )));
                    }
                    Ok(Command::put(collection, id, document.get(), expect))
                }
                (Operation::Put, None) => Err(ApiError::BadRequest(format!(
                    "command {index}: a put needs a document"
                ))),
                (Operation::Delete | Operation::Check, Some(_)) => Err(ApiError::BadRequest(
                    format!("command {index}: only a put carries a document"),
                )),
                (Operation::Delete, None) => Ok(Command::delete(collection, id, expect)),
                (Operation::Check, None) => Ok(Command::check(collection, id, expect)),
            }
        })
        .collect::<ApiResult<_>>()?;
    let batch = Batch::from(commands);
    batch.validate()?;
    Ok(batch.commands)
}

/// `POST /db/{db}/batch`: every command checked and applied atomically;
/// 409 with every conflict, nothing applied, when any expectation fails.
#[utoipa::path(post, path = "/db/{db}/batch", tag = "batch", params(("db" = String, Path, description = "database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body(content = crate::schemas::BatchBody, content_type = "application/json", description = "{ commands: [{ op: put|delete|check, collection, id, document?, expect? }] }"), responses((status = 200, description = "{ results: [...] } in command order", body = Object), (status = 409, description = "expectations failed: every conflict listed, nothing applied", content_type = "application/problem+json"), (status = 428, description = "a command with no expected version would change a document of a collection that requires one; nothing applied", content_type = "application/problem+json"), (status = 400, description = "malformed input", content_type = "application/problem+json"), (status = 401, description = "no or unknown API key", content_type = "application/problem+json"), (status = 403, description = "the key may not do this", content_type = "application/problem+json"), (status = 404, description = "no such database or document", content_type = "application/problem+json"), (status = 413, description = "body too large", content_type = "application/problem+json"), (status = 415, description = "not the media type this route takes", content_type = "application/problem+json")))]
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<DatabasePath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let db = database_path(path)?;
    state.authorize(&headers, &db, Role::Write)?;
    require_content_type(&headers, &["application/json"])?;
    let text = body_text(&state, body)?;
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
    match commit(&state, &engine, commands).await? {
        Ok(results) => Ok(json(StatusCode::OK, &BatchResponse { results })),
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

#[derive(Serialize)]
struct QueryResponse {
    results: Vec<EntryBody>,
    total: u64,
}

/// `POST /db/{db}/query`.
#[utoipa::path(post, path = "/db/{db}/query", tag = "query", params(("db" = String, Path, description = "database: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body(content = crate::schemas::QueryBody, content_type = "application/json", description = "{ collection, where, order_by, skip, take }"), responses((status = 200, description = "{ results: [Entry], total }", body = Object), (status = 400, description = "malformed input", content_type = "application/problem+json"), (status = 401, description = "no or unknown API key", content_type = "application/problem+json"), (status = 403, description = "the key may not do this", content_type = "application/problem+json"), (status = 404, description = "no such database or document", content_type = "application/problem+json"), (status = 413, description = "body too large", content_type = "application/problem+json"), (status = 415, description = "not the media type this route takes", content_type = "application/problem+json")))]
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<DatabasePath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let db = database_path(path)?;
    state.authorize(&headers, &db, Role::Read)?;
    require_content_type(&headers, &["application/json"])?;
    let text = body_text(&state, body)?;
    check_nesting(&state, &text)?;
    let mut query: Query = serde_json::from_str(&text)
        .map_err(|error| ApiError::BadRequest(format!("malformed query: {error}")))?;
    let take = query.take.unwrap_or(DEFAULT_TAKE);
    if take > MAX_TAKE {
        return Err(ApiError::BadRequest(format!("take is at most {MAX_TAKE}")));
    }
    query.take = Some(take);
    query.validate()?;
    let engine = state.databases().get(&db).await?;
    let page = engine.query_page(&query).await?;
    let results = page
        .entries
        .into_iter()
        .map(EntryBody::new)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_example() {
        let commands = parse_batch(
            r#"{ "commands": [
              { "op": "put",    "collection": "people", "id": "p1", "document": { "name": "A" }, "expect": { "change_vector": "A:42-Yk3q" } },
              { "op": "put",    "collection": "people", "id": "p2", "document": { "name": "B" }, "expect": "missing" },
              { "op": "delete", "collection": "people", "id": "p3", "expect": "any" },
              { "op": "check",  "collection": "people", "id": "p4", "expect": { "change_vector": "A:40-Yk3q" } }
            ] }"#,
            validate::MAX_NESTING,
        )
        .unwrap();
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[0].expect, Expectation::version("A:42-Yk3q"));
        assert_eq!(commands[1].expect, Expectation::Missing);
    }

    #[test]
    fn refuses_bad_batches() {
        for bad in [
            r#"{"commands":[{"op":"put","collection":"bad name","id":"x","document":{}}]}"#,
            r#"{"commands":[{"op":"put","collection":"c","id":"x","document":[1]}]}"#,
            r#"{"commands":[{"op":"explode","collection":"c","id":"x"}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":"sometimes"}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":{"change_vector":"A:1-x","extra":1}}]}"#,
            r#"{"commands":[{"op":"check","collection":"c","id":"x","expect":{}}]}"#,
            r#"{"orders":[]}"#,
            r#"{"commands":[{"op":"put","collection":"c","id":"x","document":{}},{"op":"check","collection":"c","id":"x"}]}"#,
        ] {
            assert!(
                parse_batch(bad, validate::MAX_NESTING).is_err(),
                "{bad} must be refused"
            );
        }
    }

    /// The envelope does not count against a document's depth: what PUT
    /// takes can be batched, and no more.
    #[test]
    fn documents_nest_as_deep_as_a_put_allows() {
        let nested = |depth: usize| {
            format!(
                "{}{{}}{}",
                "{\"a\":".repeat(depth - 1),
                "}".repeat(depth - 1)
            )
        };
        let batch = |document: &str| {
            format!(
                r#"{{"commands":[{{"op":"put","collection":"c","id":"x","document":{document},"expect":{{"change_vector":"A:1-x"}}}}]}}"#
            )
        };
        for limit in [1, 4, validate::MAX_NESTING] {
            let commands = parse_batch(&batch(&nested(limit)), limit).unwrap();
            assert_eq!(commands.len(), 1);
            let refused = parse_batch(&batch(&nested(limit + 1)), limit);
            assert!(
                matches!(&refused, Err(ApiError::BadRequest(detail)) if detail.contains(&format!("at most {limit} ")) ),
                "{refused:?}"
            );
        }
        assert!(parse_batch(&batch(&nested(100_000)), validate::MAX_NESTING).is_err());
    }
}
