//! The torture harness (`folio_server::tools::torture`) as tests: short
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
use folio_core::CommitResult;
use folio_postgres::testing::TestCluster;
use folio_server::tools::torture::{Config, Invariant, Report, Stop, Torture};
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
                    Ok(Ok(self.made_up(&batch)))
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
                results.extend(self.made_up(&Batch::from(batch.commands[1..].to_vec())));
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
