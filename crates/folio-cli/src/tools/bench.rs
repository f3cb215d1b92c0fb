//! `folio bench`: a load generator in the box, as PostgreSQL has pgbench.
//!
//! It drives a database through `folio`'s sessions exactly as an
//! application does — load, change, `save_changes` with the version check —
//! so what it measures is what an application gets, session and engine
//! together. First it makes sure the database holds the data set (`--docs`
//! documents of about `--doc-size` bytes in the collection `accounts`,
//! loaded in batches and reused by the next run) and reads every document
//! once, as a long-running application would have (its caches warm; a
//! freshly loaded PostgreSQL table is in shared buffers too; `--cold`
//! skips this). Then `--clients` concurrent clients run the workload for
//! `--duration` seconds.
//!
//! Every operation counts once: a success, or a conflict (a save refused
//! because another client changed a document first). Latency is measured
//! per operation, from its start to its answer.
//!
//! The `--target` is a [`folio::Location`]; the embedded engine runs with its
//! default, durable commits (`Durability::Full`), and the PostgreSQL
//! engine with its default options (a pool of 16 connections shared by
//! the clients; one-write saves committed in groups), as an application
//! gets them.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use folio::{ConcurrencyChecks, Document, DocumentStore, Location, OnConflict, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::tools::target;

/// The database the bench uses by default on targets whose spec names none
/// (embedded, PostgreSQL); an HTTP target names its own.
pub const DATABASE: &str = "bench";

/// Documents per `save_changes` while loading the data set.
const LOAD_BATCH: u64 = 1000;

/// Loading sessions saving at once (they overlap their round trips).
const LOADERS: u64 = 4;

/// Documents changed by one `batch10` operation.
const BATCH_DOCUMENTS: u64 = 10;

/// The id of the document that records a complete data set.
const DATASET_ID: &str = "dataset";

/// The arguments of `folio bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// What each client does, again and again.
    #[arg(value_enum)]
    pub workload: Workload,
    /// The database to drive: `embedded:PATH`, `memory:`, `postgres://…`
    /// or `http://HOST:PORT/db/NAME` (a running `folio serve`).
    #[arg(long, value_parser = target::parse)]
    pub target: Location,
    /// The database on an embedded or PostgreSQL target (an HTTP target's
    /// URL names its own).
    #[arg(long, default_value = DATABASE)]
    pub database: String,
    /// Concurrent clients, each with its own sessions.
    #[arg(long, default_value_t = 32, value_parser = parse_clients)]
    pub clients: usize,
    /// How long the clients run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_duration)]
    pub duration: f64,
    /// Documents in the data set.
    #[arg(long, default_value_t = 100_000, value_parser = parse_docs)]
    pub docs: u64,
    /// The size of each document's JSON, in bytes (about).
    #[arg(long, value_name = "BYTES", default_value_t = 300)]
    pub doc_size: usize,
    /// Start measuring without reading the data set first (caches cold).
    #[arg(long)]
    pub cold: bool,
    /// Versions each document of the data set keeps (its collection's
    /// revisions; 0: none). Set on every run, so a run without it has them
    /// off.
    #[arg(long, default_value_t = 0)]
    pub revisions: u32,
    /// Sessions that merge a document changed since they read it
    /// (`OnConflict::Merge`) instead of counting a conflict.
    #[arg(long)]
    pub merge: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// A workload of `folio bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Load one document by id (uniformly random ids).
    Read,
    /// Load a document, change it, `save_changes` with the version check
    /// (uniformly random ids; a conflict is counted, not retried).
    Update,
    /// As `update`, with every client on the same document, retrying after
    /// each conflict.
    UpdateHot,
    /// Load ten documents, change each, and save all ten in one
    /// `save_changes`: ten conditional updates, all or nothing.
    Batch10,
    /// 90 % `read`, 10 % `update`.
    Mixed,
}

impl Workload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Update => "update",
            Workload::UpdateHot => "update-hot",
            Workload::Batch10 => "batch10",
            Workload::Mixed => "mixed",
        }
    }

    /// Documents read or written by one successful operation.
    fn documents_per_operation(self) -> u64 {
        match self {
            Workload::Batch10 => BATCH_DOCUMENTS,
            _ => 1,
        }
    }
}

