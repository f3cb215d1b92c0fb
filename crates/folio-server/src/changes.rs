//! `GET /db/{db}/changes`: the changes feed over HTTP (docs/protocol.md,
//! "Changes feed").
//!
//! * As Server-Sent Events (the default, `Accept: text/event-stream`): one
//!   event per committed write, `id: <etag>`, `event: put|delete`, `data:`
//!   the change as JSON. A client that reconnects with `Last-Event-ID`
//!   resumes after that etag. Comments keep an idle stream alive.
//! * As JSON long polling (`Accept: application/json`): `{ "changes":
//!   [...], "last_etag": n }`, waiting up to `timeout` seconds when nothing
//!   is newer; `last_etag` is the `since` of the next request.
//!
//! Both read [`folio_core::Engine::changes_wait`], which only returns what
//! the engine has published (nothing is skipped or repeated) and waits on a
//! notification, not by polling.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use folio_core::{ChangesPage, EngineRef, validate};
use folio_protocol::{ChangeBody, ChangesPageBody};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::documents::json_response;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Authorized, DatabasePath, Params, Read};
use crate::responses::DatabaseRefusals;
use crate::state::AppState;

/// The most changes one page or one read of the stream holds (and the
/// default `limit`).
const MAX_LIMIT: usize = 1000;
/// The longest a long poll may wait, in seconds, and the default.
const MAX_TIMEOUT: f64 = 300.0;
const DEFAULT_TIMEOUT: f64 = 30.0;
/// How long the event stream waits for changes before asking again (the
/// keep-alive comments go out meanwhile).
const STREAM_WAIT: Duration = Duration::from_secs(15);

/// The query string of the changes feed.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    /// changes after this etag (default 0; the Last-Event-ID header takes precedence)
    since: Option<u64>,
    /// only this collection
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    collection: Option<String>,
    /// long poll: seconds to wait when nothing is newer, 0 to 300, default 30
    #[param(minimum = 0, maximum = 300)]
    timeout: Option<f64>,
    /// 1 to 1000 changes per page, default 1000
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /db/{db}/changes?since={etag}&collection={c}&timeout={s}&limit={n}`.
#[utoipa::path(get, path = "/db/{db}/changes", tag = "changes", params(DatabasePath, ChangesParams, ("Last-Event-ID" = Option<u64>, Header, description = "resume after this etag", nullable = false)), responses((status = 200, description = "text/event-stream: one event per change (id: etag, event: put or delete, data: {kind, collection, id, change_vector, revision, etag}); with Accept: application/json, { changes: [...], last_etag }", content((Object = "application/json"), (Object = "text/event-stream"))), DatabaseRefusals))]
pub async fn changes(
    State(state): State<AppState>,
    Authorized(DatabasePath { db }, _): Read<DatabasePath>,
    Params(params): Params<ChangesParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(collection) = &params.collection {
        validate::collection(collection)?;
    }
    let limit = params.limit.unwrap_or(MAX_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let since = match last_event_id(&headers)? {
        Some(etag) => etag,
        None => params.since.unwrap_or(0),
    };
    // Refused here, before an event stream's 200 goes out.
    ChangesPage::check_request(since, params.collection.as_deref(), limit)?;
    let engine = state.databases().get(&db).await?;
    if wants_json(&headers) {
        let timeout = params.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(0.0..=MAX_TIMEOUT).contains(&timeout) {
            return Err(ApiError::BadRequest(format!(
                "timeout must be between 0 and {MAX_TIMEOUT} seconds"
            )));
        }
        let collection = params.collection.as_deref();
        let wait = engine.changes_wait(since, collection, limit, Duration::from_secs_f64(timeout));
        // A shutdown ends the wait: what is there now, at once.
        let page = tokio::select! {
            page = wait => page?,
            () = state.shutting_down() => engine.changes(since, collection, limit).await?,
        };
        return Ok(json_response(
            StatusCode::OK,
            HeaderMap::new(),
            &ChangesPageBody {
                changes: page.changes.iter().map(ChangeBody::from).collect(),
                last_etag: page.last_etag,
            },
        ));
    }
    if params.timeout.is_some() {
        return Err(ApiError::BadRequest(
            "timeout is for long polling (Accept: application/json); an event stream stays open"
                .into(),
        ));
    }
    let stream = event_stream(engine, since, params.collection, limit, state);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies must not buffer the stream.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

/// The events after `since`, read page by page until the client leaves or
/// the server shuts down. A failure ends the stream with an `error` event
/// (the client reconnects with `Last-Event-ID`).
fn event_stream(
    engine: EngineRef,
    since: u64,
    collection: Option<String>,
    limit: usize,
    state: AppState,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let pages = futures_util::stream::unfold(Some(since), move |since| {
        let engine = engine.clone();
        let collection = collection.clone();
        async move {
            let since = since?;
            let read = engine
                .changes_wait(since, collection.as_deref(), limit, STREAM_WAIT)
                .await;
            Some(match read {
                Ok(page) => {
                    let next = page.last_etag;
                    (events(&page), Some(next))
                }
                Err(error) => {
                    let message = ApiError::from(error).detail();
                    (vec![Event::default().event("error").data(message)], None)
                }
            })
        }
    });
    pages
        .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
        .take_until(state.shutting_down())
}

fn events(page: &ChangesPage) -> Vec<Event> {
    page.changes
        .iter()
        .map(|change| {
            let data = serde_json::to_string(&ChangeBody::from(change))
                .unwrap_or_else(|_| String::from("{}"));
            Event::default()
                .id(change.etag.to_string())
                .event(change.kind.as_str())
                .data(data)
        })
        .collect()
}

/// The etag of `Last-Event-ID`, when sent. An empty one is refused like
/// any other that is not an etag: an event source sends none when it has
/// no event id to resume after.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an etag (a number)".into()))
}

/// Whether the client asked for the long-poll form: `Accept` names
/// `application/json` and not `text/event-stream` (a media range with
/// `q=0` is one the client does not accept).
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let names = |media: &str| {
        accept.split(',').any(|part| {
            let mut fields = part.split(';');
            let named = fields
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(media);
            named && !fields.any(refuses)
        })
    };
    names("application/json") && !names("text/event-stream")
}

/// Whether a media range's parameter is `q=0` (RFC 9110: "not acceptable").
fn refuses(parameter: &str) -> bool {
    let Some((name, value)) = parameter.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q")
        && value
            .trim()
            .parse::<f64>()
            .is_ok_and(|quality| quality == 0.0)
}
