//! Folio's remote engine: the same sessions as the embedded engine, against
//! a Folio server over HTTP (the protocol of `docs/protocol.md`).
//!
//! [`RemoteEngine`] implements [`folio_core::Engine`] with one HTTP request
//! per call (more only for results larger than the server's page):
//!
//! | engine call | request |
//! | --- | --- |
//! | [`Engine::commit`] | `POST /db/{db}/batch` (`409` → the inner `Err` with every conflict) |
//! | [`Engine::get`], [`Engine::metadata`] | `POST /db/{db}/docs/{collection}/get` |
//! | [`Engine::query`], [`Engine::query_page`], [`Engine::count`] | `POST /db/{db}/query` |
//! | [`Engine::scan`] | `GET /db/{db}/docs/{collection}?after=&limit=` |
//! | [`Engine::ensure_index`] | none: a remote store's indexes are the server's business |
//! | [`RemoteEngine::create_database`], [`RemoteEngine::list_databases`] | `PUT /db/{name}`, `GET /db` |
//!
//! The concurrency checks happen on the server, inside its engine's
//! transaction, exactly as in process; a conflict comes back as a
//! [`folio_core::ConcurrencyError`] naming the same types and ids. HTTP
//! failures map onto [`folio_core::Error`] in one place (`400` → invalid
//! input, `401`/`403` → unauthorized, `404` → not found, `503` → busy,
//! no connection or a timeout → an [`folio_core::EngineError`] of kind
//! `Network` or `Timeout` with the HTTP client's error as its source).
//!
//! Only `http://` is built in (no TLS stack): put a TLS-terminating proxy
//! in front of the server for traffic that leaves the host.
//!
//! ```no_run
//! use folio_core::{Batch, Command, Engine, Expectation};
//! use folio_remote::{RemoteEngine, RemoteOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> folio_core::Result<()> {
//! let options = RemoteOptions {
//!     api_key: Some("k3y".into()),
//!     ..RemoteOptions::default()
//! };
//! let engine = RemoteEngine::connect("http://127.0.0.1:7070/db/shop", options).await?;
//! let batch = Batch::from(vec![Command::put("people", "p1", r#"{"name":"Ada"}"#, Expectation::Missing)]);
//! engine.commit(batch).await?.expect("p1 was new");
//! # Ok(())
//! # }
//! ```
//!
//! Applications usually go through the `folio` facade instead (feature
//! `remote`): `DocumentStore::builder().url("http://host:7070/db/shop").api_key(…)`.

mod endpoint;
mod error;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use folio_core::{
    Batch, BatchId, ChangeVector, ChangesPage, CollectionConfig, CollectionCount, CommitResult,
    Committed, ConcurrencyError, Engine, EngineRef, Entry, Error, FieldPath, Metadata, Position,
    Query, QueryResult, Reads, Result, RevisionsPage, validate,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::endpoint::Endpoint;
use crate::error::{Failure, Transport};
use folio_protocol::{
    BatchCommand, BatchRequest, BatchResponse, ChangesPageBody, CollectionList, DatabaseCreated,
    DatabaseList, EntryBody, GetManyRequest, ListResponse, QueryResponse, Results, headers,
};

/// The most ids the server reads in one `…/get` request.
const MAX_IDS: usize = 1000;
/// The most results the server returns for one query request.
const MAX_TAKE: u64 = 1000;
/// The most entries the server returns in one page of a collection.
const MAX_PAGE: usize = 1000;
/// The longest one long poll of the changes feed may wait on the server.
const MAX_POLL: Duration = Duration::from_secs(300);
/// The collection named by the request that [`RemoteEngine::connect`]
/// makes to check the database and the key (it reads no document).
const PROBE_COLLECTION: &str = "_folio";

/// How a [`RemoteEngine`] talks to the server.
#[derive(Clone)]
pub struct RemoteOptions {
    /// The API key, sent as `Authorization: Bearer <key>` (`None`: a server
    /// without keys).
    pub api_key: Option<String>,
    /// How long one request may take, from connecting to the end of the
    /// answer (default 30 seconds).
    pub timeout: Duration,
    /// How long a batch whose outcome is unknown (the connection lost
    /// after it was sent, a server or gateway answering 502, 503 or 504) is
    /// sent again with its id, until the server answers with its outcome,
    /// before the commit is [`Error::InDoubt`] (default 30 seconds).
    pub resend_for: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            api_key: None,
            timeout: Duration::from_secs(30),
            resend_for: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("resend_for", &self.resend_for)
            .finish()
    }
}

