//! A change vector names one version of one document, forever (docs/design.md
//! rule 10): a batch names each document once, so a conflict reports a
//! committed version and never the refused batch's own write; an etag taken
//! by a write that was rolled back is never taken again (after a conflict,
//! a failed group, a restart); and readers of the embedded engine are shown
//! only versions that are durable, so no power loss can erase a version
//! someone read and lend its change vector to another.

use std::collections::HashSet;
use std::sync::Arc;

use folio::{
    Batch, ChangeVector, Command, CommandResult, Document, Engine, EngineErrorKind, EngineRef,
    Error, Expectation,
};

use crate::harness::{Harness, Note};

conformance!(
    a_batch_that_names_a_document_twice_is_refused_and_writes_nothing,
    a_refused_batch_never_lends_its_etags_to_later_writes,
);

/// The one put's metadata.
fn put_metadata(results: &[CommandResult]) -> folio::Metadata {
    match results {
        [CommandResult::Put(metadata)] => metadata.clone(),
        other => panic!("one put answered {other:?}"),
    }
}

async fn commit_one(engine: &dyn Engine, command: Command) -> folio::Metadata {
    let results = engine
        .commit(Batch::from(vec![command]))
        .await
        .expect("the commit runs")
        .expect("no conflict");
    put_metadata(&results)
}

async fn a_batch_that_names_a_document_twice_is_refused_and_writes_nothing(h: Harness) {
    let store = h.store().await;
    let engine = store.engine();
    let first = commit_one(engine.as_ref(), Note::put("x", "one", Expectation::Missing)).await;
    // Two puts of a new id, both expecting it missing; a put and a delete;
    // a write and a read guard: each names one document twice.
    let twice = [
        vec![
            Note::put("new", "a", Expectation::Missing),
            Note::put("new", "b", Expectation::Missing),
        ],
        vec![
            Note::put(
                "x",
                "two",
                Expectation::version(first.change_vector.clone()),
            ),
            Command::delete(Note::COLLECTION, "x", Expectation::Any),
        ],
        vec![
            Note::put("other", "c", Expectation::Any),
            Note::put("x", "three", Expectation::Any),
            Command::check(
                Note::COLLECTION,
                "x",
                Expectation::version(first.change_vector.clone()),
            ),
        ],
    ];
    for commands in twice {
        let outcome = engine.commit(Batch::from(commands.clone())).await;
        match outcome {
            Err(Error::InvalidInput(detail)) => {
                assert!(detail.contains("at most once"), "{detail}");
            }
            other => panic!("{commands:?} must be refused as invalid, got {other:?}"),
        }
    }
    let stored = engine
        .get(
            Note::COLLECTION,
            &["x".to_owned(), "new".to_owned(), "other".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(
        stored[0].as_ref().map(|entry| &entry.metadata),
        Some(&first)
    );
    assert!(stored[1].is_none() && stored[2].is_none(), "{stored:?}");
}

/// A batch that writes `a` and then conflicts on `b` is refused; the etag
/// its write of `a` took inside the engine (in a savepoint, in a
/// PostgreSQL transaction) is never taken by a later write: had it been,
/// the later version would carry the change vector of a version that was
/// written and rolled back.
async fn a_refused_batch_never_lends_its_etags_to_later_writes(h: Harness) {
    let store = h.store().await;
    let engine = store.engine();
    let b = commit_one(engine.as_ref(), Note::put("b", "b1", Expectation::Missing)).await;
    let stale = b.change_vector.clone();
    let b2 = commit_one(engine.as_ref(), Note::put("b", "b2", Expectation::Any)).await;
    let refused = engine
        .commit(Batch::from(vec![
            Note::put("a", "rolled back", Expectation::Any),
            Note::put("b", "stale", Expectation::version(stale)),
        ]))
        .await
        .expect("the commit runs");
    let conflicts = refused.expect_err("b moved on").into_conflicts();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].actual(),
        Some(&b2.change_vector),
        "the committed version"
    );

    let a = commit_one(engine.as_ref(), Note::put("a", "kept", Expectation::Any)).await;
    assert!(
        a.etag > b2.etag + 1,
        "etag {} was taken by the refused batch's write of a (the last committed etag was {})",
        b2.etag + 1,
        b2.etag
    );
    if h.persists() {
        // After a restart too: nothing taken is taken again.
        drop(store);
        let store = h
            .reopened()
            .await
            .open()
            .await
            .expect("the store opens again");
        let refused = store
            .engine()
            .commit(Batch::from(vec![
                Note::put("c", "rolled back", Expectation::Any),
                Note::put("b", "stale", Expectation::version(b.change_vector.clone())),
            ]))
            .await
            .expect("the commit runs");
        assert!(refused.is_err());
        let c = commit_one(
            store.engine().as_ref(),
            Note::put("c", "kept", Expectation::Any),
        )
        .await;
        assert!(c.etag > a.etag + 1, "etag {} after {}", c.etag, a.etag);
    }
}

