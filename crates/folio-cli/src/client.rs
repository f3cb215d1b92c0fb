//! The client side of the `folio` command: `get`, `put`, `delete`, `query`,
//! `import` against a server, over the protocol of docs/protocol.md (the
//! commands that move whole databases are in `transfer`).
//!
//! Writes go through the server's batch and document endpoints, so they
//! reach `Engine::commit` like every other write. Exit codes say what went
//! wrong (see [`Failure::exit_code`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use folio_core::Expectation;
use folio_protocol::{BatchCommand, CollectionList, DatabaseList, Operation};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A failed command, with the exit code that says why.
#[derive(Debug)]
pub struct Failure {
    /// What happened.
    pub message: String,
    /// The HTTP status, when the server answered.
    pub status: Option<StatusCode>,
    /// The problem's kind (`in-doubt`, `concurrency-conflict`, …), when the
    /// server answered with one of Folio's problems.
    pub problem: Option<String>,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            status: None,
            problem: None,
        }
    }

    /// Whether a write that failed so may have been applied, its answer
    /// lost: no answer, or a server or gateway that could not say (`502`,
    /// `503`, `504`), unless the server tried to learn the outcome itself
    /// (`in-doubt`).
    fn answer_lost(&self) -> bool {
        match self.status.map(|status| status.as_u16()) {
            None => true,
            Some(502..=504) => self.problem.as_deref() != Some("in-doubt"),
            Some(_) => false,
        }
    }

    /// 3: not found; 4: a precondition or concurrency check failed (409,
    /// 412, 428); 5: not allowed (401, 403); 1: anything else.
    pub fn exit_code(&self) -> u8 {
        match self.status.map(|status| status.as_u16()) {
            Some(404) => 3,
            Some(409 | 412 | 428) => 4,
            Some(401 | 403) => 5,
            _ => 1,
        }
    }
}

/// A connection to one database of a server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    database: String,
    api_key: Option<String>,
}

impl Client {
    /// A client of database `database` on the server at `server` (`http://host:port`).
    pub fn new(server: &str, database: &str, api_key: Option<String>) -> Result<Self, Failure> {
        folio_core::validate::database(database)
            .map_err(|error| Failure::new(error.to_string()))?;
        let server = server.trim_end_matches('/');
        if !server.starts_with("http://") {
            return Err(Failure::new(format!(
                "the server URL must start with http:// (got {server:?})"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| Failure::new(format!("cannot make an HTTP client: {error}")))?;
        Ok(Client {
            http,
            base: server.to_owned(),
            database: database.to_owned(),
            api_key,
        })
    }

    /// The database this client talks to.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/db/{}{path}", self.base, self.database)
    }

    fn document_url(&self, collection: &str, id: &str) -> String {
        self.url(&format!(
            "/docs/{collection}/{}",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        ))
    }

    pub(crate) fn request(&self, method: Method, url: String) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|error| {
            Failure::new(format!("cannot reach the server at {}: {error}", self.base))
        })?;
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let problem = serde_json::from_str::<folio_protocol::Problem>(&body).ok();
        let kind = problem
            .as_ref()
            .and_then(|problem| problem.kind_name())
            .map(str::to_owned);
        let detail = problem
            .filter(|problem| !problem.detail.is_empty())
            .map(|problem| match problem.actual.flatten() {
                Some(actual) => format!("{} (current change vector: {actual})", problem.detail),
                None => problem.detail,
            })
            .unwrap_or(body);
        // The server says how to create a missing database over HTTP; from
        // the command line it is `folio create`.
        let detail = if status == StatusCode::NOT_FOUND && detail.starts_with("no database") {
            format!("{detail}, or run `folio create {}`", self.database)
        } else {
            detail
        };
        Err(Failure {
            message: format!("{status}: {detail}"),
            status: Some(status),
            problem: kind,
        })
    }