/// An [`Engine`] that is a client of a Folio server: every call is an HTTP
/// request to one database of the server.
///
/// Cheap to share behind an `Arc`: it holds one HTTP client, whose
/// connections are kept alive and reused by every call.
///
/// # What differs from an engine in process
///
/// * Every commit carries an `Idempotency-Key` (the batch's id). One whose
///   answer is lost (a network error or a timeout after the request was
///   sent, a `502`/`503`/`504`) is sent again with it until the server
///   answers ([`RemoteOptions::resend_for`]); only then is it
///   [`Error::InDoubt`].
/// * Results larger than the server's page (1000 entries) are read in
///   several requests, which are not one snapshot of the database.
/// * [`Engine::ensure_index`] does nothing: indexes are configured on the
///   server.
/// * Reads send `Folio-After` with the position of the engine's last
///   commit: on a server whose database has standbys they see the
///   engine's own writes, not always another client's newest ones
///   ([`Engine::reads`] chooses otherwise).
#[derive(Clone)]
pub struct RemoteEngine {
    /// hyper's pooling client: keep-alive connections, reused by every
    /// call. (Not reqwest: its 0.13 parses the request's URL again for
    /// every answer, about 7 % of a client's CPU in `folio bench update`.)
    http: HttpClient<HttpConnector, Full<Bytes>>,
    /// `Authorization: Bearer …`, when the engine has a key.
    authorization: Option<HeaderValue>,
    /// `Host`, written once: left out, hyper formats it again for every
    /// request (2 % of a client's CPU in `folio bench update`).
    host: HeaderValue,
    endpoint: Endpoint,
    /// How long one request may take, answer included (long polls wait
    /// less than this).
    timeout: Duration,
    /// How long a batch in doubt is sent again ([`RemoteOptions::resend_for`]).
    resend_for: Duration,
    /// The position this handle's reads send (`Folio-After`).
    after: After,
}

/// The `Folio-After` a remote engine's reads send ([`Engine::reads`]).
#[derive(Clone, Debug)]
enum After {
    /// The position of the last commit through the engine (any of its
    /// handles): the engine's reads see its own writes.
    LastCommit(Arc<Mutex<Option<HeaderValue>>>),
    /// This one, or none (any node may answer).
    Fixed(Option<HeaderValue>),
}

impl After {
    fn header(&self) -> Option<HeaderValue> {
        match self {
            After::LastCommit(last) => last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            After::Fixed(after) => after.clone(),
        }
    }
}

impl RemoteEngine {
    /// Connects to the database at `url`, `http://host:port/db/NAME` (a path
    /// prefix before `/db/` is kept, for servers behind a reverse proxy).
    ///
    /// Makes one request that reads nothing, so that a wrong address, a
    /// missing database or a refused key fail here rather than at the first
    /// read: [`Error::NotFound`] when the server has no such database
    /// (create it with `PUT /db/NAME` or `folio create NAME`),
    /// [`Error::Unauthorized`] for a missing or refused key, an engine error
    /// of kind `Network` when nothing answers.
    ///
    /// Fails with [`Error::InvalidInput`] for a malformed URL or database
    /// name, for an `https://` URL (no TLS is built in), for an empty or
    /// non-ASCII API key and for a zero timeout.
    pub async fn connect(url: &str, options: RemoteOptions) -> Result<Self> {
        let engine = RemoteEngine::unchecked(url, options)?;
        engine.probe().await?;
        Ok(engine)
    }

    /// The engine of `url`, before any request.
    fn unchecked(url: &str, options: RemoteOptions) -> Result<Self> {
        let endpoint = Endpoint::parse(url)?;
        if options.timeout.is_zero() {
            return Err(Error::InvalidInput(
                "the timeout of a remote engine must be longer than zero".into(),
            ));
        }
        let host = HeaderValue::from_str(endpoint.authority()).map_err(|_| {
            Error::InvalidInput(format!("{url:?}: its host cannot be sent in a Host header"))
        })?;
        Ok(RemoteEngine {
            http: http_client(),
            authorization: options.api_key.as_deref().map(authorization).transpose()?,
            host,
            endpoint,
            timeout: options.timeout,
            resend_for: options.resend_for,
            after: After::LastCommit(Arc::default()),
        })
    }

