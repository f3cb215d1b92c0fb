//! PostgreSQL only: the engine's backends terminated in the middle of
//! batches. A second, administrative connection runs `pg_terminate_backend`
//! on every connection of the engine's pool that is inside a transaction
//! that has written (it holds a transaction id), while the torture
//! harness's clients (`folio_cli::tools::torture`) run transfers,
//! multi-document batches, deletes and guarded sessions through it. Then:
//!
//! * no save is left in doubt: the engine sends each cut batch again with
//!   its id, and answers with its outcome (no terminated batch was taken
//!   for a conflict or applied twice: either would be a violation);
//! * no batch is half applied: the bank's total and the harness's atomicity
//!   and version-chain checks hold;
//! * the pool recovers: later batches commit, and each dead connection
//!   fails at most one operation (a read: saves are sent again).
//!
//! It lives here, with the PostgreSQL engine's other multi-connection
//! tests, because what it tests is the engine and its pool; the harness
//! comes from `folio-server` (a dev-dependency of this crate).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use folio::{DocumentStore, PgOptions};
use folio_cli::tools::torture::{Config, Stop, Torture, Totals};
use folio_postgres::testing::TestCluster;

/// A bound on a wait that a healthy run never reaches.
const PATIENCE: Duration = Duration::from_secs(120);

/// How many backends are terminated mid-batch: 10, or
/// `FOLIO_TERMINATIONS` (the long run of RELIABILITY.md).
fn terminations() -> usize {
    std::env::var("FOLIO_TERMINATIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(10)
}

async fn wait_for_totals(torture: &Torture, what: &str, done: impl Fn(&Totals) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(&torture.totals()) {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_leave_no_save_in_doubt_and_the_pool_recovers() {
    let cluster = TestCluster::shared();
    // The engine's connections carry a name of their own, so the
    // administrative connection terminates them and nobody else's.
    let application = format!("folio_terminate_{}", std::process::id());
    let separator = if cluster.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}application_name={application}", cluster.url());
    let store = DocumentStore::builder()
        .url(&url)
        .database("pg_terminate")
        .open()
        .await
        .expect("connects");
    let config = Config {
        clients: 6,
        seed: 11,
        ..Config::default()
    };
    let torture = Torture::setup(vec![("postgres".to_owned(), store)], config)
        .await
        .expect("setup");
    let (admin, connection) = tokio_postgres::connect(cluster.url(), tokio_postgres::NoTls)
        .await
        .expect("the administrative connection");
    tokio::spawn(connection);

    let stop = Stop::new();
    let load = tokio::spawn({
        let torture = torture.clone();
        let stop = stop.clone();
        async move { torture.run(stop).await }
    });
    // A backend that is exiting still shows for a moment: count each once.
    // Each held a transaction id: it was cut in the middle of a write.
    let mut terminated = HashSet::new();
    let wanted = terminations();
    let deadline = Instant::now() + PATIENCE * (wanted as u32 / 10).max(1);
    while terminated.len() < wanted {
        assert!(
            Instant::now() < deadline,
            "only {} backends were caught mid-batch",
            terminated.len(),
        );
        let rows = admin
            .query(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND backend_xid IS NOT NULL",
                &[&application],
            )
            .await
            .expect("pg_terminate_backend");
        for row in rows {
            if row.get::<_, bool>(1) {
                terminated.insert(row.get::<_, i32>(0));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.stop();
    load.await.expect("the clients finish");
    let terminated_round = torture.totals();

    // The pool recovers: the same store commits again.
    let stop = Stop::new();
    let load = tokio::spawn({
        let torture = torture.clone();
        let stop = stop.clone();
        async move { torture.run(stop).await }
    });
    wait_for_totals(&torture, "commits after the terminations", |now| {
        now.acknowledged_writes >= terminated_round.acknowledged_writes + 500
    })
    .await;
    stop.stop();
    load.await.expect("the clients finish");
    let recovered = torture.totals();
    let pool = PgOptions::default().max_connections as u64;
    assert!(
        recovered.errors - terminated_round.errors <= pool,
        "{} operations failed after the terminations stopped: the pool keeps dead connections",
        recovered.errors - terminated_round.errors
    );

    let report = torture.finish().await.expect("the final state is readable");
    // The figures of RELIABILITY.md (shown with --nocapture).
    eprintln!(
        "{} backends terminated mid-batch; {} operations, {} acknowledged writes, {} saves in \
         doubt, {} errors ({} after the terminations), {} violations",
        terminated.len(),
        report.totals.operations,
        report.totals.acknowledged_writes,
        report.totals.in_doubt,
        report.totals.errors,
        recovered.errors - terminated_round.errors,
        report.violations
    );
    assert_eq!(report.violations, 0, "{report:#?}");
    assert_eq!(
        report.totals.in_doubt, 0,
        "every cut save was sent again and answered: {report:#?}"
    );
}
