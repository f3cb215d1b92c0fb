//! `folio backup`, `folio restore`, `folio copy` and `folio export --all`
//! end to end: the `folio` command against a `folio serve` child process
//! while a writer runs, into new databases on the server, in a data
//! directory and on PostgreSQL; what they refuse, with their exit codes.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use folio_postgres::testing::TestCluster;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::process::{FolioServe, free_port};

const ACCOUNTS: usize = 6;
const TOTAL: i64 = 6_000;
/// A guard against hangs only.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `folio ARGS…` against `server` (no standard input).
async fn folio(server: &str, args: &[&str]) -> Output {
    folio_with_input(server, args, b"").await
}

/// Runs `folio ARGS…` against `server` with `input` on standard input.
async fn folio_with_input(server: &str, args: &[&str], input: &[u8]) -> Output {
    let server = server.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(&args)
            .env("FOLIO_SERVER", &server)
            .env_remove("FOLIO_DB")
            .env("FOLIO_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("folio runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("the input");
        child.wait_with_output().expect("folio finishes")
    })
    .await
    .expect("blocking task")
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(output.status.success(), "folio failed: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Transfers between the accounts of `base`/db/shop until `stop`: each
/// batch moves an amount between two accounts (conditional on the
/// versions read) and adds a ledger document, whole or not at all.
async fn transfer_until(base: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let http = reqwest::Client::new();
    let mut seed = 7u64;
    while !stop.load(Ordering::Relaxed) {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let from = (seed >> 33) as usize % ACCOUNTS;
        let to = (seed >> 17) as usize % ACCOUNTS;
        if from == to {
            continue;
        }
        let read = http
            .post(format!("{base}/db/shop/docs/accounts/get"))
            .json(&json!({ "ids": [format!("a{from}"), format!("a{to}")] }))
            .send()
            .await
            .expect("a read");
        let read: Value = read.json().await.expect("JSON");
        let entry = |index: usize| &read["results"][index];
        let balance = |index: usize| {
            entry(index)["document"]["balance"]
                .as_i64()
                .expect("a balance")
        };
        let amount = (seed % 40) as i64 + 1;
        let batch = json!({ "commands": [
            { "op": "put", "collection": "accounts", "id": format!("a{from}"),
              "document": { "balance": balance(0) - amount },
              "expect": { "change_vector": entry(0)["change_vector"] } },
            { "op": "put", "collection": "accounts", "id": format!("a{to}"),
              "document": { "balance": balance(1) + amount },
              "expect": { "change_vector": entry(1)["change_vector"] } },
            { "op": "put", "collection": "ledger", "id": format!("t{seed}"),
              "document": { "from": from, "to": to, "amount": amount }, "expect": "missing" },
        ] });
        let response = http
            .post(format!("{base}/db/shop/batch"))
            .json(&batch)
            .send()
            .await
            .expect("a batch");
        match response.status() {
            StatusCode::OK => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::CONFLICT => {}
            other => panic!("a transfer answered {other}"),
        }
    }
}

async fn wait_for(done: &AtomicU64, count: u64) {
    tokio::time::timeout(PATIENCE, async {
        while done.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the writer makes progress");
}

/// The entries of an export file.
fn exported(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .expect("the export")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The bank's invariants in one exported state.
#[track_caller]
fn check_bank(entries: &[Value]) {
    let accounts: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["collection"] == "accounts")
        .collect();
    assert_eq!(accounts.len(), ACCOUNTS);
    let total: i64 = accounts
        .iter()
        .map(|entry| entry["document"]["balance"].as_i64().expect("a balance"))
        .sum();
    assert_eq!(total, TOTAL, "a transfer is in the snapshot in part");
    let updates: u64 = accounts
        .iter()
        .map(|entry| entry["revision"].as_u64().expect("a revision") - 1)
        .sum();
    let transfers = entries
        .iter()
        .filter(|entry| entry["collection"] == "ledger")
        .count() as u64;
    assert_eq!(
        updates,
        2 * transfers,
        "the ledger and the accounts disagree"
    );
    assert!(transfers >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_copy_and_export_while_a_writer_runs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let server = FolioServe::start(free_port(), &["--data".as_ref(), data.as_os_str()]).await;
    let base = server.base();
    let http = reqwest::Client::new();
    assert_eq!(
        http.put(format!("{base}/db/shop"))
            .send()
            .await
            .expect("PUT")
            .status(),
        StatusCode::CREATED
    );
    let accounts: Vec<Value> = (0..ACCOUNTS)
        .map(|n| {
            json!({ "op": "put", "collection": "accounts", "id": format!("a{n}"),
                         "document": { "balance": TOTAL / ACCOUNTS as i64 } })
        })
        .collect();
    let seeded = http
        .post(format!("{base}/db/shop/batch"))
        .json(&json!({ "commands": accounts }))
        .send()
        .await
        .expect("the accounts");
    assert_eq!(seeded.status(), StatusCode::OK);
    let response = http
        .put(format!("{base}/db/shop/docs/people/p1"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"name":"Ada"}"#)
        .send()
        .await
        .expect("PUT");
    let held = response.headers()[header::ETAG]
        .to_str()
        .expect("ETag")
        .trim_matches('"')
        .to_owned();

    // The backup, taken while the writer runs.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(transfer_until(base.clone(), stop.clone(), done.clone()));
    wait_for(&done, 20).await;
    let backup = dir.path().join("shop.sqlite");
    let made = succeeded(&folio(&base, &["backup", path(&backup), "--db", "shop"]).await);
    assert!(made.contains("backed up shop"), "{made}");
    let after = done.load(Ordering::Relaxed);
    wait_for(&done, after + 20).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer ends cleanly");

    // Restored into a new database on the server: the snapshot's state,
    // whole; the version a client held still writes.
    let restored = succeeded(&folio(&base, &["restore", path(&backup), "--db", "restored"]).await);
    assert!(restored.contains("change vectors kept"), "{restored}");
    let export = dir.path().join("restored.jsonl");
    succeeded(
        &folio(
            &base,
            &["export", "--all", path(&export), "--db", "restored"],
        )
        .await,
    );
    let state = exported(&export);
    check_bank(&state);
    let source_export = dir.path().join("shop.jsonl");
    succeeded(
        &folio(
            &base,
            &["export", "--all", path(&source_export), "--db", "shop"],
        )
        .await,
    );
    assert!(
        exported(&source_export).len() > state.len(),
        "the source went on after the backup"
    );
    let put = folio_with_input(
        &base,
        &[
            "put",
            "people",
            "p1",
            "--db",
            "restored",
            "--if-match",
            &held,
        ],
        br#"{"name":"Ada Lovelace"}"#,
    )
    .await;
    assert!(put.status.success(), "a held version writes: {put:?}");

    // What backup and restore refuse, with their exit codes.
    let again = folio(&base, &["restore", path(&backup), "--db", "restored"]).await;
    assert_eq!(again.status.code(), Some(4), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("holds data"),
        "{again:?}"
    );
    // Refused before its upload is read, a large upload still learns why
    // (the server closes the connection while the file is being sent).
    let large = dir.path().join("large.backup");
    std::fs::write(&large, vec![0_u8; 64 << 20]).expect("a large file");
    let refused = folio(&base, &["restore", path(&large), "--db", "restored"]).await;
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("holds data"),
        "{refused:?}"
    );
    let existing = folio(&base, &["backup", path(&backup), "--db", "shop"]).await;
    assert_eq!(existing.status.code(), Some(1), "{existing:?}");
    assert!(
        String::from_utf8_lossy(&existing.stderr).contains("exists already"),
        "{existing:?}"
    );
    let locked = folio(
        &base,
        &[
            "backup",
            path(&dir.path().join("offline.sqlite")),
            "--data",
            path(&data),
            "--db",
            "shop",
        ],
    )
    .await;
    assert_eq!(locked.status.code(), Some(1), "{locked:?}");
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("server holds it"),
        "{locked:?}"
    );
    let missing = folio(
        &base,
        &[
            "backup",
            path(&dir.path().join("x.sqlite")),
            "--db",
            "nothing",
        ],
    )
    .await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");

    // Offline: restored into a data directory no server holds, exported
    // from there.
    let offline = dir.path().join("offline-data");
    succeeded(
        &folio(
            &base,
            &[
                "restore",
                path(&backup),
                "--data",
                path(&offline),
                "--db",
                "shop",
            ],
        )
        .await,
    );
    let offline_export = dir.path().join("offline.jsonl");
    succeeded(
        &folio(
            &base,
            &[
                "export",
                "--all",
                path(&offline_export),
                "--data",
                path(&offline),
                "--db",
                "shop",
            ],
        )
        .await,
    );
    assert_eq!(exported(&offline_export), state);

    // Copied from the live server to PostgreSQL, and from the backup file.
    let postgres = TestCluster::shared().url().to_owned();
    let name = format!("cli{}", std::process::id());
    let copied = succeeded(
        &folio(
            &base,
            &[
                "copy",
                &format!("{base}/db/restored"),
                &postgres,
                "--db",
                &name,
            ],
        )
        .await,
    );
    assert!(copied.contains("restored"), "{copied}");
    let pg_export = dir.path().join("pg.jsonl");
    succeeded(
        &folio(
            &base,
            &[
                "export",
                "--all",
                path(&pg_export),
                "--postgres",
                &postgres,
                "--db",
                &name,
            ],
        )
        .await,
    );
    let from_postgres = exported(&pg_export);
    let restored_now = dir.path().join("restored-now.jsonl");
    succeeded(
        &folio(
            &base,
            &["export", "--all", path(&restored_now), "--db", "restored"],
        )
        .await,
    );
    assert_eq!(
        from_postgres,
        exported(&restored_now),
        "PostgreSQL holds every version as it was"
    );
    let from_file = format!("{name}_file");
    succeeded(
        &folio(
            &base,
            &[
                "copy",
                path(&backup),
                &postgres,
                "--db",
                &from_file,
                "--new-id",
            ],
        )
        .await,
    );
    let pg_backup = dir.path().join("pg.sqlite");
    succeeded(
        &folio(
            &base,
            &[
                "backup",
                path(&pg_backup),
                "--postgres",
                &postgres,
                "--db",
                &from_file,
            ],
        )
        .await,
    );
    let file_state = dir.path().join("pg-file.jsonl");
    succeeded(&folio(&base, &["restore", path(&pg_backup), "--db", "roundtrip"]).await);
    succeeded(
        &folio(
            &base,
            &["export", "--all", path(&file_state), "--db", "roundtrip"],
        )
        .await,
    );
    let round_trip = exported(&file_state);
    check_bank(&round_trip);
    assert_eq!(round_trip.len(), state.len());

    // An export of every collection imports into a new database whole.
    assert_eq!(
        http.put(format!("{base}/db/imported"))
            .send()
            .await
            .expect("PUT")
            .status(),
        StatusCode::CREATED
    );
    succeeded(&folio(&base, &["import", path(&export), "--db", "imported"]).await);
    let reimported = dir.path().join("imported.jsonl");
    succeeded(
        &folio(
            &base,
            &["export", "--all", path(&reimported), "--db", "imported"],
        )
        .await,
    );
    let documents = |entries: Vec<Value>| {
        entries
            .into_iter()
            .map(|entry| {
                (
                    entry["collection"].clone(),
                    entry["id"].clone(),
                    entry["document"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(documents(exported(&reimported)), documents(state));
}