    /// Creates the database that `url` (`http://host:port/db/NAME`) names,
    /// unless it exists, without connecting to it first: whether it was
    /// created. `PUT /db/{name}`, with `options`' key (an admin key on a
    /// server with keys).
    pub async fn create(url: &str, options: RemoteOptions) -> Result<bool> {
        let engine = RemoteEngine::unchecked(url, options)?;
        engine.create_database(engine.database()).await
    }

    /// The name of the database this engine reads and writes.
    pub fn database(&self) -> &str {
        self.endpoint.database()
    }

    /// The database's URL (`http://host:port/db/NAME`).
    pub fn url(&self) -> String {
        self.endpoint.database_url().into()
    }

    /// Creates database `name` on this engine's server (`PUT /db/{name}`,
    /// which needs an admin key on a server with keys); whether it was
    /// created (`false`: it existed).
    pub async fn create_database(&self, name: &str) -> Result<bool> {
        validate::database(name)?;
        let request = self.request(Method::PUT, &self.endpoint.server_url(&[name]), None)?;
        // Creating is idempotent: a retry after a failure in doubt is safe.
        let (status, _, created): (u16, Stamp, DatabaseCreated) = self
            .exchange_with_status(request, false)
            .await
            .map_err(error::map)?;
        if created.database != name {
            return Err(protocol(format!(
                "asked to create {name:?}, the server answered for {:?}",
                created.database
            )));
        }
        Ok(status == 201)
    }

    /// The databases of this engine's server that its key may read
    /// (`GET /db`), sorted.
    pub async fn list_databases(&self) -> Result<Vec<String>> {
        let request = self.get(&self.endpoint.server_url(&[]))?;
        let mut list: DatabaseList = self.call(request, false).await?;
        list.databases.sort();
        Ok(list.databases)
    }

    /// Reads nothing, through the database and the key: fails as the first
    /// real request would.
    async fn probe(&self) -> Result<()> {
        let request = self.post(
            &self.endpoint.url(&["docs", PROBE_COLLECTION, "get"]),
            &GetManyRequest {
                ids: Cow::Borrowed(&[]),
            },
        )?;
        let answer: Results<Option<EntryBody>> = self.call(request, false).await?;
        if answer.results.is_empty() {
            Ok(())
        } else {
            Err(error::map(Failure::Protocol(format!(
                "asked for no document, got {}",
                answer.results.len()
            ))))
        }
    }

    /// Sends `request` and reads its JSON answer; every failure goes through
    /// [`error::map`].
    async fn call<T: DeserializeOwned>(
        &self,
        request: Request<Full<Bytes>>,
        write: bool,
    ) -> Result<T> {
        self.exchange(request, write).await.map_err(error::map)
    }

