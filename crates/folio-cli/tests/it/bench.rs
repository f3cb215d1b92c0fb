//! `folio bench`, the real binary, for a second against each kind of target:
//! the report has its fields and consistent counts, the data set is loaded
//! once and reused, no update is lost on the hot document, and bad input
//! fails with a message that says what is wrong. Nothing here judges speed.

use std::process::{Command, Output, Stdio};

use folio::{Document, DocumentStore};
use folio_postgres::testing::TestCluster;
use serde::Deserialize;
use serde_json::Value;

use crate::process::{FolioServe, free_port};

/// Runs `folio bench ARGS…` to the end.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_folio"))
        .arg("bench")
        .args(args)
        .env("FOLIO_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("folio bench runs")
}

/// Runs `WORKLOAD` on `target` for one second with 4 clients and 200
/// documents; the `--json` report, checked for what every report holds.
fn report(workload: &str, target: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        workload,
        "--target",
        target,
        "--clients",
        "4",
        "--duration",
        "1",
        "--docs",
        "200",
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = bench(&args);
    assert!(output.status.success(), "folio bench failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");

    let number = |field: &str| {
        report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is a number in {report}"))
    };
    let count = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is a count in {report}"))
    };
    assert_eq!(report["workload"], workload);
    assert_eq!(count("clients"), 4);
    assert_eq!(count("docs"), 200);
    assert_eq!(number("duration"), 1.0);
    assert!(number("elapsed_s") >= 1.0, "{report}");
    assert!(count("ops") > 0, "{report}");
    assert_eq!(count("ops"), count("successes") + count("conflicts"));
    assert!(count("successes") > 0, "{report}");
    let elapsed = number("elapsed_s");
    for (rate, total) in [
        ("ops_per_s", "ops"),
        ("successes_per_s", "successes"),
        ("conflicts_per_s", "conflicts"),
    ] {
        let expected = count(total) as f64 / elapsed;
        assert!(
            (number(rate) - expected).abs() <= expected * 1e-9,
            "{rate}: {report}"
        );
    }
    let (p50, p99, max) = (number("p50_ms"), number("p99_ms"), number("max_ms"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    report
}

/// The bench's documents, as far as these tests look.
#[derive(Debug, Deserialize, serde::Serialize, Document)]
#[folio(collection = "accounts")]
struct Account {
    id: String,
    visits: u64,
}

async fn visits(store: &DocumentStore, id: &str) -> u64 {
    store
        .query_session()
        .load::<Account>(id)
        .await
        .expect("load")
        .expect("the document exists")
        .visits
}

#[test]
fn every_workload_on_the_embedded_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = format!("embedded:{}", dir.path().display());

    let update = report("update", &target, &[]);
    assert_eq!(update["dataset"], "loaded");
    // The report names the target in its first spelling.
    assert_eq!(
        update["target"],
        format!("sqlite:{}", dir.path().display()).as_str()
    );

    // The next runs find the data set the first one loaded.
    let read = report("read", &target, &["--cold"]);
    assert_eq!(read["dataset"], "reused");
    assert_eq!(read["conflicts"], 0);

    let batch = report("batch10", &target, &[]);
    assert_eq!(batch["dataset"], "reused");
    let documents = batch["documents_per_s"].as_f64().expect("documents/s");
    let saves = batch["successes_per_s"].as_f64().expect("successes/s");
    assert!(
        (documents - 10.0 * saves).abs() <= documents * 1e-9,
        "{batch}"
    );

    let mixed = report("mixed", &target, &[]);
    assert_eq!(mixed["dataset"], "reused");

    // A larger data set than the one recorded is loaded again.
    let output = bench(&[
        "read",
        "--target",
        &target,
        "--clients",
        "2",
        "--duration",
        "0.2",
        "--docs",
        "300",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let larger: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(larger["dataset"], "loaded");
}

#[test]
fn update_hot_counts_every_increment_and_loses_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = format!("embedded:{}", dir.path().display());
    let first = report("update-hot", &target, &[]);
    let second = report("update-hot", &target, &[]);
    let successes = first["successes"].as_u64().expect("successes")
        + second["successes"].as_u64().expect("successes");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stored = runtime.block_on(async {
        let store = DocumentStore::builder()
            .path(dir.path())
            .database("bench")
            .open()
            .await
            .expect("the bench database opens");
        visits(&store, "accounts/0000000").await
    });
    assert_eq!(stored, successes, "{first} {second}");
}

#[test]
fn through_folio_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = FolioServe::start_blocking(free_port(), &["--data".as_ref(), dir.path().as_ref()]);
    // The bench creates the database it is pointed at.
    let target = format!("http://127.0.0.1:{}/db/benchhttp", server.port);
    let update = report("update", &target, &[]);
    assert_eq!(update["dataset"], "loaded");
    assert_eq!(update["target"], target.as_str());
    let batch = report("batch10", &target, &[]);
    assert_eq!(batch["dataset"], "reused");
    drop(server);
    assert!(dir.path().join("benchhttp.sqlite").exists());
}

#[test]
fn on_the_postgres_engine() {
    let url = TestCluster::shared().url();
    let target = format!("postgres:{url}");
    let database = format!("bench{}", std::process::id());
    let update = report("update", &target, &["--database", &database]);
    assert_eq!(update["dataset"], "loaded");
    let batch = report("batch10", &target, &["--database", &database]);
    assert_eq!(batch["dataset"], "reused");
}

/// Runs `folio bench ARGS…` expecting failure; its standard error.
fn refused(args: &[&str]) -> String {
    let output = bench(args);
    assert!(!output.status.success(), "{args:?} succeeded: {output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    String::from_utf8(output.stderr).expect("UTF-8")
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let expect = |args: &[&str], message: &str| {
        let stderr = refused(args);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    };
    expect(&["nope", "--target", "memory:"], "invalid value 'nope'");
    expect(&["nope", "--target", "memory:"], "update-hot");
    expect(&["update"], "--target");
    expect(
        &["update", "--target", "mysql://x"],
        "unknown database URL \"mysql://x\"",
    );
    expect(
        &["update", "--target", "http://127.0.0.1:1"],
        "a server target names its database",
    );
    expect(
        &["update", "--target", "memory:", "--clients", "0"],
        "at least 1 client",
    );
    expect(
        &["update", "--target", "memory:", "--clients", "many"],
        "not a number",
    );
    expect(
        &["update", "--target", "memory:", "--duration", "0"],
        "positive number of seconds",
    );
    expect(
        &["update", "--target", "memory:", "--docs", "0"],
        "at least 1 document",
    );
    expect(
        &["update", "--target", "memory:", "--doc-size", "10"],
        "--doc-size 10 is too small",
    );
    expect(
        &["batch10", "--target", "memory:", "--docs", "5"],
        "--docs must be at least 10",
    );
    let port = free_port();
    let unreachable = format!("http://127.0.0.1:{port}/db/x");
    expect(&["read", "--target", &unreachable], "does not answer");
    expect(
        &["read", "--target", &unreachable, "--database", "other"],
        "names its database in the URL",
    );
}
