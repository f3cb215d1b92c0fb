//! The torture harness (`folio_cli::tools::torture`) as tests: short
//! runs against the embedded engine, a server on a real socket, two pools
//! on PostgreSQL and three `folio serve` processes on one PostgreSQL find
//! no violation; runs against deliberately broken engines
//! find the violations they must (a checker that cannot fail proves
//! nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use folio::testing::{Wrapper, wrap};
use folio::{Batch, CommandKind, CommandResult, DocumentStore, EngineRef, Expectation, Metadata};
use folio_cli::tools::torture::{Config, Invariant, Report, Stop, Torture};
use folio_core::CommitResult;
use folio_postgres::testing::TestCluster;
use folio_server::{AppState, Backend, Databases, Limits};

use crate::common::options;
use crate::process::{FolioServe, free_port};

/// A bound on a hung run, never reached by a healthy one (the runs are
/// bounded by their number of operations).
const HANG: Duration = Duration::from_secs(300);

fn short(seed: u64) -> Config {
    Config {
        clients: 6,
        seed,
        max_operations: Some(2_000),
        ..Config::default()
    }
}

async fn torture(targets: Vec<(&str, DocumentStore)>, config: Config) -> Report {
    let targets = targets
        .into_iter()
        .map(|(label, store)| (label.to_owned(), store))
        .collect();
    let torture = Torture::setup(targets, config).await.expect("setup");
    torture.run(Stop::after(HANG)).await;
    torture.finish().await.expect("the final state is readable")
}

