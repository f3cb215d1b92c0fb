//! The `folio` command's client side against a real server: output, exit
//! codes, conditional writes, and an import/export round trip.

use std::process::{Command, Output};

use folio_server::{AppState, Backend, Databases, Limits};

/// Serves a fresh embedded data directory on `127.0.0.1:0`; returns the
/// base URL (the server lives as long as the test's runtime).
async fn start(dir: &std::path::Path) -> String {
    let state = AppState::new(
        Databases::new(Backend::Embedded {
            dir: dir.to_path_buf(),
            options: folio_sqlite::SqliteOptions::default(),
        }),
        None,
        Limits::default(),
        Vec::<String>::new(),
    );
    state.databases().create("shop").await.expect("database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(folio_server::serve(listener, state));
    format!("http://{address}")
}

/// Runs `folio ARGS…` against `server`/shop with `stdin` as input.
async fn folio(server: &str, args: &[&str], stdin: &str) -> Output {
    let server = server.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
            .args(&args)
            .env("FOLIO_SERVER", &server)
            .env("FOLIO_DB", "shop")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("folio runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("folio finishes")
    })
    .await
    .expect("blocking task")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "folio failed: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_with_preconditions_and_exit_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;

    let created = stdout_json(&folio(&server, &["put", "people", "p1"], r#"{"name":"Ada"}"#).await);
    let version = created["change_vector"]
        .as_str()
        .expect("a change vector")
        .to_owned();
    assert_eq!(created["revision"], 1);

    let read = stdout_json(&folio(&server, &["get", "people", "p1", "--metadata"], "").await);
    assert_eq!(read["document"]["name"], "Ada");
    assert_eq!(read["change_vector"], version.as_str());

    let updated = stdout_json(
        &folio(
            &server,
            &["put", "people", "p1", "--if-match", &version],
            r#"{"name":"Ada Lovelace"}"#,
        )
        .await,
    );
    assert_eq!(updated["revision"], 2);

    // The same version again is stale: exit code 4, nothing written.
    let stale = folio(
        &server,
        &["put", "people", "p1", "--if-match", &version],
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(stale.status.code(), Some(4), "{stale:?}");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("412"),
        "{stale:?}"
    );
    let read = stdout_json(&folio(&server, &["get", "people", "p1"], "").await);
    assert_eq!(read["name"], "Ada Lovelace");

    let refused = folio(
        &server,
        &["put", "people", "p1", "--if-none-match", "*"],
        r#"{"name":"y"}"#,
    )
    .await;
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");

    let missing = folio(&server, &["get", "people", "nobody"], "").await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");

    let bad = folio(&server, &["put", "people", "p2"], "not json").await;
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");

    let stale_delete = folio(
        &server,
        &["delete", "people", "p1", "--if-match", &version],
        "",
    )
    .await;
    assert_eq!(stale_delete.status.code(), Some(4), "{stale_delete:?}");
    let current = updated["change_vector"].as_str().expect("cv");
    let deleted = folio(
        &server,
        &["delete", "people", "p1", "--if-match", current],
        "",
    )
    .await;
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(
        folio(&server, &["get", "people", "p1"], "")
            .await
            .status
            .code(),
        Some(3)
    );

    let unreachable = folio("http://127.0.0.1:9", &["get", "people", "p1"], "").await;
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_export_and_query_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let lines: String = (0..2500)
        .map(|n| format!("{{\"collection\":\"items\",\"id\":\"i{n:05}\",\"document\":{{\"n\":{n},\"tag\":\"t{}\"}}}}\n", n % 3))
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &lines).expect("write input");
    let imported = folio(
        &server,
        &[
            "import",
            input.to_str().expect("path"),
            "--batch-size",
            "700",
        ],
        "",
    )
    .await;
    assert!(imported.status.success(), "{imported:?}");
    assert!(
        String::from_utf8_lossy(&imported.stderr).contains("imported 2500 documents"),
        "{imported:?}"
    );

    // --only-new refuses to overwrite: the batch conflicts, exit code 4.
    let again = folio(
        &server,
        &["import", input.to_str().expect("path"), "--only-new"],
        "",
    )
    .await;
    assert_eq!(again.status.code(), Some(4), "{again:?}");

    let output = dir.path().join("out.jsonl");
    let exported = folio(
        &server,
        &["export", "items", output.to_str().expect("path")],
        "",
    )
    .await;
    assert!(exported.status.success(), "{exported:?}");
    let written = std::fs::read_to_string(&output).expect("export file");
    let mut ids = Vec::new();
    for line in written.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(entry["collection"], "items");
        let n = entry["document"]["n"].as_u64().expect("n");
        assert_eq!(entry["id"], format!("i{n:05}"));
        ids.push(entry["id"].as_str().expect("id").to_owned());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "exported in id order, each once");
    assert_eq!(ids.len(), 2500);

    // Plain documents with --collection.
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(
        &plain,
        "{\"id\":\"x1\",\"n\":-1}\n{\"id\":\"x2\",\"n\":-2}\n",
    )
    .expect("write");
    let imported = folio(
        &server,
        &[
            "import",
            plain.to_str().expect("path"),
            "--collection",
            "items",
        ],
        "",
    )
    .await;
    assert!(imported.status.success(), "{imported:?}");

    let result = stdout_json(
        &folio(
            &server,
            &["query", r#"{"collection":"items","where":[{"path":"n","op":"lt","value":0}],"order_by":[{"path":"n"}]}"#],
            "",
        )
        .await,
    );
    assert_eq!(result["total"], 2);
    assert_eq!(result["results"][0]["id"], "x2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_list_databases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;

    let created = folio(&server, &["create", "stock"], "").await;
    assert!(created.status.success(), "{created:?}");
    assert_eq!(
        String::from_utf8_lossy(&created.stdout),
        "created database stock\n"
    );
    let again = folio(&server, &["create", "--db", "stock"], "").await;
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "database stock exists\n"
    );
    // The new database takes documents at once.
    let put = folio(&server, &["put", "items", "i1", "--db", "stock"], "{}").await;
    assert!(put.status.success(), "{put:?}");
    let collections = folio(&server, &["collections", "--db", "stock"], "").await;
    assert!(collections.status.success(), "{collections:?}");
    assert_eq!(String::from_utf8_lossy(&collections.stdout), "items\t1\n");

    let listed = folio(&server, &["databases"], "").await;
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "shop\nstock\n");

    let bad = folio(&server, &["create", "Not A Name"], "").await;
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("database"),
        "{bad:?}"
    );
    assert!(!dir.path().join("Not A Name.sqlite").exists());

    // A database that does not exist: the error says how to create it.
    let missing = folio(&server, &["get", "people", "p1", "--db", "nowhere"], "").await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("folio create nowhere"),
        "{missing:?}"
    );
}