    /// The same client for requests that carry a whole database (backups,
    /// restores, exports): no limit on the whole exchange (a large
    /// database takes as long as it takes), only on connecting; a peer
    /// that is gone is noticed by TCP keep-alive.
    pub fn for_transfers(mut self) -> Result<Self, Failure> {
        self.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| Failure::new(format!("cannot make an HTTP client: {error}")))?;
        Ok(self)
    }

    /// `folio create`: creates this client's database (`PUT /db/{db}`) and
    /// says whether it is new or existed already.
    pub async fn create_database(&self, out: &mut impl Write) -> Result<(), Failure> {
        let response = self.send(self.request(Method::PUT, self.url(""))).await?;
        let line = if response.status() == StatusCode::CREATED {
            format!("created database {}", self.database)
        } else {
            format!("database {} exists", self.database)
        };
        writeln!(out, "{line}").map_err(write_failure)
    }

    /// `folio databases`: the server's databases (those the key has a role
    /// in), one name per line.
    pub async fn databases(&self, out: &mut impl Write) -> Result<(), Failure> {
        let listing: DatabaseList = self
            .get_json(format!("{}/db", self.base), "list of databases")
            .await?;
        for name in listing.databases {
            writeln!(out, "{name}").map_err(write_failure)?;
        }
        Ok(())
    }

    /// `folio collections`: the database's collections that hold documents,
    /// one per line: the name, a tab, how many documents.
    pub async fn collections(&self, out: &mut impl Write) -> Result<(), Failure> {
        let listing: CollectionList = self
            .get_json(self.url("/collections"), "list of collections")
            .await?;
        for collection in listing.collections {
            writeln!(out, "{}\t{}", collection.name, collection.documents)
                .map_err(write_failure)?;
        }
        Ok(())
    }

    /// `GET url`, its JSON body read as a `T` (`what` names it in the error).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        what: &str,
    ) -> Result<T, Failure> {
        let response = self.send(self.request(Method::GET, url)).await?;
        response.json().await.map_err(|error| {
            Failure::new(format!("the server's {what} is not as expected: {error}"))
        })
    }

    /// `folio get`: the document, or with `metadata` the entry with its version.
    pub async fn get(
        &self,
        collection: &str,
        id: &str,
        metadata: bool,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let response = self
            .send(self.request(Method::GET, self.document_url(collection, id)))
            .await?;
        let change_vector =
            header_text(&response, header::ETAG).map(|etag| etag.trim_matches('"').to_owned());
        let revision = header_text(&response, "folio-revision");
        let body = response.text().await.map_err(read_failure)?;
        let line = if metadata {
            format!(
                "{{\"collection\":{},\"id\":{},\"change_vector\":{},\"revision\":{},\"document\":{body}}}",
                json_string(collection),
                json_string(id),
                json_string(change_vector.as_deref().unwrap_or_default()),
                revision.as_deref().unwrap_or("null"),
            )
        } else {
            body
        };
        writeln!(out, "{line}").map_err(write_failure)
    }

    /// Sends a write with `key` as its `Idempotency-Key`. When its answer
    /// is lost ([`Failure::answer_lost`]), sends it again with the same key
    /// until the server answers (a write that committed is answered as it
    /// was, and is not applied twice), for [`RESEND_FOR`]; after that the
    /// failure names the key, with which the write can be sent again later
    /// to learn whether it was applied.
    pub(crate) async fn send_write(
        &self,
        request: reqwest::RequestBuilder,
        key: &str,
    ) -> Result<reqwest::Response, Failure> {
        let request = request.header(folio_protocol::headers::IDEMPOTENCY_KEY, key);
        let deadline = Instant::now() + RESEND_FOR;
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = request
                .try_clone()
                .ok_or_else(|| Failure::new("a write whose body cannot be sent twice"))?;
            match self.send(attempt).await {
                Err(failure) if failure.answer_lost() => {
                    if Instant::now() + pause >= deadline {
                        return Err(Failure {
                            message: format!(
                                "{}; the write may or may not have been applied: send it again \
                                 with Idempotency-Key {key} (folio put/delete \
                                 --idempotency-key {key}) to learn which",
                                failure.message
                            ),
                            ..failure
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                outcome => return outcome,
            }
        }
    }

    /// `folio put`: writes `document` (JSON object text), conditionally,
    /// with `key` as its idempotency key ([`Client::send_write`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        collection: &str,
        id: &str,
        document: String,
        if_match: Option<&str>,
        if_none_match: Option<&str>,
        key: &str,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let mut request = self
            .request(Method::PUT, self.document_url(collection, id))
            .header(header::CONTENT_TYPE, "application/json")
            .body(document);
        if let Some(version) = if_match {
            request = request.header(header::IF_MATCH, entity_tag(version));
        }
        if let Some(version) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, entity_tag(version));
        }
        let response = self.send_write(request, key).await?;
        let body = response.text().await.map_err(read_failure)?;
        writeln!(out, "{body}").map_err(write_failure)
    }

    /// `folio delete`, with `key` as its idempotency key.
    pub async fn delete(
        &self,
        collection: &str,
        id: &str,
        if_match: Option<&str>,
        key: &str,
    ) -> Result<(), Failure> {
        let mut request = self.request(Method::DELETE, self.document_url(collection, id));
        if let Some(version) = if_match {
            request = request.header(header::IF_MATCH, entity_tag(version));
        }
        self.send_write(request, key).await.map(drop)
    }

    /// `folio config`: prints the collection's configuration; with
    /// `config`, replaces it first (an admin key's).
    pub async fn config(
        &self,
        collection: &str,
        config: Option<String>,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let url = self.url(&format!("/collections/{collection}/config"));
        let request = match config {
            Some(config) => self
                .request(Method::PUT, url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(config),
            None => self.request(Method::GET, url),
        };
        let body = self
            .send(request)
            .await?
            .text()
            .await
            .map_err(read_failure)?;
        writeln!(out, "{body}").map_err(write_failure)
    }

    fn revisions_url(&self, collection: &str, id: &str) -> String {
        format!("{}/revisions", self.document_url(collection, id))
    }

    /// `folio revisions`: the kept versions of a document, newest first,
    /// one per line: revision, change vector, time (and `deleted` for a
    /// deletion); every page of them.
    pub async fn revisions(
        &self,
        collection: &str,
        id: &str,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let mut start = 0u64;
        loop {
            let url = format!(
                "{}?start={start}&take={}",
                self.revisions_url(collection, id),
                folio_core::MAX_REVISIONS_PAGE
            );
            let page: folio_core::RevisionsPage = self.get_json(url, "history").await?;
            for item in &page.items {
                let deleted = if item.deleted { "\tdeleted" } else { "" };
                writeln!(
                    out,
                    "{}\t{}\t{}{deleted}",
                    item.revision,
                    item.change_vector,
                    humantime::format_rfc3339_millis(item.last_modified)
                )
                .map_err(write_failure)?;
            }
            start += page.items.len() as u64;
            if page.items.is_empty() || start >= page.total {
                return Ok(());
            }
        }
    }

    /// The kept version `change_vector` of a document (its JSON).
    async fn revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &str,
    ) -> Result<String, Failure> {
        let url = format!(
            "{}/{}",
            self.revisions_url(collection, id),
            percent_encoding::utf8_percent_encode(
                change_vector,
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        self.send(self.request(Method::GET, url))
            .await?
            .text()
            .await
            .map_err(read_failure)
    }

    /// `folio revisions … CV`: prints that kept version's document.
    pub async fn show_revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &str,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let document = self.revision(collection, id, change_vector).await?;
        writeln!(out, "{document}").map_err(write_failure)
    }

    /// `folio revert`: writes the kept version `change_vector` again as the
    /// document's new version, only over the version current now (`If-Match`,
    /// or `If-None-Match: *` when it was deleted): a write in between is a
    /// refusal (exit code 4), nothing written. Prints the new metadata.
    pub async fn revert(
        &self,
        collection: &str,
        id: &str,
        change_vector: &str,
        key: &str,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let document = self.revision(collection, id, change_vector).await?;
        let current = self
            .request(Method::HEAD, self.document_url(collection, id))
            .send()
            .await
            .map_err(|error| {
                Failure::new(format!("cannot reach the server at {}: {error}", self.base))
            })?;
        let (if_match, if_none_match) = match current.status() {
            StatusCode::OK => {
                let etag = header_text(&current, header::ETAG).ok_or_else(|| {
                    Failure::new("the server answered a document without an ETag")
                })?;
                (Some(etag.trim_matches('"').to_owned()), None)
            }
            StatusCode::NOT_FOUND => (None, Some("*")),
            _ => {
                // Not readable: the GET says why.
                return self
                    .send(self.request(Method::GET, self.document_url(collection, id)))
                    .await
                    .map(drop);
            }
        };
        self.put(
            collection,
            id,
            document,
            if_match.as_deref(),
            if_none_match,
            key,
            out,
        )
        .await
    }

    /// `folio query`: prints the response (`results` and `total`).
    pub async fn query(&self, query: String, out: &mut impl Write) -> Result<(), Failure> {
        let response = self
            .send(
                self.request(Method::POST, self.url("/query"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(query),
            )
            .await?;
        let body = response.text().await.map_err(read_failure)?;
        writeln!(out, "{body}").map_err(write_failure)
    }

    /// `folio import`: JSON Lines written in batches of `batch_size`;
    /// `only_new` makes each put expect the id to be free. Returns the
    /// number imported.
    ///
    /// Without `collection` every line is an exported line,
    /// `{"collection","id","document"}` and nothing else (as `export`
    /// writes them); with `collection` every line is a plain document,
    /// stored whole in that collection under its string `id` field. A
    /// document is stored exactly as its line holds it.
    ///
    /// A batch names each document at most once, so a line naming a
    /// document that an earlier line of the batch named starts a new
    /// batch, and a batch naming a document of a batch still in flight is
    /// sent only after every batch before it committed: later lines win,
    /// in the file's order.
    ///
    /// Each batch is atomic; the import as a whole is not. Up to
    /// `IMPORT_BATCHES_IN_FLIGHT` batches are sent ahead, so when one fails
    /// (a conflict with `only_new`, say) the batches sent before and a few
    /// after it may have been written.
    ///
    /// Each batch carries an idempotency key, so a batch whose answer is
    /// lost is sent again until the server answers, never applied twice.
    /// With `only_new` the key is a digest of the batch's body: running an
    /// interrupted import again (the same file and batch size) within the
    /// server's retention of keys (a day) writes only what the first run
    /// did not, the batches it committed answered as before (counted as
    /// imported by the earlier run) rather than refused as existing.
    /// Without it, the key is the run's own: a run again writes every line
    /// again, and converges.
    pub async fn import(
        &self,
        file: &Path,
        collection: Option<&str>,
        batch_size: usize,
        only_new: bool,
    ) -> Result<u64, Failure> {
        let size = std::fs::metadata(file)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        let reader =
            std::io::BufReader::new(std::fs::File::open(file).map_err(|error| {
                Failure::new(format!("cannot open {}: {error}", file.display()))
            })?);
        let progress = ProgressBar::new(size).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let expect = if only_new {
            Expectation::Missing
        } else {
            Expectation::Any
        };
        let mut batch = ImportBatch::default();
        let documents = std::collections::hash_map::RandomState::new();
        let keys = if only_new {
            ImportKeys::Digest
        } else {
            ImportKeys::Run(folio_core::BatchId::new())
        };
        // A few batches in flight, so that reading and encoding the next
        // one overlaps the server writing this one.
        let mut pipeline = Pipeline::new(self, &progress, keys);
        let started = Instant::now();
        for (number, line) in reader.lines().enumerate() {
            let line =
                line.map_err(|error| Failure::new(format!("reading {}: {error}", file.display())))?;
            progress.inc(line.len() as u64 + 1);
            if line.trim().is_empty() {
                continue;
            }
            let (line_collection, id, document) =
                import_line(&line, collection).map_err(|message| {
                    Failure::new(format!("{}:{}: {message}", file.display(), number + 1))
                })?;
            let key = documents.hash_one((&line_collection, &id));
            if batch.keys.contains(&key) {
                pipeline.send(std::mem::take(&mut batch)).await?;
                batch.after_in_flight = true;
            } else if pipeline.holds(&key) {
                batch.after_in_flight = true;
            }
            let document = serde_json::from_str::<&RawValue>(&document).map_err(|error| {
                Failure::new(format!(
                    "{}:{}: the document is not JSON: {error}",
                    file.display(),
                    number + 1
                ))
            })?;
            let command = BatchCommand {
                op: Operation::Put,
                collection: Cow::Borrowed(&line_collection),
                id: Cow::Borrowed(&id),
                document: Some(document),
                expect: Cow::Borrowed(&expect),
            };
            batch.commands.push(
                serde_json::to_string(&command)
                    .map_err(|error| Failure::new(format!("writing a batch: {error}")))?,
            );
            batch.keys.insert(key);
            if batch.commands.len() >= batch_size {
                pipeline.send(std::mem::take(&mut batch)).await?;
            }
        }
        pipeline.send(batch).await?;
        let (imported, pipeline_replayed) = pipeline.finish().await?;
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let earlier = if pipeline_replayed > 0 {
            format!(" ({pipeline_replayed} of them by an earlier run of this import)")
        } else {
            String::new()
        };
        eprintln!(
            "imported {imported} documents{earlier} in {seconds:.1} s ({:.0} documents/s)",
            imported as f64 / seconds.max(1e-9)
        );
        Ok(imported)
    }

    /// Sends batch `number` of an import, keyed by `keys`: the number of
    /// documents, and whether the server had committed it before.
    async fn send_batch(
        &self,
        commands: Vec<String>,
        keys: &ImportKeys,
        number: u64,
    ) -> Result<(u64, bool), Failure> {
        use sha2::Digest;
        let count = commands.len() as u64;
        let body = format!("{{\"commands\":[{}]}}", commands.join(","));
        let key: String = match keys {
            ImportKeys::Digest => std::iter::once("import-".to_owned())
                .chain(
                    sha2::Sha256::digest(body.as_bytes())[..16]
                        .iter()
                        .map(|byte| format!("{byte:02x}")),
                )
                .collect(),
            ImportKeys::Run(run) => format!("import-{run}-{number}"),
        };
        let response = self
            .send_write(
                self.request(Method::POST, self.url("/batch"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body),
                &key,
            )
            .await?;
        let replayed = response
            .headers()
            .get(folio_protocol::headers::IDEMPOTENCY_REPLAYED)
            .is_some_and(|value| value.as_bytes() == b"true");
        Ok((count, replayed))
    }
}

/// A document an import writes: a hash of its collection and id. Two
/// documents with one hash cost a new batch or a wait, never a batch that
/// names a document twice.
type DocumentKey = u64;

/// The batch an import is filling.
#[derive(Default)]
struct ImportBatch {
    /// The commands, as JSON.
    commands: Vec<String>,
    /// The documents they name, each once.
    keys: HashSet<DocumentKey>,
    /// Whether it names a document that a batch before it names: then it
    /// is sent only once every batch before it committed.
    after_in_flight: bool,
}

/// What a batch of an import came to: its documents, and whether an
/// earlier run had committed it.
type Sent = (u64, bool);

/// How an import keys its batches (`Client::import`).
#[derive(Clone)]
enum ImportKeys {
    /// By a digest of the batch's body: the same batch in another run is
    /// the same write.
    Digest,
    /// By the run and the batch's number.
    Run(folio_core::BatchId),
}

/// The batches of an import in flight, and the documents each names.
struct Pipeline<'a> {
    client: &'a Client,
    keys_of_batches: ImportKeys,
    progress: &'a ProgressBar,
    in_flight: FuturesUnordered<LocalBoxFuture<'a, (u64, Result<Sent, Failure>)>>,
    keys: HashMap<u64, HashSet<DocumentKey>>,
    sent: u64,
    imported: u64,
    /// Of them, in batches an earlier run committed.
    replayed: u64,
}

impl<'a> Pipeline<'a> {
    fn new(client: &'a Client, progress: &'a ProgressBar, keys: ImportKeys) -> Self {
        Pipeline {
            client,
            keys_of_batches: keys,
            progress,
            in_flight: FuturesUnordered::new(),
            keys: HashMap::new(),
            sent: 0,
            imported: 0,
            replayed: 0,
        }
    }

    /// Whether a batch in flight names the document `key`.
    fn holds(&self, key: &DocumentKey) -> bool {
        self.keys.values().any(|keys| keys.contains(key))
    }

    /// Sends `batch` (after every batch in flight committed, when it must
    /// be), then waits while too many are in flight.
    async fn send(&mut self, batch: ImportBatch) -> Result<(), Failure> {
        if batch.commands.is_empty() {
            return Ok(());
        }
        if batch.after_in_flight {
            while !self.in_flight.is_empty() {
                self.complete_one().await?;
            }
        }
        let number = self.sent;
        self.sent += 1;
        self.keys.insert(number, batch.keys);
        let client = self.client;
        let commands = batch.commands;
        let keys = self.keys_of_batches.clone();
        self.in_flight.push(Box::pin(async move {
            (number, client.send_batch(commands, &keys, number).await)
        }));
        while self.in_flight.len() >= IMPORT_BATCHES_IN_FLIGHT {
            self.complete_one().await?;
        }
        Ok(())
    }

    /// Waits for one batch in flight to be answered.
    async fn complete_one(&mut self) -> Result<(), Failure> {
        if let Some((number, answer)) = self.in_flight.next().await {
            self.keys.remove(&number);
            let (count, replayed) = answer?;
            self.imported += count;
            if replayed {
                self.replayed += count;
            }
            self.progress
                .set_message(format!("{} documents", self.imported));
        }
        Ok(())
    }

    /// Waits for every batch in flight; how many documents were imported,
    /// and how many of them an earlier run did.
    async fn finish(mut self) -> Result<(u64, u64), Failure> {
        while !self.in_flight.is_empty() {
            self.complete_one().await?;
        }
        Ok((self.imported, self.replayed))
    }
}

/// How long a write whose answer was lost is sent again with its key.
const RESEND_FOR: Duration = Duration::from_secs(30);

/// How many import batches are sent before the first answer is awaited.
const IMPORT_BATCHES_IN_FLIGHT: usize = 4;

/// One import line: with `collection`, a plain document (stored whole,
/// under its string `id`); without, an exported line
/// `{"collection","id","document"}`, with the entry's metadata as `folio
/// export` writes it (`change_vector`, `revision`, `etag`,
/// `last_modified`: an import writes new versions, so they are read and
/// left).
fn import_line(line: &str, collection: Option<&str>) -> Result<(String, String, String), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Exported<'a> {
        collection: String,
        id: String,
        #[serde(borrow)]
        document: &'a RawValue,
        #[serde(default, borrow)]
        change_vector: Option<&'a RawValue>,
        #[serde(default, borrow)]
        revision: Option<&'a RawValue>,
        #[serde(default, borrow)]
        etag: Option<&'a RawValue>,
        #[serde(default, borrow)]
        last_modified: Option<&'a RawValue>,
    }
    /// A plain document's `id`; every other field is skipped unread.
    #[derive(Deserialize)]
    struct Plain<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let Some(collection) = collection else {
        let exported = serde_json::from_str::<Exported<'_>>(line).map_err(|error| {
            format!(
                "not an exported line ({{\"collection\",\"id\",\"document\"}} and the entry's \
                 metadata, nothing else): {error}; to import plain documents give --collection"
            )
        })?;
        return Ok((
            exported.collection,
            exported.id,
            exported.document.get().to_owned(),
        ));
    };
    let plain = serde_json::from_str::<Plain<'_>>(line)
        .map_err(|error| format!("not a JSON object: {error}"))?;
    let id = plain
        .id
        .and_then(|id| serde_json::from_str::<String>(id.get()).ok())
        .ok_or("a plain document needs a string \"id\" field")?;
    Ok((collection.to_owned(), id, line.to_owned()))
}

