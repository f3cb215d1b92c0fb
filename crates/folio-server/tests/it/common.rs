//! The test server (an in-process router over its own data directory) and
//! helpers to send requests and judge responses.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use folio_server::auth::Keys;
use folio_server::{AppState, Backend, Databases, Limits, router};
use folio_sqlite::{Durability, SqliteOptions};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// The base of every problem `type`.
pub(crate) const PROBLEMS: &str = "https://folio.dev/problems/";

/// Engine options for tests: relaxed durability (the protocol does not
/// depend on it) and a small cache.
pub(crate) fn options() -> SqliteOptions {
    SqliteOptions {
        durability: Durability::Relaxed,
        cache_bytes: 1 << 20,
        ..SqliteOptions::default()
    }
}

/// A server over its own data directory `root/data`.
pub(crate) struct Server {
    /// The temporary directory holding the data directory (and nothing else).
    pub(crate) root: TempDir,
    /// The data directory.
    pub(crate) data: PathBuf,
    /// The application.
    pub(crate) app: Router,
    /// Its state.
    pub(crate) state: AppState,
}

/// How to build a [`Server`].
#[derive(Default)]
pub(crate) struct Config {
    pub(crate) keys: Option<&'static str>,
    pub(crate) limits: Option<Limits>,
    pub(crate) require_precondition: Vec<String>,
    /// Host names served besides the loopback ones (without keys).
    pub(crate) allowed_hosts: Vec<String>,
}

impl Server {
    /// No keys, default limits, no collection requiring preconditions.
    pub(crate) fn new() -> Self {
        Self::with(Config::default())
    }

    pub(crate) fn with(config: Config) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let state = state_over(&data, config);
        let app = router(state.clone());
        Server {
            root,
            data,
            app,
            state,
        }
    }

    /// A server over the data directory `data` (created on first use),
    /// which outlives it.
    pub(crate) fn over(data: &Path, config: Config) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let state = state_over(data, config);
        let app = router(state.clone());
        Server {
            root,
            data: data.to_owned(),
            app,
            state,
        }
    }

    /// A new server over the data directory of `self`, once `self` (and
    /// every database it had open) is gone: as after a restart.
    pub(crate) fn restarted(self, config: Config) -> Self {
        let Server {
            root,
            data,
            app,
            state,
        } = self;
        drop((app, state));
        let state = state_over(&data, config);
        let app = router(state.clone());
        Server {
            root,
            data,
            app,
            state,
        }
    }

    /// Sends a request; `body` is sent as is.
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        send(&self.app, method, uri, headers, body).await
    }

    pub(crate) async fn get(&self, uri: &str) -> Resp {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    /// `PUT` of a JSON body with `application/json`.
    pub(crate) async fn put_json(&self, uri: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::PUT, uri, &all, body.to_owned()).await
    }

    /// `POST` of a JSON body with `application/json`.
    pub(crate) async fn post_json(&self, uri: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, uri, &all, body.to_owned()).await
    }

    pub(crate) async fn delete(&self, uri: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::DELETE, uri, headers, Body::empty()).await
    }

    pub(crate) async fn patch(
        &self,
        uri: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let mut all = vec![("content-type", content_type)];
        all.extend_from_slice(headers);
        self.send(Method::PATCH, uri, &all, body.to_owned()).await
    }

    /// Creates database `name` (no keys configured), expecting 201.
    pub(crate) async fn create_db(&self, name: &str) {
        let resp = self
            .send(Method::PUT, &format!("/db/{name}"), &[], Body::empty())
            .await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "creating {name}: {resp:?}"
        );
    }

    /// Puts a document (no precondition), expecting 200 or 201; its metadata.
    pub(crate) async fn put_doc(&self, db: &str, collection: &str, id: &str, body: &str) -> Value {
        let resp = self
            .put_json(&format!("/db/{db}/docs/{collection}/{id}"), &[], body)
            .await;
        assert!(
            resp.status == StatusCode::CREATED || resp.status == StatusCode::OK,
            "putting {collection}/{id}: {resp:?}"
        );
        resp.json()
    }

    /// The document's current change vector (from the `ETag` of a GET).
    pub(crate) async fn change_vector(&self, uri: &str) -> String {
        let resp = self.get(uri).await;
        assert_eq!(resp.status, StatusCode::OK, "GET {uri}: {resp:?}");
        unquote(resp.header("etag").expect("an ETag"))
    }
}

/// The router over data directory `data`.
pub(crate) fn app_over(data: &Path, config: Config) -> Router {
    router(state_over(data, config))
}

/// The state of a server over data directory `data`.
fn state_over(data: &Path, config: Config) -> AppState {
    let keys = config
        .keys
        .map(|text| Keys::parse(text).expect("a valid keys file"));
    AppState::new(
        Databases::new(Backend::Embedded {
            dir: data.to_owned(),
            options: options(),
        }),
        keys,
        config.limits.unwrap_or_default(),
        config.require_precondition,
    )
    .with_allowed_hosts(config.allowed_hosts)
}