/// Through the remote engine (a session over HTTP) and `folio import`,
/// the two clients that write by batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_engine_and_import_honour_a_guarded_collection() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = folio_server::AppState::new(
        folio_server::Databases::new(folio_server::Backend::Embedded {
            dir: root.path().join("data"),
            options: crate::common::options(),
        }),
        None,
        folio_server::Limits::default(),
        vec!["shop/accounts".to_owned()],
    );
    state.databases().create("shop").await.expect("a database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(folio_server::serve(listener, state));

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, folio::Document)]
    #[folio(collection = "accounts")]
    struct Account {
        #[folio(id)]
        id: String,
        balance: i64,
    }
    let store = folio::DocumentStore::connect(&format!("http://{address}/db/shop"))
        .await
        .expect("the remote store");
    let mut session = store.open_session();
    session
        .store(Account {
            id: "a1".into(),
            balance: 10,
        })
        .unwrap();
    session
        .save_changes()
        .await
        .expect("creating needs no version");

    // Checks are off for the type: the session sends no version.
    let mut session = store.open_session();
    session
        .store(Account {
            id: "a1".into(),
            balance: 0,
        })
        .unwrap();
    let refused = session.save_changes().await;
    assert!(
        matches!(&refused, Err(folio::Error::InvalidInput(detail)) if detail.contains("accounts #a1")),
        "{refused:?}"
    );
    let mut session = store.open_session();
    session.delete::<Account>("a1").unwrap();
    assert!(session.save_changes().await.is_err());
    let stored = store.open_session().load::<Account>("a1").await.unwrap();
    assert_eq!(stored.map(|account| account.balance), Some(10));

    // With the version read, it goes through.
    let mut session = store.open_session();
    session.advanced().set_use_optimistic_concurrency(true);
    let mut account = session
        .load::<Account>("a1")
        .await
        .unwrap()
        .expect("stored");
    account.balance = 20;
    session.store(account).unwrap();
    session
        .save_changes()
        .await
        .expect("the version read is sent");

    // folio import writes without versions: new documents only.
    let client = folio_cli::client::Client::new(&format!("http://{address}"), "shop", None)
        .expect("a client");
    let file = root.path().join("accounts.jsonl");
    std::fs::write(
        &file,
        "{\"collection\":\"accounts\",\"id\":\"a2\",\"document\":{\"balance\":5}}\n",
    )
    .expect("written");
    assert_eq!(
        client
            .import(&file, None, 10, false)
            .await
            .expect("a new document"),
        1
    );
    std::fs::write(
        &file,
        "{\"collection\":\"accounts\",\"id\":\"a1\",\"document\":{\"balance\":0}}\n",
    )
    .expect("written");
    let refused = client.import(&file, None, 10, false).await;
    let failure = refused.expect_err("an existing guarded document is not overwritten");
    assert_eq!(failure.exit_code(), 4, "{failure:?}");
    let stored = store.open_session().load::<Account>("a1").await.unwrap();
    assert_eq!(stored.map(|account| account.balance), Some(20));
}

