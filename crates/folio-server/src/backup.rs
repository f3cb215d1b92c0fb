//! Backups, restores and exports over HTTP.
//!
//! * `GET /db/{db}/backup` (admin): a consistent snapshot of the live
//!   database as one file, streamed: an embedded Folio database file
//!   (`application/vnd.sqlite3`). An embedded database is copied by SQLite
//!   from a read connection of its own while the writer goes on
//!   ([`folio_sqlite::SqliteEngine::backup_to`]); a PostgreSQL database is
//!   read in one `REPEATABLE READ` transaction and written in the same
//!   format ([`folio_sqlite::BackupWriter`]). The embedded engine's file is
//!   locked to this process, so a backup of a live database goes through
//!   the server that holds it.
//! * `POST /db/{db}/restore` (admin): a backup file becomes the **new**
//!   database `db` (absent, or empty and unused: otherwise `409`), with
//!   every document, etag, revision, time, the changes feed, the indexes
//!   and the database id (`?new_id=true` gives it one of its own). The
//!   file is checked whole first (layout, SQLite's integrity check,
//!   Folio's invariants); a file that fails is `400` and nothing is made.
//!   A restore builds a database; it never writes into one that serves.
//! * `GET /db/{db}/export` (read): every live document, of every
//!   collection or of one, from one snapshot, as JSON Lines (one entry with
//!   its collection and metadata per line, by collection then id);
//!   `Folio-Last-Etag` says where to follow the changes feed from to miss
//!   nothing written after it.
//!
//! The temporary files (the snapshot being streamed, the upload being
//! checked) live in the data directory (embedded) or the system's
//! temporary directory (PostgreSQL), and are removed when the request
//! ends, whatever happened.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::{
    Identity, SnapshotContents, SnapshotPart, SnapshotReader, copy_snapshot, validate,
};
use folio_protocol::{ChangeVectors, EntryBody, RestoreSummary, media};
use folio_sqlite::{BackupWriter, backup_summary};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::databases::{OpenEngine, blocking, io_failure};
use crate::documents::json_response;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Authorized, DatabasePath, Params, Read, require_content_type};
use crate::responses::DatabaseRefusals;
use crate::state::AppState;

/// Whether `path` is a restore's (`/db/{db}/restore`): its body is as long
/// as a database, so it gets a deadline between chunks instead of one for
/// the whole body (see the `deadline` module).
pub(crate) fn is_restore_path(path: &str) -> bool {
    path.strip_prefix("/db/")
        .and_then(|rest| rest.strip_suffix("/restore"))
        .is_some_and(|database| !database.is_empty() && !database.contains('/'))
}

/// A temporary file, removed (with whatever SQLite made beside it) when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new name in `directory`, hidden (no database name starts with a
    /// dot, so listings never show it).
    fn new(directory: &Path, database: &str, purpose: &str) -> Self {
        Scratch(directory.join(format!(
            ".{database}.{purpose}-{}.sqlite",
            folio_core::generate_id()
        )))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut path = self.0.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `GET /db/{db}/backup` (admin): the database as one file, from one
/// snapshot taken while writes go on.
#[utoipa::path(get, path = "/db/{db}/backup", tag = "backups", params(DatabasePath), responses((status = 200, description = "the backup: an embedded Folio database file (SQLite) holding one consistent snapshot; restore it with POST /db/{db}/restore or folio restore. Folio-Database-Id: its database id; Folio-Last-Etag: every change up to it is in the backup", body = folio_protocol::openapi::BackupFileBody, content_type = "application/vnd.sqlite3"), (status = 400, description = "malformed input", content_type = "application/problem+json"), (status = 401, description = "no or unknown API key", content_type = "application/problem+json"), (status = 403, description = "the key may not do this (admin role needed)", content_type = "application/problem+json"), (status = 404, description = "no such database", content_type = "application/problem+json"), (status = 507, description = "the disk is full (insufficient-storage): the server cannot write the backup's file", content_type = "application/problem+json")))]
pub async fn backup(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Admin<DatabasePath>,
) -> ApiResult<Response> {
    let engine = state.databases().handle(&db).await?;
    let scratch = Scratch::new(&state.databases().scratch_directory()?, &db, "backup");
    let summary = match &engine {
        OpenEngine::Embedded(engine) => engine.backup_to(&scratch.0).await?,
        OpenEngine::Postgres(engine) => {
            let mut reader = engine.snapshot(SnapshotContents::Everything).await?;
            let writer = BackupWriter::create(&scratch.0, reader.header()).await?;
            copy_snapshot(&mut reader, Box::new(writer)).await?;
            let file = scratch.0.clone();
            blocking(move || backup_summary(&file)).await?
        }
        OpenEngine::Attached(_) => return Err(not_an_engine_of_ours(&db)),
    };
    let file = tokio::fs::File::open(&scratch.0)
        .await
        .map_err(|error| io_failure("opening the backup file", &error))?;
    // The open file keeps the data; the name goes now, whatever happens to
    // the download.
    drop(scratch);
    let mut response =
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10))
            .into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::BACKUP),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(summary.bytes));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{db}.sqlite\"")) {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(summary.header.database_id.as_str()) {
        response_headers.insert("folio-database-id", value);
    }
    response_headers.insert(
        "folio-last-etag",
        HeaderValue::from(summary.header.feed_position),
    );
    Ok(response)
}

/// The query string of a restore.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// give the new database an id of its own: no change vector of the backup's source matches its versions (default false: the source's id, so versions clients hold stay valid)
    #[serde(default)]
    #[param(required = false)]
    new_id: bool,
}