    /// A request to `url` with the headers every request carries.
    fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|error| Error::InvalidInput(format!("{url} cannot be requested: {error}")))?;
        let json = body.is_some();
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, application/problem+json"),
        );
        headers.insert(HOST, self.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(value) = &self.authorization {
            headers.insert(AUTHORIZATION, value.clone());
        }
        if let Some(after) = self.after.header() {
            headers.insert(headers::AFTER, after);
        }
        Ok(request)
    }

    /// `GET url`.
    fn get(&self, url: &Url) -> Result<Request<Full<Bytes>>> {
        self.request(Method::GET, url, None)
    }

    /// `POST url` with `body` as JSON.
    fn post(&self, url: &Url, body: &impl Serialize) -> Result<Request<Full<Bytes>>> {
        let body = serde_json::to_vec(body).map_err(|error| {
            Error::InvalidInput(format!("the request cannot be written as JSON: {error}"))
        })?;
        self.request(Method::POST, url, Some(body))
    }

    /// One request and its JSON answer, or what went wrong; the whole
    /// exchange, answer included, within the engine's timeout.
    async fn exchange<T: DeserializeOwned>(
        &self,
        request: Request<Full<Bytes>>,
        write: bool,
    ) -> std::result::Result<T, Failure> {
        Ok(self.exchange_with_status(request, write).await?.2)
    }

    /// [`RemoteEngine::exchange`], with the answer's (2xx) status and what
    /// its headers say of a write.
    async fn exchange_with_status<T: DeserializeOwned>(
        &self,
        request: Request<Full<Bytes>>,
        write: bool,
    ) -> std::result::Result<(u16, Stamp, T), Failure> {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let transport = |error| Failure::Transport {
            error,
            request: format!("{method} {uri}"),
            write,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(transport(Transport::Send(error))),
            Err(elapsed) => return Err(transport(Transport::Timeout(elapsed))),
        };
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout_at(deadline, body.collect()).await;
        let status = parts.status;
        if !status.is_success() {
            let location = parts
                .headers
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            // The status is the answer; a body cut short or late only loses
            // the detail.
            let body = match body {
                Ok(Ok(body)) => body.to_bytes().to_vec(),
                _ => Vec::new(),
            };
            return Err(Failure::Status {
                status: status.as_u16(),
                body,
                location,
            });
        }
        let body = match body {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) => return Err(transport(Transport::Receive(error))),
            Err(elapsed) => return Err(transport(Transport::Timeout(elapsed))),
        };
        let answer = serde_json::from_slice(&body).map_err(|error| {
            Failure::Protocol(format!(
                "the body of a {status} answer is not as expected: {error}"
            ))
        })?;
        let stamp = Stamp {
            replayed: parts
                .headers
                .get(headers::IDEMPOTENCY_REPLAYED)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true")),
            position: parts.headers.get(headers::POSITION).cloned(),
            headers: parts.headers,
        };
        Ok((status.as_u16(), stamp, answer))
    }

    /// `GET /db/{db}/changes` as a long poll (`Accept: application/json`):
    /// one request, waiting at most `wait`, at most half the request
    /// timeout and at most the server's limit ([`MAX_POLL`]).
    async fn long_poll(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
        wait: Duration,
    ) -> Result<ChangesPage> {
        if let Some(page) = ChangesPage::check_request(since, collection, limit)? {
            return Ok(page);
        }
        let limit = limit.min(MAX_PAGE);
        let wait = wait.min(self.timeout / 2).min(MAX_POLL);
        let mut url = self.endpoint.url(&["changes"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("since", &since.to_string());
            if let Some(collection) = collection {
                pairs.append_pair("collection", collection);
            }
            pairs.append_pair("limit", &limit.to_string());
            pairs.append_pair("timeout", &format!("{:.3}", wait.as_secs_f64()));
        }
        let mut request = self.get(&url)?;
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let page: ChangesPage = self
            .call::<ChangesPageBody<'static>>(request, false)
            .await?
            .into();
        let ordered = page
            .changes
            .windows(2)
            .all(|pair| pair[0].etag < pair[1].etag);
        let in_range = page
            .changes
            .iter()
            .all(|change| change.etag > since && change.etag <= page.last_etag);
        if page.changes.len() > limit || !ordered || !in_range {
            return Err(protocol(format!(
                "the changes after {since} were answered out of order or out of range"
            )));
        }
        Ok(page)
    }

    /// The entries (with their documents) of `ids` in `collection`, in
    /// order, `None` for missing ones: one request per [`MAX_IDS`] ids.
    async fn read_many(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<EntryBody>>> {
        validate::collection(collection)?;
        ids.iter().try_for_each(|id| validate::id(id))?;
        let url = self.endpoint.url(&["docs", collection, "get"]);
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS) {
            let request = self.post(
                &url,
                &GetManyRequest {
                    ids: Cow::Borrowed(chunk),
                },
            )?;
            let answer: Results<Option<EntryBody>> = self.call(request, false).await?;
            if answer.results.len() != chunk.len() {
                return Err(protocol(format!(
                    "asked for {} documents, got {} results",
                    chunk.len(),
                    answer.results.len()
                )));
            }
            for (id, entry) in chunk.iter().zip(&answer.results) {
                if let Some(entry) = entry {
                    let (got_collection, got_id) = entry.key();
                    if got_id != id || got_collection != collection {
                        return Err(protocol(format!(
                            "asked for {collection} #{id}, got {got_collection} #{got_id}"
                        )));
                    }
                }
            }
            found.extend(answer.results);
        }
        Ok(found)
    }
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Engine for RemoteEngine {
    /// `POST /db/{db}/batch` with the batch's id as its `Idempotency-Key`
    /// (a new one when it has none). A `409` is the inner `Err`: the
    /// server's conflicts, each named by the type name of its command in
    /// `batch`. When the outcome is unknown (no answer after sending, or
    /// `502`/`503`/`504`), the batch is sent again with its key for
    /// [`RemoteOptions::resend_for`]: the server answers a committed one
    /// with its recorded results. Past that, [`Error::InDoubt`].
    async fn commit(&self, batch: Batch) -> CommitResult {
        batch.validate()?;
        if batch.is_empty() && batch.id.is_none() {
            return Ok(Ok(Committed::default()));
        }
        let id = batch.id.clone().unwrap_or_else(BatchId::new);
        let key = HeaderValue::from_str(id.as_str())
            .map_err(|_| Error::InvalidInput(format!("batch id {id:?} cannot be sent")))?;
        let body = BatchRequest {
            commands: batch
                .commands
                .iter()
                .map(BatchCommand::new)
                .collect::<Result<_>>()?,
        };
        let body = serde_json::to_vec(&body).map_err(|error| {
            Error::InvalidInput(format!("the batch cannot be written as JSON: {error}"))
        })?;
        let url = self.endpoint.url(&["batch"]);
        let deadline = tokio::time::Instant::now() + self.resend_for;
        let mut pause = Duration::from_millis(50);
        let mut in_doubt = false;
        loop {
            let mut request = self.request(Method::POST, &url, Some(body.clone()))?;
            request
                .headers_mut()
                .insert(headers::IDEMPOTENCY_KEY, key.clone());
            let failure = match self
                .exchange_with_status::<BatchResponse>(request, true)
                .await
            {
                Ok((_, stamp, answer)) if answer.results.len() == batch.len() => {
                    let position = match stamp.position {
                        Some(header) => Some(
                            header
                                .to_str()
                                .ok()
                                .and_then(|text| Position::new(text).ok())
                                .ok_or_else(|| {
                                    protocol(format!(
                                        "the server answered a malformed Folio-Position {header:?}"
                                    ))
                                })?,
                        ),
                        None => None,
                    };
                    if let (After::LastCommit(last), Some(position)) = (&self.after, &position) {
                        *last.lock().unwrap_or_else(|p| p.into_inner()) =
                            HeaderValue::from_str(position.as_str()).ok();
                    }
                    let committed = if stamp.replayed {
                        Committed::replayed(answer.results)
                    } else {
                        Committed::new(answer.results)
                    };
                    return Ok(Ok(committed.at(position)));
                }
                Ok((_, _, answer)) => {
                    return Err(protocol(format!(
                        "a batch of {} commands was answered with {} results",
                        batch.len(),
                        answer.results.len()
                    )));
                }
                Err(failure) => failure,
            };
            let (resend, applied) = error::resending(&failure);
            let error = error::map(failure);
            if !resend {
                return match error {
                    Error::Concurrency(conflict) => Ok(Err(name_conflicts(&batch, conflict))),
                    Error::Engine(error) if in_doubt => Err(doubt(&id, error.into())),
                    error => Err(error),
                };
            }
            in_doubt |= applied;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(if in_doubt { doubt(&id, error) } else { error });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// The server decides where a read is served from: `Primary` sends the
    /// position of the engine's last commit (its reads see its own writes;
    /// on a cluster, another client's newer writes may not show yet), `Any`
    /// none, `After` that position.
    fn reads(self: Arc<Self>, reads: Reads) -> Result<EngineRef> {
        let after = match reads {
            Reads::Primary => return Ok(self),
            Reads::Any => None,
            Reads::After(position) => {
                Some(HeaderValue::from_str(position.as_str()).map_err(|_| {
                    Error::InvalidInput(format!("{position} cannot be sent as Folio-After"))
                })?)
            }
        };
        Ok(Arc::new(RemoteEngine {
            after: After::Fixed(after),
            ..(*self).clone()
        }))
    }

    /// `POST /db/{db}/docs/{collection}/get` (in requests of 1000 ids).
    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Entry>>> {
        Ok(self
            .read_many(collection, ids)
            .await?
            .into_iter()
            .map(|entry| entry.map(Entry::from))
            .collect())
    }

    /// The same request as [`Engine::get`], without keeping the documents:
    /// one round trip.
    async fn metadata(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<Metadata>>> {
        Ok(self
            .read_many(collection, ids)
            .await?
            .into_iter()
            .map(|entry| entry.map(EntryBody::into_metadata))
            .collect())
    }

    /// `POST /db/{db}/query`, in pages of 1000 when `take` is larger or
    /// absent.
    async fn query(&self, query: &Query) -> Result<Vec<Entry>> {
        Ok(self.query_page(query).await?.entries)
    }

    /// `POST /db/{db}/query` with `take: 0`: the `total` alone.
    async fn count(&self, query: &Query) -> Result<u64> {
        // Refused as a whole, as every engine refuses it, though the
        // request leaves out the order.
        query.validate()?;
        let counting = Query {
            order_by: Vec::new(),
            skip: 0,
            take: Some(0),
            ..query.clone()
        };
        Ok(self.query_page(&counting).await?.total)
    }

    /// `GET /db/{db}/collections`.
    async fn collections(&self) -> Result<Vec<CollectionCount>> {
        let url = self.endpoint.url(&["collections"]);
        let answer: CollectionList = self.call(self.get(&url)?, false).await?;
        Ok(answer.collections)
    }

    /// `POST /db/{db}/query`: one request when `take` is at most 1000, else
    /// pages of 1000 (the total is the first page's).
    async fn query_page(&self, query: &Query) -> Result<QueryResult> {
        query.validate()?;
        let url = self.endpoint.url(&["query"]);
        let mut page_query = query.clone();
        let mut entries: Vec<Entry> = Vec::new();
        let mut total = None;
        loop {
            let read = entries.len() as u64;
            let wanted = query.take.map(|take| take.saturating_sub(read));
            let take = wanted.map_or(MAX_TAKE, |wanted| wanted.min(MAX_TAKE));
            page_query.skip = query.skip.saturating_add(read);
            page_query.take = Some(take);
            let request = self.post(&url, &page_query)?;
            let answer: QueryResponse = self.call(request, false).await?;
            let got = answer.results.len() as u64;
            if got > take {
                return Err(protocol(format!(
                    "a query for {take} results was answered with {got}"
                )));
            }
            let total = *total.get_or_insert(answer.total);
            entries.extend(answer.results.into_iter().map(Entry::from));
            let done =
                got < take || wanted == Some(got) || page_query.skip.saturating_add(got) >= total;
            if done {
                return Ok(QueryResult { entries, total });
            }
        }
    }

    /// `GET /db/{db}/docs/{collection}?after=&limit=`, following `next` in
    /// pages of at most 1000 until `limit` entries are read.
    async fn scan(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        validate::collection(collection)?;
        if let Some(after) = after {
            validate::id(after)?;
        }
        let mut entries = Vec::new();
        let mut after = after.map(str::to_owned);
        while entries.len() < limit {
            let page_limit = (limit - entries.len()).min(MAX_PAGE);
            let mut url = self.endpoint.url(&["docs", collection]);
            {
                let mut pairs = url.query_pairs_mut();
                if let Some(after) = &after {
                    pairs.append_pair("after", after);
                }
                pairs.append_pair("limit", &page_limit.to_string());
            }
            let answer: ListResponse = self.call(self.get(&url)?, false).await?;
            let got = answer.items.len();
            if got > page_limit {
                return Err(protocol(format!(
                    "a page of {page_limit} entries was answered with {got}"
                )));
            }
            entries.extend(answer.items.into_iter().map(Entry::from));
            match answer.next {
                Some(next) if got == page_limit => after = Some(next),
                _ => break,
            }
        }
        Ok(entries)
    }

    /// Does nothing (after checking the collection name): a remote store's
    /// indexes are the server's business, and the protocol has no endpoint
    /// to create one. Queries give the same results with or without an
    /// index; configure indexes where the server's engine is opened.
    async fn ensure_index(&self, collection: &str, _path: &FieldPath) -> Result<()> {
        validate::collection(collection)
    }

    /// `PUT /db/{db}/collections/{collection}/config` (an admin key on a
    /// server with keys).
    async fn configure(&self, collection: &str, config: &CollectionConfig) -> Result<()> {
        validate::collection(collection)?;
        config.validate()?;
        let url = self.endpoint.url(&["collections", collection, "config"]);
        let body = serde_json::to_vec(config).expect("a configuration serializes");
        let request = self.request(Method::PUT, &url, Some(body))?;
        // Replacing a configuration is idempotent: a retry is safe.
        let _: CollectionConfig = self.call(request, false).await?;
        Ok(())
    }

    /// `GET /db/{db}/collections/{collection}/config`.
    async fn configuration(&self, collection: &str) -> Result<CollectionConfig> {
        validate::collection(collection)?;
        let url = self.endpoint.url(&["collections", collection, "config"]);
        self.call(self.get(&url)?, false).await
    }

    /// `GET /db/{db}/docs/{collection}/{id}/revisions?start=…&take=…`.
    async fn revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<RevisionsPage> {
        validate::collection(collection)?;
        validate::id(id)?;
        folio_core::validate_page(take)?;
        let mut url = self.endpoint.url(&["docs", collection, id, "revisions"]);
        url.query_pairs_mut()
            .append_pair("start", &start.to_string())
            .append_pair("take", &take.to_string());
        self.call(self.get(&url)?, false).await
    }

    /// `GET /db/{db}/docs/{collection}/{id}/revisions/{change_vector}`: the
    /// document, its version in the headers.
    async fn revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<Entry>> {
        validate::collection(collection)?;
        validate::id(id)?;
        let url = self
            .endpoint
            .url(&["docs", collection, id, "revisions", change_vector.as_str()]);
        let answer = self
            .exchange_with_status::<Box<serde_json::value::RawValue>>(self.get(&url)?, false)
            .await;
        let (_, stamp, document) = match answer {
            Ok(answer) => answer,
            Err(Failure::Status { status: 404, .. }) => return Ok(None),
            Err(failure) => return Err(error::map(failure)),
        };
        let header = |name: &str| {
            stamp
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| protocol(format!("a revision was answered without {name}")))
        };
        let number = |name: &str| {
            header(name)?
                .parse::<u64>()
                .map_err(|_| protocol(format!("a revision was answered with a bad {name}")))
        };
        let last_modified = humantime::parse_rfc3339_weak(header(headers::LAST_MODIFIED_PRECISE)?)
            .map_err(|_| protocol("a revision was answered with a bad time".into()))?;
        Ok(Some(Entry {
            metadata: Metadata {
                id: id.to_owned(),
                collection: collection.to_owned(),
                change_vector: change_vector.clone(),
                revision: number("folio-revision")?,
                etag: number("folio-etag")?,
                last_modified,
            },
            document: document.get().to_owned(),
        }))
    }

    /// `GET /db/{db}/changes` with `timeout=0`.
    async fn changes(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage> {
        self.long_poll(since, collection, limit, Duration::ZERO)
            .await
    }

    /// Long polls for one change of any collection, until one comes or
    /// `timeout` is over.
    async fn wait_for_changes(&self, since: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let page = self.long_poll(since, None, 1, left).await?;
            if page.last_etag > since || Instant::now() >= deadline {
                return Ok(page.last_etag);
            }
        }
    }

    /// Long polls (the server waits, so no request is wasted) until a page
    /// has changes or `timeout` is over: one request per poll, each at most
    /// as long as [`RemoteEngine::long_poll`] allows.
    async fn changes_wait(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
        timeout: Duration,
    ) -> Result<ChangesPage> {
        let deadline = Instant::now() + timeout;
        let mut since = since;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let page = self.long_poll(since, collection, limit, left).await?;
            if !page.changes.is_empty() || Instant::now() >= deadline {
                return Ok(page);
            }
            // Nothing matched up to the page's end: wait beyond it.
            since = page.last_etag.max(since);
        }
    }
}

const USER_AGENT_VALUE: &str = concat!("folio-remote/", env!("CARGO_PKG_VERSION"));

/// The HTTP client of one engine: HTTP/1.1 over plain TCP (no delay),
/// keep-alive connections pooled per host.
fn http_client() -> HttpClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// The `Authorization` header of an API key.
fn authorization(key: &str) -> Result<HeaderValue> {
    let refused = || {
        Error::InvalidInput(
            "an API key must be 1 or more visible ASCII characters without spaces".into(),
        )
    };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refused());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| refused())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The error of batch `id`, whose outcome stayed unknown after `last`.
fn doubt(id: &BatchId, last: Error) -> Error {
    Error::InDoubt(
        folio_core::InDoubt::new(
            Some(id.clone()),
            "the server's answer was lost and no answer came when it was sent again",
        )
        .with_source(last),
    )
}

fn protocol(what: String) -> Error {
    error::map(Failure::Protocol(what))
}

/// Gives each conflict of a refused batch the type name of its command: the
/// server knows collections and ids, not the Rust types the session wrote.
/// Conflicts come in command order, so the n-th conflict on a key is matched
/// with the n-th command on that key.
fn name_conflicts(batch: &Batch, refused: ConcurrencyError) -> ConcurrencyError {
    let mut matched = vec![false; batch.len()];
    let conflicts = refused
        .into_conflicts()
        .into_iter()
        .map(|conflict| {
            let on_key = |index: &usize| {
                let command = &batch.commands[*index];
                command.collection == conflict.collection() && command.id == conflict.id()
            };
            let index = (0..batch.len())
                .filter(on_key)
                .find(|index| !matched[*index])
                .or_else(|| (0..batch.len()).find(on_key));
            match index {
                Some(index) => {
                    matched[index] = true;
                    match &batch.commands[index].type_name {
                        Some(type_name) => conflict.with_type_name(Some(type_name.clone())),
                        None => conflict,
                    }
                }
                None => conflict,
            }
        })
        .collect();
    ConcurrencyError::new(conflicts)
}

/// What the headers of a 2xx answer say of a write.
struct Stamp {
    /// `Idempotency-Replayed: true`: the answer of a write that had
    /// committed under the key.
    replayed: bool,
    /// `Folio-Position`.
    position: Option<HeaderValue>,
    /// Every header of the answer.
    headers: hyper::HeaderMap,
}

#[cfg(test)]
mod tests {
    use folio_core::{Command, Conflict, EngineErrorKind, Expectation};

    use super::*;

    #[test]
    fn conflicts_get_the_type_names_of_their_commands() {
        let batch = Batch::from(vec![
            Command::put("people", "p1", "{}", Expectation::version("A:1-x"))
                .with_type_name("Person"),
            Command::put("notes", "p1", "{}", Expectation::Missing),
            Command::check("people", "p2", Expectation::version("A:2-x")).with_type_name("Person"),
            Command::put("people", "p2", "{}", Expectation::version("A:2-x"))
                .with_type_name("Admin"),
        ]);
        let refused = ConcurrencyError::new(vec![
            Conflict::new(
                "people",
                "p1",
                Expectation::version("A:1-x"),
                Some("A:9-x".into()),
            ),
            Conflict::new("notes", "p1", Expectation::Missing, Some("A:3-x".into())),
            Conflict::new("people", "p2", Expectation::version("A:2-x"), None),
            Conflict::new("people", "p2", Expectation::version("A:2-x"), None),
            Conflict::new("other", "p9", Expectation::Missing, Some("A:4-x".into())),
        ]);
        let named = name_conflicts(&batch, refused);
        let names: Vec<&str> = named.conflicts().iter().map(Conflict::type_name).collect();
        assert_eq!(names, ["Person", "notes", "Person", "Admin", "other"]);

        let single = name_conflicts(
            &batch,
            ConcurrencyError::new(vec![Conflict::new(
                "people",
                "p1",
                Expectation::version("A:1-x"),
                Some("A:9-x".into()),
            )]),
        );
        assert_eq!(
            single.to_string(),
            "Optimistic concurrency check failed for Person #p1"
        );
    }

    #[test]
    fn options_do_not_show_the_key() {
        let options = RemoteOptions {
            api_key: Some("s3cret".into()),
            ..RemoteOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_refuses_bad_urls_keys_and_timeouts_before_any_request() {
        let invalid =
            async |url: &str, options: RemoteOptions| match RemoteEngine::connect(url, options)
                .await
            {
                Err(Error::InvalidInput(message)) => message,
                other => panic!("{url}: expected invalid input, got {other:?}"),
            };
        // Port 9 (discard) on loopback: a request would fail as a network
        // error, so invalid input proves that none was made.
        for url in [
            "http://127.0.0.1:9/shop",
            "http://127.0.0.1:9/db/Shop",
            "ftp://x/db/a",
        ] {
            invalid(url, RemoteOptions::default()).await;
        }
        let tls = invalid("https://127.0.0.1:9/db/shop", RemoteOptions::default()).await;
        assert!(tls.contains("TLS"), "{tls}");
        for key in ["", "two words", "ünïcode", "line\nbreak"] {
            let options = RemoteOptions {
                api_key: Some(key.into()),
                ..RemoteOptions::default()
            };
            let message = invalid("http://127.0.0.1:9/db/shop", options).await;
            assert!(message.contains("API key"), "{message}");
        }
        let options = RemoteOptions {
            timeout: Duration::ZERO,
            ..RemoteOptions::default()
        };
        invalid("http://127.0.0.1:9/db/shop", options).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_fails_as_a_network_error_when_nothing_listens() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/db/shop");
        match RemoteEngine::connect(&url, RemoteOptions::default()).await {
            Err(Error::Engine(error)) => assert_eq!(error.kind(), EngineErrorKind::Network),
            other => panic!("expected a network error, got {other:?}"),
        }
    }
}