/// What one run measured (`--json` prints it as it is).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The workload's name.
    pub workload: &'static str,
    /// The target, with any password hidden.
    pub target: String,
    /// Concurrent clients.
    pub clients: usize,
    /// The requested duration, in seconds.
    pub duration: f64,
    /// The measured duration: from the start until the last client stopped.
    pub elapsed_s: f64,
    /// Documents in the data set.
    pub docs: u64,
    /// The requested document size, in bytes.
    pub doc_size: usize,
    /// `"loaded"` when this run loaded the data set, `"reused"` when the
    /// database already held it.
    pub dataset: &'static str,
    /// The versions each document kept during the run (0: revisions off).
    pub revisions: u32,
    /// Whether the sessions merged a document changed since they read it.
    pub merge: bool,
    /// Operations completed (successes + conflicts).
    pub ops: u64,
    /// Operations that did what they meant to (a read, a saved change).
    pub successes: u64,
    /// Saves refused because a document had changed since it was read.
    pub conflicts: u64,
    /// `ops` per second.
    pub ops_per_s: f64,
    /// `successes` per second.
    pub successes_per_s: f64,
    /// `conflicts` per second.
    pub conflicts_per_s: f64,
    /// Documents read or written per second by the successes (ten per
    /// `batch10` operation, one otherwise).
    pub documents_per_s: f64,
    /// Median latency of an operation, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Slowest operation, in milliseconds.
    pub max_ms: f64,
}

impl Report {
    /// Writes the report as text, one figure a line.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "folio bench {} on {}: {} clients, {:.1} s, {} documents of ~{} bytes ({}){}{}",
            self.workload,
            self.target,
            self.clients,
            self.elapsed_s,
            self.docs,
            self.doc_size,
            self.dataset,
            match self.revisions {
                0 => String::new(),
                keep => format!(", keeping {keep} revisions"),
            },
            if self.merge { ", merging sessions" } else { "" }
        )?;
        writeln!(
            out,
            "  ops/s        {:>12.1}  ({} ops)",
            self.ops_per_s, self.ops
        )?;
        writeln!(out, "  successes/s  {:>12.1}", self.successes_per_s)?;
        writeln!(out, "  conflicts/s  {:>12.1}", self.conflicts_per_s)?;
        if self.workload == Workload::Batch10.name() {
            writeln!(out, "  documents/s  {:>12.1}", self.documents_per_s)?;
        }
        writeln!(
            out,
            "  latency      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Runs `folio bench` and prints its report on standard output.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let report = measure(&args).await?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        report.write_text(&mut out)
    };
    written.map_err(|error| format!("writing the report failed: {error}"))
}

