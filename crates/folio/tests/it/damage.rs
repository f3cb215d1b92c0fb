//! Damaged files (the embedded engine): a damaged page is an error, never
//! wrong content, in the database file and in the log; a database known to
//! be damaged takes no writes and says so; an empty file is not a new
//! database; a newer layout is refused with what to do.

use std::path::Path;
use std::sync::Arc;

use folio::{Batch, Document, Engine, EngineErrorKind, Error, Expectation};

use crate::harness::{Note, outside_connection};

/// A text to find in the files, inside one note.
const NEEDLE: &str = "needle-7f3a9c-in-a-haystack";

/// Flips one bit in every place `file` holds `needle`; how many it found.
fn damage(file: &Path, needle: &str) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let places: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle.as_bytes())
        .map(|(at, _)| at)
        .collect();
    for at in &places {
        bytes[at + 3] ^= 0x01;
    }
    std::fs::write(file, bytes).unwrap();
    places.len()
}

/// The error of `result`, which must be the engine's, of `kind`.
#[track_caller]
fn engine_error<T: std::fmt::Debug>(result: folio::Result<T>, kind: EngineErrorKind) -> String {
    match result {
        Err(Error::Engine(error)) if error.kind() == kind => error.to_string(),
        other => panic!("expected a {kind:?} failure, got {other:?}"),
    }
}

async fn put(engine: &dyn Engine, id: &str, text: &str) -> folio::Result<()> {
    engine
        .commit(Batch::from(vec![Note::put(id, text, Expectation::Any)]))
        .await
        .map(|verdict| {
            verdict.expect("no conflict");
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_of_the_database_file_is_an_error_and_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.sqlite");
    {
        let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
        put(&engine, "other", "fine").await.unwrap();
        put(&engine, "target", &format!("{NEEDLE} {}", "x".repeat(1500)))
            .await
            .unwrap();
    }
    // Closed: everything is in the database file, the log is empty.
    assert_eq!(damage(&file, NEEDLE), 1, "the note is in the file once");

    let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
    assert!(
        engine.health().is_ok(),
        "nothing is known to be damaged yet"
    );
    let read = engine.get(Note::COLLECTION, &["target".to_owned()]).await;
    let message = engine_error(read, EngineErrorKind::Corrupt);
    assert!(message.contains("checksum"), "{message}");
    // Known damaged: no write is taken, and the refusal says why.
    let message = engine_error(
        put(&engine, "new", "refused").await,
        EngineErrorKind::Corrupt,
    );
    assert!(
        message.contains("damaged") && message.contains("backup"),
        "{message}"
    );
    assert!(
        matches!(engine.health(), Err(Error::Engine(e)) if e.kind() == EngineErrorKind::Corrupt)
    );
    let stored = engine
        .get(Note::COLLECTION, &["new".to_owned()])
        .await
        .unwrap();
    assert!(
        stored[0].is_none(),
        "nothing of the refused write is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_frame_of_the_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.sqlite");
    // Checkpoints cannot copy the log into the file: the note's pages are
    // read from the log.
    let faults = Arc::new(folio_sqlite::IoFaults::default());
    let engine = folio::SqliteEngine::open(
        &file,
        folio::SqliteOptions {
            io_faults: Some(faults.clone()),
            ..folio::SqliteOptions::default()
        },
    )
    .unwrap();
    faults.fail_database_writes(u32::MAX, false);
    put(&engine, "target", &format!("{NEEDLE} in the log"))
        .await
        .unwrap();
    let log = dir.path().join("log.sqlite-wal");
    assert!(damage(&log, NEEDLE) >= 1, "the note is in the log");

    // A query reads the page (a new note is in no cache).
    let read = engine.query(&folio::Query::new(Note::COLLECTION)).await;
    let message = engine_error(read, EngineErrorKind::Corrupt);
    assert!(message.contains("checksum"), "{message}");
    engine_error(
        put(&engine, "new", "refused").await,
        EngineErrorKind::Corrupt,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_file_is_refused_not_made_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.sqlite");
    std::fs::write(&file, b"").unwrap();
    let opened = folio::SqliteEngine::open(&file, folio::SqliteOptions::default());
    let message = engine_error(opened, EngineErrorKind::Corrupt);
    assert!(
        message.contains("empty") && message.contains("backup"),
        "{message}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        0,
        "the file is left as it was"
    );

    // Not a database at all.
    let file = dir.path().join("text.sqlite");
    std::fs::write(&file, "some notes, not a database\n".repeat(10)).unwrap();
    let opened = folio::SqliteEngine::open(&file, folio::SqliteOptions::default());
    let message = engine_error(opened, EngineErrorKind::Corrupt);
    assert!(message.contains("not a database"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_layout_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("newer.sqlite");
    {
        let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
        put(&engine, "kept", "as it was").await.unwrap();
    }
    outside_connection(&file)
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let opened = folio::SqliteEngine::open(&file, folio::SqliteOptions::default());
    let message = engine_error(opened, EngineErrorKind::Unsupported);
    assert!(
        message.contains("layout 99") && message.contains("newer Folio"),
        "{message}"
    );
}