fn entity_tag(version: &str) -> String {
    if version == "*" || version.starts_with('"') {
        version.to_owned()
    } else {
        format!("\"{version}\"")
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn header_text(response: &reqwest::Response, name: impl header::AsHeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn spinner(message: &'static str) -> ProgressBar {
    let progress = ProgressBar::new_spinner().with_message(message);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} documents")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress
}

pub(crate) fn read_failure(error: reqwest::Error) -> Failure {
    Failure::new(format!("reading the server's answer failed: {error}"))
}

pub(crate) fn write_failure(error: std::io::Error) -> Failure {
    Failure::new(format!("writing the output failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        assert_eq!(
            import_line(
                r#"{"collection":"people","id":"p1","document":{"a":1}}"#,
                None
            )
            .unwrap(),
            ("people".into(), "p1".into(), r#"{"a":1}"#.into())
        );
        // An entry as `folio export` writes it: its metadata is left.
        assert_eq!(
            import_line(
                r#"{"collection":"people","id":"p1","change_vector":"A:3-x","revision":2,"etag":3,"last_modified":"2026-12-07T10:00:00Z","document":{"a":1}}"#,
                None
            )
            .unwrap(),
            ("people".into(), "p1".into(), r#"{"a":1}"#.into())
        );
        assert!(
            import_line(
                r#"{"collection":"people","id":"p1","document":{"a":1},"extra":1}"#,
                None
            )
            .is_err(),
            "anything else is refused"
        );
        assert_eq!(
            import_line(r#"{"id":"p2","name":"x"}"#, Some("people")).unwrap(),
            (
                "people".into(),
                "p2".into(),
                r#"{"id":"p2","name":"x"}"#.into()
            )
        );
        // With a collection, a line is a document, whatever its fields.
        let plain = r#"{"collection":"c","id":"p3","document":{"a":1}}"#;
        assert_eq!(
            import_line(plain, Some("people")).unwrap(),
            ("people".into(), "p3".into(), plain.into())
        );
        assert!(import_line(r#"{"name":"x"}"#, Some("people")).is_err());
        assert!(import_line(r#"{"id":3}"#, Some("people")).is_err());
        assert!(import_line("not json", Some("people")).is_err());
        // Without, a line is exported: three fields, no more, no fewer.
        assert!(import_line(r#"{"id":"p3"}"#, None).is_err());
        assert!(import_line(r#"{"id":"p3","document":{}}"#, None).is_err());
        assert!(
            import_line(
                r#"{"collection":"c","id":"p3","document":{},"extra":1}"#,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn entity_tags_are_quoted_once() {
        assert_eq!(entity_tag("A:1-x"), "\"A:1-x\"");
        assert_eq!(entity_tag("\"A:1-x\""), "\"A:1-x\"");
        assert_eq!(entity_tag("*"), "*");
    }

    #[test]
    fn exit_codes() {
        let failure = |status: u16| Failure {
            message: String::new(),
            status: Some(StatusCode::from_u16(status).unwrap()),
            problem: None,
        };
        assert_eq!(failure(404).exit_code(), 3);
        assert_eq!(failure(412).exit_code(), 4);
        assert_eq!(failure(409).exit_code(), 4);
        assert_eq!(failure(403).exit_code(), 5);
        assert_eq!(failure(500).exit_code(), 1);
        assert_eq!(Failure::new("x").exit_code(), 1);
    }
}