/// Prepares the data set, runs the workload, and returns what it measured.
pub async fn measure(args: &BenchArgs) -> Result<Report, String> {
    let minimum = Account::new(0, 0).size();
    if args.doc_size < minimum {
        return Err(format!(
            "--doc-size {} is too small: a bench document has at least {minimum} bytes",
            args.doc_size
        ));
    }
    if args.workload == Workload::Batch10 && args.docs < BATCH_DOCUMENTS {
        return Err(format!(
            "batch10 changes {BATCH_DOCUMENTS} different documents at once: --docs must be at least {BATCH_DOCUMENTS}"
        ));
    }
    // Location's text hides a password.
    let shown = args.target.to_string();
    if matches!(args.target, Location::Server(_)) && args.database != DATABASE {
        return Err(format!(
            "--database is for embedded and PostgreSQL targets: {shown} names its database in the URL"
        ));
    }
    // The PostgreSQL engine with its default options: a pool of 16
    // connections shared by the clients, and group commit.
    let store = target::open(&args.target, &args.database)
        .await
        .map_err(|message| format!("cannot open {message}"))?;
    let dataset = prepare(&store, args.docs, args.doc_size).await?;
    store
        .engine()
        .configure(
            Account::COLLECTION,
            &folio::CollectionConfig::revisions(args.revisions),
        )
        .await
        .map_err(|error| format!("setting the revisions kept failed: {error}"))?;
    if !args.cold {
        warm(&store, args.docs).await?;
    }
    let run = drive(store, args).await?;
    let elapsed = run.elapsed.as_secs_f64();
    let per_second = |count: u64| count as f64 / elapsed;
    Ok(Report {
        workload: args.workload.name(),
        target: shown,
        clients: args.clients,
        duration: args.duration,
        elapsed_s: elapsed,
        docs: args.docs,
        doc_size: args.doc_size,
        dataset,
        revisions: args.revisions,
        merge: args.merge,
        ops: run.successes + run.conflicts,
        successes: run.successes,
        conflicts: run.conflicts,
        ops_per_s: per_second(run.successes + run.conflicts),
        successes_per_s: per_second(run.successes),
        conflicts_per_s: per_second(run.conflicts),
        documents_per_s: per_second(run.successes * args.workload.documents_per_operation()),
        p50_ms: milliseconds(run.latencies.quantile(0.50)),
        p99_ms: milliseconds(run.latencies.quantile(0.99)),
        max_ms: milliseconds(run.latencies.max()),
    })
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A document of the data set: the shape of a small customer record, its
/// `note` padded so that the JSON has the requested size.
#[derive(Clone, Debug, Serialize, Deserialize, Document)]
#[folio(collection = "accounts")]
struct Account {
    id: String,
    owner: String,
    email: String,
    address: Address,
    tags: Vec<String>,
    balance: i64,
    visits: u64,
    note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    postcode: String,
}

impl Account {
    /// Document number `n`, padded to about `size` bytes of JSON.
    fn new(n: u64, size: usize) -> Self {
        let mut account = Account {
            id: account_id(n),
            owner: format!("Owner Number {n}"),
            email: format!("owner{n}@example.com"),
            address: Address {
                street: format!("{} Long Street Name", n % 997),
                city: ["Oslo", "Lyon", "Porto", "Turku"][(n % 4) as usize].into(),
                postcode: format!("{:05}", n % 99_991),
            },
            tags: vec![
                "customer".into(),
                format!("segment-{}", n % 17),
                "active".into(),
            ],
            balance: (n as i64).wrapping_mul(7919) % 100_000,
            visits: 0,
            note: String::new(),
        };
        account.note = "x".repeat(size.saturating_sub(account.size()));
        account
    }

    /// The length of the JSON the session stores.
    fn size(&self) -> usize {
        serde_json::to_string(self).map_or(0, |json| json.len())
    }
}

fn account_id(n: u64) -> String {
    format!("accounts/{n:07}")
}

/// The record of a complete data set, written after its last document.
#[derive(Clone, Debug, Serialize, Deserialize, Document)]
#[folio(collection = "bench_meta")]
struct Dataset {
    id: String,
    docs: u64,
    doc_size: usize,
}

/// Loads the data set unless the database already holds it (a `Dataset`
/// record saying so: it is written only after every document); returns
/// `"loaded"` or `"reused"`.
async fn prepare(
    store: &DocumentStore,
    docs: u64,
    doc_size: usize,
) -> Result<&'static str, String> {
    let recorded = store
        .query_session()
        .load::<Dataset>(DATASET_ID)
        .await
        .map_err(|error| format!("reading the data set's record failed: {error}"))?;
    if recorded.is_some_and(|dataset| dataset.docs >= docs && dataset.doc_size == doc_size) {
        return Ok("reused");
    }
    let progress = ProgressBar::new(docs).with_style(
        ProgressStyle::with_template("loading {pos}/{len} documents {bar:30} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut loaders: JoinSet<Result<(), String>> = JoinSet::new();
    for _ in 0..LOADERS {
        let (store, next_batch, progress) = (store.clone(), next_batch.clone(), progress.clone());
        loaders.spawn(async move {
            loop {
                let first = next_batch.fetch_add(1, Ordering::Relaxed) * LOAD_BATCH;
                if first >= docs {
                    return Ok(());
                }
                let last = (first + LOAD_BATCH).min(docs);
                // No version checks: a rerun overwrites what an interrupted
                // load left behind.
                let mut session = store.open_session_with(SessionOptions {
                    concurrency_checks: ConcurrencyChecks::Disabled,
                    ..SessionOptions::default()
                });
                for n in first..last {
                    session
                        .store(Account::new(n, doc_size))
                        .map_err(|error| error.to_string())?;
                }
                session
                    .save_changes()
                    .await
                    .map_err(|error| format!("loading the data set failed: {error}"))?;
                progress.inc(last - first);
            }
        });
    }
    while let Some(loaded) = loaders.join_next().await {
        loaded.map_err(|error| format!("a loading task failed: {error}"))??;
    }
    progress.finish_and_clear();
    let mut session = store.open_session();
    session
        .store(Dataset {
            id: DATASET_ID.to_owned(),
            docs,
            doc_size,
        })
        .map_err(|error| error.to_string())?;
    session
        .save_changes()
        .await
        .map_err(|error| format!("recording the data set failed: {error}"))?;
    Ok("loaded")
}

/// Reads every document of the data set once, a thousand per request.
async fn warm(store: &DocumentStore, docs: u64) -> Result<(), String> {
    let progress = ProgressBar::new(docs).with_style(
        ProgressStyle::with_template("reading {pos}/{len} documents {bar:30} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for first in (0..docs).step_by(LOAD_BATCH as usize) {
        let last = (first + LOAD_BATCH).min(docs);
        let ids: Vec<String> = (first..last).map(account_id).collect();
        let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
        store
            .query_session()
            .load_many::<Account>(&keys)
            .await
            .map_err(|error| format!("reading the data set failed: {error}"))?;
        progress.inc(last - first);
    }
    progress.finish_and_clear();
    Ok(())
}

/// The totals of all clients.
struct Run {
    elapsed: Duration,
    successes: u64,
    conflicts: u64,
    latencies: Latencies,
}

/// One client's totals.
#[derive(Default)]
struct Tally {
    successes: u64,
    conflicts: u64,
    latencies: Latencies,
}

/// How one operation ended (failures end the run instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Conflict,
}

/// Runs `args.clients` clients until the deadline, with a progress line.
async fn drive(store: DocumentStore, args: &BenchArgs) -> Result<Run, String> {
    let duration = Duration::from_secs_f64(args.duration);
    let operations = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = JoinSet::new();
    for number in 0..args.clients {
        let client = Client {
            store: store.clone(),
            workload: args.workload,
            docs: args.docs,
            random: Random::new(number as u64),
            operations: operations.clone(),
            on_conflict: if args.merge {
                OnConflict::Merge
            } else {
                OnConflict::Fail
            },
        };
        clients.spawn(client.run(deadline));
    }
    let progress = tokio::spawn(show_progress(operations, started, duration));
    let mut run = Run {
        elapsed: Duration::ZERO,
        successes: 0,
        conflicts: 0,
        latencies: Latencies::default(),
    };
    let finished = async {
        while let Some(tally) = clients.join_next().await {
            let tally = tally.map_err(|error| format!("a client failed: {error}"))??;
            run.successes += tally.successes;
            run.conflicts += tally.conflicts;
            run.latencies.merge(&tally.latencies);
        }
        Ok::<(), String>(())
    }
    .await;
    run.elapsed = started.elapsed();
    progress.abort();
    // The progress task clears its line when dropped.
    let _ = progress.await;
    finished.map(|()| run)
}

/// A line on standard error, redrawn a few times a second, while the
/// clients run (hidden when standard error is not a terminal).
async fn show_progress(operations: Arc<AtomicU64>, started: Instant, duration: Duration) {
    let progress = ProgressBar::new(duration.as_millis() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = ClearOnDrop(progress);
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed();
        let done = operations.load(Ordering::Relaxed);
        progress.0.set_position(elapsed.as_millis() as u64);
        progress.0.set_message(format!(
            "{:.1}/{:.1} s, {done} ops, {:.0} ops/s",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            done as f64 / elapsed.as_secs_f64().max(1e-9)
        ));
    }
}

struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// One client: a loop of operations, each in fresh sessions.
struct Client {
    store: DocumentStore,
    workload: Workload,
    docs: u64,
    random: Random,
    operations: Arc<AtomicU64>,
    on_conflict: OnConflict,
}

impl Client {
    async fn run(mut self, deadline: Instant) -> Result<Tally, String> {
        let mut tally = Tally::default();
        let mut started = Instant::now();
        while started < deadline {
            let outcome = self.operation().await?;
            let finished = Instant::now();
            tally.latencies.record(finished - started);
            self.operations.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Success => tally.successes += 1,
                Outcome::Conflict => {
                    tally.conflicts += 1;
                    // Let the client that won move on before the retry.
                    tokio::task::yield_now().await;
                }
            }
            started = finished;
        }
        Ok(tally)
    }

    async fn operation(&mut self) -> Result<Outcome, String> {
        match self.workload {
            Workload::Read => read(&self.store, &account_id(self.random.below(self.docs))).await,
            Workload::Update => {
                let id = account_id(self.random.below(self.docs));
                update(&self.store, self.on_conflict, &id).await
            }
            Workload::UpdateHot => update(&self.store, self.on_conflict, &account_id(0)).await,
            Workload::Batch10 => {
                // One id from each tenth of the data set: ten different
                // documents, uniformly spread, in ascending order (engines
                // that lock rows then always lock in the same order).
                let slice = self.docs / BATCH_DOCUMENTS;
                let ids: Vec<String> = (0..BATCH_DOCUMENTS)
                    .map(|part| account_id(part * slice + self.random.below(slice)))
                    .collect();
                update_many(&self.store, self.on_conflict, &ids).await
            }
            Workload::Mixed => {
                let id = account_id(self.random.below(self.docs));
                if self.random.below(10) == 0 {
                    update(&self.store, self.on_conflict, &id).await
                } else {
                    read(&self.store, &id).await
                }
            }
        }
    }
}

fn missing(id: &str) -> String {
    format!(
        "document {id} is missing: the data set in this database is incomplete (use a fresh database)"
    )
}

async fn read(store: &DocumentStore, id: &str) -> Result<Outcome, String> {
    store
        .query_session()
        .load::<Account>(id)
        .await
        .map_err(|error| format!("loading {id} failed: {error}"))?
        .ok_or_else(|| missing(id))?;
    Ok(Outcome::Success)
}

/// A session that checks every write against the version it read.
fn checked_session(store: &DocumentStore, on_conflict: OnConflict) -> folio::Session {
    store.open_session_with(SessionOptions {
        concurrency_checks: ConcurrencyChecks::Writes,
        on_conflict,
        ..SessionOptions::default()
    })
}

async fn update(
    store: &DocumentStore,
    on_conflict: OnConflict,
    id: &str,
) -> Result<Outcome, String> {
    let mut session = checked_session(store, on_conflict);
    let mut account = session
        .load::<Account>(id)
        .await
        .map_err(|error| format!("loading {id} failed: {error}"))?
        .ok_or_else(|| missing(id))?;
    account.visits += 1;
    session.store(account).map_err(|error| error.to_string())?;
    saved(session.save_changes().await)
}

async fn update_many(
    store: &DocumentStore,
    on_conflict: OnConflict,
    ids: &[String],
) -> Result<Outcome, String> {
    let mut session = checked_session(store, on_conflict);
    let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
    let accounts = session
        .load_many::<Account>(&keys)
        .await
        .map_err(|error| format!("loading {} documents failed: {error}", ids.len()))?;
    for (account, id) in accounts.into_iter().zip(ids) {
        let mut account = account.ok_or_else(|| missing(id))?;
        account.visits += 1;
        session.store(account).map_err(|error| error.to_string())?;
    }
    saved(session.save_changes().await)
}

fn saved(result: folio::Result<()>) -> Result<Outcome, String> {
    match result {
        Ok(()) => Ok(Outcome::Success),
        Err(folio::Error::Concurrency(_)) => Ok(Outcome::Conflict),
        Err(error) => Err(format!("save_changes failed: {error}")),
    }
}

/// xorshift64*: uniform ids, a fixed sequence per client (runs repeat).
struct Random(u64);

impl Random {
    fn new(client: u64) -> Self {
        Random(0x9e37_79b9_7f4a_7c15 ^ (client + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (`bound` > 0; the modulo bias is below 2⁻⁴⁰
    /// for any data set that fits a machine).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Latencies in a log-linear histogram: exact below 128 ns, then 128
/// buckets per power of two (under 1 % error), in fixed memory however
/// long the run.
#[derive(Clone, Debug)]
struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

/// Sub-buckets per power of two, as a power of two.
const PRECISION_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << PRECISION_BITS;

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; (64 - PRECISION_BITS as usize + 1) * SUB_BUCKETS],
            total: 0,
            max: Duration::ZERO,
        }
    }
}

impl Latencies {
    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(latency);
    }

    fn merge(&mut self, other: &Latencies) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    fn max(&self) -> Duration {
        self.max
    }

    /// The latency that a fraction `q` of the operations did not exceed
    /// (the middle of its bucket, never above the maximum; the maximum
    /// itself for `q` = 1); zero when nothing was recorded.
    fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                let middle = Duration::from_nanos(low.saturating_add(width / 2));
                return middle.min(self.max);
            }
        }
        self.max
    }
}

