//! Every error the server answers with: each variant knows its status and
//! its RFC 9457 problem body, so errors are responses by construction.
//! No problem body carries internals (SQL, file paths, sources): engine
//! failures are logged in full and answered with their kind only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::{ConcurrencyError, EngineErrorKind};
use folio_protocol::{PreconditionFailure, Problem, problem};

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed input (id, collection, JSON, query, header).
    BadRequest(String),
    /// 401: no key, or an unknown key.
    Unauthorized(String),
    /// 403: a known key without the role needed here.
    Forbidden(String),
    /// 404: no such document, collection route or database.
    NotFound(String),
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: a batch's expectations failed; nothing was applied.
    Conflict(ConcurrencyError),
    /// 409: a restore's target database exists and holds data (or is in use).
    DatabaseExists(String),
    /// 409: a `test` operation of a JSON patch did not hold for the
    /// current version; nothing was written.
    PatchTestFailed {
        /// Why, in words.
        detail: String,
        /// The JSON Pointer the operation tests.
        failed_test: String,
        /// The change vector of the version patched.
        actual: String,
    },
    /// 412: a precondition (`If-Match`, `If-None-Match`) failed.
    PreconditionFailed(PreconditionFailure),
    /// 408: the body did not arrive in time (the connection is closed).
    RequestTimeout(std::time::Duration),
    /// 413: the body is larger than the limit.
    PayloadTooLarge(usize),
    /// 415: the body's content type is not one this route takes.
    UnsupportedMediaType(String),
    /// 421: the request names a host this server does not answer for
    /// (without keys, only loopback names: see `crate::edge`).
    MisdirectedRequest(String),
    /// 428: this collection requires `If-Match` to change a document.
    PreconditionRequired(String),
    /// 500: the storage failed (a damaged database, a layout of a newer
    /// Folio, any other failure: each kind its own problem type).
    Internal(EngineErrorKind),
    /// 507: the disk is full; nothing of the request was written.
    InsufficientStorage,
    /// 503: the storage is busy or unreachable; try again.
    Unavailable(EngineErrorKind),
    /// 503: the server has as many connections open as it may (the
    /// number); this one is closed after the answer.
    TooManyConnections(usize),
    /// 503: the server has as many databases open as it may (the number)
    /// and every one of them is in use.
    TooManyOpenDatabases(usize),
    /// 403: the server holds as many databases as it may (the number); no
    /// other can be created.
    TooManyDatabases(usize),
    /// 503: the outcome of the write is unknown (its commit was interrupted
    /// and sending it again did not settle it in time): sending the request
    /// again with its idempotency key tells whether it committed.
    InDoubt {
        /// The write's idempotency key (the server's own when the request
        /// had none).
        key: Option<String>,
        /// Why, in words.
        detail: String,
    },
    /// 422: the idempotency key was used by a committed write with another
    /// method, path or body.
    KeyReused(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_)
            | ApiError::DatabaseExists(_)
            | ApiError::PatchTestFailed { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable(_)
            | ApiError::TooManyConnections(_)
            | ApiError::TooManyOpenDatabases(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyDatabases(_) => StatusCode::FORBIDDEN,
            ApiError::InDoubt { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The last segment of the problem `type` URI.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict(_) => "concurrency-conflict",
            ApiError::DatabaseExists(_) => "database-exists",
            ApiError::PatchTestFailed { .. } => "patch-test-failed",
            ApiError::PreconditionFailed(_) => "precondition-failed",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::MisdirectedRequest(_) => "misdirected-request",
            ApiError::PreconditionRequired(_) => "precondition-required",
            ApiError::Internal(EngineErrorKind::Corrupt) => "damaged-database",
            ApiError::Internal(EngineErrorKind::Unsupported) => "unsupported-layout",
            ApiError::Internal(_) => "storage-failure",
            ApiError::InsufficientStorage => "insufficient-storage",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooManyConnections(_) => "connection-limit",
            ApiError::TooManyOpenDatabases(_) => "open-database-limit",
            ApiError::TooManyDatabases(_) => "database-limit",
            ApiError::InDoubt { .. } => "in-doubt",
            ApiError::KeyReused(_) => "idempotency-key-reused",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Bad request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Conflict(_) => "Optimistic concurrency check failed",
            ApiError::DatabaseExists(_) => "Database exists",
            ApiError::PatchTestFailed { .. } => "Patch test failed",
            ApiError::PreconditionFailed(_) => "Precondition failed",
            ApiError::RequestTimeout(_) => "Request timeout",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::MisdirectedRequest(_) => "Misdirected request",
            ApiError::PreconditionRequired(_) => "Precondition required",
            ApiError::Internal(EngineErrorKind::Corrupt) => "Database damaged",
            ApiError::Internal(EngineErrorKind::Unsupported) => "Unsupported database layout",
            ApiError::Internal(_) => "Storage failure",
            ApiError::InsufficientStorage => "Insufficient storage",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::TooManyConnections(_) => "Too many connections",
            ApiError::TooManyOpenDatabases(_) => "Too many open databases",
            ApiError::TooManyDatabases(_) => "Too many databases",
            ApiError::InDoubt { .. } => "Outcome unknown",
            ApiError::KeyReused(_) => "Idempotency key reused",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::BadRequest(detail)
            | ApiError::Unauthorized(detail)
            | ApiError::Forbidden(detail)
            | ApiError::NotFound(detail)
            | ApiError::DatabaseExists(detail)
            | ApiError::UnsupportedMediaType(detail)
            | ApiError::MisdirectedRequest(detail)
            | ApiError::PreconditionRequired(detail) => detail.clone(),
            ApiError::MethodNotAllowed => "this route does not take that method".into(),
            ApiError::Conflict(error) => error.to_string(),
            ApiError::PatchTestFailed { detail, .. } => detail.clone(),
            ApiError::PreconditionFailed(failure) => failure.detail.clone(),
            ApiError::RequestTimeout(timeout) => {
                format!("the body did not arrive within {} s", timeout.as_secs_f64())
            }
            ApiError::PayloadTooLarge(limit) => {
                format!("the body is larger than the limit of {limit} bytes")
            }
            ApiError::Internal(EngineErrorKind::Corrupt) => "the database is damaged (a page \
                failed its checksum, or the file is not a Folio database): it takes no writes; \
                restore it from a backup. The server log has the details"
                .into(),
            ApiError::Internal(EngineErrorKind::Unsupported) => "the database was written by a \
                newer Folio than this server, in a layout it cannot read: run that Folio, or a \
                newer one"
                .into(),
            ApiError::Internal(kind) => {
                format!("the storage failed ({kind:?}); the server log has the details")
            }
            ApiError::InsufficientStorage => "the disk is full (or the database reached its size \
                limit): nothing of this request was written. Writes succeed again once there is \
                room; reads go on"
                .into(),
            ApiError::Unavailable(kind) => {
                format!("the storage is unavailable ({kind:?}); try again")
            }
            ApiError::TooManyConnections(limit) => format!(
                "the server is at its limit of {limit} open connections (--max-connections); \
                 this connection is closed: try again shortly on a new one"
            ),
            ApiError::TooManyOpenDatabases(limit) => format!(
                "the server has its limit of {limit} databases open (--max-open-databases), all \
                 of them in use (requests in flight, changes feeds), so it cannot open another \
                 now; try again shortly"
            ),
            ApiError::TooManyDatabases(limit) => format!(
                "the server already holds its limit of {limit} databases (--max-databases), so \
                 no other can be created; the operator may raise the limit"
            ),
            ApiError::InDoubt { detail, .. } => detail.clone(),
            ApiError::KeyReused(key) => format!(
                "Idempotency-Key {key:?} was used by a write with another method, path or body, \
                 which committed; use a new key for each write"
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: problem::type_uri(self.kind()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            conflicts: match &self {
                ApiError::Conflict(error) => Some(error.conflicts().to_vec()),
                ApiError::PreconditionFailed(failure) => {
                    failure.conflict.clone().map(|conflict| vec![*conflict])
                }
                _ => None,
            },
            actual: match &self {
                ApiError::PreconditionFailed(failure) => Some(failure.actual.clone()),
                ApiError::PatchTestFailed { actual, .. } => Some(Some(actual.clone())),
                _ => None,
            },
            failed_test: match &self {
                ApiError::PatchTestFailed { failed_test, .. } => Some(failed_test.clone()),
                _ => None,
            },
            idempotency_key: match &self {
                ApiError::InDoubt { key, .. } => key.clone(),
                ApiError::KeyReused(key) => Some(key.clone()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The rest of the body may still come: this connection is done.
            ApiError::RequestTimeout(_) => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Connections and databases in use are let go of within moments
            // (a request ends, a client leaves): worth a try a second later.
            ApiError::TooManyConnections(_) => {
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Busy storage, a serialization failure, a database in use:
            // each passes within moments too.
            ApiError::TooManyOpenDatabases(_)
            | ApiError::Unavailable(_)
            | ApiError::InDoubt { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<folio_core::Error> for ApiError {
    fn from(error: folio_core::Error) -> Self {
        match error {
            folio_core::Error::Concurrency(conflict) => ApiError::Conflict(conflict),
            folio_core::Error::NotFound(detail) => ApiError::NotFound(detail),
            folio_core::Error::InvalidInput(detail) => ApiError::BadRequest(detail),
            folio_core::Error::Unauthorized(detail) => ApiError::Unauthorized(detail),
            folio_core::Error::BatchIdReused(id) => ApiError::KeyReused(id.to_string()),
            folio_core::Error::InDoubt(in_doubt) => {
                tracing::warn!(error = ?in_doubt, "a write's outcome is unknown");
                ApiError::InDoubt {
                    key: in_doubt.batch_id.as_ref().map(ToString::to_string),
                    detail: in_doubt.to_string(),
                }
            }
            folio_core::Error::Engine(engine) => {
                // A storage out of reach passes (a failover): the engine
                // says so once, not every request it fails.
                if matches!(
                    engine.kind(),
                    EngineErrorKind::Network | EngineErrorKind::Timeout
                ) {
                    tracing::debug!(error = ?engine, "storage out of reach");
                } else {
                    tracing::error!(error = ?engine, "storage failure");
                }
                match engine.kind() {
                    EngineErrorKind::Busy
                    | EngineErrorKind::Network
                    | EngineErrorKind::Timeout
                    | EngineErrorKind::SerializationFailure => ApiError::Unavailable(engine.kind()),
                    EngineErrorKind::Full => ApiError::InsufficientStorage,
                    kind => ApiError::Internal(kind),
                }
            }
            other => {
                tracing::error!(error = ?other, "unexpected error");
                ApiError::Internal(EngineErrorKind::Other)
            }
        }
    }
}

/// `Result` with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `503` says when to try again: each of its causes passes
    /// within moments.
    #[test]
    fn every_503_carries_retry_after() {
        for error in [
            ApiError::Unavailable(EngineErrorKind::Busy),
            ApiError::Unavailable(EngineErrorKind::SerializationFailure),
            ApiError::TooManyConnections(10),
            ApiError::TooManyOpenDatabases(10),
            ApiError::InDoubt {
                key: Some("k1".into()),
                detail: "lost".into(),
            },
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                response.headers().get(header::RETRY_AFTER),
                Some(&HeaderValue::from_static("1"))
            );
        }
    }
}
