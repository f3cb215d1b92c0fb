//! Backups, restores, copies to PostgreSQL and exports of whole databases
//! (`folio_sqlite::backup`, `folio_postgres`'s `PgSnapshot`/`PgLoader`, the
//! server's `/backup`, `/restore`, `/export`): a restored database holds
//! the same documents, metadata and changes feed as its source at the
//! snapshot, takes writes conditional on the versions clients held, and
//! issues etags after the source's; a backup or an export taken while
//! writers run is one consistent snapshot. Then what a restore refuses:
//! damaged, foreign and newer files, and databases that hold data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use folio::{
    Batch, Change, ChangeVector, Command, CommandResult, EngineRef, Entry, Expectation, FieldPath,
};
use folio_core::{Identity, SnapshotReader as _};

use crate::concurrency::XorShift;
use crate::harness::{EngineKind, Harness, unique_database_name};

conformance!(
    restore_keeps_documents_metadata_and_the_feed,
    restored_database_takes_the_versions_clients_held,
    restore_with_a_new_id_refuses_the_sources_versions,
    copy_to_postgres_keeps_every_version,
    backups_and_copies_keep_revisions_and_configurations,
    backup_taken_while_writers_run_is_one_snapshot,
    export_taken_while_writers_run_is_one_snapshot,
);

/// A guard against hangs only: every wait here ends long before.
const PATIENCE: Duration = Duration::from_secs(60);

const COLLECTIONS: [&str; 3] = ["people", "orders", "notes"];

// ---- helpers of this module -------------------------------------------------

/// Commits `commands`; the results (panics on a conflict).
async fn commit(engine: &EngineRef, commands: Vec<Command>) -> Vec<CommandResult> {
    engine
        .commit(Batch::from(commands))
        .await
        .expect("the commit reaches the engine")
        .expect("no conflict")
        .into_results()
}

fn put(collection: &str, id: &str, document: &str) -> Command {
    Command::put(collection, id, document, Expectation::Any)
}

