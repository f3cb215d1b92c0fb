//! Crashes: the real `folio serve` on the embedded engine, killed with
//! SIGKILL in the middle of a torture load (`folio_cli::tools::torture`),
//! five times (`FOLIO_CRASH_KILLS`), and started again on the same data. After each restart the
//! whole history so far is checked against what the server holds: every
//! write acknowledged before the kill is there (or was superseded), no
//! refused or half-applied batch shows, and the bank's total is intact.
//!
//! The history lives in this process, which is never killed. A kill is a
//! process crash, not a power loss: what the server wrote is still in the
//! operating system's cache when it starts again.

use std::time::{Duration, Instant};

use crate::process::{FolioServe, free_port};
use folio::DocumentStore;
use folio_cli::tools::torture::{Config, Stop, Torture, Totals};

/// How many times the server is killed: 5, or `FOLIO_CRASH_KILLS` (the
/// long run of RELIABILITY.md).
fn kills() -> usize {
    std::env::var("FOLIO_CRASH_KILLS")
        .ok()
        .and_then(|kills| kills.parse().ok())
        .unwrap_or(5)
}

/// A bound on a wait that a healthy run never reaches.
const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `done` until it holds (a bound on a hang, not a timing assertion).
async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_totals(torture: &Torture, what: &str, done: impl Fn(&Totals) -> bool) {
    wait_for(what, async || done(&torture.totals())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_the_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let args = ["--data".as_ref(), dir.path().as_os_str()];
    let mut server = FolioServe::start(port, &args).await;
    let url = format!("http://127.0.0.1:{port}/db/torture");
    let created = reqwest::Client::new()
        .put(&url)
        .send()
        .await
        .expect("PUT /db/torture");
    assert!(created.status().is_success(), "{created:?}");
    let store = DocumentStore::connect(&url).await.expect("connects");
    let config = Config {
        clients: 6,
        seed: 7,
        ..Config::default()
    };
    let torture = Torture::setup(vec![("server".to_owned(), store)], config)
        .await
        .expect("setup");

    let kills = kills();
    for kill in 1..=kills {
        let before = torture.totals();
        let stop = Stop::new();
        let load = tokio::spawn({
            let torture = torture.clone();
            let stop = stop.clone();
            async move { torture.run(stop).await }
        });
        wait_for_totals(&torture, "writes before the kill", |now| {
            now.acknowledged_writes >= before.acknowledged_writes + 200
        })
        .await;
        server.kill();
        // The clients are still sending: they see the server die.
        wait_for_totals(&torture, "the clients to see the kill", |now| {
            now.errors > before.errors
        })
        .await;
        stop.stop();
        load.await.expect("the clients finish");

        server = FolioServe::start(port, &args).await;
        let violations = torture.verify().await.expect("the state is readable");
        assert!(
            violations.is_empty(),
            "after kill {kill} of {kills}: {violations:#?}"
        );
    }

    // The server still serves the load after the last restart.
    let before = torture.totals();
    let stop = Stop::new();
    let load = tokio::spawn({
        let torture = torture.clone();
        let stop = stop.clone();
        async move { torture.run(stop).await }
    });
    wait_for_totals(&torture, "writes after the last restart", |now| {
        now.acknowledged_writes >= before.acknowledged_writes + 200
    })
    .await;
    stop.stop();
    load.await.expect("the clients finish");
    let report = torture.finish().await.expect("the final state is readable");
    // The figures of RELIABILITY.md (shown with --nocapture).
    eprintln!(
        "{kills} kills; {} operations, {} acknowledged writes, {} saves in doubt, {} violations",
        report.totals.operations,
        report.totals.acknowledged_writes,
        report.totals.in_doubt,
        report.violations
    );
    assert_eq!(report.violations, 0, "{report:#?}");
    assert!(report.totals.transfers > 0, "{report:#?}");
}