/// `POST /db/{db}/restore` (admin): the backup in the body becomes the new
/// database `db`.
#[utoipa::path(post, path = "/db/{db}/restore", tag = "backups", params(DatabasePath, RestoreParams), request_body(content((folio_protocol::openapi::BackupFileBody = "application/vnd.sqlite3"), (folio_protocol::openapi::BackupFileBody = "application/octet-stream")), description = "a backup file, as GET /db/{db}/backup writes it"), responses((status = 201, description = "restored: { database, database_id, change_vectors: kept|new, last_etag, documents, collections, tombstones, changes, indexes }", body = Object), (status = 400, description = "not a usable backup (not a Folio database, damaged, a newer layout), or malformed input", content_type = "application/problem+json"), (status = 401, description = "no or unknown API key", content_type = "application/problem+json"), (status = 403, description = "the key may not do this (admin role needed), or the server holds as many databases as it may (database-limit)", content_type = "application/problem+json"), (status = 409, description = "the database exists and holds data, or is in use", content_type = "application/problem+json"), (status = 415, description = "not application/vnd.sqlite3 or application/octet-stream", content_type = "application/problem+json"), (status = 507, description = "the disk is full (insufficient-storage): nothing was restored", content_type = "application/problem+json")))]
pub async fn restore(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Admin<DatabasePath>,
    Params(params): Params<RestoreParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_content_type(&headers, &[media::BACKUP, "application/octet-stream"])?;
    let identity = if params.new_id {
        Identity::New
    } else {
        Identity::Keep
    };
    state.databases().check_restorable(&db).await?;
    let scratch = Scratch::new(&state.databases().scratch_directory()?, &db, "restore");
    receive(body, &scratch.0).await?;
    let restored = state.databases().restore(&db, &scratch.0, identity).await?;
    tracing::info!(
        database = %db,
        documents = restored.counts.documents,
        last_etag = restored.header.last_etag,
        "restored a backup"
    );
    let counts = restored.counts;
    Ok(json_response(
        StatusCode::CREATED,
        HeaderMap::new(),
        &RestoreSummary {
            database: db,
            database_id: restored.header.database_id.to_string(),
            change_vectors: match identity {
                Identity::Keep => ChangeVectors::Kept,
                Identity::New => ChangeVectors::New,
            },
            last_etag: restored.header.last_etag,
            documents: counts.documents,
            collections: counts.collections,
            tombstones: counts.tombstones,
            changes: counts.changes,
            indexes: counts.indexes,
        },
    ))
}

/// Writes the request body to the new file `path`.
async fn receive(body: Body, path: &Path) -> ApiResult<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|error| io_failure("creating the upload's file", &error))?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| match crate::deadline::is_body_timeout(&error) {
            Some(timeout) => ApiError::RequestTimeout(timeout),
            None => ApiError::BadRequest(format!("the body could not be read: {error}")),
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|error| io_failure("writing the upload", &error))?;
    }
    file.flush()
        .await
        .map_err(|error| io_failure("writing the upload", &error))
}

/// The query string of an export.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// only this collection (default: every collection)
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    collection: Option<String>,
}

/// `GET /db/{db}/export` (read): the live documents from one snapshot, as
/// JSON Lines.
#[utoipa::path(get, path = "/db/{db}/export", tag = "backups", params(DatabasePath, ExportParams), responses((status = 200, description = "JSON Lines, from one snapshot: one Entry per line ({ collection, id, change_vector, revision, etag, last_modified, document }), by collection then id; folio import reads it back. Folio-Last-Etag: every change up to it is in the export (follow the changes feed from it)", body = String, content_type = "application/x-ndjson"), DatabaseRefusals))]
pub async fn export(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Read<DatabasePath>,
    Params(params): Params<ExportParams>,
) -> ApiResult<Response> {
    if let Some(collection) = &params.collection {
        validate::collection(collection)?;
    }
    let contents = SnapshotContents::Documents {
        collection: params.collection,
    };
    let reader: Box<dyn SnapshotReader> = match state.databases().handle(&db).await? {
        OpenEngine::Embedded(engine) => Box::new(engine.snapshot(contents).await?),
        OpenEngine::Postgres(engine) => Box::new(engine.snapshot(contents).await?),
        OpenEngine::Attached(_) => return Err(not_an_engine_of_ours(&db)),
    };
    let feed_position = reader.header().feed_position;
    let lines = futures_util::stream::try_unfold(reader, |mut reader| async move {
        match reader.next_part().await {
            Ok(Some(SnapshotPart::Documents(entries))) => Ok(Some((lines(entries)?, reader))),
            Ok(_) => Ok(None),
            Err(error) => {
                // The status went out long ago: the body ends unfinished,
                // which the client sees as a failed transfer.
                tracing::error!(%error, "an export failed midway");
                Err(std::io::Error::other(error.to_string()))
            }
        }
    });
    let mut response = Body::from_stream(lines).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::EXPORT),
    );
    response_headers.insert("folio-last-etag", HeaderValue::from(feed_position));
    Ok(response)
}

/// One line per entry: the entry as the protocol writes it.
fn lines(entries: Vec<folio_core::Entry>) -> std::io::Result<Bytes> {
    let mut text = Vec::with_capacity(entries.iter().map(|e| e.document.len() + 200).sum());
    for entry in entries {
        let entry = EntryBody::new(entry)
            .map_err(|_| std::io::Error::other("a stored document is not valid JSON"))?;
        serde_json::to_writer(&mut text, &entry).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    Ok(Bytes::from(text))
}

/// The refusal of a backup or an export of a database served by an engine
/// the application attached (`Databases::attach`): only Folio's own engines
/// can read themselves whole.
fn not_an_engine_of_ours(db: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "the database {db:?} is served by an engine of the application's own: it cannot be \
         backed up or exported whole through this server"
    ))
}