/// Writes a history with every kind of record in three collections:
/// creations, updates (revisions above 1), deletes (tombstones), a
/// re-created document, an index, and documents of every JSON kind.
/// Returns the last etag written.
async fn write_history(engine: &EngineRef) -> u64 {
    for n in 0..40 {
        commit(
            engine,
            vec![
                put(
                    "people",
                    &format!("p{n:02}"),
                    &format!(
                        r#"{{"name":"Person {n}","address":{{"city":"C{}"}},"n":{n}}}"#,
                        n % 4
                    ),
                ),
                put(
                    "orders",
                    &format!("o{n:02}"),
                    &format!(
                        r#"{{"total":{}.5,"lines":[1,2,{n}],"paid":{}}}"#,
                        n,
                        n % 2 == 0
                    ),
                ),
            ],
        )
        .await;
    }
    for n in 0..10 {
        commit(
            engine,
            vec![put(
                "people",
                &format!("p{n:02}"),
                &format!(r#"{{"name":"Person {n}, renamed","tags":["a","b"],"nothing":null}}"#),
            )],
        )
        .await;
    }
    for n in 30..35 {
        commit(
            engine,
            vec![Command::delete(
                "orders",
                format!("o{n:02}"),
                Expectation::Any,
            )],
        )
        .await;
    }
    commit(
        engine,
        vec![put("orders", "o31", r#"{"total":0,"reborn":true}"#)],
    )
    .await;
    commit(
        engine,
        vec![put(
            "notes",
            "n-ünïcödé id",
            r#"{"text":"ünïcödé ✓ \"quoted\""}"#,
        )],
    )
    .await;
    engine
        .ensure_index("people", &FieldPath::parse("address.city").expect("a path"))
        .await
        .expect("the index is made");
    let results = commit(engine, vec![put("notes", "last", r#"{"text":"last"}"#)]).await;
    match &results[0] {
        CommandResult::Put(metadata) => metadata.etag,
        other => panic!("a put, got {other:?}"),
    }
}

/// Every live document of `collections`, by collection and id.
async fn documents(engine: &EngineRef, collections: &[&str]) -> Vec<Entry> {
    let mut all = Vec::new();
    for collection in collections {
        let mut after: Option<String> = None;
        loop {
            let page = engine
                .scan(collection, after.as_deref(), 500)
                .await
                .expect("the collection is listed");
            let Some(last) = page.last() else { break };
            after = Some(last.metadata.id.clone());
            all.extend(page);
        }
    }
    all
}

/// The changes feed from the start up to `last` (waiting for it to be
/// published).
async fn feed(engine: &EngineRef, last: u64) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut since = 0;
    tokio::time::timeout(PATIENCE, async {
        while since < last {
            let page = engine
                .changes_wait(since, None, 1000, PATIENCE)
                .await
                .expect("the feed reads");
            changes.extend(page.changes);
            since = page.last_etag;
        }
    })
    .await
    .expect("the feed reaches the last etag");
    changes
}

/// The JSON value of a document (engines may write the same value
/// differently: PostgreSQL orders keys its own way).
fn value(document: &str) -> serde_json::Value {
    serde_json::from_str(document).expect("a stored document is JSON")
}

/// A new file path for a backup, in a directory removed with the guard.
fn backup_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("backup.sqlite");
    (dir, file)
}

/// A put of `id` conditional on `version`, and whether it was accepted.
async fn accepted(engine: &EngineRef, collection: &str, id: &str, version: &ChangeVector) -> bool {
    engine
        .commit(Batch::from(vec![Command::put(
            collection,
            id,
            r#"{"written":"after the restore"}"#,
            Expectation::version(version.clone()),
        )]))
        .await
        .expect("the commit reaches the engine")
        .is_ok()
}

/// The etag of a put.
fn etag(results: &[CommandResult]) -> u64 {
    match &results[0] {
        CommandResult::Put(metadata) => metadata.etag,
        other => panic!("a put, got {other:?}"),
    }
}

// ---- restores -----------------------------------------------------------------

async fn restore_keeps_documents_metadata_and_the_feed(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let last = write_history(&engine).await;
    let (_dir, file) = backup_file();
    h.backup(&file).await;

    let summary = folio_sqlite::verify_backup(&file).expect("the backup is sound");
    let source_documents = documents(&engine, &COLLECTIONS).await;
    let source_feed = feed(&engine, last).await;
    assert_eq!(summary.counts.documents, source_documents.len() as u64);
    assert_eq!(summary.counts.collections, 3);
    assert_eq!(
        summary.counts.tombstones, 4,
        "o30, o32, o33, o34 (o31 came back)"
    );
    assert_eq!(summary.counts.changes, source_feed.len() as u64);
    assert_eq!(summary.header.feed_position, last);
    assert!(summary.header.last_etag >= last);
    // The index `ensure_index` made (a remote store leaves indexes to the
    // server: none).
    let indexes = u64::from(h.kind != EngineKind::Remote);
    assert_eq!(summary.counts.indexes, indexes);

    let restored = h.restore(&file, Identity::Keep).await;
    // Same engine, same text: documents and metadata exactly (change
    // vectors included: the database id is kept).
    assert_eq!(documents(&restored, &COLLECTIONS).await, source_documents);
    assert_eq!(feed(&restored, last).await, source_feed);
    // The feed is sane: nothing after the last etag, and a reader waiting
    // beyond it waits for the next write.
    let beyond = restored
        .changes(last, None, 10)
        .await
        .expect("the feed reads");
    assert!(beyond.changes.is_empty(), "{beyond:?}");
    // Far above the backup's etags: the source may have issued the next
    // ones after the backup, and a change vector names one version.
    let next = etag(&commit(&restored, vec![put("notes", "new", "{}")]).await);
    assert!(
        next > summary.header.last_etag + folio_core::RESTORED_ETAG_GAP,
        "{next} after {}",
        summary.header.last_etag
    );
    let page = restored
        .changes_wait(last, None, 10, PATIENCE)
        .await
        .expect("the feed reads");
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].etag, next);
    // The restored database is a database of its own.
    assert!(
        engine
            .get("notes", &["new".to_owned()])
            .await
            .expect("a read")[0]
            .is_none()
    );
}

async fn restored_database_takes_the_versions_clients_held(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    write_history(&engine).await;
    // A client read p01 and p02 before the backup; p02 changes before it
    // too, so the client's version of p02 is stale in the backup.
    let read = engine
        .get("people", &["p01".to_owned(), "p02".to_owned()])
        .await
        .expect("a read");
    let held_p01 = read[0]
        .as_ref()
        .expect("p01")
        .metadata
        .change_vector
        .clone();
    let held_p02 = read[1]
        .as_ref()
        .expect("p02")
        .metadata
        .change_vector
        .clone();
    commit(
        &engine,
        vec![put("people", "p02", r#"{"changed":"before the backup"}"#)],
    )
    .await;
    let (_dir, file) = backup_file();
    h.backup(&file).await;
    let summary = folio_sqlite::verify_backup(&file).expect("the backup is sound");

    let restored = h.restore(&file, Identity::Keep).await;
    assert!(
        accepted(&restored, "people", "p01", &held_p01).await,
        "a version held from before the backup is current in the restored database"
    );
    assert!(
        !accepted(&restored, "people", "p02", &held_p02).await,
        "a version already stale at the backup stays stale"
    );
    let stored = restored
        .get("people", &["p01".to_owned()])
        .await
        .expect("a read")[0]
        .clone()
        .expect("p01");
    assert!(stored.metadata.etag > summary.header.last_etag);
    assert_eq!(stored.metadata.revision, 3, "created, renamed, written");
    assert_ne!(stored.metadata.change_vector, held_p01);
}

async fn restore_with_a_new_id_refuses_the_sources_versions(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let last = write_history(&engine).await;
    let (_dir, file) = backup_file();
    h.backup(&file).await;
    let source = documents(&engine, &COLLECTIONS).await;

    let restored = h.restore(&file, Identity::New).await;
    let copy = documents(&restored, &COLLECTIONS).await;
    assert_eq!(copy.len(), source.len());
    for (copied, original) in copy.iter().zip(&source) {
        assert_eq!(copied.document, original.document);
        assert_eq!(
            (
                &copied.metadata.collection,
                &copied.metadata.id,
                copied.metadata.etag,
                copied.metadata.revision,
                copied.metadata.last_modified
            ),
            (
                &original.metadata.collection,
                &original.metadata.id,
                original.metadata.etag,
                original.metadata.revision,
                original.metadata.last_modified
            )
        );
        assert_ne!(
            copied.metadata.change_vector,
            original.metadata.change_vector
        );
    }
    let held = &source[0];
    assert!(
        !accepted(
            &restored,
            &held.metadata.collection,
            &held.metadata.id,
            &held.metadata.change_vector
        )
        .await,
        "a version read from the source never matches in a database with an id of its own"
    );
    let copied_feed = feed(&restored, last).await;
    assert_eq!(copied_feed.len(), feed(&engine, last).await.len());
}

async fn copy_to_postgres_keeps_every_version(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    let last = write_history(&engine).await;
    let held = engine
        .get("orders", &["o07".to_owned()])
        .await
        .expect("a read")[0]
        .clone()
        .expect("o07");
    let (_dir, file) = backup_file();
    h.backup(&file).await;
    let summary = folio_sqlite::verify_backup(&file).expect("the backup is sound");

    let (copy, database) = h.copy_to_postgres(&file, Identity::Keep).await;
    let source = documents(&engine, &COLLECTIONS).await;
    let copied = documents(&copy, &COLLECTIONS).await;
    assert_eq!(copied.len(), source.len());
    for (copied, original) in copied.iter().zip(&source) {
        // The change vector, revision, etag and time are the source's.
        assert_eq!(copied.metadata, original.metadata);
        assert_eq!(value(&copied.document), value(&original.document));
    }
    assert_eq!(feed(&copy, last).await, feed(&engine, last).await);
    // The sequence ends above every copied etag, and held versions work.
    assert!(accepted(&copy, "orders", "o07", &held.metadata.change_vector).await);
    let next = etag(&commit(&copy, vec![put("notes", "new", "{}")]).await);
    assert!(next > summary.header.last_etag + folio_core::RESTORED_ETAG_GAP);
    // The index came along (read back from PostgreSQL's catalog), and a
    // query on it answers as on the source.
    if h.kind != EngineKind::Remote {
        let url = folio_postgres::testing::TestCluster::shared().url();
        let mut snapshot =
            folio_postgres::open_snapshot(url, &database, folio_core::SnapshotContents::Everything)
                .await
                .expect("a snapshot of the copy");
        let mut indexes = Vec::new();
        while let Some(part) = snapshot.next_part().await.expect("the snapshot reads") {
            if let folio_core::SnapshotPart::Indexes(part) = part {
                indexes.extend(part);
            }
        }
        assert_eq!(
            indexes,
            vec![folio_core::Index {
                collection: "people".into(),
                path: FieldPath::parse("address.city").expect("a path"),
            }]
        );
    }
    let query = folio::Query::new("people")
        .filter("address.city", folio::Op::Eq, "C1")
        .expect("a filter");
    let answers = |entries: Vec<Entry>| {
        entries
            .into_iter()
            .map(|entry| (entry.metadata, value(&entry.document)))
            .collect::<Vec<_>>()
    };
    let expected = answers(engine.query(&query).await.expect("the query runs"));
    assert!(!expected.is_empty());
    assert_eq!(
        answers(copy.query(&query).await.expect("the query runs")),
        expected
    );
}

/// Every kept version of `collection/id` with its document (none for a
/// deletion), as values.
async fn history(
    engine: &EngineRef,
    id: &str,
) -> Vec<(ChangeVector, u64, bool, Option<serde_json::Value>)> {
    let page = engine
        .revisions("notes", id, 0, 100)
        .await
        .expect("the history reads");
    let mut kept = Vec::new();
    for item in page.items {
        let document = engine
            .revision("notes", id, &item.change_vector)
            .await
            .expect("a kept version reads")
            .map(|entry| value(&entry.document));
        assert_eq!(document.is_none(), item.deleted);
        kept.push((item.change_vector, item.revision, item.deleted, document));
    }
    kept
}

async fn backups_and_copies_keep_revisions_and_configurations(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    engine
        .configure("notes", &folio_core::CollectionConfig::revisions(3))
        .await
        .expect("configured");
    for text in ["one", "two", "three", "four"] {
        commit(
            &engine,
            vec![put("notes", "n1", &format!(r#"{{"t":"{text}"}}"#))],
        )
        .await;
    }
    for text in ["a", "b"] {
        commit(
            &engine,
            vec![put("notes", "n2", &format!(r#"{{"t":"{text}"}}"#))],
        )
        .await;
    }
    commit(
        &engine,
        vec![Command::delete("notes", "n2", Expectation::Any)],
    )
    .await;
    let (n1, n2) = (history(&engine, "n1").await, history(&engine, "n2").await);
    assert_eq!((n1.len(), n2.len()), (3, 3));
    let (_dir, file) = backup_file();
    h.backup(&file).await;
    let summary = folio_sqlite::verify_backup(&file).expect("the backup is sound");
    assert_eq!(
        (summary.counts.configurations, summary.counts.revisions),
        (1, 6)
    );

    let restored = h.restore(&file, Identity::Keep).await;
    let (copy, _) = h.copy_to_postgres(&file, Identity::Keep).await;
    for target in [&restored, &copy] {
        assert_eq!(
            target.configuration("notes").await.expect("read"),
            folio_core::CollectionConfig::revisions(3)
        );
        assert_eq!(history(target, "n1").await, n1);
        assert_eq!(history(target, "n2").await, n2);
        // The collection goes on keeping three.
        commit(target, vec![put("notes", "n1", r#"{"t":"five"}"#)]).await;
        let after = history(target, "n1").await;
        assert_eq!(after.len(), 3);
        assert_eq!(after[0].3, Some(serde_json::json!({ "t": "five" })));
        assert_eq!(after[1..], n1[..2]);
    }
}

// ---- snapshots under load -----------------------------------------------------

/// The bank: `ACCOUNTS` accounts holding `TOTAL` between them; a transfer
/// moves an amount between two accounts and records it in the ledger (a
/// new document in another collection), in one batch: whole or not at all.
const ACCOUNTS: usize = 8;
const TOTAL: i64 = 8_000;

async fn open_bank(engine: &EngineRef) {
    let commands = (0..ACCOUNTS)
        .map(|n| {
            put(
                "accounts",
                &format!("a{n}"),
                &format!(r#"{{"balance":{}}}"#, TOTAL / ACCOUNTS as i64),
            )
        })
        .collect();
    commit(engine, commands).await;
}

/// Transfers until `stop`, counting the committed ones in `done`.
async fn transfer_until(engine: EngineRef, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut random = XorShift::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let from = format!("a{}", random.below(ACCOUNTS as u64));
        let to = format!("a{}", random.below(ACCOUNTS as u64));
        if from == to {
            continue;
        }
        let read = engine
            .get("accounts", &[from.clone(), to.clone()])
            .await
            .expect("a read");
        let (Some(source), Some(target)) = (&read[0], &read[1]) else {
            panic!("every account exists")
        };
        let balance = |entry: &Entry| {
            value(&entry.document)["balance"]
                .as_i64()
                .expect("a balance")
        };
        let amount = i64::try_from(random.below(50)).expect("small") + 1;
        let ledger = folio_core::generate_id();
        let batch = Batch::from(vec![
            Command::put(
                "accounts",
                &from,
                format!(r#"{{"balance":{}}}"#, balance(source) - amount),
                Expectation::version(source.metadata.change_vector.clone()),
            ),
            Command::put(
                "accounts",
                &to,
                format!(r#"{{"balance":{}}}"#, balance(target) + amount),
                Expectation::version(target.metadata.change_vector.clone()),
            ),
            Command::put(
                "ledger",
                &ledger,
                format!(r#"{{"from":"{from}","to":"{to}","amount":{amount}}}"#),
                Expectation::Missing,
            ),
        ]);
        if engine
            .commit(batch)
            .await
            .expect("the commit reaches the engine")
            .is_ok()
        {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `during` while four writers transfer, with transfers committed
/// before it starts and after it ends; returns what it returned.
async fn while_transferring<T>(engine: &EngineRef, during: impl Future<Output = T>) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|seed| {
            tokio::spawn(transfer_until(
                engine.clone(),
                seed + 1,
                stop.clone(),
                done.clone(),
            ))
        })
        .collect();
    let wait_for = |count: u64| {
        let done = done.clone();
        async move {
            tokio::time::timeout(PATIENCE, async {
                while done.load(Ordering::Relaxed) < count {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the writers make progress");
        }
    };
    wait_for(20).await;
    let outcome = during.await;
    let after = done.load(Ordering::Relaxed);
    wait_for(after + 20).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer ends cleanly");
    }
    outcome
}

/// The bank's invariants over one state: the balances add up to `TOTAL`,
/// and every transfer that reached the ledger reached both accounts (each
/// transfer adds a revision to two accounts).
fn check_bank(entries: &[Entry]) {
    let accounts: Vec<&Entry> = entries
        .iter()
        .filter(|entry| entry.metadata.collection == "accounts")
        .collect();
    assert_eq!(accounts.len(), ACCOUNTS);
    let total: i64 = accounts
        .iter()
        .map(|entry| {
            value(&entry.document)["balance"]
                .as_i64()
                .expect("a balance")
        })
        .sum();
    assert_eq!(total, TOTAL, "the snapshot holds a transfer in part");
    let updates: u64 = accounts
        .iter()
        .map(|entry| entry.metadata.revision - 1)
        .sum();
    let transfers = entries
        .iter()
        .filter(|entry| entry.metadata.collection == "ledger")
        .count() as u64;
    assert_eq!(
        updates,
        2 * transfers,
        "the ledger and the accounts disagree"
    );
    assert!(
        transfers >= 20,
        "transfers committed before the snapshot are in it"
    );
}

async fn backup_taken_while_writers_run_is_one_snapshot(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    open_bank(&engine).await;
    let (_dir, file) = backup_file();
    while_transferring(&engine, h.backup(&file)).await;

    let summary = folio_sqlite::verify_backup(&file).expect("the backup is sound");
    let restored = h.restore(&file, Identity::Keep).await;
    let state = documents(&restored, &["accounts", "ledger"]).await;
    check_bank(&state);
    // The snapshot is a state the source went through: every version in it
    // is the one the source's feed recorded for that etag.
    let source_feed: BTreeMap<u64, Change> = feed(&engine, summary.header.feed_position)
        .await
        .into_iter()
        .map(|change| (change.etag, change))
        .collect();
    let restored_feed = feed(&restored, summary.header.feed_position).await;
    for change in &restored_feed {
        assert_eq!(source_feed.get(&change.etag), Some(change));
    }
    if h.kind != EngineKind::Postgres {
        // One writer commits etags in order: the snapshot is a prefix.
        let prefix: Vec<&Change> = source_feed
            .values()
            .take_while(|change| change.etag <= summary.header.feed_position)
            .collect();
        assert_eq!(restored_feed.iter().collect::<Vec<_>>(), prefix);
    }
    for entry in &state {
        let change = source_feed.get(&entry.metadata.etag).expect("in the feed");
        assert_eq!(
            (&change.id, change.revision),
            (&entry.metadata.id, entry.metadata.revision)
        );
    }
    // Documents and feed are of one moment: replaying the restored feed
    // gives exactly the restored documents.
    let mut replayed: BTreeMap<(&str, &str), &Change> = BTreeMap::new();
    for change in &restored_feed {
        replayed.insert((&change.collection, &change.id), change);
    }
    let live: Vec<(&str, &str, u64)> = replayed
        .values()
        .filter(|change| change.kind == folio::ChangeKind::Put)
        .map(|change| (change.collection.as_str(), change.id.as_str(), change.etag))
        .collect();
    let stored: Vec<(&str, &str, u64)> = state
        .iter()
        .map(|entry| {
            (
                entry.metadata.collection.as_str(),
                entry.metadata.id.as_str(),
                entry.metadata.etag,
            )
        })
        .collect();
    assert_eq!(
        stored, live,
        "the feed and the documents are of different moments"
    );
    // The source went on past the snapshot, and the restored database is
    // behind it: what was written after the backup is not in it.
    let source_now = documents(&engine, &["ledger"]).await.len();
    let restored_ledger = state
        .iter()
        .filter(|entry| entry.metadata.collection == "ledger")
        .count();
    assert!(source_now > restored_ledger);
}

async fn export_taken_while_writers_run_is_one_snapshot(h: Harness) {
    let store = h.store().await;
    let engine = store.engine().clone();
    open_bank(&engine).await;
    let exported = while_transferring(&engine, h.export(None)).await;
    check_bank(&exported);
    // By collection, then id; and one collection alone is a subset.
    let keys: Vec<(&str, &str)> = exported
        .iter()
        .map(|entry| {
            (
                entry.metadata.collection.as_str(),
                entry.metadata.id.as_str(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    let accounts = h.export(Some("accounts")).await;
    assert_eq!(accounts.len(), ACCOUNTS);
    assert!(
        accounts
            .iter()
            .all(|entry| entry.metadata.collection == "accounts")
    );
}

// ---- what a restore refuses ---------------------------------------------------

/// A backup of a small database, with its directory.
async fn small_backup() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, file) = backup_file();
    let engine = Arc::new(
        folio::SqliteEngine::open(
            dir.path().join("source.sqlite"),
            folio::SqliteOptions::default(),
        )
        .expect("a database"),
    );
    let engine: EngineRef = engine.clone();
    write_history(&engine).await;
    folio::SqliteEngine::open(
        dir.path().join("source.sqlite"),
        folio::SqliteOptions::default(),
    )
    .expect("the same engine")
    .backup_to(&file)
    .await
    .expect("a backup");
    (dir, file)
}

/// A connection to `file` through Folio's file layer (the VFS `folio`,
/// registered once an engine opened a file), which keeps page checksums:
/// as Folio itself would change the file.
fn folio_connection(file: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags_and_vfs(file, rusqlite::OpenFlags::default(), "folio")
}

/// The message of a refused restore of `file` into a new database.
fn refused(file: &std::path::Path) -> String {
    let target = file.with_file_name(format!("{}.sqlite", unique_database_name()));
    match folio_sqlite::restore_backup(file, &target, Identity::Keep) {
        Err(folio::Error::InvalidInput(message)) => {
            assert!(!target.exists(), "nothing is made of a refused file");
            message
        }
        other => panic!("a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_foreign_and_newer_files_are_refused() {
    let (dir, backup) = small_backup().await;
    let variant = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("a file");
        path
    };
    let original = std::fs::read(&backup).expect("the backup");

    assert!(refused(&variant("empty", b"")).contains("empty"));
    assert!(refused(&variant("text", b"{\"not\":\"sqlite\"}")).contains("not an SQLite database"));
    let foreign = dir.path().join("foreign.sqlite");
    rusqlite::Connection::open(&foreign)
        .and_then(|connection| connection.execute_batch("CREATE TABLE t (a)"))
        .expect("a foreign database");
    assert!(refused(&foreign).contains("without Folio's layout"));

    // Cut in half: SQLite finds pages missing.
    let half = variant("half", &original[..original.len() / 2]);
    assert!(refused(&half).contains("damaged"), "{}", refused(&half));

    // Changed by a program that does not keep Folio's page checksums.
    let changed = variant("changed", &original);
    rusqlite::Connection::open(&changed)
        .and_then(|connection| connection.pragma_update(None, "user_version", 4))
        .expect("changed");
    assert!(
        refused(&changed).contains("damaged"),
        "{}",
        refused(&changed)
    );

    // A newer layout than this build knows (written through Folio's file
    // layer, which keeps the pages' checksums).
    let newer = variant("newer", &original);
    folio_connection(&newer)
        .and_then(|connection| connection.pragma_update(None, "user_version", 99))
        .expect("a newer layout");
    assert!(refused(&newer).contains("newer"), "{}", refused(&newer));

    // Sound to SQLite, not to Folio: a document whose version is not in
    // the feed, a trigger.
    let tampered = variant("tampered", &original);
    folio_connection(&tampered)
        .and_then(|connection| {
            connection.execute(
                "UPDATE documents SET etag = etag + 1000 WHERE id = 'p01'",
                [],
            )
        })
        .expect("tampered");
    assert!(
        refused(&tampered).contains("not in the changes feed"),
        "{}",
        refused(&tampered)
    );
    let triggered = variant("triggered", &original);
    folio_connection(&triggered)
        .and_then(|connection| {
            connection.execute_batch(
                "CREATE TRIGGER t AFTER INSERT ON documents BEGIN DELETE FROM documents; END",
            )
        })
        .expect("a trigger");
    assert!(
        refused(&triggered).contains("triggers"),
        "{}",
        refused(&triggered)
    );

    // The original itself restores.
    let target = dir.path().join("restored.sqlite");
    folio_sqlite::restore_backup(&backup, &target, Identity::Keep).expect("the backup restores");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_replaces_only_an_empty_unused_database() {
    let (dir, backup) = small_backup().await;
    // Empty (made, never written): replaced.
    let empty = dir.path().join("empty.sqlite");
    drop(folio::SqliteEngine::open(&empty, folio::SqliteOptions::default()).expect("made"));
    folio_sqlite::restore_backup(&backup, &empty, Identity::Keep)
        .expect("an empty database is replaced");
    let restored: EngineRef = Arc::new(
        folio::SqliteEngine::open(&empty, folio::SqliteOptions::default()).expect("it opens"),
    );
    assert_eq!(documents(&restored, &COLLECTIONS).await.len(), 78);
    // Holding data: refused, untouched.
    let message = match folio_sqlite::restore_backup(&backup, &empty, Identity::New) {
        Err(folio::Error::InvalidInput(message)) => message,
        other => panic!("a refusal, got {other:?}"),
    };
    assert!(message.contains("holds data"), "{message}");
    assert_eq!(documents(&restored, &COLLECTIONS).await.len(), 78);
    drop(restored);
    // Empty but open in an engine: refused (the engine holds its lock).
    let open_empty = dir.path().join("open.sqlite");
    let engine =
        folio::SqliteEngine::open(&open_empty, folio::SqliteOptions::default()).expect("made");
    assert!(folio_sqlite::restore_backup(&backup, &open_empty, Identity::Keep).is_err());
    drop(engine);
    // Nothing of the attempts is left beside the databases.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.contains("restoring"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_load_refuses_a_database_that_exists() {
    let (_dir, backup) = small_backup().await;
    let url = folio_postgres::testing::TestCluster::shared()
        .url()
        .to_owned();
    let database = unique_database_name();
    let engine = folio::PgEngine::connect(&url, &database, folio::PgOptions::default())
        .await
        .expect("an empty database");
    let place = folio_cli::transfer::Place::Postgres {
        url: url.clone(),
        database: database.clone(),
    };
    let failure = folio_cli::transfer::restore(&backup, &place, Identity::Keep)
        .await
        .expect_err("an existing database is refused, even empty");
    assert!(failure.message.contains("exists"), "{}", failure.message);
    // Still empty, still its own id.
    let engine: EngineRef = Arc::new(engine);
    assert!(documents(&engine, &COLLECTIONS).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_an_older_layout_restores_brought_up_to_date() {
    // A database of layout 1 (before the changes feed), made by hand.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let old = dir.path().join("old.sqlite");
    let connection = rusqlite::Connection::open(&old).expect("a database");
    connection
        .execute_batch(
            "CREATE TABLE folio_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE folio_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO folio_counters (name, value) VALUES ('last_etag', 3);
             CREATE TABLE documents (collection TEXT NOT NULL, id TEXT NOT NULL, etag INTEGER NOT NULL,
                 revision INTEGER NOT NULL, last_modified INTEGER NOT NULL, data BLOB NOT NULL);
             CREATE UNIQUE INDEX documents_by_key ON documents (collection, id);
             CREATE TABLE tombstones (etag INTEGER PRIMARY KEY, collection TEXT NOT NULL, id TEXT NOT NULL);
             CREATE UNIQUE INDEX tombstones_by_key ON tombstones (collection, id);
             INSERT INTO folio_meta (key, value) VALUES ('database_id', 'AAAAAAAAAAAAAAAAAAAAAB');
             INSERT INTO documents VALUES ('notes', 'a', 2, 2, 1700000000000, jsonb('{\"text\":\"a\"}'));
             INSERT INTO tombstones VALUES (3, 'notes', 'b');
             PRAGMA user_version = 1;",
        )
        .expect("the layout-1 database");
    drop(connection);
    let target = dir.path().join("restored.sqlite");
    let summary = folio_sqlite::restore_backup(&old, &target, Identity::Keep)
        .expect("an older layout restores");
    assert!(summary.layout > 1, "brought up to this build's layout");
    assert_eq!(summary.header.last_etag, 3);
    let restored: EngineRef = Arc::new(
        folio::SqliteEngine::open(&target, folio::SqliteOptions::default()).expect("it opens"),
    );
    let notes = documents(&restored, &["notes"]).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes[0].metadata.change_vector.as_str(),
        "A:2-AAAAAAAAAAAAAAAAAAAAAB"
    );
    assert_eq!(notes[0].metadata.revision, 2);
    // The current state became the history, and the next etag is far
    // beyond it (RESTORED_ETAG_GAP).
    let history = feed(&restored, 3).await;
    assert_eq!(
        history
            .iter()
            .map(|change| (change.etag, change.kind))
            .collect::<Vec<_>>(),
        [(2, folio::ChangeKind::Put), (3, folio::ChangeKind::Delete)]
    );
    assert_eq!(
        etag(&commit(&restored, vec![put("notes", "c", "{}")]).await),
        4 + folio_core::RESTORED_ETAG_GAP
    );
    // The file given is left as it was.
    let layout: i64 = rusqlite::Connection::open(&old)
        .and_then(|connection| connection.query_row("PRAGMA user_version", [], |row| row.get(0)))
        .expect("the old file");
    assert_eq!(layout, 1);
}