// ---- the embedded engine: etags across failed groups and restarts -------------

/// Every change vector the engine issued, from the changes feed.
async fn issued(engine: &dyn Engine) -> Vec<(ChangeVector, u64)> {
    let page = engine.changes(0, None, 100_000).await.unwrap();
    page.changes
        .into_iter()
        .map(|change| (change.change_vector, change.etag))
        .collect()
}

/// A group that fails (its log write fails) took etags; after it, and after
/// a restart with no commit in between, no etag it took is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_never_lends_its_etags_not_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("burned.sqlite");
    let faults = Arc::new(folio_sqlite::IoFaults::default());
    let open = || {
        folio::SqliteEngine::open(
            &file,
            folio::SqliteOptions {
                io_faults: Some(faults.clone()),
                ..folio::SqliteOptions::default()
            },
        )
        .unwrap()
    };
    let engine = open();
    let first = commit_one(&engine, Note::put("n", "first", Expectation::Missing)).await;
    faults.fail_log_writes(1, true);
    let failed = engine
        .commit(Batch::from(vec![
            Note::put("n", "lost", Expectation::Any),
            Note::put("m", "lost", Expectation::Any),
        ]))
        .await;
    assert!(
        matches!(&failed, Err(Error::Engine(error)) if error.kind() == EngineErrorKind::Io),
        "{failed:?}"
    );
    assert_eq!(faults.injected_log_writes(), 1);
    // The failed group took first.etag + 1 and + 2.
    let after = commit_one(&engine, Note::put("n", "after", Expectation::Any)).await;
    assert!(
        after.etag > first.etag + 2,
        "{} after {}",
        after.etag,
        first.etag
    );

    // Fail another group, then restart at once: the reservation stored with
    // the last committed group covers what the failed one took.
    faults.fail_log_writes(1, false);
    let failed = engine
        .commit(Batch::from(vec![Note::put(
            "n",
            "lost again",
            Expectation::Any,
        )]))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    drop(engine);
    let engine = open();
    let reopened = commit_one(&engine, Note::put("n", "reopened", Expectation::Any)).await;
    assert!(
        reopened.etag > after.etag + 1,
        "{} after {}",
        reopened.etag,
        after.etag
    );

    let mut seen = HashSet::new();
    for (change_vector, _) in issued(&engine).await {
        assert!(
            seen.insert(change_vector.clone()),
            "{change_vector} twice in the feed"
        );
    }
}

// ---- the embedded engine: readers see only durable versions -------------------

/// An embedded database whose syncs can be held and failed: a commit that
/// has reached the log but not the disk.
fn held_disk() -> (
    tempfile::TempDir,
    Arc<folio::SqliteEngine>,
    Arc<folio_sqlite::IoFaults>,
) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(folio_sqlite::IoFaults::default());
    let engine = folio::SqliteEngine::open(
        dir.path().join("held.sqlite"),
        folio::SqliteOptions {
            io_faults: Some(faults.clone()),
            ..folio::SqliteOptions::default()
        },
    )
    .unwrap();
    (dir, Arc::new(engine), faults)
}

/// While a committed group waits for its sync, no read shows it: not a
/// load (through the cache or not), not its metadata, a query, a count or a
/// page of the collection, and not the absence a delete left. When the sync
/// fails, those reads fail too (what they would show may be lost); when it
/// succeeds, they show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_show_only_durable_versions() {
    for sync_fails in [false, true] {
        let (_dir, engine, faults) = held_disk();
        let durable = commit_one(
            engine.as_ref(),
            Note::put("n", "durable", Expectation::Missing),
        )
        .await;
        commit_one(
            engine.as_ref(),
            Note::put("gone", "to delete", Expectation::Missing),
        )
        .await;
        // Cached: the engine's cache replaces a version in place at COMMIT.
        engine
            .get(Note::COLLECTION, &["n".to_owned()])
            .await
            .unwrap();

        faults.hold_syncs();
        let writer = engine.clone();
        let write = tokio::spawn(async move {
            writer
                .commit(Batch::from(vec![
                    Note::put(
                        "n",
                        "not yet durable",
                        Expectation::version(durable.change_vector),
                    ),
                    Note::put("fresh", "not yet durable", Expectation::Missing),
                    Command::delete(Note::COLLECTION, "gone", Expectation::Any),
                ]))
                .await
        });
        // The group is committed (in the log, visible to SQLite's readers)
        // and its sync is waiting.
        tokio::task::spawn_blocking({
            let faults = faults.clone();
            move || faults.wait_for_held_sync()
        })
        .await
        .unwrap();

        let reads = spawn_reads(engine.clone());
        if sync_fails {
            faults.fail_syncs(1);
        }
        faults.release_syncs();
        let written = write.await.unwrap();
        let reads = reads.await.unwrap();
        if sync_fails {
            assert!(written.is_err(), "{written:?}");
            for (what, read) in reads {
                let error = read.expect_err(what);
                assert!(
                    error.to_string().contains("may or may not be on disk"),
                    "{what}: {error}"
                );
            }
        } else {
            let results = written.unwrap().unwrap();
            let CommandResult::Put(new) = &results[0] else {
                panic!("{results:?}")
            };
            for (what, read) in reads {
                let shown = read.unwrap_or_else(|error| panic!("{what}: {error}"));
                if let Some(shown) = shown {
                    assert!(
                        shown.contains(new.change_vector.as_str()),
                        "{what} shows the new version once durable: {shown}"
                    );
                }
            }
        }
    }
}