/// No violation, and the run did every kind of work.
#[track_caller]
fn assert_clean(report: &Report) {
    assert_eq!(report.violations, 0, "{report:#?}");
    assert_eq!(report.totals.errors, 0, "{report:#?}");
    let totals = &report.totals;
    for (what, count) in [
        ("acknowledged writes", totals.acknowledged_writes),
        ("transfers", totals.transfers),
        ("increments", totals.increments),
        ("deletes", totals.deletes),
        ("audits", totals.audits),
    ] {
        assert!(count > 0, "no {what}: {report:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_on_the_embedded_engine_keeps_every_invariant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DocumentStore::open(dir.path()).await.expect("opens");
    let report = torture(vec![("embedded", store)], short(1)).await;
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_through_a_server_keeps_every_invariant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = AppState::new(
        Databases::new(Backend::Embedded {
            dir: dir.path().to_owned(),
            options: options(),
        }),
        None,
        Limits::default(),
        Vec::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let server = tokio::spawn(folio_server::serve(listener, state));
    let url = format!("http://{address}/db/torture");
    let created = reqwest::Client::new()
        .put(&url)
        .send()
        .await
        .expect("PUT /db/torture");
    assert!(created.status().is_success(), "{created:?}");
    let store = DocumentStore::connect(&url).await.expect("connects");
    let report = torture(vec![("server", store)], short(2)).await;
    server.abort();
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_on_two_postgres_pools_keeps_every_invariant() {
    let url = TestCluster::shared().url();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = DocumentStore::builder()
            .url(url)
            .database("torture_short")
            .open()
            .await
            .expect("connects");
        stores.push(store);
    }
    let second = stores.pop().expect("two");
    let first = stores.pop().expect("two");
    let report = torture(vec![("pool 1", first), ("pool 2", second)], short(3)).await;
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_through_three_servers_on_one_postgres_keeps_every_invariant() {
    let postgres = TestCluster::shared().url().to_owned();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let args = ["--postgres".as_ref(), postgres.as_ref()];
        servers.push(FolioServe::start(free_port(), &args).await);
    }
    let database = format!("torture_three_{}", std::process::id());
    let created = reqwest::Client::new()
        .put(format!("{}/db/{database}", servers[0].base()))
        .send()
        .await
        .expect("create the database");
    assert!(created.status().is_success(), "{created:?}");
    let mut targets = Vec::new();
    for (label, server) in ["server 1", "server 2", "server 3"]
        .into_iter()
        .zip(&servers)
    {
        let url = format!("{}/db/{database}", server.base());
        targets.push((label, DocumentStore::connect(&url).await.expect("connects")));
    }
    let report = torture(targets, short(4)).await;
    assert_clean(&report);
}

/// How a [`Broken`] engine breaks the contract.
#[derive(Clone, Copy, Debug)]
enum Breakage {
    /// Every expectation becomes `Any`: stale writes win (lost updates).
    IgnoreVersions,
    /// Every fifth batch is acknowledged with made-up versions and not
    /// written at all.
    AcknowledgeWithoutWriting,
    /// Only the first command of a batch is written; the others are
    /// acknowledged with made-up versions.
    WriteFirstCommandOnly,
    /// A conflict reports as stored the change vector the next write will
    /// take (as an engine that reports its own rolled-back write and then
    /// gives its etag back does).
    ReportTheNextVersion,
    /// A conflict reports as stored a change vector no write produced.
    ReportPhantomVersions,
}

/// An engine that breaks the contract once armed (setup runs unbroken).
struct Broken {
    inner: EngineRef,
    breakage: Breakage,
    armed: AtomicBool,
    commits: AtomicUsize,
}

impl Broken {
    fn new(inner: EngineRef, breakage: Breakage) -> Arc<Self> {
        Arc::new(Broken {
            inner,
            breakage,
            armed: AtomicBool::new(false),
            commits: AtomicUsize::new(0),
        })
    }

    /// Results for `batch` as if it had been written, with versions no
    /// engine issued.
    fn made_up(&self, batch: &Batch) -> Vec<CommandResult> {
        batch
            .commands
            .iter()
            .map(|command| {
                let (collection, id) = (command.collection.clone(), command.id.clone());
                match command.kind {
                    CommandKind::Put { .. } => {
                        let n = self.commits.fetch_add(1, Ordering::Relaxed);
                        CommandResult::Put(Metadata {
                            id,
                            collection,
                            change_vector: format!("A:{n}-made-up").into(),
                            revision: 1,
                            etag: 0,
                            last_modified: SystemTime::now(),
                        })
                    }
                    CommandKind::Delete => CommandResult::Deleted {
                        collection,
                        id,
                        etag: None,
                    },
                    CommandKind::Check => CommandResult::Checked { collection, id },
                }
            })
            .collect()
    }
}

#[async_trait]
impl Wrapper for Broken {
    fn inner(&self) -> &EngineRef {
        &self.inner
    }

    async fn commit(&self, mut batch: Batch) -> CommitResult {
        if !self.armed.load(Ordering::SeqCst) {
            return self.inner.commit(batch).await;
        }
        match self.breakage {
            Breakage::IgnoreVersions => {
                for command in &mut batch.commands {
                    command.expect = Expectation::Any;
                }
                // Widen the window between a client's read and its write.
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.inner.commit(batch).await
            }
            Breakage::AcknowledgeWithoutWriting => {
                if self.commits.fetch_add(1, Ordering::Relaxed) % 5 == 4 {
                    Ok(Ok(self.made_up(&batch).into()))
                } else {
                    self.inner.commit(batch).await
                }
            }
            Breakage::ReportTheNextVersion | Breakage::ReportPhantomVersions => {
                let conflict = match self.inner.commit(batch).await? {
                    Ok(results) => return Ok(Ok(results)),
                    Err(conflict) => conflict,
                };
                // The in-memory engine publishes each group's last etag as
                // it commits: the next write takes the one after it.
                let next = match self.breakage {
                    Breakage::ReportTheNextVersion => {
                        self.inner.wait_for_changes(0, Duration::ZERO).await? + 1
                    }
                    _ => 1 << 40,
                };
                let conflicts = conflict
                    .into_conflicts()
                    .into_iter()
                    .map(|conflict| {
                        let actual = conflict.actual().map(|stored| {
                            let database = stored.as_str().split_once('-').map_or("", |(_, d)| d);
                            folio::ChangeVector::from(format!("A:{next}-{database}"))
                        });
                        folio::Conflict::new(
                            conflict.collection(),
                            conflict.id(),
                            conflict.expected().clone(),
                            actual,
                        )
                    })
                    .collect();
                Ok(Err(folio::ConcurrencyError::new(conflicts)))
            }
            Breakage::WriteFirstCommandOnly => {
                let mut results = match self
                    .inner
                    .commit(Batch::from(batch.commands[..1].to_vec()))
                    .await?
                {
                    Ok(results) => results,
                    Err(conflict) => return Ok(Err(conflict)),
                };
                results
                    .results
                    .extend(self.made_up(&Batch::from(batch.commands[1..].to_vec())));
                Ok(Ok(results))
            }
        }
    }
}

/// A run against an in-memory engine broken by `breakage`: its report.
async fn torture_broken(breakage: Breakage, config: Config) -> Report {
    let inner = DocumentStore::in_memory().await.expect("in memory");
    let broken = Broken::new(inner.engine().clone(), breakage);
    let store = DocumentStore::from_engine(wrap(broken.clone()));
    let torture = Torture::setup(vec![("broken".to_owned(), store)], config)
        .await
        .expect("setup (unbroken)");
    broken.armed.store(true, Ordering::SeqCst);
    torture.run(Stop::after(HANG)).await;
    torture.finish().await.expect("the final state is readable")
}

fn invariants(report: &Report) -> Vec<Invariant> {
    report.violations_by_invariant.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_ignores_versions_is_caught() {
    // Few documents and many clients: read-modify-writes overlap.
    let config = Config {
        clients: 8,
        accounts: 2,
        counters: 1,
        registers: 2,
        ..short(4)
    };
    let report = torture_broken(Breakage::IgnoreVersions, config).await;
    assert!(report.violations > 0, "{report:#?}");
    assert!(
        invariants(&report).contains(&Invariant::VersionChain),
        "two successes from one version: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_acknowledges_without_writing_is_caught() {
    let report = torture_broken(Breakage::AcknowledgeWithoutWriting, short(5)).await;
    assert!(report.violations > 0, "{report:#?}");
    let found = invariants(&report);
    assert!(
        found.contains(&Invariant::LostWrite) || found.contains(&Invariant::VersionChain),
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_writes_half_a_batch_is_caught() {
    let report = torture_broken(Breakage::WriteFirstCommandOnly, short(6)).await;
    assert!(
        invariants(&report).contains(&Invariant::Bank),
        "a transfer written half breaks the total: {report:#?}"
    );
    assert!(
        invariants(&report).contains(&Invariant::LostWrite),
        "the half not written is lost: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_reports_a_change_vector_it_then_issues_again_is_caught() {
    // Few registers and many clients: conflicts are frequent.
    let config = Config {
        clients: 8,
        registers: 3,
        ..short(7)
    };
    let report = torture_broken(Breakage::ReportTheNextVersion, config).await;
    assert!(
        invariants(&report).contains(&Invariant::ChangeVector),
        "a change vector named two versions: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_reports_a_version_never_written_is_caught() {
    let config = Config {
        clients: 8,
        registers: 3,
        ..short(8)
    };
    let report = torture_broken(Breakage::ReportPhantomVersions, config).await;
    assert!(
        invariants(&report).contains(&Invariant::ChangeVector),
        "a conflict reported a version no write produced: {report:#?}"
    );
}

// ---- simulated power loss ------------------------------------------------------

/// How many power losses the test simulates: `FOLIO_POWER_LOSSES`, else 200
/// (the long run, `scripts/power-loss`, asks for more).
fn power_losses() -> u64 {
    std::env::var("FOLIO_POWER_LOSSES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200)
}

/// A directory on memory when there is one: a simulated disk needs no real
/// syncs, and a real one would make each round wait for the disk.
fn scratch() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm).expect("a directory in /dev/shm"),
        _ => tempfile::tempdir().expect("a temporary directory"),
    }
}

/// Torture runs on an embedded database whose disk loses power at a random
/// moment (SQLite's and FoundationDB's way): the files as the disk would
/// hold them (what was synced, and each write since kept, dropped, torn or
/// reordered: `IoFaults::power_loss`) are opened as after the power came
/// back, and the history up to that moment is checked against them: no
/// acknowledged write lost, every batch in doubt whole or absent, every
/// version anyone read still there or replaced, the bank's total kept; and
/// a write after the power loss never takes a change vector anyone was
/// shown before it. The seed of a failing round replays it
/// (`FOLIO_POWER_SEED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_power_losses_lose_nothing_acknowledged_and_reuse_no_change_vector() {
    let first_seed = std::env::var("FOLIO_POWER_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |since| since.as_secs())
        });
    let losses = power_losses();
    let mut acknowledged = 0;
    let mut in_doubt = 0;
    for seed in first_seed..first_seed + losses {
        let (acknowledged_here, in_doubt_here) = power_loss(seed).await;
        acknowledged += acknowledged_here;
        in_doubt += in_doubt_here;
    }
    eprintln!(
        "{losses} simulated power losses from seed {first_seed}: {acknowledged} acknowledged \
         writes before them, {in_doubt} saves in flight at them; 0 violations"
    );
    assert!(
        acknowledged > losses * 5,
        "the rounds wrote: {acknowledged}"
    );
}

/// One round: its acknowledged writes before the power loss, and the saves
/// in flight at it.
async fn power_loss(seed: u64) -> (u64, u64) {
    let dir = scratch();
    let faults = Arc::new(folio_sqlite::IoFaults::simulating_power_loss());
    // A disk that takes a while to sync: the power goes out while groups
    // are committed (visible to SQLite's readers) and not yet durable.
    faults.slow_syncs(Duration::from_micros(500 + seed % 1500));
    let engine = folio::SqliteEngine::open(
        dir.path().join("power.sqlite"),
        folio::SqliteOptions {
            io_faults: Some(faults.clone()),
            ..folio::SqliteOptions::default()
        },
    )
    .expect("opens");
    let store = DocumentStore::from_engine(Arc::new(engine));
    let config = Config {
        clients: 4,
        seed,
        accounts: 4,
        counters: 2,
        registers: 6,
        max_operations: Some(120),
    };
    let torture = Torture::setup(vec![("embedded".to_owned(), store)], config)
        .await
        .expect("setup");
    // The power goes out after 5 to 114 operations, while the clients run.
    let at = 5 + seed % 110;
    let cutter = async {
        while torture.totals().operations < at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = torture.totals();
        // The clients run on: the instant of the loss is taken with the
        // image, so no commit sent after it reaches the image.
        let (image, cut) = faults.power_loss_at(seed, || torture.now());
        (cut, image, before)
    };
    let ((), (cut, image, before)) = tokio::join!(torture.run(Stop::after(HANG)), cutter);

    let crashed = scratch();
    let file = crashed.path().join("power.sqlite");
    image.write_to(&file).expect("the image is written");
    let engine = Arc::new(
        folio::SqliteEngine::open(&file, folio::SqliteOptions::default())
            .unwrap_or_else(|error| panic!("seed {seed}: the database does not open: {error}")),
    );
    let after = DocumentStore::from_engine(engine.clone());
    let violations = torture
        .verify_as_of(cut, &after)
        .await
        .expect("the state is readable");
    assert!(
        violations.is_empty(),
        "seed {seed}, power lost after {at} operations: {violations:#?}"
    );

    // Every document written again: none takes a change vector shown before.
    let shown = torture.change_vectors_shown_before(cut);
    for collection in ["torture_accounts", "torture_counters", "torture_registers"] {
        for entry in folio::Engine::scan(engine.as_ref(), collection, None, 1000)
            .await
            .expect("scan")
        {
            let put = folio::Command::put(
                collection,
                entry.metadata.id,
                entry.document,
                Expectation::Any,
            );
            let results = folio::Engine::commit(engine.as_ref(), Batch::from(vec![put]))
                .await
                .expect("commits")
                .expect("no conflict");
            let CommandResult::Put(written) = &results[0] else {
                panic!("{results:?}")
            };
            assert!(
                !shown.contains(&written.change_vector),
                "seed {seed}: {} was shown before the power loss and names another version now",
                written.change_vector
            );
        }
    }
    (before.acknowledged_writes, torture.in_flight_at(cut) as u64)
}
