//! Folio Studio, the browser UI at `/studio`, embedded in the binary.
//!
//! The files are the build of `crates/folio-server/studio` (`npm run build`
//! writes `studio/dist`, which is committed, so building the server needs
//! no node; `studio/check.sh` fails when the committed build differs from
//! a fresh one). Their names are fixed, so each is named here; a test
//! checks that every file of `dist` is.
//!
//! Serving them needs no key: they are the same for everyone, and every
//! API request the Studio makes carries the key the user typed. Each
//! answer has an `ETag` (a hash of the content) and `Cache-Control:
//! no-cache`, so a browser revalidates (a `304`) rather than keeping an
//! old Studio after an upgrade.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// One embedded file.
struct Asset {
    /// The path below `/studio/`.
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../studio/dist/", $path)),
        }
    };
}

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("assets/studio.js", "text/javascript; charset=utf-8"),
    asset!("assets/studio.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The `ETag` of each asset, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(asset.bytes)))
                .expect("hex digits in quotes are a valid header value")
        })
        .collect()
});

/// What the page may load and where it may connect: only this server. The
/// Studio has no inline script or style, so nothing else is needed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The Studio's routes: `/studio`, `/studio/` (the page) and its files;
/// `/` leads a browser to it.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/studio", get(page))
        .route("/studio/", get(page))
        .route("/studio/{*path}", get(file))
}

/// `GET /`: a `303 See Other` to the Studio, for whoever opens the server's
/// address in a browser (no key needed, like the Studio's files).
async fn root() -> Redirect {
    Redirect::to("/studio")
}

/// The paths (below `/studio/`) of every embedded file.
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|asset| asset.path)
}

/// `GET /studio`: the page (every view of the Studio is this page; the view
/// is in the URL's fragment). No key needed.
#[utoipa::path(get, path = "/studio", tag = "service", responses((status = 200, description = "Folio Studio, the browser UI (its files are under /studio/; no key needed)", content_type = "text/html"), (status = 304, description = "If-None-Match names this version")))]
pub async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /studio/{path}`: one of the page's files.
async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.path == path) {
        Some(index) => serve(index, &headers),
        None => ApiError::NotFound(format!("no Studio file {path:?}")).into_response(),
    }
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if matches_etag(request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (StatusCode::OK, headers, asset.bytes).into_response()
}

/// Whether `If-None-Match` names this version (or is `*`).
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == etag || candidate == "*")
}

/// FNV-1a, 64 bits: a content hash for `ETag`s (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