/// What a read showed: the text that must name the new version, or `None`
/// when the read checked what it saw itself.
type Shown = folio::Result<Option<String>>;

/// Every kind of read of the documents the held group writes, at once.
fn spawn_reads(engine: EngineRef) -> tokio::task::JoinHandle<Vec<(&'static str, Shown)>> {
    tokio::spawn(async move {
        let n = ["n".to_owned()];
        let gone = ["gone".to_owned()];
        let query = folio::Query::new(Note::COLLECTION);
        let (load, missing, metadata, queried, counted, scanned) = tokio::join!(
            engine.get(Note::COLLECTION, &n),
            engine.get(Note::COLLECTION, &gone),
            engine.metadata(Note::COLLECTION, &n),
            engine.query(&query),
            engine.count(&query),
            engine.scan(Note::COLLECTION, None, 100),
        );
        let versions = |entries: Vec<folio::Entry>| {
            let shown: Vec<String> = entries
                .into_iter()
                .map(|entry| entry.metadata.change_vector.to_string())
                .collect();
            Some(shown.join(" "))
        };
        vec![
            (
                "load",
                load.map(|found| Some(format!("{:?}", found[0].as_ref().map(|e| &e.metadata)))),
            ),
            (
                "load of a deleted document",
                missing.map(|found| {
                    assert!(found[0].is_none(), "shown only once the delete is durable");
                    None
                }),
            ),
            ("metadata", metadata.map(|found| Some(format!("{found:?}")))),
            ("query", queried.map(versions)),
            (
                "count",
                counted.map(|count| {
                    assert_eq!(count, 2, "n and fresh; gone is deleted");
                    None
                }),
            ),
            ("scan", scanned.map(versions)),
        ]
    })
}

// ---- the embedded engine: running out of file descriptors ---------------------

/// Set in the child process that runs the test below alone.
const DESCRIPTORS_CHILD: &str = "FOLIO_TEST_DESCRIPTORS_CHILD";

/// Running out of file descriptors (too many connections, too many open
/// databases) must not stop a database's writes: the commit path needs no
/// new descriptor (the syncers' are opened with the engine), so commits go
/// on while none is left, a read that needs a new connection fails alone,
/// and once descriptors are free again everything works. The process's
/// descriptor table is shared by every test, so the scenario runs in a
/// child process of its own (this test binary, with a low limit).
#[test]
fn running_out_of_descriptors_stops_no_writes() {
    if std::env::var_os(DESCRIPTORS_CHILD).is_some() {
        return out_of_descriptors();
    }
    let exe = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([
            "versions::running_out_of_descriptors_stops_no_writes",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DESCRIPTORS_CHILD, "1")
        .output()
        .expect("the child runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("1 passed"), "the scenario ran: {printed}");
}

fn out_of_descriptors() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("descriptors.sqlite");
        let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
        // Take every descriptor left.
        let mut held = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(24), "EMFILE: {error}");
                    break;
                }
            }
        }
        assert!(
            held.len() > 10,
            "the limit left room to take: {}",
            held.len()
        );
        let during = commit_one(
            &engine,
            Note::put("n", "while none is left", Expectation::Any),
        )
        .await;
        let read = engine.query(&folio::Query::new(Note::COLLECTION)).await;
        // A read on a new connection may fail for want of a descriptor;
        // that failure is its own.
        if let Err(error) = &read {
            assert!(matches!(error, Error::Engine(_)), "{error:?}");
        }
        drop(held);
        let after = commit_one(&engine, Note::put("n", "after", Expectation::Any)).await;
        assert!(after.etag > during.etag);
        let stored = engine
            .get(Note::COLLECTION, &["n".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            stored[0].as_ref().map(|entry| &entry.metadata),
            Some(&after)
        );
    });
}