/// Started with its log going to a pipe (as to a file or a journal), the
/// server says where its databases are, and writes no colour codes.
#[tokio::test]
async fn the_log_names_the_data_directory_and_has_no_colour_codes_off_a_terminal() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = crate::process::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data.path())
        .env("FOLIO_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("folio serve starts");
    let client = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let mut answered = false;
    for _ in 0..3000 {
        if client.get(&health).send().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // SIGTERM: a graceful stop, and the log ends.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let output = child.wait_with_output().expect("the server's log");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(answered, "the server came up: {log}");
    assert!(!log.contains('\u{1b}'), "no escape codes in {log:?}");
    let shown = std::path::absolute(data.path()).unwrap();
    assert!(
        log.contains("the databases are files in the data directory")
            && log.contains(&shown.display().to_string()),
        "the data directory in {log}"
    );
    assert!(log.contains("folio is listening"), "{log}");
}

/// An import stopped by a failing batch, run again once the cause is gone,
/// writes what the first run did not: each batch's idempotency key is its
/// body's digest, so the batches the first run committed are answered as
/// before (they would conflict now, with `--only-new`), and the rest commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_run_again_imports_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let lines: String = (0..2000)
        .map(|n| {
            format!("{{\"collection\":\"items\",\"id\":\"i{n:05}\",\"document\":{{\"n\":{n}}}}}\n")
        })
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &lines).expect("write input");
    let path = input.to_str().expect("path");
    let args = ["import", path, "--batch-size", "500", "--only-new"];
    // A document of the third batch exists: that batch conflicts.
    let blocker = folio(&server, &["put", "items", "i01200"], r#"{"n":-1}"#).await;
    assert!(blocker.status.success(), "{blocker:?}");
    let first = folio(&server, &args, "").await;
    assert_eq!(first.status.code(), Some(4), "{first:?}");
    let deleted = folio(&server, &["delete", "items", "i01200"], "").await;
    assert!(deleted.status.success(), "{deleted:?}");

    let again = folio(&server, &args, "").await;
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{again:?}");
    assert!(said.contains("imported 2000 documents ("), "{said}");
    assert!(
        said.contains("of them by an earlier run of this import"),
        "{said}"
    );
    let got = stdout_json(&folio(&server, &["get", "items", "i01200"], "").await);
    assert_eq!(got, serde_json::json!({"n": 1200}));
    let counted = stdout_json(
        &folio(
            &server,
            &["query", r#"{"collection":"items","take":0}"#],
            "",
        )
        .await,
    );
    assert_eq!(counted["total"], 2000);
}

/// `put` and `delete` take an idempotency key: the same write sent again
/// with it is answered as the first and not applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_again_with_its_key_is_applied_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let put = ["put", "people", "p1", "--idempotency-key", "signup-1"];
    let first = stdout_json(&folio(&server, &put, r#"{"name":"Ann"}"#).await);
    let again = stdout_json(&folio(&server, &put, r#"{"name":"Ann"}"#).await);
    assert_eq!(first, again);
    assert_eq!(again["revision"], 1);
    let other = folio(&server, &put, r#"{"name":"Bob"}"#).await;
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("422"),
        "{other:?}"
    );
    let bad = folio(
        &server,
        &["put", "people", "p2", "--idempotency-key", "a b"],
        "{}",
    )
    .await;
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Idempotency-Key"),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_revisions_and_revert_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let config = folio(
        &server,
        &["config", "people", r#"{"revisions":{"keep":10}}"#],
        "",
    )
    .await;
    assert_eq!(
        stdout_json(&config),
        serde_json::json!({ "revisions": { "keep": 10 } })
    );
    let bad = folio(
        &server,
        &["config", "people", r#"{"revisions":{"keep":-1}}"#],
        "",
    )
    .await;
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let shown = folio(&server, &["config", "people"], "").await;
    assert_eq!(stdout_json(&shown)["revisions"]["keep"], 10);

    let mut versions = Vec::new();
    for name in ["one", "two", "three"] {
        let put = folio(
            &server,
            &["put", "people", "p1"],
            &format!(r#"{{"name":"{name}"}}"#),
        )
        .await;
        versions.push(
            stdout_json(&put)["change_vector"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let listed = folio(&server, &["revisions", "people", "p1"], "").await;
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Vec<String>> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0][0], "3");
    assert_eq!(lines[0][1], versions[2]);
    assert_eq!(lines[2][1], versions[0]);
    assert!(lines[0][2].ends_with('Z'));

    let old = folio(&server, &["revisions", "people", "p1", &versions[0]], "").await;
    assert_eq!(stdout_json(&old), serde_json::json!({ "name": "one" }));
    let missing = folio(&server, &["revisions", "people", "p1", "A:999-nope"], "").await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");

    let reverted = folio(&server, &["revert", "people", "p1", &versions[0]], "").await;
    assert_eq!(stdout_json(&reverted)["revision"], 4);
    let now = folio(&server, &["get", "people", "p1"], "").await;
    assert_eq!(stdout_json(&now), serde_json::json!({ "name": "one" }));
    let unknown = folio(&server, &["revert", "people", "p1", "A:999-nope"], "").await;
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");

    // Deleted: the history stays, and a revert brings it back.
    let deleted = folio(&server, &["delete", "people", "p1"], "").await;
    assert!(deleted.status.success(), "{deleted:?}");
    let listed = folio(&server, &["revisions", "people", "p1"], "").await;
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().ends_with("\tdeleted"),
        "{text}"
    );
    let back = folio(&server, &["revert", "people", "p1", &versions[1]], "").await;
    assert_eq!(stdout_json(&back)["revision"], 1);
}
