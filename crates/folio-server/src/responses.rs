//! The refusals many routes share, as `/openapi.json` lists them: each a
//! problem body (`application/problem+json`, see `folio_protocol::problem`).
//! A route's own answers are written beside its handler.

use std::collections::BTreeMap;

use folio_protocol::media;
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};

fn problems(answers: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(media::PROBLEM, ContentBuilder::new().build())
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

const MALFORMED: (u16, &str) = (400, "malformed input");
const NO_KEY: (u16, &str) = (401, "no or unknown API key");
const FORBIDDEN: (u16, &str) = (403, "the key may not do this");

/// A route about a database: 400, 401, 403, 404.
pub struct DatabaseRefusals;

impl utoipa::IntoResponses for DatabaseRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[MALFORMED, NO_KEY, FORBIDDEN, (404, "no such database")])
    }
}

/// A route about documents: 400, 401, 403, 404.
pub struct DocumentRefusals;

impl utoipa::IntoResponses for DocumentRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            MALFORMED,
            NO_KEY,
            FORBIDDEN,
            (404, "no such database or document"),
        ])
    }
}

/// A route that takes a body: 413, 415.
pub struct BodyRefusals;

impl utoipa::IntoResponses for BodyRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (413, "body too large"),
            (415, "not the media type this route takes"),
        ])
    }
}

/// A write: 422 (an idempotency key a committed write with another
/// request took).
pub struct WriteRefusals;

impl utoipa::IntoResponses for WriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(
            422,
            "the Idempotency-Key was used by a committed write with another method, path or body",
        )])
    }
}