/// The bucket of a latency of `nanos` nanoseconds.
fn bucket(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS as u64 {
        return nanos as usize;
    }
    let shift = 63 - nanos.leading_zeros() - PRECISION_BITS;
    let mantissa = (nanos >> shift) as usize; // in SUB_BUCKETS..2 * SUB_BUCKETS
    (shift as usize + 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
}

/// The lowest latency in bucket `index`, and the bucket's width.
fn bucket_range(index: usize) -> (u64, u64) {
    if index < SUB_BUCKETS {
        return (index as u64, 1);
    }
    let shift = (index / SUB_BUCKETS - 1) as u32;
    let mantissa = (index % SUB_BUCKETS + SUB_BUCKETS) as u64;
    (mantissa << shift, 1 << shift)
}

fn parse_clients(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("needs at least 1 client".into()),
        Ok(clients) => Ok(clients),
        Err(_) => Err(format!("{value:?} is not a number of clients")),
    }
}

fn parse_duration(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => Ok(seconds),
        Ok(_) => Err("the duration must be a positive number of seconds".into()),
        Err(_) => Err(format!("{value:?} is not a number of seconds")),
    }
}

fn parse_docs(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("the data set needs at least 1 document".into()),
        Ok(docs) => Ok(docs),
        Err(_) => Err(format!("{value:?} is not a number of documents")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_latency_within_one_percent() {
        let covered = |nanos: u64| {
            let index = bucket(nanos);
            let (low, width) = bucket_range(index);
            assert!(
                low <= nanos && nanos - low < width,
                "{nanos} in {low}+{width}"
            );
            assert!(
                width == 1 || (width as f64) / (low as f64) < 0.01,
                "{nanos}"
            );
            index
        };
        let mut previous = 0;
        for nanos in 0..5_000 {
            let index = covered(nanos);
            assert!(index >= previous, "buckets grow with the latency");
            previous = index;
        }
        for power in 0..62 {
            covered(3 << power);
        }
        assert!(bucket(u64::MAX) < Latencies::default().counts.len());
    }

    #[test]
    fn quantiles_of_known_latencies() {
        let mut latencies = Latencies::default();
        assert_eq!(latencies.quantile(0.5), Duration::ZERO);
        for micros in 1..=1000 {
            latencies.record(Duration::from_micros(micros));
        }
        let mut other = Latencies::default();
        other.record(Duration::from_millis(50));
        latencies.merge(&other);
        let close = |actual: Duration, expected_micros: f64| {
            let actual = actual.as_secs_f64() * 1e6;
            assert!(
                (actual - expected_micros).abs() <= expected_micros * 0.01,
                "{actual} µs, expected {expected_micros}"
            );
        };
        close(latencies.quantile(0.5), 501.0);
        close(latencies.quantile(0.99), 991.0);
        assert_eq!(latencies.quantile(1.0), Duration::from_millis(50));
        assert_eq!(latencies.max(), Duration::from_millis(50));
        assert_eq!(latencies.total, 1001);
    }

    #[test]
    fn documents_have_the_requested_size() {
        for n in [0, 7, 99_999, 1_234_567] {
            assert_eq!(Account::new(n, 300).size(), 300);
            assert_eq!(Account::new(n, 1000).size(), 1000);
        }
        let smallest = Account::new(0, 0).size();
        assert!(smallest < 300, "{smallest}");
    }

    /// The target a report and an error show: its password hidden.
    #[test]
    fn passwords_are_hidden() {
        let shown = |target: &str| crate::tools::target::parse(target).unwrap().to_string();
        assert_eq!(
            shown("postgres:postgres://bench:secret@127.0.0.1:5432/db"),
            "postgres://bench:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            shown("postgres:postgres://bench@127.0.0.1:5432/db"),
            "postgres://bench@127.0.0.1:5432/db"
        );
        assert_eq!(
            shown("http://127.0.0.1:7070/db/x"),
            "http://127.0.0.1:7070/db/x"
        );
        assert_eq!(shown("embedded:/tmp/a:b@c"), "sqlite:/tmp/a:b@c");
    }

    #[test]
    fn random_ids_stay_in_range() {
        let mut random = Random::new(3);
        assert!((0..10_000).all(|_| random.below(17) < 17));
    }
}