/// The state of a server over data directory `data`, with no keys, default
/// limits and no collection requiring preconditions (for tests that serve
/// on a real socket or need the state itself).
pub(crate) fn plain_state(data: &Path) -> AppState {
    AppState::new(
        Databases::new(Backend::Embedded {
            dir: data.to_owned(),
            options: options(),
        }),
        None,
        Limits::default(),
        Vec::<String>::new(),
    )
}

/// Sends one request to `app` in-process.
pub(crate) async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Resp {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    // As every HTTP/1.1 client does, unless the test sends its own.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", "localhost");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.into()).expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body")
        .to_vec();
    Resp {
        method,
        uri: uri.to_owned(),
        status,
        headers,
        body,
    }
}

/// A response, buffered.
pub(crate) struct Resp {
    pub(crate) method: Method,
    pub(crate) uri: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {:?} {}",
            self.method,
            self.uri,
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Asserts a status with a JSON body (`application/json`); the body.
    #[track_caller]
    pub(crate) fn ok_json(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?}: {self:?}"
        );
        self.json()
    }

    /// Asserts an error response: `status`, `application/problem+json`, a
    /// problem body whose `status` matches and whose `type` names `kind`.
    /// Returns the problem.
    #[track_caller]
    pub(crate) fn problem(&self, status: StatusCode, kind: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let problem = self.json();
        assert_eq!(
            problem["status"].as_u64(),
            Some(u64::from(status.as_u16())),
            "{self:?}"
        );
        assert_eq!(
            problem["type"].as_str(),
            Some(format!("{PROBLEMS}{kind}").as_str()),
            "{self:?}"
        );
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "a title: {self:?}"
        );
        assert!(problem["detail"].is_string(), "a detail: {self:?}");
        problem
    }
}

/// `"cv"` → `cv`.
#[track_caller]
pub(crate) fn unquote(etag: &str) -> String {
    etag.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a strong, quoted entity tag: {etag:?}"))
        .to_owned()
}

/// `cv` → `"cv"`.
pub(crate) fn quote(change_vector: &str) -> String {
    format!("\"{change_vector}\"")
}

/// One client connection over a real socket, raw HTTP/1.1: requests are
/// sent one at a time and their answers read whole (`Content-Length`
/// bodies), so that the connection stays the same one throughout.
pub(crate) struct Wire {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

/// An answer read off a [`Wire`].
#[derive(Debug)]
pub(crate) struct WireAnswer {
    pub(crate) status: u16,
    /// Lowercase `name: value` lines.
    pub(crate) headers: Vec<String>,
    pub(crate) body: Vec<u8>,
}

impl WireAnswer {
    /// Whether the answer has the header line `line` (lowercase).
    pub(crate) fn has(&self, line: &str) -> bool {
        self.headers.iter().any(|header| header == line)
    }

    #[allow(dead_code)] // The descriptor tests of `folio serve` (folio-cli) read it.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A bound on waiting for an answer that a healthy run never reaches (not
/// a timing assertion).
const WIRE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Wire {
    /// A new connection to `address`.
    pub(crate) async fn connect(address: std::net::SocketAddr) -> Wire {
        let (read, writer) = tokio::net::TcpStream::connect(address)
            .await
            .expect("connected")
            .into_split();
        Wire {
            reader: tokio::io::BufReader::new(read),
            writer,
        }
    }

    /// Sends `method path` with `Host: localhost` and `body` (JSON when not
    /// empty), and reads the answer.
    pub(crate) async fn send(&mut self, method: &str, path: &str, body: &str) -> WireAnswer {
        use tokio::io::AsyncWriteExt;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.writer
            .write_all(request.as_bytes())
            .await
            .expect("sent");
        self.read_answer().await
    }

    /// Reads one answer (its head, and a `Content-Length` body).
    pub(crate) async fn read_answer(&mut self) -> WireAnswer {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let reader = &mut self.reader;
        tokio::time::timeout(WIRE_PATIENCE, async {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("a status line");
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|status| status.parse().ok())
                .unwrap_or_else(|| panic!("a status line: {line:?}"));
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await.expect("a header");
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(value) = line.strip_prefix("content-length: ") {
                    length = value.parse().expect("a length");
                }
                headers.push(line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.expect("the body");
            WireAnswer {
                status,
                headers,
                body,
            }
        })
        .await
        .expect("an answer")
    }

    /// Reads until the server closes the connection; what came.
    pub(crate) async fn rest(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        tokio::time::timeout(WIRE_PATIENCE, self.reader.read_to_end(&mut rest))
            .await
            .expect("the connection closed")
            .expect("read to the end");
        rest
    }
}
