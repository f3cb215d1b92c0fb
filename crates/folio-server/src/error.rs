//! Every error the server answers with: each variant knows its status and
//! its RFC 9457 problem body, so errors are responses by construction.
//! No problem body carries internals (SQL, file paths, sources): engine
//! failures are logged in full and answered with their kind only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use folio_core::{ConcurrencyError, Conflict, EngineErrorKind};
use serde::Serialize;

/// The base of every problem `type` URI.
const PROBLEMS: &str = "https://folio.dev/problems/";

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
    /// 428: this collection requires `If-Match` to change a document.
    PreconditionRequired(String),
    /// 500: the storage failed.
    Internal(EngineErrorKind),
    /// 503: the storage is busy or unreachable; try again.
    Unavailable(EngineErrorKind),
}

/// What a failed precondition found.
#[derive(Debug)]
pub struct PreconditionFailure {
    /// Why, in words.
    pub detail: String,
    /// The document's current change vector (`None`: it does not exist).
    pub actual: Option<String>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<&'a [Conflict]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_test: Option<&'a str>,
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
            ApiError::Conflict(_) | ApiError::PatchTestFailed { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::PatchTestFailed { .. } => "patch-test-failed",
            ApiError::PreconditionFailed(_) => "precondition-failed",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::PreconditionRequired(_) => "precondition-required",
            ApiError::Internal(_) => "storage-failure",
            ApiError::Unavailable(_) => "unavailable",
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
            ApiError::PatchTestFailed { .. } => "Patch test failed",
            ApiError::PreconditionFailed(_) => "Precondition failed",
            ApiError::RequestTimeout(_) => "Request timeout",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::PreconditionRequired(_) => "Precondition required",
            ApiError::Internal(_) => "Storage failure",
            ApiError::Unavailable(_) => "Service unavailable",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::BadRequest(detail)
            | ApiError::Unauthorized(detail)
            | ApiError::Forbidden(detail)
            | ApiError::NotFound(detail)
            | ApiError::UnsupportedMediaType(detail)
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
            ApiError::Internal(kind) => {
                format!("the storage failed ({kind:?}); the server log has the details")
            }
            ApiError::Unavailable(kind) => {
                format!("the storage is unavailable ({kind:?}); try again")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: format!("{PROBLEMS}{}", self.kind()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
            conflicts: match &self {
                ApiError::Conflict(error) => Some(error.conflicts()),
                _ => None,
            },
            actual: match &self {
                ApiError::PreconditionFailed(failure) => Some(failure.actual.as_deref()),
                ApiError::PatchTestFailed { actual, .. } => Some(Some(actual)),
                _ => None,
            },
            failed_test: match &self {
                ApiError::PatchTestFailed { failed_test, .. } => Some(failed_test),
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
            folio_core::Error::Engine(engine) => {
                tracing::error!(error = ?engine, "storage failure");
                match engine.kind() {
                    EngineErrorKind::Busy
                    | EngineErrorKind::Network
                    | EngineErrorKind::Timeout
                    | EngineErrorKind::SerializationFailure => ApiError::Unavailable(engine.kind()),
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
